//! RegisterContainerInstance, DescribeContainerInstances, ListContainerInstances.
//!
//! Registration answers with every attribute the agent sent, unchanged: the real agent exits
//! for good when one is missing or altered.

use serde_json::Value;

use super::tags::check_tags;
use super::tasks::id_of;
use super::{active_cluster, arn_for, failure, Ctx, Page};
use crate::domain::placement::{remaining_resources, Candidate};
use crate::domain::query;
use crate::domain::records::{Attribute, ContainerInstance, Resource};
use crate::domain::status::ContainerInstanceStatus;
use crate::domain::{events, new_id, now};
use crate::error::{ApiError, ErrorCode};
use crate::shapes::{
    ContainerInstanceField, DeleteAttributesRequest, DeleteAttributesResponse, DeregisterContainerInstanceRequest,
    DeregisterContainerInstanceResponse, DescribeContainerInstancesRequest, DescribeContainerInstancesResponse,
    ListAttributesRequest, ListAttributesResponse, ListContainerInstancesRequest, ListContainerInstancesResponse,
    PutAttributesRequest, PutAttributesResponse, RegisterContainerInstanceRequest, RegisterContainerInstanceResponse,
    TargetType, UpdateContainerInstancesStateRequest, UpdateContainerInstancesStateResponse,
};
use crate::store::{StoreError, StoreExt, Tx};

const MAX_CUSTOM_ATTRIBUTES: usize = 10;
const MAX_ATTRIBUTE_LEN: usize = 128;

pub async fn register_container_instance(
    ctx: &Ctx,
    req: RegisterContainerInstanceRequest,
) -> Result<RegisterContainerInstanceResponse, ApiError> {
    let attributes = req.attributes.unwrap_or_default();
    let tags = req.tags.unwrap_or_default();
    let total_resources = req.total_resources.unwrap_or_default();
    check_attributes(&attributes)?;
    check_tags(&tags)?;
    check_resources(&total_resources)?;
    let version_info = req.version_info.map(|v| serde_json::to_value(v).unwrap_or(Value::Null));
    let ec2_instance_id = req
        .instance_identity_document
        .as_deref()
        .and_then(|doc| serde_json::from_str::<Value>(doc).ok())
        .and_then(|doc| doc.get("instanceId").and_then(Value::as_str).map(str::to_owned));
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let scope = tx.scope().clone();
            // An agent re-registering from its checkpoint keeps its identity.
            let previous_id = req
                .container_instance_arn
                .as_deref()
                .and_then(|arn| scope.id_in(arn, "container-instance", &cluster))
                .map(str::to_owned);
            let previous = match &previous_id {
                Some(id) => tx.container_instance(&cluster, id)?,
                None => None,
            };
            // Deregistration is final: an agent holding a deregistered identity registers anew.
            if let Some(p) = previous.as_ref().filter(|p| p.status == ContainerInstanceStatus::Inactive) {
                return Err(ApiError::client(format!(
                    "Container instance {} is inactive and cannot be registered again; register without containerInstanceArn.",
                    p.container_instance_arn
                )));
            }
            let id = previous_id.unwrap_or_else(new_id);
            let instance = ContainerInstance {
                container_instance_arn: scope.container_instance_arn(&cluster, &id),
                ec2_instance_id: ec2_instance_id
                    .clone()
                    .or_else(|| previous.as_ref().and_then(|p| p.ec2_instance_id.clone()))
                    .or_else(|| Some(format!("mi-{}", &new_id()[..17]))),
                version: previous.as_ref().map_or(1, |p| p.version + 1),
                // Agents tell their versions on their ACS connection, not here: keep those.
                version_info: version_info
                    .clone()
                    .or_else(|| previous.as_ref().and_then(|p| p.version_info.clone())),
                registered_resources: total_resources.clone(),
                status: ContainerInstanceStatus::Active,
                agent_connected: previous.as_ref().is_some_and(|p| p.agent_connected),
                attributes: attributes.clone(),
                registered_at: previous.as_ref().map_or_else(now, |p| p.registered_at),
                attachments: previous.as_ref().map(|p| p.attachments.clone()).unwrap_or_default(),
                tags: tags.clone(),
                health_status: previous.and_then(|p| p.health_status),
            };
            save_instance(tx, &cluster, &id, &instance)?;
            Ok(RegisterContainerInstanceResponse {
                container_instance: Some(shown(view(tx, &cluster, &id, instance, Include::ALL)?)),
            })
        })
        .await
}

