//! What the agent channels (ACS and TCS websockets) do to stored state: which agent may open
//! one, an instance's `agentConnected` and its tasks' `connectivity`, which tasks still have to
//! reach an agent and the agent's acknowledgements of them, the task manifest and stop
//! verification, and the container and instance health an agent publishes.
//!
//! Every task change goes through [`save_task`] (so it bumps the task's version and appends its
//! event) and every instance change through [`save_instance`].

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::agent::essential_containers;
use super::container_instances::save_instance;
use super::task_definitions;
use super::tasks::save_task;
use crate::domain::acs_task::acs_task;
use crate::domain::records::ContainerInstance;
use crate::domain::status::TaskStatus;
use crate::domain::{now, Scope};
use crate::error::ApiError;
use crate::store::{Store, StoreError, StoreExt, Tx};

/// An agent's container instance, as a channel names it once opened.
#[derive(Clone, Debug)]
pub struct Instance {
    pub scope: Scope,
    pub cluster: String,
    pub id: String,
    pub arn: String,
    pub cluster_arn: String,
}

/// Why a channel is refused (the ACS model's exceptions for `Poll`).
#[derive(Debug)]
pub enum Refusal {
    InvalidCluster(String),
    InvalidInstance(String),
    InactiveInstance(String),
    Failed(ApiError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Failed(e.into())
    }
}

/// The instance an agent names by cluster (name or ARN) and container instance (id or ARN),
/// if the cluster is ACTIVE and the instance registered in it and not deregistered.
pub async fn open(store: &dyn Store, scope: &Scope, cluster: &str, instance: &str) -> Result<Instance, Refusal> {
    let cluster = cluster.to_owned();
    let instance = instance.to_owned();
    store
        .read(scope, move |tx| {
            let scope = tx.scope().clone();
            let name = scope
                .cluster_name(&cluster)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| Refusal::InvalidCluster(format!("Invalid cluster '{cluster}'.")))?
                .to_owned();
            match tx.cluster(&name)? {
                Some(c) if c.status == "ACTIVE" => {}
                _ => {
                    return Err(Refusal::InvalidCluster(format!(
                        "Cluster '{name}' is not an active cluster."
                    )))
                }
            }
            let unknown =
                || Refusal::InvalidInstance(format!("No container instance '{instance}' in cluster '{name}'."));
            let id = scope
                .resource_id(&instance, "container-instance")
                .filter(|r| r.cluster.is_none_or(|c| c == name))
                .ok_or_else(unknown)?
                .id
                .to_owned();
            let record = tx.container_instance(&name, &id)?.ok_or_else(unknown)?;
            if record.status == "INACTIVE" {
                return Err(Refusal::InactiveInstance(format!(
                    "Container instance '{}' is deregistered.",
                    record.container_instance_arn
                )));
            }
            Ok(Instance {
                cluster_arn: scope.cluster_arn(&name),
                arn: record.container_instance_arn,
                scope,
                cluster: name,
                id,
            })
        })
        .await
}

/// Whether the instance is still registered (not INACTIVE) and whether the store shows its
/// agent as connected.
pub async fn instance_state(store: &dyn Store, instance: &Instance) -> Result<(bool, bool), ApiError> {
    let (cluster, id) = (instance.cluster.clone(), instance.id.clone());
    store
        .read(&instance.scope, move |tx| {
            Ok(match tx.container_instance(&cluster, &id)? {
                Some(record) => (record.status != "INACTIVE", record.agent_connected),
                None => (false, false),
            })
        })
        .await
}

/// Records that `process` holds the instance's agent connection: the instance's
/// `agentConnected` and `versionInfo` (the versions the agent gave when it connected, if any),
/// and the `connectivity` of its tasks. Only what differs is written.
pub async fn set_connected(
    store: &dyn Store,
    instance: &Instance,
    process: &str,
    versions: Option<Value>,
) -> Result<(), ApiError> {
    let (cluster, id, process) = (instance.cluster.clone(), instance.id.clone(), process.to_owned());
    store
        .write(&instance.scope, move |tx| {
            let Some(record) = tx.container_instance(&cluster, &id)? else {
                return Ok(());
            };
            if tx.agent_holder(&cluster, &id)?.as_deref() != Some(process.as_str()) {
                tx.set_agent_holder(&cluster, &id, Some(&process))?;
            }
            let mut next = record.clone();
            next.agent_connected = true;
            if versions.is_some() {
                next.version_info.clone_from(&versions);
            }
            if next != record {
                next.version += 1;
                save_instance(tx, &cluster, &id, &next)?;
            }
            set_connectivity(tx, &cluster, &id, "CONNECTED")
        })
        .await
}

