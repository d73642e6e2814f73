//! RegisterTaskDefinition and DescribeTaskDefinition. A definition is kept as the client sent
//! it, with the defaults ECS fills in, so every member comes back from DescribeTaskDefinition.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::tags::check_tags;
use super::{members, Ctx, Page};
use crate::domain::quantities;
use crate::domain::records::StoredTaskDefinition;
use crate::domain::status::TaskDefinitionStatus;
use crate::domain::{is_valid_name, now};
use crate::error::ApiError;
use crate::shapes::{
    DeleteTaskDefinitionsRequest, DeleteTaskDefinitionsResponse, DeregisterTaskDefinitionRequest,
    DeregisterTaskDefinitionResponse, DescribeTaskDefinitionRequest, DescribeTaskDefinitionResponse, Failure,
    ListTaskDefinitionFamiliesRequest, ListTaskDefinitionFamiliesResponse, ListTaskDefinitionsRequest,
    ListTaskDefinitionsResponse, RegisterTaskDefinitionRequest, RegisterTaskDefinitionResponse, SortOrder,
    TaskDefinition, TaskDefinitionFamilyStatus, TaskDefinitionField,
};
use crate::store::{FamilyStatus, StoreExt, Tx};

const MAX_CONTAINERS: usize = 10;
const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// A stored definition as the model's `TaskDefinition`.
fn shown(stored: StoredTaskDefinition) -> TaskDefinition {
    TaskDefinition(Value::Object(stored.definition).into())
}

