//! RegisterTaskDefinition and DescribeTaskDefinition. A definition is kept as the client sent
//! it, with the defaults ECS fills in, so every member comes back from DescribeTaskDefinition.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::domain::records::{StoredTaskDefinition, Tag};
use crate::domain::{is_valid_name, now};
use crate::error::ApiError;
use crate::store::{StoreExt, Tx};

const MAX_CONTAINERS: usize = 10;
const MAX_DEFINITION_BYTES: usize = 64 * 1024;
const MAX_TAGS: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterTaskDefinitionRequest {
    family: String,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(flatten)]
    definition: Map<String, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionResponse {
    task_definition: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<Tag>>,
}

pub async fn register_task_definition(
    ctx: &Ctx,
    req: RegisterTaskDefinitionRequest,
) -> Result<TaskDefinitionResponse, ApiError> {
    let RegisterTaskDefinitionRequest {
        family,
        tags,
        mut definition,
    } = req;
    if !is_valid_name(&family) {
        return Err(ApiError::client(
            "Invalid 'family': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'tags': at most {MAX_TAGS} tags are allowed."
        )));
    }
    if serde_json::to_vec(&definition).map(|b| b.len()).unwrap_or(0) > MAX_DEFINITION_BYTES {
        return Err(ApiError::client(
            "Invalid task definition: its size exceeds the 64 KiB limit.",
        ));
    }
    fill_defaults(&mut definition)?;
    definition.insert("family".into(), family.clone().into());
    ctx.store
        .write(&ctx.scope, move |tx| {
            let revision = tx.last_revision(&family)? + 1;
            let mut definition = definition.clone();
            let scope = tx.scope().clone();
            definition.insert(
                "taskDefinitionArn".into(),
                scope.task_definition_arn(&family, revision).into(),
            );
            definition.insert("revision".into(), revision.into());
            definition.insert("status".into(), "ACTIVE".into());
            definition.insert("registeredAt".into(), now().into());
            definition.insert(
                "registeredBy".into(),
                format!("arn:aws:iam::{}:root", scope.account).into(),
            );
            let stored = StoredTaskDefinition {
                definition,
                tags: tags.clone(),
            };
            tx.put_task_definition(&family, revision, "ACTIVE", &stored)?;
            Ok(TaskDefinitionResponse {
                task_definition: stored.definition,
                tags: Some(stored.tags),
            })
        })
        .await
}

/// Validates the containers and fills in what ECS fills in when a member is absent.
fn fill_defaults(definition: &mut Map<String, Value>) -> Result<(), ApiError> {
    let network_mode = definition
        .get("networkMode")
        .and_then(Value::as_str)
        .unwrap_or("bridge")
        .to_owned();
    let task_memory = definition.contains_key("memory");
    let containers = definition
        .get_mut("containerDefinitions")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| {
            ApiError::client("Invalid 'containerDefinitions': at least one container definition is required.")
        })?;
    if containers.is_empty() {
        return Err(ApiError::client(
            "Invalid 'containerDefinitions': at least one container definition is required.",
        ));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(ApiError::client(format!(
            "Invalid 'containerDefinitions': a task definition can have at most {MAX_CONTAINERS} containers."
        )));
    }
    let mut names = HashSet::new();
    for (i, container) in containers.iter_mut().enumerate() {
        let c = container.as_object_mut().expect("the model check ensures an object");
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(ApiError::client(format!(
                "Invalid 'containerDefinitions[{i}].name': Container.name should not be null or empty."
            )));
        }
        if !is_valid_name(&name) {
            return Err(ApiError::client(format!(
                "Invalid 'containerDefinitions[{i}].name': up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            )));
        }
        if !names.insert(name.clone()) {
            return Err(ApiError::client(format!(
                "Invalid 'containerDefinitions[{i}].name': container names must be unique within a task definition ('{name}' is repeated)."
            )));
        }
        if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(ApiError::client(format!(
                "Invalid 'containerDefinitions[{i}].image': Container.image should not be null or empty."
            )));
        }
        if !task_memory && !c.contains_key("memory") && !c.contains_key("memoryReservation") {
            return Err(ApiError::client(format!(
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            )));
        }
        if let (Some(hard), Some(soft)) = (
            c.get("memory").and_then(Value::as_i64),
            c.get("memoryReservation").and_then(Value::as_i64),
        ) {
            if soft > hard {
                return Err(ApiError::client(format!(
                    "Invalid setting for container '{name}'. The memory reservation must be less than or equal to the memory limit."
                )));
            }
        }
        if let Some(mappings) = c.get_mut("portMappings").and_then(Value::as_array_mut) {
            for (j, mapping) in mappings.iter_mut().enumerate() {
                check_port_mapping(
                    mapping,
                    &network_mode,
                    &format!("containerDefinitions[{i}].portMappings[{j}]"),
                )?;
            }
        }
        c.entry("essential").or_insert(Value::Bool(true));
        c.entry("cpu").or_insert(json!(0));
        for member in ["portMappings", "environment", "mountPoints", "volumesFrom"] {
            c.entry(member).or_insert(json!([]));
        }
    }
    if !containers
        .iter()
        .any(|c| c.get("essential").and_then(Value::as_bool) == Some(true))
    {
        return Err(ApiError::client(
            "Invalid task definition: at least one container must be essential.",
        ));
    }
    definition.entry("volumes").or_insert(json!([]));
    definition.entry("placementConstraints").or_insert(json!([]));
    definition.entry("requiresAttributes").or_insert(json!([]));
    let mut compatibilities = vec![json!("EC2"), json!("EXTERNAL")];
    let wants_fargate = definition
        .get("requiresCompatibilities")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|c| c == "FARGATE"));
    if wants_fargate {
        compatibilities.push(json!("FARGATE"));
    }
    definition.insert("compatibilities".into(), Value::Array(compatibilities));
    Ok(())
}