/// Records that the instance's agent connection held by `process` ended. Nothing changes if
/// another process holds it now (the agent reconnected there).
pub async fn set_disconnected(store: &dyn Store, instance: &Instance, process: &str) -> Result<(), ApiError> {
    let (cluster, id, process) = (instance.cluster.clone(), instance.id.clone(), process.to_owned());
    store
        .write(&instance.scope, move |tx| {
            let Some(mut record) = tx.container_instance(&cluster, &id)? else {
                return Ok(());
            };
            if tx.agent_holder(&cluster, &id)?.is_some_and(|holder| holder != process) {
                return Ok(());
            }
            tx.set_agent_holder(&cluster, &id, None)?;
            if record.agent_connected {
                record.agent_connected = false;
                record.version += 1;
                save_instance(tx, &cluster, &id, &record)?;
            }
            set_connectivity(tx, &cluster, &id, "DISCONNECTED")
        })
        .await
}

/// Sets the `connectivity` of the instance's unstopped tasks that have one.
fn set_connectivity(tx: &mut dyn Tx, cluster: &str, id: &str, to: &str) -> Result<(), ApiError> {
    let at = now();
    for (task, _) in tx.instance_tasks(cluster, id)? {
        if task.connectivity.as_deref().is_some_and(|c| c != to) {
            let mut next = task.clone();
            next.connectivity = Some(to.into());
            next.connectivity_at = Some(at);
            save_task(tx, cluster, &task, next)?;
        }
    }
    Ok(())
}

/// Records every agent connection held by a process whose lease has lapsed as ended: that
/// process died, or stalled so long that its agents have reconnected or given up. Returns how
/// many instances were released.
pub async fn release_lapsed(store: &dyn Store) -> Result<usize, ApiError> {
    let lapsed = store.lapsed_agents().await?;
    let count = lapsed.len();
    for agent in lapsed {
        let instance = Instance {
            arn: agent.scope.container_instance_arn(&agent.cluster, &agent.id),
            cluster_arn: agent.scope.cluster_arn(&agent.cluster),
            scope: agent.scope,
            cluster: agent.cluster,
            id: agent.id,
        };
        tracing::info!(instance = %instance.arn, process = %agent.process, "the process holding this agent's connection is gone");
        set_disconnected(store, &instance, &agent.process).await?;
    }
    Ok(count)
}

/// A task that has yet to reach the instance's agent with its current desired status.
pub struct Delivery {
    /// The task's id.
    pub id: String,
    pub desired: TaskStatus,
    /// The ACS `Task` to send.
    pub task: Value,
}

/// The instance's tasks whose desired status its agent has not acknowledged: new tasks to run,
/// and tasks to stop that the agent was given to run (or never got).
pub async fn undelivered(store: &dyn Store, instance: &Instance) -> Result<Vec<Delivery>, ApiError> {
    let (cluster, id) = (instance.cluster.clone(), instance.id.clone());
    store
        .read(&instance.scope, move |tx| {
            let mut definitions: HashMap<String, Option<Map<String, Value>>> = HashMap::new();
            let mut out = Vec::new();
            for (task, delivered) in tx.instance_tasks(&cluster, &id)? {
                if delivered == Some(task.desired_status) {
                    continue;
                }
                let arn = task.task_definition_arn.clone();
                if !definitions.contains_key(&arn) {
                    let found = task_definitions::find(tx, &arn)?.map(|d| d.definition);
                    definitions.insert(arn.clone(), found);
                }
                let definition = definitions[&arn].clone().unwrap_or_default();
                out.push(Delivery {
                    id: task.id().to_owned(),
                    desired: task.desired_status,
                    task: acs_task(&task, &definition),
                });
            }
            Ok(out)
        })
        .await
}

/// The first of `count` new sequence numbers for the instance's ACS messages.
pub async fn next_seq(store: &dyn Store, instance: &Instance, count: i64) -> Result<i64, ApiError> {
    let (cluster, id) = (instance.cluster.clone(), instance.id.clone());
    store
        .write(&instance.scope, move |tx| {
            Ok::<_, ApiError>(tx.next_message_seq(&cluster, &id, count)?)
        })
        .await
}

/// Records the agent's acknowledgement of tasks it was sent.
pub async fn acknowledge(
    store: &dyn Store,
    instance: &Instance,
    tasks: Vec<(String, TaskStatus)>,
) -> Result<(), ApiError> {
    let cluster = instance.cluster.clone();
    store
        .write(&instance.scope, move |tx| {
            for (id, desired) in &tasks {
                tx.set_delivered(&cluster, id, *desired)?;
            }
            Ok::<_, ApiError>(())
        })
        .await
}

