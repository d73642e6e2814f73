//! CreateCluster, DescribeClusters, ListClusters, UpdateCluster, UpdateClusterSettings and
//! DeleteCluster, and how a cluster is shown.

use serde_json::{json, Map, Value};

use super::tags::check_tags;
use super::{active_cluster, arn_for, failure, members, Ctx, Page};
use crate::domain::is_valid_name;
use crate::domain::records::Cluster;
use crate::domain::status::ClusterStatus;
use crate::error::{ApiError, ErrorCode};
use crate::shapes::{
    CreateClusterRequest, CreateClusterResponse, DeleteClusterRequest, DeleteClusterResponse, DescribeClustersRequest,
    DescribeClustersResponse, ListClustersRequest, ListClustersResponse, UpdateClusterRequest, UpdateClusterResponse,
    UpdateClusterSettingsRequest, UpdateClusterSettingsResponse,
};
use crate::store::{ClusterCounts, StoreExt, Tx};

pub async fn create_cluster(ctx: &Ctx, req: CreateClusterRequest) -> Result<CreateClusterResponse, ApiError> {
    // Everything but the name is kept as the client sent it.
    let mut options = members(&req, &["clusterName"]);
    let tags = req.tags.unwrap_or_default();
    let name = req.cluster_name.unwrap_or_else(|| "default".into());
    if !is_valid_name(&name) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'clusterName': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    check_tags(&tags)?;
    options.insert("tags".into(), serde_json::to_value(&tags).unwrap_or_else(|_| json!([])));
    let principal = ctx.principal.arn();
    let providers = req.capacity_providers.clone().unwrap_or_default();
    let strategy = req.default_capacity_provider_strategy.clone().unwrap_or_default();
    ctx.store
        .write(&ctx.scope, move |tx| {
            // Creating a cluster that exists returns it unchanged, as ECS does.
            let cluster = match tx.cluster(&name)? {
                Some(existing) if existing.status == ClusterStatus::Active => existing,
                _ => {
                    let mut options = options.clone();
                    insights_setting(tx, &principal, &mut options)?;
                    super::capacity_providers::check_association(tx, &name, &providers, &strategy)?;
                    let cluster = Cluster {
                        cluster_arn: tx.scope().cluster_arn(&name),
                        cluster_name: name.clone(),
                        status: ClusterStatus::Active,
                        options,
                    };
                    tx.put(&cluster)?;
                    cluster
                }
            };
            let counts = tx.cluster_counts(&name)?;
            Ok(CreateClusterResponse {
                cluster: Some(view(&cluster, counts, &ALL_FIELDS)),
            })
        })
        .await
}

/// A new cluster's `containerInsights` is the account setting's unless the request sets it.
fn insights_setting(tx: &mut Tx<'_>, principal: &str, options: &mut Map<String, Value>) -> Result<(), ApiError> {
    const NAME: &str = "containerInsights";
    let settings = options.entry("settings").or_insert(json!([]));
    let Some(list) = settings.as_array_mut() else {
        return Ok(());
    };
    if !list.iter().any(|s| s.get("name").and_then(Value::as_str) == Some(NAME)) {
        let (effective, _) = super::settings::effective(tx, principal, NAME)?;
        list.push(json!({"name": NAME, "value": effective.value}));
    }
    Ok(())
}

pub async fn update_cluster(ctx: &Ctx, req: UpdateClusterRequest) -> Result<UpdateClusterResponse, ApiError> {
    let options = members(&req, &["cluster"]);
    let cluster = change_cluster(ctx, req.cluster, options).await?;
    Ok(UpdateClusterResponse { cluster: Some(cluster) })
}

pub async fn update_cluster_settings(
    ctx: &Ctx,
    req: UpdateClusterSettingsRequest,
) -> Result<UpdateClusterSettingsResponse, ApiError> {
    let options = members(&req, &["cluster"]);
    let cluster = change_cluster(ctx, req.cluster, options).await?;
    Ok(UpdateClusterSettingsResponse { cluster: Some(cluster) })
}

