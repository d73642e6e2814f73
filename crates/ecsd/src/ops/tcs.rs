//! The store side of TCS, the channel agents publish telemetry on: the container health and
//! instance status they report (the rules are in [`crate::domain::health`]); metrics are not
//! kept.

use serde::Deserialize;

use super::acs::Instance;
use super::agent::essential_containers;
use super::container_instances::save_instance;
use super::tasks::save_task;
use crate::domain::health;
use crate::domain::status::TaskStatus;
use crate::error::ApiError;
use crate::store::{Store, StoreExt};

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

/// Records the container health an agent published: each container's `healthStatus`, and the
/// task's, derived as ECS does from its essential containers. Tasks that are not on this
/// instance are ignored.
pub async fn record_health(store: &dyn Store, instance: &Instance, tasks: Vec<TaskHealth>) -> Result<(), ApiError> {
    let (cluster, instance_arn) = (instance.cluster.clone(), instance.arn.clone());
    store
        .write_in(&instance.scope, &instance.cluster, move |tx| {
            let scope = tx.scope().clone();
            for report in &tasks {
                let Some(id) = report
                    .task_arn
                    .as_deref()
                    .and_then(|arn| scope.id_in(arn, "task", &cluster))
                else {
                    continue;
                };
                let Some(task) = tx.task(&cluster, id)? else { continue };
                if task.container_instance_arn.as_deref() != Some(instance_arn.as_str())
                    || task.last_status == TaskStatus::Stopped
                {
                    continue;
                }
                let mut next = task.clone();
                for c in &report.containers {
                    let status = c
                        .health_status
                        .as_deref()
                        .filter(|s| health::HEALTH_STATUSES.contains(s));
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
                    next.health_status = Some(health::task_health(
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

/// Records the instance status an agent published as the instance's `healthStatus`
/// (`ContainerInstanceHealthStatus`): one detail per check type, the overall status the worst
/// of them.
pub async fn record_instance_status(
    store: &dyn Store,
    instance: &Instance,
    statuses: Vec<health::InstanceStatus>,
) -> Result<(), ApiError> {
    let (cluster, id) = (instance.cluster.clone(), instance.id.clone());
    store
        .write_in(&instance.scope, &instance.cluster, move |tx| {
            let Some(record) = tx.container_instance(&cluster, &id)? else {
                return Ok(());
            };
            let next = health::with_health(&record, &statuses);
            if next != record {
                save_instance(tx, &cluster, &id, &next)?;
            }
            Ok::<_, ApiError>(())
        })
        .await
}
