//! RunTask and DescribeTasks, and [`save_task`], the one place where an existing task changes:
//! every change bumps its `version` there.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{active_cluster, task_definitions, Ctx};
use crate::domain::placement::{self, InstanceLoad};
use crate::domain::records::{Attachment, Container, KeyValuePair, Tag, Task, TaskDefinitionSpec};
use crate::domain::status::{ContainerStatus, TaskStatus};
use crate::domain::{new_id, now};
use crate::error::ApiError;
use crate::store::{StoreError, StoreExt, Tx};

const MAX_RUN_COUNT: i32 = 10;
const MAX_DESCRIBE: usize = 100;

/// Stores `next` in place of `previous` if anything changed, with the next `version`.
/// Returns the task as stored.
pub(crate) fn save_task(tx: &mut dyn Tx, cluster: &str, previous: &Task, mut next: Task) -> Result<Task, StoreError> {
    if next == *previous {
        return Ok(next);
    }
    next.version = previous.version + 1;
    tx.update_task(cluster, &next)?;
    Ok(next)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskRequest {
    cluster: Option<String>,
    task_definition: String,
    count: Option<i32>,
    launch_type: Option<String>,
    overrides: Option<Value>,
    started_by: Option<String>,
    group: Option<String>,
    network_configuration: Option<Value>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    enable_execute_command: bool,
    platform_version: Option<String>,
}

#[derive(Serialize)]
pub struct RunTaskResponse {
    tasks: Vec<Task>,
    failures: Vec<Value>,
}

pub async fn run_task(ctx: &Ctx, req: RunTaskRequest) -> Result<RunTaskResponse, ApiError> {
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_RUN_COUNT).contains(&count) {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'count': it must be between 1 and {MAX_RUN_COUNT}."
        )));
    }
    let launch_type = req.launch_type.clone().unwrap_or_else(|| "EC2".into());
    if !matches!(launch_type.as_str(), "EC2" | "EXTERNAL") {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'launchType': {launch_type} tasks cannot run here; use EC2 or EXTERNAL."
        )));
    }
    if req.started_by.as_ref().is_some_and(|s| s.len() > 128) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'startedBy': it must be at most 128 characters long.",
        ));
    }
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let stored = task_definitions::find(tx, &req.task_definition)?
                .ok_or_else(|| ApiError::client("Unable to find the task definition."))?;
            let spec = stored.spec().map_err(StoreError::from)?;
            if spec.status != "ACTIVE" {
                return Err(ApiError::client(
                    "The task definition is INACTIVE; register a new revision to run it.",
                ));
            }
            let awsvpc = spec.network_mode.as_deref() == Some("awsvpc");
            let subnet = req
                .network_configuration
                .as_ref()
                .and_then(|n| n.pointer("/awsvpcConfiguration/subnets/0"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if awsvpc && subnet.is_none() {
                return Err(ApiError::invalid_parameter(
                    "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
                ));
            }
            let overrides = overrides(req.overrides.clone());
            let need = placement::reservation(&spec, &overrides)?;

            let instances = tx.list_container_instances(&cluster, Some("ACTIVE"), None, usize::MAX)?;
            if instances.is_empty() {
                return Err(ApiError::invalid_parameter(
                    "No Container Instances were found in your cluster.",
                ));
            }
            let mut candidates: Vec<(_, InstanceLoad)> = Vec::with_capacity(instances.len());
            for instance in instances {
                let id = instance
                    .container_instance_arn
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let load = tx.instance_load(&cluster, &id)?;
                candidates.push((instance, load));
            }
            let (placed, misfits) = placement::place(&mut candidates, &need, count as usize);

            let scope = tx.scope().clone();
            let created_at = now();
            let mut tasks = Vec::with_capacity(placed.len());
            for index in placed {
                let instance = &candidates[index].0;
                let instance_id = instance
                    .container_instance_arn
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let id = new_id();
                let task_arn = scope.task_arn(&cluster, &id);
                let mut extra = Map::new();
                if let Some(version) = &req.platform_version {
                    extra.insert("platformVersion".into(), version.clone().into());
                }
                if let Some(zone) = instance
                    .attributes
                    .iter()
                    .find(|a| a.name == "ecs.availability-zone")
                    .and_then(|a| a.value.clone())
                {
                    extra.insert("availabilityZone".into(), zone.into());
                }
                let task = Task {
                    containers: containers(
                        &spec,
                        &overrides,
                        |name| scope.container_arn(&cluster, &id, name),
                        &task_arn,
                    ),
                    task_arn,
                    cluster_arn: scope.cluster_arn(&cluster),
                    task_definition_arn: spec.task_definition_arn.clone(),
                    container_instance_arn: Some(instance.container_instance_arn.clone()),
                    overrides: overrides.clone(),
                    last_status: if awsvpc {
                        TaskStatus::Provisioning
                    } else {
                        TaskStatus::Pending
                    },
                    desired_status: TaskStatus::Running,
                    cpu: task_size(&overrides, "cpu", &spec.cpu),
                    memory: task_size(&overrides, "memory", &spec.memory),
                    started_by: req.started_by.clone(),
                    version: 1,
                    stopped_reason: None,
                    stop_code: None,
                    connectivity: None,
                    connectivity_at: None,
                    pull_started_at: None,
                    pull_stopped_at: None,
                    execution_stopped_at: None,
                    created_at,
                    started_at: None,
                    stopping_at: None,
                    stopped_at: None,
                    group: Some(req.group.clone().unwrap_or_else(|| format!("family:{}", spec.family))),
                    launch_type: Some(launch_type.clone()),
                    attachments: subnet
                        .iter()
                        .filter(|_| awsvpc)
                        .map(|subnet| Attachment {
                            id: uuid::Uuid::new_v4().to_string(),
                            kind: "ElasticNetworkInterface".into(),
                            status: "PRECREATED".into(),
                            details: vec![KeyValuePair {
                                name: Some("subnetId".into()),
                                value: Some(subnet.clone()),
                            }],
                        })
                        .collect(),
                    health_status: Some("UNKNOWN".into()),
                    tags: req.tags.clone(),
                    enable_execute_command: req.enable_execute_command,
                    extra,
                };
                tx.insert_task(&cluster, Some(&instance_id), &task, &need)?;
                tasks.push(task);
            }
            let failures = misfits
                .into_iter()
                .map(|(arn, reason)| json!({"arn": arn, "reason": reason}))
                .collect();
            Ok(RunTaskResponse { tasks, failures })
        })
        .await
}