/// The tasks that should be on the instance (ACS `TaskIdentifier`s): every task placed there
/// that is not yet STOPPED, with its desired status.
pub async fn manifest(store: &dyn Store, instance: &Instance) -> Result<Vec<Value>, ApiError> {
    let (cluster, id) = (instance.cluster.clone(), instance.id.clone());
    store
        .read(&instance.scope, move |tx| {
            Ok(tx
                .instance_tasks(&cluster, &id)?
                .into_iter()
                .map(|(task, _)| {
                    json!({
                        "taskArn": task.task_arn,
                        "taskClusterArn": task.cluster_arn,
                        "desiredStatus": task.desired_status.as_str(),
                    })
                })
                .collect())
        })
        .await
}

/// Which of the tasks an agent offers to stop (running there, missing from the manifest)
/// should stop: all but those that ecsd wants running on this very instance.
pub async fn confirm_stops(
    store: &dyn Store,
    instance: &Instance,
    candidates: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    let (cluster, instance_arn) = (instance.cluster.clone(), instance.arn.clone());
    store
        .read(&instance.scope, move |tx| {
            let scope = tx.scope().clone();
            let mut confirmed = Vec::new();
            for arn in candidates {
                let wanted = match scope
                    .resource_id(&arn, "task")
                    .filter(|r| r.cluster.is_none_or(|c| c == cluster))
                {
                    Some(r) => tx.task(&cluster, r.id)?.is_some_and(|t| {
                        t.desired_status == TaskStatus::Running
                            && t.container_instance_arn.as_deref() == Some(instance_arn.as_str())
                    }),
                    None => false,
                };
                if !wanted {
                    confirmed.push(arn);
                }
            }
            Ok(confirmed)
        })
        .await
}

/// `TaskHealth` of the TCS model.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskHealth {
    pub task_arn: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerHealth>,
}

/// `ContainerHealth` of the TCS model.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerHealth {
    pub container_name: Option<String>,
    pub health_status: Option<String>,
}

const HEALTH_STATUSES: [&str; 3] = ["HEALTHY", "UNHEALTHY", "UNKNOWN"];

/// Records the container health an agent published: each container's `healthStatus`, and the
/// task's, derived as ECS does from its essential containers. Tasks that are not on this
/// instance are ignored.
pub async fn record_health(store: &dyn Store, instance: &Instance, tasks: Vec<TaskHealth>) -> Result<(), ApiError> {
    let (cluster, instance_arn) = (instance.cluster.clone(), instance.arn.clone());
    store
        .write(&instance.scope, move |tx| {
            let scope = tx.scope().clone();
            for report in &tasks {
                let Some(r) = report
                    .task_arn
                    .as_deref()
                    .and_then(|arn| scope.resource_id(arn, "task"))
                    .filter(|r| r.cluster.is_none_or(|c| c == cluster))
                else {
                    continue;
                };
                let Some(task) = tx.task(&cluster, r.id)? else { continue };
                if task.container_instance_arn.as_deref() != Some(instance_arn.as_str())
                    || task.last_status == TaskStatus::Stopped
                {
                    continue;
                }
                let mut next = task.clone();
                for c in &report.containers {
                    let status = c.health_status.as_deref().filter(|s| HEALTH_STATUSES.contains(s));
                    let container = next
                        .containers
                        .iter_mut()
                        .find(|k| Some(k.name.as_str()) == c.container_name.as_deref());
                    if let (Some(container), Some(status)) = (container, status) {
                        container.health_status = Some(status.to_owned());
                    }
                }
                if next != task {
                    let essential = essential_containers(tx, &next)?;
                    next.health_status = Some(task_health(
                        next.containers
                            .iter()
                            .filter(|c| essential.contains(&c.name))
                            .filter_map(|c| c.health_status.as_deref()),
                    ));
                    save_task(tx, &cluster, &task, next)?;
                }
            }
            Ok::<_, ApiError>(())
        })
        .await
}

/// A task's health from its essential containers': UNHEALTHY if any is, else UNKNOWN if any
/// is, else HEALTHY.
fn task_health<'a>(containers: impl Iterator<Item = &'a str>) -> String {
    let statuses: Vec<&str> = containers.collect();
    let status = if statuses.contains(&"UNHEALTHY") {
        "UNHEALTHY"
    } else if statuses.is_empty() || statuses.contains(&"UNKNOWN") {
        "UNKNOWN"
    } else {
        "HEALTHY"
    };
    status.into()
}

/// `InstanceStatus` of the TCS model.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub last_updated: Option<f64>,
    pub last_status_change: Option<f64>,
}

