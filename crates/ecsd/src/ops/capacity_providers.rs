//! Capacity providers: Create/Update/Delete/DescribeCapacityProviders and
//! PutClusterCapacityProviders, the checks a cluster's providers and strategies pass, and
//! [`split`], how a strategy spreads tasks over its providers (base first, then by weight).
//! FARGATE and FARGATE_SPOT always exist and are not stored; a provider of an Auto Scaling group
//! runs its tasks on the cluster's instances that name it in their `ecsd.capacity-provider`
//! attribute (the attribute a real agent registers with through `ECS_INSTANCE_ATTRIBUTES`).

use serde_json::{json, Value};

use super::tags::check_tags;
use super::{active_cluster, clusters, failure, Ctx, Page};
use crate::domain::is_valid_name;
use crate::domain::records::{CapacityProviderRecord, Cluster, ContainerInstance, Task};
use crate::domain::status::ClusterStatus;
use crate::error::{ApiError, ErrorCode};
use crate::shapes::{
    AutoScalingGroupProvider, CapacityProvider, CapacityProviderField, CapacityProviderStatus,
    CapacityProviderStrategyItem, CapacityProviderType, CapacityProviderUpdateStatus, CreateCapacityProviderRequest,
    CreateCapacityProviderResponse, DeleteCapacityProviderRequest, DeleteCapacityProviderResponse,
    DescribeCapacityProvidersRequest, DescribeCapacityProvidersResponse, ManagedDraining, ManagedScaling,
    ManagedScalingStatus, ManagedTerminationProtection, PutClusterCapacityProvidersRequest,
    PutClusterCapacityProvidersResponse, UpdateCapacityProviderRequest, UpdateCapacityProviderResponse,
};
use crate::store::sql::Param;
use crate::store::{Filter, StoreExt, Tx};

/// The providers ecsd itself is the capacity of.
pub const FARGATE_PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];
/// The attribute naming the capacity provider an instance belongs to.
pub const INSTANCE_ATTRIBUTE: &str = "ecsd.capacity-provider";
const MAX_STRATEGY: usize = 20;

fn provider_arn(tx: &Tx<'_>, name: &str) -> String {
    let scope = tx.scope();
    format!(
        "arn:aws:ecs:{}:{}:capacity-provider/{name}",
        scope.region, scope.account
    )
}

/// The provider an instance belongs to, if any.
pub fn of_instance(instance: &ContainerInstance) -> Option<&str> {
    instance
        .attributes
        .iter()
        .find(|a| a.name == INSTANCE_ATTRIBUTE)
        .and_then(|a| a.value.as_deref())
}

/// The provider a task runs on, if any.
pub fn of_task(task: &Task) -> Option<&str> {
    task.extra.get("capacityProviderName").and_then(Value::as_str)
}

fn not_found() -> ApiError {
    ApiError::invalid_parameter(
        "The specified capacity provider does not exist. Specify a valid name or ARN and try again.",
    )
}

/// A provider by name or ARN, as stored (FARGATE and FARGATE_SPOT are not).
fn find(tx: &mut Tx<'_>, reference: &str) -> Result<Option<CapacityProviderRecord>, ApiError> {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    if reference.starts_with("arn:") && provider_arn(tx, name) != reference {
        return Ok(None);
    }
    Ok(tx.get::<CapacityProviderRecord>(&[Param::Text(name)])?)
}

fn view(record: &CapacityProviderRecord, with_tags: bool) -> CapacityProvider {
    CapacityProvider {
        capacity_provider_arn: Some(record.capacity_provider_arn.clone()),
        name: Some(record.name.clone()),
        status: Some(if record.status == "ACTIVE" {
            CapacityProviderStatus::Active
        } else {
            CapacityProviderStatus::Inactive
        }),
        auto_scaling_group_provider: Some(record.auto_scaling_group_provider.clone()),
        update_status: record
            .update_status
            .as_deref()
            .and_then(|s| serde_json::from_value::<CapacityProviderUpdateStatus>(s.into()).ok()),
        update_status_reason: record.update_status_reason.clone(),
        tags: Some(if with_tags { record.tags.clone() } else { Vec::new() }),
        r#type: Some(CapacityProviderType::Ec2Autoscaling),
        ..CapacityProvider::default()
    }
}