/// An instance registers what it has: no negative amounts, no port outside 0..=65535.
fn check_resources(resources: &[Resource]) -> Result<(), ApiError> {
    for (i, r) in resources.iter().enumerate() {
        let negative = r.integer_value.is_some_and(|v| v < 0)
            || r.long_value.is_some_and(|v| v < 0)
            || r.double_value.is_some_and(|v| !(v >= 0.0 && v.is_finite()));
        if negative {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'totalResources[{i}]': {} cannot be negative.",
                r.name.as_deref().unwrap_or("a resource")
            )));
        }
        let bad_port = r
            .string_set_value
            .iter()
            .flatten()
            .find(|p| matches!(r.name.as_deref(), Some("PORTS" | "PORTS_UDP")) && p.trim().parse::<u16>().is_err());
        if let Some(port) = bad_port {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'totalResources[{i}].stringSetValue': '{port}' is not a port."
            )));
        }
    }
    Ok(())
}

fn check_attributes(attributes: &[Attribute]) -> Result<(), ApiError> {
    let mut custom = 0;
    for (i, a) in attributes.iter().enumerate() {
        let valid_name = !a.name.is_empty()
            && a.name.len() <= MAX_ATTRIBUTE_LEN
            && a.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./\\:@".contains(&b));
        if !valid_name {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'attributes[{i}].name': up to {MAX_ATTRIBUTE_LEN} letters, numbers, hyphens, underscores, periods, slashes, colons and at signs are allowed."
            )));
        }
        if a.value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > MAX_ATTRIBUTE_LEN)
        {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'attributes[{i}].value': it must be 1 to {MAX_ATTRIBUTE_LEN} characters long."
            )));
        }
        if is_custom(&a.name) {
            custom += 1;
        }
    }
    if custom > MAX_CUSTOM_ATTRIBUTES {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'attributes': at most {MAX_CUSTOM_ATTRIBUTES} custom attributes are allowed."
        )));
    }
    Ok(())
}