const INSTANCE_HEALTH_STATES: [&str; 4] = ["OK", "IMPAIRED", "INSUFFICIENT_DATA", "INITIALIZING"];

/// Records the instance status an agent published as the instance's `healthStatus`
/// (`ContainerInstanceHealthStatus`): one detail per check type, the overall status the worst
/// of them.
pub async fn record_instance_status(
    store: &dyn Store,
    instance: &Instance,
    statuses: Vec<InstanceStatus>,
) -> Result<(), ApiError> {
    let (cluster, id) = (instance.cluster.clone(), instance.id.clone());
    store
        .write(&instance.scope, move |tx| {
            let Some(record) = tx.container_instance(&cluster, &id)? else {
                return Ok(());
            };
            let next = with_health(&record, &statuses);
            if next != record {
                save_instance(tx, &cluster, &id, &next)?;
            }
            Ok::<_, ApiError>(())
        })
        .await
}

fn with_health(record: &ContainerInstance, statuses: &[InstanceStatus]) -> ContainerInstance {
    let mut details: Vec<Value> = record
        .health_status
        .as_ref()
        .and_then(|h| h["details"].as_array())
        .cloned()
        .unwrap_or_default();
    for s in statuses {
        let (Some(kind), Some(status)) = (s.kind.as_deref(), s.status.as_deref()) else {
            continue;
        };
        if !INSTANCE_HEALTH_STATES.contains(&status) {
            continue;
        }
        let mut detail = json!({"type": kind, "status": status});
        if let Some(reason) = &s.status_reason {
            detail["statusReason"] = reason.as_str().into();
        }
        if let Some(at) = s.last_updated {
            detail["lastUpdated"] = at.into();
        }
        if let Some(at) = s.last_status_change {
            detail["lastStatusChange"] = at.into();
        }
        match details.iter_mut().find(|d| d["type"] == kind) {
            Some(existing) => *existing = detail,
            None => details.push(detail),
        }
    }
    // Worst first: IMPAIRED, INSUFFICIENT_DATA, INITIALIZING, then OK.
    let rank = |s: &str| match s {
        "IMPAIRED" => 0,
        "INSUFFICIENT_DATA" => 1,
        "INITIALIZING" => 2,
        _ => 3,
    };
    let overall = details
        .iter()
        .filter_map(|d| d["status"].as_str())
        .min_by_key(|s| rank(s))
        .unwrap_or("INITIALIZING")
        .to_owned();
    let mut next = record.clone();
    let health = json!({"overallStatus": overall, "details": details});
    if next.health_status.as_ref() != Some(&health) {
        next.health_status = Some(health);
        next.version += 1;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_health_is_the_worst_of_its_essential_containers() {
        assert_eq!(task_health(["HEALTHY", "HEALTHY"].into_iter()), "HEALTHY");
        assert_eq!(task_health(["HEALTHY", "UNKNOWN"].into_iter()), "UNKNOWN");
        assert_eq!(task_health(["UNKNOWN", "UNHEALTHY"].into_iter()), "UNHEALTHY");
        assert_eq!(task_health(std::iter::empty()), "UNKNOWN");
    }

    #[test]
    fn instance_health_keeps_one_detail_per_check() {
        let record: ContainerInstance = serde_json::from_value(json!({
            "containerInstanceArn": "arn:aws:ecs:us-east-1:1:container-instance/c/i",
            "version": 1,
            "registeredResources": [],
            "status": "ACTIVE",
            "agentConnected": true,
            "attributes": [],
            "registeredAt": 1.0,
            "attachments": [],
            "tags": []
        }))
        .unwrap();
        let status = |kind: &str, status: &str| InstanceStatus {
            kind: Some(kind.into()),
            status: Some(status.into()),
            status_reason: None,
            last_updated: Some(5.0),
            last_status_change: Some(4.0),
        };
        let first = with_health(&record, &[status("CONTAINER_RUNTIME", "OK")]);
        assert_eq!(first.version, 2);
        let health = first.health_status.clone().unwrap();
        assert_eq!(health["overallStatus"], "OK");
        assert_eq!(health["details"][0]["lastUpdated"], 5.0);
        let second = with_health(
            &first,
            &[status("CONTAINER_RUNTIME", "IMPAIRED"), status("DAEMON", "OK")],
        );
        let health = second.health_status.unwrap();
        assert_eq!(health["overallStatus"], "IMPAIRED");
        assert_eq!(health["details"].as_array().unwrap().len(), 2);
        let same = with_health(&first, &[status("CONTAINER_RUNTIME", "OK")]);
        assert_eq!(same, first, "an unchanged status changes nothing");
    }
}