fn fargate_view(tx: &Tx<'_>, name: &str) -> CapacityProvider {
    CapacityProvider {
        capacity_provider_arn: Some(provider_arn(tx, name)),
        name: Some(name.to_owned()),
        status: Some(CapacityProviderStatus::Active),
        tags: Some(Vec::new()),
        r#type: Some(if name == "FARGATE" {
            CapacityProviderType::Fargate
        } else {
            CapacityProviderType::FargateSpot
        }),
        ..CapacityProvider::default()
    }
}

/// ECS's defaults for what a request leaves out of managed scaling.
fn with_defaults(mut scaling: ManagedScaling) -> ManagedScaling {
    scaling.status.get_or_insert(ManagedScalingStatus::Disabled);
    scaling.target_capacity.get_or_insert(100);
    scaling.minimum_scaling_step_size.get_or_insert(1);
    scaling.maximum_scaling_step_size.get_or_insert(10000);
    scaling.instance_warmup_period.get_or_insert(300);
    scaling
}

fn check_scaling(provider: &AutoScalingGroupProvider) -> Result<(), ApiError> {
    let scaling = provider.managed_scaling.as_ref();
    if let (Some(min), Some(max)) = (
        scaling.and_then(|s| s.minimum_scaling_step_size),
        scaling.and_then(|s| s.maximum_scaling_step_size),
    ) {
        if min > max {
            return Err(ApiError::invalid_parameter(
                "The minimumScalingStepSize must be less than or equal to the maximumScalingStepSize.",
            ));
        }
    }
    let scaling_on = scaling.and_then(|s| s.status) == Some(ManagedScalingStatus::Enabled);
    if provider.managed_termination_protection == Some(ManagedTerminationProtection::Enabled) && !scaling_on {
        return Err(ApiError::invalid_parameter(
            "The managed termination protection setting for the capacity provider is invalid. To enable managed termination protection for a capacity provider, the capacity provider must have managed scaling enabled.",
        ));
    }
    Ok(())
}

pub async fn create_capacity_provider(
    ctx: &Ctx,
    req: CreateCapacityProviderRequest,
) -> Result<CreateCapacityProviderResponse, ApiError> {
    let lower = req.name.to_ascii_lowercase();
    if !is_valid_name(&req.name) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'name': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    if ["aws", "ecs", "fargate"].iter().any(|p| lower.starts_with(p)) {
        return Err(ApiError::invalid_parameter(
            "The capacity provider name can't be prefixed with \"aws\", \"ecs\", or \"fargate\".",
        ));
    }
    if req.managed_instances_provider.is_some() {
        return Err(ApiError::new(
            ErrorCode::UnsupportedFeatureException,
            "Amazon ECS Managed Instances capacity providers are not supported by ecsd; use an autoScalingGroupProvider.",
        ));
    }
    let Some(mut provider) = req.auto_scaling_group_provider.clone() else {
        return Err(ApiError::invalid_parameter(
            "Invalid 'autoScalingGroupProvider': a capacity provider needs an Auto Scaling group.",
        ));
    };
    check_scaling(&provider)?;
    provider.managed_scaling = Some(with_defaults(provider.managed_scaling.unwrap_or_default()));
    provider
        .managed_termination_protection
        .get_or_insert(ManagedTerminationProtection::Disabled);
    provider.managed_draining.get_or_insert(ManagedDraining::Enabled);
    let tags = req.tags.clone().unwrap_or_default();
    check_tags(&tags)?;
    ctx.store
        .write(&ctx.scope, move |tx| {
            if let Some(cluster) = &req.cluster {
                active_cluster(tx, Some(cluster))?;
            }
            let existing = tx.list::<CapacityProviderRecord>(&[], &[Filter::Eq("status", "ACTIVE".into())], None, usize::MAX)?;
            if existing.iter().any(|p| p.name == req.name) {
                return Err(ApiError::client(
                    "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
                ));
            }
            if existing
                .iter()
                .any(|p| p.auto_scaling_group_provider.auto_scaling_group_arn == provider.auto_scaling_group_arn)
            {
                return Err(ApiError::client(
                    "The specified Auto Scaling group is already used by another capacity provider.",
                ));
            }
            let record = CapacityProviderRecord {
                capacity_provider_arn: provider_arn(tx, &req.name),
                name: req.name.clone(),
                status: "ACTIVE".into(),
                auto_scaling_group_provider: provider.clone(),
                update_status: None,
                update_status_reason: None,
                tags: tags.clone(),
                scaler: Default::default(),
            };
            tx.put(&record)?;
            Ok(CreateCapacityProviderResponse {
                capacity_provider: Some(view(&record, true)),
            })
        })
        .await
}