/// Stores a changed container instance and appends its state-change event.
pub(crate) fn save_instance(
    tx: &mut Tx<'_>,
    cluster: &str,
    id: &str,
    instance: &ContainerInstance,
) -> Result<(), StoreError> {
    tx.put(instance)?;
    let mut detail = match view(tx, cluster, id, instance.clone(), Include::NONE)? {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    detail.insert("clusterArn".into(), tx.scope().cluster_arn(cluster).into());
    let time = now();
    let arn = instance.container_instance_arn.clone();
    let event = events::envelope(tx.scope(), events::INSTANCE_STATE_CHANGE, &arn, &detail, time);
    let notice = events::Notice::Instance {
        instance_arn: arn.clone(),
    }
    .encode();
    tx.append_event(cluster, events::INSTANCE_STATE_CHANGE, time, &event, Some(&notice))
}

/// Attributes other than the ones ECS and its agent define count against the limit.
fn is_custom(name: &str) -> bool {
    !name.starts_with("ecs.") && !name.starts_with("com.amazonaws.ecs.")
}

/// The optional members a container instance is shown with (`include` of
/// DescribeContainerInstances).
#[derive(Clone, Copy)]
struct Include {
    tags: bool,
    health: bool,
}

impl Include {
    const ALL: Include = Include {
        tags: true,
        health: true,
    };
    const NONE: Include = Include {
        tags: false,
        health: false,
    };
}

fn shown(view: Value) -> crate::shapes::ContainerInstance {
    crate::shapes::ContainerInstance(view.into())
}

/// A container instance as ECS shows it: remaining resources and task counts derived from
/// the tasks that hold resources on it.
fn view(
    tx: &mut Tx<'_>,
    cluster: &str,
    id: &str,
    instance: ContainerInstance,
    include: Include,
) -> Result<Value, StoreError> {
    let load = tx.instance_load(cluster, id)?;
    let remaining = remaining_resources(&instance.registered_resources, &load);
    let provider = super::capacity_providers::of_instance(&instance).map(str::to_owned);
    let mut out = serde_json::to_value(instance)?;
    let map = out.as_object_mut().expect("a record serializes as an object");
    if let Some(provider) = provider {
        map.insert("capacityProviderName".into(), provider.into());
    }
    map.insert("remainingResources".into(), serde_json::to_value(remaining)?);
    map.insert("runningTasksCount".into(), load.running.into());
    map.insert("pendingTasksCount".into(), load.pending.into());
    if !include.tags {
        map.remove("tags");
    }
    if !include.health {
        map.remove("healthStatus");
    }
    Ok(out)
}

pub async fn describe_container_instances(
    ctx: &Ctx,
    req: DescribeContainerInstancesRequest,
) -> Result<DescribeContainerInstancesResponse, ApiError> {
    let wanted = req.include.unwrap_or_default();
    if req.container_instances.is_empty() || req.container_instances.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'containerInstances': between 1 and 100 container instances can be described at once.",
        ));
    }
    let include = Include {
        tags: wanted.contains(&ContainerInstanceField::Tags),
        health: wanted.contains(&ContainerInstanceField::ContainerInstanceHealth),
    };
    ctx.store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let scope = tx.scope().clone();
            let (mut shown_instances, mut failures) = (Vec::new(), Vec::new());
            for reference in &req.container_instances {
                let found = match scope.id_in(reference, "container-instance", &cluster) {
                    Some(id) => tx.container_instance(&cluster, id)?.map(|i| (id.to_owned(), i)),
                    None => None,
                };
                match found {
                    Some((id, instance)) => shown_instances.push(shown(view(tx, &cluster, &id, instance, include)?)),
                    None => {
                        let arn = arn_for(reference, |id| scope.container_instance_arn(&cluster, id));
                        failures.push(failure(&arn, "MISSING"));
                    }
                }
            }
            Ok(DescribeContainerInstancesResponse {
                container_instances: Some(shown_instances),
                failures: Some(failures),
            })
        })
        .await
}

pub async fn list_container_instances(
    ctx: &Ctx,
    req: ListContainerInstancesRequest,
) -> Result<ListContainerInstancesResponse, ApiError> {
    let filter = req.filter.as_deref().map(query::parse).transpose()?;
    let page = Page::new("container-instances", req.max_results, req.next_token.as_deref())?;
    let (limit, after) = (page.limit, page.after.clone());
    let status = req.status.map(ContainerInstanceStatus::from);
    let instances = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let Some(filter) = filter else {
                return Ok(tx.list_container_instances(&cluster, status, after.as_deref(), limit + 1)?);
            };
            let mut matching = Vec::new();
            for instance in tx.list_container_instances(&cluster, status, after.as_deref(), usize::MAX)? {
                let load = tx.instance_load(&cluster, id_of(&instance.container_instance_arn))?;
                let candidate = Candidate { instance, load };
                if filter.matches(&candidate.facts()) {
                    matching.push(candidate.instance);
                    if matching.len() > limit {
                        break;
                    }
                }
            }
            Ok::<_, ApiError>(matching)
        })
        .await?;
    let (instances, next_token) = page.finish(instances, |i| id_of(&i.container_instance_arn).to_owned());
    Ok(ListContainerInstancesResponse {
        container_instance_arns: Some(instances.into_iter().map(|i| i.container_instance_arn).collect()),
        next_token,
    })
}

/// An instance of `cluster` named by id or ARN, with its id.
fn find_instance(
    tx: &mut Tx<'_>,
    cluster: &str,
    reference: &str,
) -> Result<Option<(String, ContainerInstance)>, ApiError> {
    let scope = tx.scope().clone();
    let Some(id) = scope.id_in(reference, "container-instance", cluster) else {
        return Ok(None);
    };
    Ok(tx.container_instance(cluster, id)?.map(|i| (id.to_owned(), i)))
}