/// Sets the members `options` of an ACTIVE cluster, keeping the others.
async fn change_cluster(
    ctx: &Ctx,
    reference: String,
    options: Map<String, Value>,
) -> Result<crate::shapes::Cluster, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let name = active_cluster(tx, Some(&reference))?;
            let mut cluster = tx.cluster(&name)?.ok_or_else(ApiError::cluster_not_found)?;
            cluster.options.extend(options);
            tx.put(&cluster)?;
            let counts = tx.cluster_counts(&name)?;
            Ok(view(&cluster, counts, &ALL_FIELDS))
        })
        .await
}

pub async fn delete_cluster(ctx: &Ctx, req: DeleteClusterRequest) -> Result<DeleteClusterResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let name = active_cluster(tx, Some(&req.cluster))?;
            let mut cluster = tx.cluster(&name)?.ok_or_else(ApiError::cluster_not_found)?;
            let counts = tx.cluster_counts(&name)?;
            if counts.registered_container_instances > 0 {
                return Err(ApiError::new(
                    ErrorCode::ClusterContainsContainerInstancesException,
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                ));
            }
            if counts.running_tasks + counts.pending_tasks > 0 {
                return Err(ApiError::new(
                    ErrorCode::ClusterContainsTasksException,
                    "The Cluster cannot be deleted while Tasks are active.",
                ));
            }
            cluster.status = ClusterStatus::Inactive;
            tx.put(&cluster)?;
            Ok(DeleteClusterResponse {
                cluster: Some(view(&cluster, counts, &ALL_FIELDS)),
            })
        })
        .await
}

pub async fn describe_clusters(ctx: &Ctx, req: DescribeClustersRequest) -> Result<DescribeClustersResponse, ApiError> {
    let references = req.clusters.unwrap_or_else(|| vec!["default".into()]);
    if references.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'clusters': at most 100 clusters can be described at once.",
        ));
    }
    let include: Vec<&str> = req.include.unwrap_or_default().iter().map(|f| f.as_str()).collect();
    ctx.store
        .read(&ctx.scope, move |tx| {
            let (mut clusters, mut failures) = (Vec::new(), Vec::new());
            for reference in &references {
                let found = match tx.scope().cluster_name(reference) {
                    Some(name) => tx.cluster(name)?,
                    None => None,
                };
                match found {
                    Some(cluster) => {
                        let counts = tx.cluster_counts(&cluster.cluster_name)?;
                        clusters.push(view(&cluster, counts, &include));
                    }
                    None => {
                        let arn = arn_for(reference, |name| tx.scope().cluster_arn(name));
                        failures.push(failure(&arn, "MISSING"));
                    }
                }
            }
            Ok(DescribeClustersResponse {
                clusters: Some(clusters),
                failures: Some(failures),
            })
        })
        .await
}

pub async fn list_clusters(ctx: &Ctx, req: ListClustersRequest) -> Result<ListClustersResponse, ApiError> {
    let page = Page::new("clusters", req.max_results, req.next_token.as_deref())?;
    let (limit, after) = (page.limit, page.after.clone());
    let principal = ctx.principal.clone();
    let clusters = ctx
        .store
        .read(&ctx.scope, move |tx: &mut Tx<'_>| {
            // A principal limited to some clusters sees only those.
            let (mut shown, mut after) = (Vec::new(), after);
            loop {
                let batch = tx.list_clusters(after.as_deref(), limit + 1)?;
                let last_batch = batch.len() <= limit;
                after = batch.last().map(|c| c.cluster_name.clone());
                shown.extend(batch.into_iter().filter(|c| principal.may_use_cluster(&c.cluster_name)));
                if last_batch || shown.len() > limit {
                    return Ok::<_, ApiError>(shown);
                }
            }
        })
        .await?;
    let (shown, next_token) = page.finish(clusters, |c| c.cluster_name.clone());
    Ok(ListClustersResponse {
        cluster_arns: Some(shown.into_iter().map(|c| c.cluster_arn).collect()),
        next_token,
    })
}