pub async fn update_capacity_provider(
    ctx: &Ctx,
    req: UpdateCapacityProviderRequest,
) -> Result<UpdateCapacityProviderResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            if FARGATE_PROVIDERS.contains(&req.name.as_str()) {
                return Err(ApiError::invalid_parameter(
                    "The FARGATE and FARGATE_SPOT capacity providers are reserved and cannot be updated.",
                ));
            }
            let mut record = find(tx, &req.name)?
                .filter(|p| p.status == "ACTIVE")
                .ok_or_else(not_found)?;
            if let Some(update) = &req.auto_scaling_group_provider {
                let mut provider = record.auto_scaling_group_provider.clone();
                if let Some(scaling) = &update.managed_scaling {
                    let mut merged = provider.managed_scaling.clone().unwrap_or_default();
                    merged.status = scaling.status.or(merged.status);
                    merged.target_capacity = scaling.target_capacity.or(merged.target_capacity);
                    merged.minimum_scaling_step_size =
                        scaling.minimum_scaling_step_size.or(merged.minimum_scaling_step_size);
                    merged.maximum_scaling_step_size =
                        scaling.maximum_scaling_step_size.or(merged.maximum_scaling_step_size);
                    merged.instance_warmup_period = scaling.instance_warmup_period.or(merged.instance_warmup_period);
                    provider.managed_scaling = Some(with_defaults(merged));
                }
                if let Some(protection) = update.managed_termination_protection {
                    provider.managed_termination_protection = Some(protection);
                }
                if let Some(draining) = update.managed_draining {
                    provider.managed_draining = Some(draining);
                }
                check_scaling(&provider)?;
                record.auto_scaling_group_provider = provider;
            }
            record.update_status = Some("UPDATE_COMPLETE".into());
            record.update_status_reason = None;
            tx.put(&record)?;
            Ok(UpdateCapacityProviderResponse {
                capacity_provider: Some(view(&record, true)),
            })
        })
        .await
}

/// The ACTIVE clusters whose providers include `name`.
pub(crate) fn clusters_with(tx: &mut Tx<'_>, name: &str) -> Result<Vec<Cluster>, ApiError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = tx.list_clusters(after.as_deref(), 100)?;
        let Some(last) = page.last() else { break };
        after = Some(last.cluster_name.clone());
        out.extend(
            page.into_iter()
                .filter(|c| c.status == ClusterStatus::Active && providers_of(c).iter().any(|p| p == name)),
        );
    }
    Ok(out)
}