/// `overrides` as ECS shows it: the request's, with the lists it always carries.
fn overrides(requested: Option<Value>) -> Value {
    let mut overrides = match requested {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    overrides.entry("containerOverrides").or_insert(json!([]));
    overrides.entry("inferenceAcceleratorOverrides").or_insert(json!([]));
    Value::Object(overrides)
}

/// A task-level size as ECS shows it: the override, else the task definition's, else none.
fn task_size(overrides: &Value, member: &str, defined: &Option<String>) -> Option<String> {
    overrides
        .get(member)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| defined.clone())
}

fn containers(
    spec: &TaskDefinitionSpec,
    overrides: &Value,
    arn: impl Fn(&str) -> String,
    task_arn: &str,
) -> Vec<Container> {
    let override_of = |name: &str, member: &str| {
        overrides["containerOverrides"]
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(|o| o.get(member))
            .and_then(Value::as_i64)
    };
    spec.container_definitions
        .iter()
        .map(|c| Container {
            container_arn: arn(&new_id()),
            task_arn: task_arn.to_owned(),
            name: c.name.clone(),
            image: c.image.clone(),
            image_digest: None,
            runtime_id: None,
            last_status: ContainerStatus::Pending,
            exit_code: None,
            reason: None,
            network_bindings: Vec::new(),
            network_interfaces: Vec::new(),
            health_status: Some("UNKNOWN".into()),
            managed_agents: Vec::new(),
            cpu: Some(
                override_of(&c.name, "cpu")
                    .unwrap_or(c.cpu.unwrap_or(0).into())
                    .to_string(),
            ),
            memory: override_of(&c.name, "memory")
                .or(c.memory.map(i64::from))
                .map(|m| m.to_string()),
            memory_reservation: override_of(&c.name, "memoryReservation")
                .or(c.memory_reservation.map(i64::from))
                .map(|m| m.to_string()),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTasksRequest {
    cluster: Option<String>,
    tasks: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Serialize)]
pub struct DescribeTasksResponse {
    tasks: Vec<Task>,
    failures: Vec<Value>,
}

pub async fn describe_tasks(ctx: &Ctx, req: DescribeTasksRequest) -> Result<DescribeTasksResponse, ApiError> {
    if req.tasks.is_empty() {
        return Err(ApiError::invalid_parameter("Tasks cannot be empty."));
    }
    if req.tasks.len() > MAX_DESCRIBE {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'tasks': at most {MAX_DESCRIBE} tasks can be described at once."
        )));
    }
    let with_tags = req.include.iter().any(|i| i == "TAGS");
    ctx.store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let scope = tx.scope().clone();
            let mut out = DescribeTasksResponse {
                tasks: Vec::new(),
                failures: Vec::new(),
            };
            for reference in &req.tasks {
                let found = match scope
                    .resource_id(reference, "task")
                    .filter(|r| r.cluster.is_none_or(|c| c == cluster))
                {
                    Some(r) => tx.task(&cluster, r.id)?,
                    None => None,
                };
                match found {
                    Some(mut task) => {
                        if !with_tags {
                            task.tags.clear();
                        }
                        out.tasks.push(task);
                    }
                    None => {
                        let arn = if reference.starts_with("arn:") {
                            reference.clone()
                        } else {
                            scope.task_arn(&cluster, reference)
                        };
                        out.failures.push(json!({"arn": arn, "reason": "MISSING"}));
                    }
                }
            }
            Ok(out)
        })
        .await
}
