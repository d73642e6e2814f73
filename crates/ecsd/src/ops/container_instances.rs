//! RegisterContainerInstance, DescribeContainerInstances, ListContainerInstances.
//!
//! Registration answers with every attribute the agent sent, unchanged: the real agent exits
//! for good when one is missing or altered.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{active_cluster, decode_token, page_size, paginate, Ctx};
use crate::domain::placement::remaining_resources;
use crate::domain::records::{Attribute, ContainerInstance, Resource, Tag};
use crate::domain::{new_id, now};
use crate::error::ApiError;
use crate::store::{StoreError, StoreExt, Tx};

const MAX_CUSTOM_ATTRIBUTES: usize = 10;
const MAX_ATTRIBUTE_LEN: usize = 128;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterContainerInstanceRequest {
    cluster: Option<String>,
    instance_identity_document: Option<String>,
    #[serde(default)]
    total_resources: Vec<Resource>,
    version_info: Option<Value>,
    container_instance_arn: Option<String>,
    #[serde(default)]
    attributes: Vec<Attribute>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceResponse {
    container_instance: Value,
}

pub async fn register_container_instance(
    ctx: &Ctx,
    req: RegisterContainerInstanceRequest,
) -> Result<ContainerInstanceResponse, ApiError> {
    check_attributes(&req.attributes)?;
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
                .and_then(|arn| scope.resource_id(arn, "container-instance"))
                .filter(|r| r.cluster.is_none_or(|c| c == cluster))
                .map(|r| r.id.to_owned());
            let previous = match &previous_id {
                Some(id) => tx.container_instance(&cluster, id)?,
                None => None,
            };
            let id = previous_id.unwrap_or_else(new_id);
            let instance = ContainerInstance {
                container_instance_arn: scope.container_instance_arn(&cluster, &id),
                ec2_instance_id: ec2_instance_id
                    .clone()
                    .or_else(|| previous.as_ref().and_then(|p| p.ec2_instance_id.clone()))
                    .or_else(|| Some(format!("mi-{}", &new_id()[..17]))),
                version: previous.as_ref().map_or(1, |p| p.version + 1),
                version_info: req.version_info.clone(),
                registered_resources: req.total_resources.clone(),
                status: "ACTIVE".into(),
                agent_connected: false,
                attributes: req.attributes.clone(),
                registered_at: previous.as_ref().map_or_else(now, |p| p.registered_at),
                attachments: previous.as_ref().map(|p| p.attachments.clone()).unwrap_or_default(),
                tags: req.tags.clone(),
            };
            tx.put_container_instance(&cluster, &id, &instance)?;
            Ok(ContainerInstanceResponse {
                container_instance: view(tx, &cluster, &id, instance, true)?,
            })
        })
        .await
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
        if !a.name.starts_with("ecs.") && !a.name.starts_with("com.amazonaws.ecs.") {
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

/// A container instance as ECS shows it: remaining resources and task counts derived from
/// the tasks that hold resources on it.
fn view(
    tx: &mut dyn Tx,
    cluster: &str,
    id: &str,
    instance: ContainerInstance,
    with_tags: bool,
) -> Result<Value, StoreError> {
    let load = tx.instance_load(cluster, id)?;
    let remaining = remaining_resources(&instance.registered_resources, &load);
    let mut out = serde_json::to_value(instance)?;
    let map = out.as_object_mut().expect("a record serializes as an object");
    map.insert("remainingResources".into(), serde_json::to_value(remaining)?);
    map.insert("runningTasksCount".into(), load.running.into());
    map.insert("pendingTasksCount".into(), load.pending.into());
    if !with_tags {
        map.remove("tags");
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeContainerInstancesRequest {
    cluster: Option<String>,
    container_instances: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeContainerInstancesResponse {
    container_instances: Vec<Value>,
    failures: Vec<Value>,
}

pub async fn describe_container_instances(
    ctx: &Ctx,
    req: DescribeContainerInstancesRequest,
) -> Result<DescribeContainerInstancesResponse, ApiError> {
    if req.container_instances.is_empty() || req.container_instances.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'containerInstances': between 1 and 100 container instances can be described at once.",
        ));
    }
    let with_tags = req.include.iter().any(|i| i == "TAGS");
    ctx.store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let scope = tx.scope().clone();
            let mut out = DescribeContainerInstancesResponse {
                container_instances: Vec::new(),
                failures: Vec::new(),
            };
            for reference in &req.container_instances {
                let found = match scope
                    .resource_id(reference, "container-instance")
                    .filter(|r| r.cluster.is_none_or(|c| c == cluster))
                {
                    Some(r) => tx.container_instance(&cluster, r.id)?.map(|i| (r.id.to_owned(), i)),
                    None => None,
                };
                match found {
                    Some((id, instance)) => out
                        .container_instances
                        .push(view(tx, &cluster, &id, instance, with_tags)?),
                    None => {
                        let arn = if reference.starts_with("arn:") {
                            reference.clone()
                        } else {
                            scope.container_instance_arn(&cluster, reference)
                        };
                        out.failures.push(json!({"arn": arn, "reason": "MISSING"}));
                    }
                }
            }
            Ok(out)
        })
        .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListContainerInstancesRequest {
    cluster: Option<String>,
    filter: Option<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
    status: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListContainerInstancesResponse {
    container_instance_arns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

pub async fn list_container_instances(
    ctx: &Ctx,
    req: ListContainerInstancesRequest,
) -> Result<ListContainerInstancesResponse, ApiError> {
    if req.filter.is_some() {
        return Err(ApiError::invalid_parameter(
            "Invalid 'filter': cluster query language filters are not supported by this server yet.",
        ));
    }
    let limit = page_size(req.max_results)?;
    let after = decode_token("container-instances", req.next_token.as_deref())?;
    let instances = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            Ok::<_, ApiError>(tx.list_container_instances(
                &cluster,
                req.status.as_deref(),
                after.as_deref(),
                limit + 1,
            )?)
        })
        .await?;
    let id_of = |i: &ContainerInstance| {
        i.container_instance_arn
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let (page, next_token) = paginate(instances, limit, "container-instances", id_of);
    Ok(ListContainerInstancesResponse {
        container_instance_arns: page.into_iter().map(|i| i.container_instance_arn).collect(),
        next_token,
    })
}