/// The providers associated with a cluster.
pub fn providers_of(cluster: &Cluster) -> Vec<String> {
    cluster
        .options
        .get("capacityProviders")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A cluster's default strategy.
pub fn default_strategy(cluster: &Cluster) -> Vec<CapacityProviderStrategyItem> {
    cluster
        .options
        .get("defaultCapacityProviderStrategy")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

pub async fn delete_capacity_provider(
    ctx: &Ctx,
    req: DeleteCapacityProviderRequest,
) -> Result<DeleteCapacityProviderResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let name = req.capacity_provider.rsplit('/').next().unwrap_or_default().to_owned();
            if FARGATE_PROVIDERS.contains(&name.as_str()) {
                return Err(ApiError::invalid_parameter(
                    "The specified capacity provider is reserved and cannot be deleted.",
                ));
            }
            let mut record = find(tx, &req.capacity_provider)?
                .filter(|p| p.status == "ACTIVE")
                .ok_or_else(not_found)?;
            let associated = clusters_with(tx, &name)?;
            if let Some(cluster) = associated.first() {
                // As in ECS: the provider stays, and says why it could not go.
                record.update_status = Some("DELETE_FAILED".into());
                record.update_status_reason = Some(format!(
                    "The capacity provider cannot be deleted because it is associated with cluster: {}. Remove the capacity provider from the cluster and try again.",
                    cluster.cluster_name
                ));
            } else {
                record.status = "INACTIVE".into();
                record.update_status = Some("DELETE_COMPLETE".into());
                record.update_status_reason = None;
            }
            tx.put(&record)?;
            Ok(DeleteCapacityProviderResponse {
                capacity_provider: Some(view(&record, true)),
            })
        })
        .await
}

pub async fn describe_capacity_providers(
    ctx: &Ctx,
    req: DescribeCapacityProvidersRequest,
) -> Result<DescribeCapacityProvidersResponse, ApiError> {
    let with_tags = req
        .include
        .as_deref()
        .unwrap_or_default()
        .contains(&CapacityProviderField::Tags);
    let page = Page::new("capacity-providers", req.max_results, req.next_token.as_deref())?;
    ctx.store
        .read(&ctx.scope, move |tx| {
            let (mut shown, mut failures) = (Vec::new(), Vec::new());
            let Some(references) = req.capacity_providers.clone() else {
                let mut all: Vec<CapacityProvider> =
                    FARGATE_PROVIDERS.iter().map(|name| fargate_view(tx, name)).collect();
                let stored =
                    tx.list::<CapacityProviderRecord>(&[], &[Filter::Eq("status", "ACTIVE".into())], None, usize::MAX)?;
                all.extend(stored.iter().map(|r| view(r, with_tags)));
                let all: Vec<CapacityProvider> = all
                    .into_iter()
                    .filter(|p| page.after.as_ref().is_none_or(|a| p.name.as_ref() > Some(a)))
                    .take(page.fetch())
                    .collect();
                let (all, next_token) = page.finish(all, |p| p.name.clone().unwrap_or_default());
                return Ok(DescribeCapacityProvidersResponse {
                    capacity_providers: Some(all),
                    failures: Some(Vec::new()),
                    next_token,
                });
            };
            for reference in &references {
                let name = reference.rsplit('/').next().unwrap_or(reference);
                if FARGATE_PROVIDERS.contains(&name) {
                    shown.push(fargate_view(tx, name));
                    continue;
                }
                match find(tx, reference)? {
                    Some(record) => shown.push(view(&record, with_tags)),
                    None => failures.push(failure(reference, "MISSING")),
                }
            }
            Ok(DescribeCapacityProvidersResponse {
                capacity_providers: Some(shown),
                failures: Some(failures),
                next_token: None,
            })
        })
        .await
}