pub async fn register_task_definition(
    ctx: &Ctx,
    req: RegisterTaskDefinitionRequest,
) -> Result<RegisterTaskDefinitionResponse, ApiError> {
    // The definition is every member of the request but its tags, kept as the client sent it.
    let mut definition = members(&req, &["tags"]);
    let (family, tags) = (req.family, req.tags.unwrap_or_default());
    if !is_valid_name(&family) {
        return Err(ApiError::client(
            "Invalid 'family': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    check_tags(&tags)?;
    if serde_json::to_vec(&definition).map(|b| b.len()).unwrap_or(0) > MAX_DEFINITION_BYTES {
        return Err(ApiError::client(
            "Invalid task definition: its size exceeds the 64 KiB limit.",
        ));
    }
    quantities::check_task_definition(&definition)?;
    fill_defaults(&mut definition)?;
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
            definition.insert("status".into(), TaskDefinitionStatus::Active.as_str().into());
            definition.insert("registeredAt".into(), now().into());
            definition.insert(
                "registeredBy".into(),
                format!("arn:aws:iam::{}:root", scope.account).into(),
            );
            let stored = StoredTaskDefinition {
                definition,
                tags: tags.clone(),
            };
            tx.put(&stored)?;
            Ok(RegisterTaskDefinitionResponse {
                tags: Some(stored.tags.clone()),
                task_definition: Some(shown(stored)),
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
    match super::fargate::unfit(definition) {
        None => compatibilities.push(json!("FARGATE")),
        Some(why) if wants_fargate => return Err(ApiError::client(why)),
        Some(_) => {}
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

pub async fn describe_task_definition(
    ctx: &Ctx,
    req: DescribeTaskDefinitionRequest,
) -> Result<DescribeTaskDefinitionResponse, ApiError> {
    let with_tags = req.include.unwrap_or_default().contains(&TaskDefinitionField::Tags);
    let reference = req.task_definition;
    let stored = ctx
        .store
        .read(&ctx.scope, move |tx| find(tx, &reference))
        .await?
        .ok_or_else(|| ApiError::client("Unable to describe task definition."))?;
    Ok(DescribeTaskDefinitionResponse {
        tags: with_tags.then(|| stored.tags.clone()),
        task_definition: Some(shown(stored)),
    })
}

/// The definition `family`, `family:revision` or an ARN names; a bare family means its latest
/// ACTIVE revision.
pub(crate) fn find(tx: &mut Tx<'_>, reference: &str) -> Result<Option<StoredTaskDefinition>, ApiError> {
    let Some((family, revision)) = tx.scope().task_definition_ref(reference) else {
        return Ok(None);
    };
    let (family, revision) = (family.to_owned(), revision);
    Ok(match revision {
        Some(r) => tx.task_definition(&family, r)?,
        None => tx.latest_task_definition(&family)?,
    })
}

/// The definition a request names by `family:revision` or ARN (a bare family is refused: these
/// operations change one revision).
fn find_revision(tx: &mut Tx<'_>, reference: &str) -> Result<Option<StoredTaskDefinition>, ApiError> {
    let Some((family, revision)) = tx.scope().task_definition_ref(reference) else {
        return Ok(None);
    };
    let family = family.to_owned();
    let Some(revision) = revision else {
        return Err(ApiError::client(format!(
            "Invalid 'taskDefinition' '{reference}': give a family and revision (family:revision) or a full ARN."
        )));
    };
    Ok(tx.task_definition(&family, revision)?)
}

pub async fn deregister_task_definition(
    ctx: &Ctx,
    req: DeregisterTaskDefinitionRequest,
) -> Result<DeregisterTaskDefinitionResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let mut stored = find_revision(tx, &req.task_definition)?
                .ok_or_else(|| ApiError::client("The specified task definition does not exist."))?;
            match stored.status() {
                TaskDefinitionStatus::Active => {
                    stored.set_status(TaskDefinitionStatus::Inactive);
                    stored.definition.insert("deregisteredAt".into(), now().into());
                    tx.put(&stored)?;
                }
                TaskDefinitionStatus::Inactive => {}
                TaskDefinitionStatus::DeleteInProgress => {
                    return Err(ApiError::client("The specified task definition is being deleted."))
                }
            }
            Ok(DeregisterTaskDefinitionResponse {
                task_definition: Some(shown(stored)),
            })
        })
        .await
}

pub async fn delete_task_definitions(
    ctx: &Ctx,
    req: DeleteTaskDefinitionsRequest,
) -> Result<DeleteTaskDefinitionsResponse, ApiError> {
    if req.task_definitions.is_empty() || req.task_definitions.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'taskDefinitions': between 1 and 10 task definitions can be deleted at once.",
        ));
    }
    ctx.store
        .write(&ctx.scope, move |tx| {
            let (mut deleted, mut failures) = (Vec::new(), Vec::new());
            for reference in &req.task_definitions {
                let fail = |reason: &str, detail: &str| Failure {
                    arn: Some(reference.clone()),
                    reason: Some(reason.into()),
                    detail: Some(detail.into()),
                };
                let Some(mut stored) = find_revision(tx, reference)? else {
                    failures.push(fail(
                        "TASK_DEFINITION_NOT_FOUND",
                        "The specified task definition does not exist.",
                    ));
                    continue;
                };
                match stored.status() {
                    TaskDefinitionStatus::Active => {
                        failures.push(fail(
                            "TASK_DEFINITION_ACTIVE",
                            "The specified task definition is still in ACTIVE status. Deregister it first.",
                        ));
                        continue;
                    }
                    TaskDefinitionStatus::Inactive => {
                        stored.set_status(TaskDefinitionStatus::DeleteInProgress);
                        stored.definition.insert("deleteRequestedAt".into(), now().into());
                        tx.put(&stored)?;
                    }
                    TaskDefinitionStatus::DeleteInProgress => {}
                }
                deleted.push(shown(stored));
            }
            Ok(DeleteTaskDefinitionsResponse {
                task_definitions: Some(deleted),
                failures: Some(failures),
            })
        })
        .await
}

pub async fn list_task_definitions(
    ctx: &Ctx,
    req: ListTaskDefinitionsRequest,
) -> Result<ListTaskDefinitionsResponse, ApiError> {
    let descending = req.sort == Some(SortOrder::Desc);
    let kind = if descending {
        "task-definitions-desc"
    } else {
        "task-definitions"
    };
    let page = Page::new(kind, req.max_results, req.next_token.as_deref())?;
    let limit = page.fetch();
    let after = match page.after.as_deref() {
        Some(token) => Some(
            token
                .rsplit_once(':')
                .and_then(|(family, revision)| Some((family.to_owned(), revision.parse::<i64>().ok()?)))
                .ok_or_else(|| ApiError::invalid_parameter("Invalid 'nextToken'."))?,
        ),
        None => None,
    };
    let status = req
        .status
        .map_or(TaskDefinitionStatus::Active, TaskDefinitionStatus::from);
    let found = ctx
        .store
        .read(&ctx.scope, move |tx: &mut Tx<'_>| {
            let after = after.as_ref().map(|(f, r)| (f.as_str(), *r));
            tx.list_task_definitions(req.family_prefix.as_deref(), status, descending, after, limit)
                .map_err(ApiError::from)
        })
        .await?;
    let (shown, next_token) = page.finish(found, |(family, revision)| format!("{family}:{revision}"));
    Ok(ListTaskDefinitionsResponse {
        task_definition_arns: Some(
            shown
                .iter()
                .map(|(family, revision)| ctx.scope.task_definition_arn(family, *revision))
                .collect(),
        ),
        next_token,
    })
}