pub(crate) const ALL_FIELDS: [&str; 4] = ["TAGS", "SETTINGS", "CONFIGURATIONS", "STATISTICS"];

/// The `statistics` ECS reports with `include: STATISTICS`: task and service counts per launch
/// type.
fn statistics(counts: &ClusterCounts) -> Value {
    let count = |launch_type: &str, running: bool| {
        counts
            .by_launch_type
            .iter()
            .filter(|(l, _, _)| l == launch_type)
            .map(|(_, r, p)| if running { *r } else { *p })
            .sum::<i64>()
    };
    let mut out = Vec::new();
    for (name, launch_type, running) in [
        ("runningEC2TasksCount", "EC2", true),
        ("runningFargateTasksCount", "FARGATE", true),
        ("runningExternalTasksCount", "EXTERNAL", true),
        ("pendingEC2TasksCount", "EC2", false),
        ("pendingFargateTasksCount", "FARGATE", false),
        ("pendingExternalTasksCount", "EXTERNAL", false),
    ] {
        out.push(json!({"name": name, "value": count(launch_type, running).to_string()}));
    }
    for (name, launch_type, status) in [
        ("activeEC2ServiceCount", "EC2", "ACTIVE"),
        ("activeFargateServiceCount", "FARGATE", "ACTIVE"),
        ("drainingEC2ServiceCount", "EC2", "DRAINING"),
        ("drainingFargateServiceCount", "FARGATE", "DRAINING"),
    ] {
        let n: i64 = counts
            .services_by_launch_type
            .iter()
            .filter(|(l, s, _)| l == launch_type && s == status)
            .map(|(_, _, n)| *n)
            .sum();
        out.push(json!({"name": name, "value": n.to_string()}));
    }
    Value::Array(out)
}

/// A cluster as DescribeClusters shows it: counts derived from what the cluster holds, and the
/// optional parts only when `include` asks for them.
pub(crate) fn view(cluster: &Cluster, counts: ClusterCounts, include: &[&str]) -> crate::shapes::Cluster {
    let counts = &counts;
    let wants = |field: &str| include.contains(&field);
    let mut out = Map::new();
    out.insert("clusterArn".into(), cluster.cluster_arn.clone().into());
    out.insert("clusterName".into(), cluster.cluster_name.clone().into());
    out.insert("status".into(), cluster.status.as_str().into());
    out.insert(
        "registeredContainerInstancesCount".into(),
        counts.registered_container_instances.into(),
    );
    out.insert("runningTasksCount".into(), counts.running_tasks.into());
    out.insert("pendingTasksCount".into(), counts.pending_tasks.into());
    out.insert("activeServicesCount".into(), counts.active_services.into());
    out.insert(
        "statistics".into(),
        if wants("STATISTICS") {
            statistics(counts)
        } else {
            json!([])
        },
    );
    for (member, field) in [
        ("tags", "TAGS"),
        ("settings", "SETTINGS"),
        ("configuration", "CONFIGURATIONS"),
    ] {
        if let Some(value) = cluster.options.get(member).filter(|_| wants(field)) {
            out.insert(member.into(), value.clone());
        }
    }
    if !wants("TAGS") {
        out.insert("tags".into(), json!([]));
    }
    for member in ["capacityProviders", "defaultCapacityProviderStrategy"] {
        out.insert(
            member.into(),
            cluster.options.get(member).cloned().unwrap_or_else(|| json!([])),
        );
    }
    if let Some(defaults) = cluster.options.get("serviceConnectDefaults") {
        out.insert("serviceConnectDefaults".into(), defaults.clone());
    }
    crate::shapes::Cluster(Value::Object(out).into())
}