/// Checks a strategy on its own: at most one base, some weight, one kind of provider.
pub fn check_strategy(strategy: &[CapacityProviderStrategyItem]) -> Result<(), ApiError> {
    if strategy.len() > MAX_STRATEGY {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'capacityProviderStrategy': at most {MAX_STRATEGY} capacity providers are allowed."
        )));
    }
    if strategy.iter().filter(|i| i.base.unwrap_or(0) > 0).count() > 1 {
        return Err(ApiError::invalid_parameter(
            "A capacity provider strategy can have a base value greater than 0 for only one capacity provider.",
        ));
    }
    if !strategy.is_empty() && strategy.iter().all(|i| i.weight.unwrap_or(0) == 0) {
        return Err(ApiError::invalid_parameter(
            "A capacity provider strategy must have at least one capacity provider with a weight greater than 0.",
        ));
    }
    let fargate = strategy
        .iter()
        .filter(|i| FARGATE_PROVIDERS.contains(&i.capacity_provider.as_str()))
        .count();
    if fargate > 0 && fargate < strategy.len() {
        return Err(ApiError::invalid_parameter(
            "A capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.",
        ));
    }
    let mut names: Vec<&str> = strategy.iter().map(|i| i.capacity_provider.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(ApiError::invalid_parameter(
            "A capacity provider strategy cannot name a capacity provider twice.",
        ));
    }
    Ok(())
}

/// Checks that `strategy` may be used on `cluster`: each provider associated with it.
pub fn check_strategy_on(cluster: &Cluster, strategy: &[CapacityProviderStrategyItem]) -> Result<(), ApiError> {
    check_strategy(strategy)?;
    let providers = providers_of(cluster);
    if strategy.iter().any(|i| !providers.contains(&i.capacity_provider)) {
        return Err(ApiError::invalid_parameter(
            "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
        ));
    }
    Ok(())
}

/// Checks a cluster's providers and default strategy (CreateCluster,
/// PutClusterCapacityProviders): each provider exists and is ACTIVE, and one of an Auto Scaling
/// group belongs to no other cluster.
pub fn check_association(
    tx: &mut Tx<'_>,
    cluster: &str,
    providers: &[String],
    strategy: &[CapacityProviderStrategyItem],
) -> Result<(), ApiError> {
    for name in providers {
        if FARGATE_PROVIDERS.contains(&name.as_str()) {
            continue;
        }
        find(tx, name)?.filter(|p| p.status == "ACTIVE").ok_or_else(not_found)?;
        if clusters_with(tx, name)?.iter().any(|c| c.cluster_name != cluster) {
            return Err(ApiError::invalid_parameter(format!(
                "The capacity provider {name} is already associated with another cluster; a capacity provider of an Auto Scaling group can be associated with one cluster only."
            )));
        }
    }
    let probe = Cluster {
        cluster_arn: String::new(),
        cluster_name: cluster.to_owned(),
        status: ClusterStatus::Active,
        options: [("capacityProviders".to_owned(), json!(providers))]
            .into_iter()
            .collect(),
    };
    check_strategy_on(&probe, strategy)
}

pub async fn put_cluster_capacity_providers(
    ctx: &Ctx,
    req: PutClusterCapacityProvidersRequest,
) -> Result<PutClusterCapacityProvidersResponse, ApiError> {
    let providers: Vec<String> = req
        .capacity_providers
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
        .collect();
    ctx.store
        .write(&ctx.scope, move |tx| {
            let name = active_cluster(tx, Some(&req.cluster))?;
            let mut cluster = tx.cluster(&name)?.ok_or_else(ApiError::cluster_not_found)?;
            check_association(tx, &name, &providers, &req.default_capacity_provider_strategy)?;
            let removed: Vec<String> = providers_of(&cluster)
                .into_iter()
                .filter(|p| !providers.contains(p))
                .collect();
            if !removed.is_empty() {
                let live = tx.list::<Task>(
                    &[Param::Text(&name)],
                    &[Filter::Ne("last_status", "STOPPED".into())],
                    None,
                    usize::MAX,
                )?;
                if live
                    .iter()
                    .any(|t| of_task(t).is_some_and(|p| removed.iter().any(|r| r == p)))
                {
                    return Err(ApiError::new(
                        ErrorCode::ResourceInUseException,
                        "The specified capacity provider is in use and cannot be removed.",
                    ));
                }
            }
            cluster.options.insert("capacityProviders".into(), json!(providers));
            cluster.options.insert(
                "defaultCapacityProviderStrategy".into(),
                serde_json::to_value(&req.default_capacity_provider_strategy).unwrap_or_else(|_| json!([])),
            );
            tx.put(&cluster)?;
            let counts = tx.cluster_counts(&name)?;
            Ok(PutClusterCapacityProvidersResponse {
                cluster: Some(clusters::view(&cluster, counts, &clusters::ALL_FIELDS)),
            })
        })
        .await
}