fn check_port_mapping(mapping: &mut Value, network_mode: &str, member: &str) -> Result<(), ApiError> {
    let m = mapping.as_object_mut().expect("the model check ensures an object");
    let port = |m: &Map<String, Value>, key: &str| m.get(key).and_then(Value::as_i64);
    for key in ["containerPort", "hostPort"] {
        if let Some(p) = port(m, key).filter(|p| !(0..=65535).contains(p) || (key == "containerPort" && *p == 0)) {
            return Err(ApiError::client(format!(
                "Invalid '{member}.{key}': {p} is not a valid port."
            )));
        }
    }
    if port(m, "containerPort").is_none() && !m.contains_key("containerPortRange") {
        return Err(ApiError::client(format!(
            "Invalid '{member}': containerPort or containerPortRange is required."
        )));
    }
    if matches!(network_mode, "host" | "awsvpc") {
        if let (Some(c), Some(h)) = (port(m, "containerPort"), port(m, "hostPort")) {
            if c != h {
                return Err(ApiError::client(format!(
                    "Invalid '{member}': when networkMode=={network_mode}, the containerPort and hostPort values must match."
                )));
            }
        }
        if let Some(c) = port(m, "containerPort") {
            m.entry("hostPort").or_insert(c.into());
        }
    }
    m.entry("protocol").or_insert("tcp".into());
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTaskDefinitionRequest {
    task_definition: String,
    #[serde(default)]
    include: Vec<String>,
}

pub async fn describe_task_definition(
    ctx: &Ctx,
    req: DescribeTaskDefinitionRequest,
) -> Result<TaskDefinitionResponse, ApiError> {
    let with_tags = req.include.iter().any(|i| i == "TAGS");
    let reference = req.task_definition;
    let stored = ctx
        .store
        .read(&ctx.scope, move |tx| find(tx, &reference))
        .await?
        .ok_or_else(|| ApiError::client("Unable to describe task definition."))?;
    Ok(TaskDefinitionResponse {
        task_definition: stored.definition,
        tags: with_tags.then_some(stored.tags),
    })
}

/// The definition `family`, `family:revision` or an ARN names; a bare family means its latest
/// ACTIVE revision.
pub(crate) fn find(tx: &mut dyn Tx, reference: &str) -> Result<Option<StoredTaskDefinition>, ApiError> {
    let Some((family, revision)) = tx.scope().task_definition_ref(reference) else {
        return Ok(None);
    };
    let (family, revision) = (family.to_owned(), revision);
    Ok(match revision {
        Some(r) => tx.task_definition(&family, r)?,
        None => tx.latest_task_definition(&family)?,
    })
}