pub async fn deregister_container_instance(
    ctx: &Ctx,
    req: DeregisterContainerInstanceRequest,
) -> Result<DeregisterContainerInstanceResponse, ApiError> {
    let force = req.force.unwrap_or(false);
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let (id, mut instance) = find_instance(tx, &cluster, &req.container_instance)?
                .ok_or_else(|| ApiError::invalid_parameter("The referenced container instance was not found."))?;
            let load = tx.instance_load(&cluster, &id)?;
            if !force && load.running + load.pending > 0 {
                return Err(ApiError::invalid_parameter(
                    "The container instance has tasks that are not stopped; deregister it with force to orphan them.",
                ));
            }
            if instance.status != ContainerInstanceStatus::Inactive {
                instance.status = ContainerInstanceStatus::Inactive;
                instance.version += 1;
                save_instance(tx, &cluster, &id, &instance)?;
            }
            Ok(DeregisterContainerInstanceResponse {
                container_instance: Some(shown(view(tx, &cluster, &id, instance, Include::ALL)?)),
            })
        })
        .await
}

pub async fn update_container_instances_state(
    ctx: &Ctx,
    req: UpdateContainerInstancesStateRequest,
) -> Result<UpdateContainerInstancesStateResponse, ApiError> {
    let status = match ContainerInstanceStatus::from(req.status) {
        status @ (ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining) => status,
        _ => {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'status' {}: container instances can only be set to ACTIVE or DRAINING.",
                req.status.as_str()
            )))
        }
    };
    if req.container_instances.is_empty() || req.container_instances.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'containerInstances': between 1 and 10 container instances can be updated at once.",
        ));
    }
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let (mut updated, mut failures) = (Vec::new(), Vec::new());
            for reference in &req.container_instances {
                let arn = arn_for(reference, |id| tx.scope().container_instance_arn(&cluster, id));
                let Some((id, mut instance)) = find_instance(tx, &cluster, reference)? else {
                    failures.push(failure(&arn, "MISSING"));
                    continue;
                };
                if instance.status == ContainerInstanceStatus::Inactive {
                    failures.push(failure(&arn, "INACTIVE"));
                    continue;
                }
                if instance.status != status {
                    instance.status = status;
                    instance.version += 1;
                    save_instance(tx, &cluster, &id, &instance)?;
                }
                updated.push(shown(view(tx, &cluster, &id, instance, Include::NONE)?));
            }
            Ok(UpdateContainerInstancesStateResponse {
                container_instances: Some(updated),
                failures: Some(failures),
            })
        })
        .await
}

/// The instance each attribute of a Put/DeleteAttributes targets.
fn attribute_targets(
    tx: &mut Tx<'_>,
    cluster: &str,
    attributes: &[Attribute],
) -> Result<Vec<(String, ContainerInstance)>, ApiError> {
    let mut targets: Vec<(String, ContainerInstance)> = Vec::new();
    for (i, attribute) in attributes.iter().enumerate() {
        // The model's only target type is container-instance.
        let target = attribute.target_id.as_deref().ok_or_else(|| {
            ApiError::invalid_parameter(format!("Invalid 'attributes[{i}].targetId': the target is required."))
        })?;
        let (id, instance) = find_instance(tx, cluster, target)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::TargetNotFoundException,
                format!("Could not find the target '{target}' in cluster '{cluster}'."),
            )
        })?;
        if !targets.iter().any(|(known, _)| *known == id) {
            targets.push((id, instance));
        }
    }
    Ok(targets)
}

fn targets_instance(attribute: &Attribute, tx: &Tx<'_>, cluster: &str, id: &str) -> bool {
    attribute
        .target_id
        .as_deref()
        .and_then(|t| tx.scope().resource_id(t, "container-instance").map(|r| r.id.to_owned()))
        .is_some_and(|target| target == id)
        || attribute.target_id.as_deref() == Some(&tx.scope().container_instance_arn(cluster, id))
}