/// Which provider of `strategy` each of `count` new tasks goes to (indexes into `strategy`),
/// given how many tasks each runs already: the provider with a base not yet met first, then
/// the one furthest below its share by weight (ties: the first listed).
pub fn split(strategy: &[CapacityProviderStrategyItem], running: &[i64], count: usize) -> Vec<usize> {
    let mut counts = running.to_vec();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let below_base = strategy
            .iter()
            .enumerate()
            .find(|(i, item)| counts[*i] < i64::from(item.base.unwrap_or(0)));
        let chosen = match below_base {
            Some((i, _)) => Some(i),
            None => strategy
                .iter()
                .enumerate()
                .filter(|(_, item)| item.weight.unwrap_or(0) > 0)
                // The share after one more: (count - base + 1) / weight, compared without division.
                .min_by(|(a, x), (b, y)| {
                    let share = |i: usize, item: &CapacityProviderStrategyItem| {
                        (
                            counts[i] - i64::from(item.base.unwrap_or(0)) + 1,
                            i64::from(item.weight.unwrap_or(0)),
                        )
                    };
                    let ((na, wa), (nb, wb)) = (share(*a, x), share(*b, y));
                    (na * wb).cmp(&(nb * wa)).then(a.cmp(b))
                })
                .map(|(i, _)| i),
        };
        let Some(i) = chosen else { break };
        counts[i] += 1;
        out.push(i);
    }
    out
}

/// What a task is launched as for a provider: its launch type (FARGATE for the Fargate
/// providers, EC2 for the others).
pub fn launch_type_of(provider: &str) -> &'static str {
    if FARGATE_PROVIDERS.contains(&provider) {
        "FARGATE"
    } else {
        "EC2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, weight: i32, base: i32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem {
            capacity_provider: name.to_owned(),
            weight: Some(weight),
            base: Some(base),
        }
    }

    fn counts(strategy: &[CapacityProviderStrategyItem], picks: &[usize]) -> Vec<usize> {
        let mut out = vec![0; strategy.len()];
        for p in picks {
            out[*p] += 1;
        }
        out
    }

    #[test]
    fn a_base_is_met_first_then_weights_share_the_rest() {
        let strategy = [item("A", 1, 2), item("B", 3, 0)];
        let picks = split(&strategy, &[0, 0], 10);
        assert_eq!(&picks[..2], &[0, 0]);
        assert_eq!(counts(&strategy, &picks), [4, 6]);
    }

    #[test]
    fn weights_alone_share_in_proportion() {
        let strategy = [item("A", 1, 0), item("B", 1, 0), item("C", 2, 0)];
        assert_eq!(counts(&strategy, &split(&strategy, &[0, 0, 0], 8)), [2, 2, 4]);
    }

    #[test]
    fn what_runs_already_counts() {
        let strategy = [item("A", 1, 0), item("B", 1, 0)];
        assert_eq!(counts(&strategy, &split(&strategy, &[4, 0], 4)), [0, 4]);
    }

    #[test]
    fn a_weight_of_zero_takes_only_its_base() {
        let strategy = [item("A", 0, 1), item("B", 1, 0)];
        assert_eq!(counts(&strategy, &split(&strategy, &[0, 0], 5)), [1, 4]);
    }

    #[test]
    fn strategies_are_checked() {
        assert!(check_strategy(&[item("A", 1, 1), item("B", 1, 1)]).is_err());
        assert!(check_strategy(&[item("A", 0, 0)]).is_err());
        assert!(check_strategy(&[item("FARGATE", 1, 0), item("asg", 1, 0)]).is_err());
        assert!(check_strategy(&[item("FARGATE", 1, 0), item("FARGATE_SPOT", 3, 2)]).is_ok());
    }
}
