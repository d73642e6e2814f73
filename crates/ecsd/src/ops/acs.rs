//! The store side of ACS, the channel that hands tasks to agents: which agent may open a
//! channel (shared with TCS), an instance's `agentConnected`, `versionInfo` and its tasks'
//! `connectivity`, the connections of processes whose lease lapsed, which tasks still have to
//! reach an agent and the agent's acknowledgements of them, the task manifest and stop
//! verification.
//!
//! Every task change goes through `save_task` (so it bumps the task's version and appends its
//! event) and every instance change through `save_instance`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::container_instances::save_instance;
use super::task_definitions;
use super::tasks::save_task;
use crate::domain::acs_task::acs_task;
use crate::domain::status::{ClusterStatus, ContainerInstanceStatus, TaskStatus};
use crate::domain::{now, Scope};
use crate::error::ApiError;
use crate::shapes::acs::TaskIdentifier;
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
                Some(c) if c.status == ClusterStatus::Active => {}
                _ => {
                    return Err(Refusal::InvalidCluster(format!(
                        "Cluster '{name}' is not an active cluster."
                    )))
                }
            }
            let unknown =
                || Refusal::InvalidInstance(format!("No container instance '{instance}' in cluster '{name}'."));
            let id = scope
                .id_in(&instance, "container-instance", &name)
                .ok_or_else(unknown)?
                .to_owned();
            let record = tx.container_instance(&name, &id)?.ok_or_else(unknown)?;
            if record.status == ContainerInstanceStatus::Inactive {
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
                Some(record) => (
                    record.status != ContainerInstanceStatus::Inactive,
                    record.agent_connected,
                ),
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
        .write_in(&instance.scope, &instance.cluster, move |tx| {
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
        .write_in(&instance.scope, &instance.cluster, move |tx| {
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
fn set_connectivity(tx: &mut Tx<'_>, cluster: &str, id: &str, to: &str) -> Result<(), ApiError> {
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
                let mut definition = definitions[&arn].clone().unwrap_or_default();
                if task.group.as_deref() == Some(super::fargate::POOL_GROUP) {
                    definition = super::fargate::for_agents(&definition);
                }
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
        .write_in(&instance.scope, &instance.cluster, move |tx| {
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
        .write_in(&instance.scope, &instance.cluster, move |tx| {
            for (id, desired) in &tasks {
                tx.set_delivered(&cluster, id, *desired)?;
            }
            Ok::<_, ApiError>(())
        })
        .await
}

/// The tasks that should be on the instance (ACS `TaskIdentifier`s): every task placed there
/// that is not yet STOPPED, with its desired status.
pub async fn manifest(store: &dyn Store, instance: &Instance) -> Result<Vec<TaskIdentifier>, ApiError> {
    let (cluster, id) = (instance.cluster.clone(), instance.id.clone());
    store
        .read(&instance.scope, move |tx| {
            Ok(tx
                .instance_tasks(&cluster, &id)?
                .into_iter()
                .map(|(task, _)| TaskIdentifier {
                    task_arn: Some(task.task_arn),
                    task_cluster_arn: Some(task.cluster_arn),
                    desired_status: Some(task.desired_status.as_str().to_owned()),
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
                let wanted = match scope.id_in(&arn, "task", &cluster) {
                    Some(id) => tx.task(&cluster, id)?.is_some_and(|t| {
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