pub async fn list_task_definition_families(
    ctx: &Ctx,
    req: ListTaskDefinitionFamiliesRequest,
) -> Result<ListTaskDefinitionFamiliesResponse, ApiError> {
    let page = Page::new("families", req.max_results, req.next_token.as_deref())?;
    // Without a status, both ACTIVE and INACTIVE families are listed.
    let status = match req.status {
        Some(TaskDefinitionFamilyStatus::Active) => FamilyStatus::Active,
        Some(TaskDefinitionFamilyStatus::Inactive) => FamilyStatus::Inactive,
        Some(TaskDefinitionFamilyStatus::All) | None => FamilyStatus::All,
    };
    let (after, limit) = (page.after.clone(), page.fetch());
    let families = ctx
        .store
        .read(&ctx.scope, move |tx: &mut Tx<'_>| {
            tx.list_task_definition_families(req.family_prefix.as_deref(), status, after.as_deref(), limit)
                .map_err(ApiError::from)
        })
        .await?;
    let (families, next_token) = page.finish(families, Clone::clone);
    Ok(ListTaskDefinitionFamiliesResponse {
        families: Some(families),
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(containers: Value) -> Map<String, Value> {
        json!({"family": "f", "containerDefinitions": containers})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn defaults_are_filled_like_ecs() {
        let mut d = definition(json!([{"name": "web", "image": "nginx", "memory": 128,
            "portMappings": [{"containerPort": 80}]}]));
        fill_defaults(&mut d).unwrap();
        let c = &d["containerDefinitions"][0];
        assert_eq!(c["essential"], true);
        assert_eq!(c["cpu"], 0);
        assert_eq!(c["environment"], json!([]));
        assert_eq!(c["portMappings"][0]["protocol"], "tcp");
        assert!(
            c["portMappings"][0].get("hostPort").is_none(),
            "bridge mode picks host ports dynamically"
        );
        assert_eq!(d["compatibilities"], json!(["EC2", "EXTERNAL"]));

        let mut host = definition(json!([{"name": "web", "image": "nginx", "memory": 128,
            "portMappings": [{"containerPort": 80}]}]));
        host.insert("networkMode".into(), "host".into());
        fill_defaults(&mut host).unwrap();
        assert_eq!(host["containerDefinitions"][0]["portMappings"][0]["hostPort"], 80);
    }

    #[test]
    fn invalid_definitions_name_the_problem() {
        let cases = [
            (json!([]), "at least one"),
            (
                json!([{"name": "a", "image": "i", "memory": 1}, {"name": "a", "image": "i", "memory": 1}]),
                "unique",
            ),
            (json!([{"image": "i", "memory": 1}]), "Container.name"),
            (json!([{"name": "a", "memory": 1}]), "Container.image"),
            (json!([{"name": "a", "image": "i"}]), "memoryReservation"),
            (
                json!([{"name": "a", "image": "i", "memory": 64, "memoryReservation": 128}]),
                "memory reservation",
            ),
            (
                json!([{"name": "a", "image": "i", "memory": 1, "essential": false}]),
                "essential",
            ),
            (
                json!([{"name": "a", "image": "i", "memory": 1, "portMappings": [{"containerPort": 0}]}]),
                "containerPort",
            ),
            (
                json!([{"name": "a", "image": "i", "memory": 1, "portMappings": [{"hostPort": 80}]}]),
                "containerPort",
            ),
        ];
        for (containers, fragment) in cases {
            let err = fill_defaults(&mut definition(containers.clone())).unwrap_err();
            assert!(err.message.contains(fragment), "{containers}: {}", err.message);
        }
        let mut awsvpc = definition(json!([{"name": "a", "image": "i", "memory": 1,
            "portMappings": [{"containerPort": 80, "hostPort": 81}]}]));
        awsvpc.insert("networkMode".into(), "awsvpc".into());
        assert!(fill_defaults(&mut awsvpc).unwrap_err().message.contains("must match"));
    }
}
