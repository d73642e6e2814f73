//! CreateCluster, DescribeClusters, ListClusters.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::tags::check_tags;
use super::{active_cluster, arn_for, decode_token, failure, page_size, paginate, Ctx};
use crate::domain::is_valid_name;
use crate::domain::records::{Cluster, Tag};
use crate::domain::status::ClusterStatus;
use crate::error::{ApiError, ErrorCode};
use crate::store::{ClusterCounts, StoreExt, Tx};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateClusterRequest {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(flatten)]
    options: Map<String, Value>,
}

#[derive(Serialize)]
pub struct ClusterResponse {
    cluster: Value,
}

pub async fn create_cluster(ctx: &Ctx, req: CreateClusterRequest) -> Result<ClusterResponse, ApiError> {
    let name = req.cluster_name.unwrap_or_else(|| "default".into());
    if !is_valid_name(&name) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'clusterName': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    check_tags(&req.tags)?;
    let mut options = req.options;
    options.insert(
        "tags".into(),
        serde_json::to_value(&req.tags).unwrap_or_else(|_| json!([])),
    );
    ctx.store
        .write(&ctx.scope, move |tx| {
            // Creating a cluster that exists returns it unchanged, as ECS does.
            let cluster = match tx.cluster(&name)? {
                Some(existing) if existing.status == ClusterStatus::Active => existing,
                _ => {
                    let cluster = Cluster {
                        cluster_arn: tx.scope().cluster_arn(&name),
                        cluster_name: name.clone(),
                        status: ClusterStatus::Active,
                        options: options.clone(),
                    };
                    tx.put(&cluster)?;
                    cluster
                }
            };
            let counts = tx.cluster_counts(&name)?;
            Ok(ClusterResponse {
                cluster: view(&cluster, counts, &ALL_FIELDS),
            })
        })
        .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateClusterRequest {
    cluster: String,
    #[serde(flatten)]
    options: Map<String, Value>,
}

pub async fn update_cluster(ctx: &Ctx, req: UpdateClusterRequest) -> Result<ClusterResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let name = active_cluster(tx, Some(&req.cluster))?;
            let mut cluster = tx.cluster(&name)?.ok_or_else(ApiError::cluster_not_found)?;
            for (member, value) in &req.options {
                cluster.options.insert(member.clone(), value.clone());
            }
            tx.put(&cluster)?;
            let counts = tx.cluster_counts(&name)?;
            Ok(ClusterResponse {
                cluster: view(&cluster, counts, &ALL_FIELDS),
            })
        })
        .await
}

#[derive(Deserialize)]
pub struct DeleteClusterRequest {
    cluster: String,
}

pub async fn delete_cluster(ctx: &Ctx, req: DeleteClusterRequest) -> Result<ClusterResponse, ApiError> {
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
            Ok(ClusterResponse {
                cluster: view(&cluster, counts, &ALL_FIELDS),
            })
        })
        .await
}

#[derive(Deserialize)]
pub struct DescribeClustersRequest {
    clusters: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Serialize)]
pub struct DescribeClustersResponse {
    clusters: Vec<Value>,
    failures: Vec<Value>,
}

pub async fn describe_clusters(ctx: &Ctx, req: DescribeClustersRequest) -> Result<DescribeClustersResponse, ApiError> {
    let references = req.clusters.unwrap_or_else(|| vec!["default".into()]);
    if references.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'clusters': at most 100 clusters can be described at once.",
        ));
    }
    let include = req.include;
    ctx.store
        .read(&ctx.scope, move |tx| {
            let mut out = DescribeClustersResponse {
                clusters: Vec::new(),
                failures: Vec::new(),
            };
            for reference in &references {
                let found = match tx.scope().cluster_name(reference) {
                    Some(name) => tx.cluster(name)?,
                    None => None,
                };
                match found {
                    Some(cluster) => {
                        let counts = tx.cluster_counts(&cluster.cluster_name)?;
                        out.clusters.push(view(&cluster, counts, &include));
                    }
                    None => {
                        let arn = arn_for(reference, |name| tx.scope().cluster_arn(name));
                        out.failures.push(failure(&arn, "MISSING"));
                    }
                }
            }
            Ok(out)
        })
        .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListClustersRequest {
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListClustersResponse {
    cluster_arns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

pub async fn list_clusters(ctx: &Ctx, req: ListClustersRequest) -> Result<ListClustersResponse, ApiError> {
    let limit = page_size(req.max_results)?;
    let after = decode_token("clusters", req.next_token.as_deref())?;
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
    let (page, next_token) = paginate(clusters, limit, "clusters", |c| c.cluster_name.clone());
    Ok(ListClustersResponse {
        cluster_arns: page.into_iter().map(|c| c.cluster_arn).collect(),
        next_token,
    })
}

const ALL_FIELDS: [&str; 4] = ["TAGS", "SETTINGS", "CONFIGURATIONS", "STATISTICS"];

/// The `statistics` ECS reports with `include: STATISTICS`: task counts per launch type (ecsd
/// runs no services, so the service counts are zero).
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
    for name in [
        "activeEC2ServiceCount",
        "activeFargateServiceCount",
        "drainingEC2ServiceCount",
        "drainingFargateServiceCount",
    ] {
        out.push(json!({"name": name, "value": "0"}));
    }
    Value::Array(out)
}

/// A cluster as DescribeClusters shows it: counts derived from what the cluster holds, and the
/// optional parts only when `include` asks for them.
fn view<S: AsRef<str>>(cluster: &Cluster, counts: ClusterCounts, include: &[S]) -> Value {
    let counts = &counts;
    let wants = |field: &str| include.iter().any(|i| i.as_ref() == field);
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
    out.insert("activeServicesCount".into(), 0.into());
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
    Value::Object(out)
}