pub async fn put_attributes(ctx: &Ctx, req: PutAttributesRequest) -> Result<PutAttributesResponse, ApiError> {
    if req.attributes.is_empty() || req.attributes.len() > MAX_CUSTOM_ATTRIBUTES {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'attributes': between 1 and {MAX_CUSTOM_ATTRIBUTES} attributes can be put at once."
        )));
    }
    check_attributes(&req.attributes)?;
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            for (id, mut instance) in attribute_targets(tx, &cluster, &req.attributes)? {
                for attribute in req.attributes.iter().filter(|a| targets_instance(a, tx, &cluster, &id)) {
                    let stored = Attribute {
                        name: attribute.name.clone(),
                        value: attribute.value.clone(),
                        target_type: None,
                        target_id: None,
                    };
                    match instance.attributes.iter_mut().find(|a| a.name == attribute.name) {
                        Some(existing) => *existing = stored,
                        None => instance.attributes.push(stored),
                    }
                }
                let custom = instance.attributes.iter().filter(|a| is_custom(&a.name)).count();
                if custom > MAX_CUSTOM_ATTRIBUTES {
                    return Err(ApiError::new(
                        ErrorCode::AttributeLimitExceededException,
                        format!("A container instance can have at most {MAX_CUSTOM_ATTRIBUTES} custom attributes."),
                    ));
                }
                save_instance(tx, &cluster, &id, &instance)?;
            }
            Ok(PutAttributesResponse {
                attributes: Some(req.attributes.clone()),
            })
        })
        .await
}

pub async fn delete_attributes(ctx: &Ctx, req: DeleteAttributesRequest) -> Result<DeleteAttributesResponse, ApiError> {
    if req.attributes.is_empty() {
        return Err(ApiError::invalid_parameter(
            "Invalid 'attributes': at least one attribute is required.",
        ));
    }
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            for (id, mut instance) in attribute_targets(tx, &cluster, &req.attributes)? {
                let doomed: Vec<&str> = req
                    .attributes
                    .iter()
                    .filter(|a| targets_instance(a, tx, &cluster, &id))
                    .map(|a| a.name.as_str())
                    .collect();
                instance.attributes.retain(|a| !doomed.contains(&a.name.as_str()));
                save_instance(tx, &cluster, &id, &instance)?;
            }
            Ok(DeleteAttributesResponse {
                attributes: Some(req.attributes.clone()),
            })
        })
        .await
}

pub async fn list_attributes(ctx: &Ctx, req: ListAttributesRequest) -> Result<ListAttributesResponse, ApiError> {
    // The model's only target type is container-instance.
    if req.attribute_value.is_some() && req.attribute_name.is_none() {
        return Err(ApiError::invalid_parameter(
            "'attributeValue' can only be given with 'attributeName'.",
        ));
    }
    let page = Page::new("attributes", req.max_results, req.next_token.as_deref())?;
    let after = page.after.clone();
    let found = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let mut found = Vec::new();
            for instance in tx.list_container_instances(&cluster, None, None, usize::MAX)? {
                let id = id_of(&instance.container_instance_arn).to_owned();
                let mut attributes = instance.attributes.clone();
                attributes.sort_by(|a, b| a.name.cmp(&b.name));
                for a in attributes {
                    let key = format!("{id}\t{}", a.name);
                    let wanted = req.attribute_name.as_ref().is_none_or(|n| *n == a.name)
                        && req.attribute_value.as_ref().is_none_or(|v| Some(v) == a.value.as_ref())
                        && after.as_ref().is_none_or(|after| key > *after);
                    if wanted {
                        found.push((
                            key,
                            Attribute {
                                target_type: Some(TargetType::ContainerInstance),
                                target_id: Some(instance.container_instance_arn.clone()),
                                ..a
                            },
                        ));
                    }
                }
            }
            Ok::<_, ApiError>(found)
        })
        .await?;
    let (found, next_token) = page.finish(found, |(key, _)| key.clone());
    Ok(ListAttributesResponse {
        attributes: Some(found.into_iter().map(|(_, a)| a).collect()),
        next_token,
    })
}
