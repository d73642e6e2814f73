//! The calls ECS agents make to report what happened: SubmitTaskStateChange.
//!
//! Errors matter here more than anywhere: the agent drops a report only on
//! `InvalidParameterException` and retries everything else forever, so a report that can never
//! succeed (unknown task, invalid member) must be `InvalidParameterException`.

use serde::Serialize;

use super::tasks::save_task;
use super::{active_cluster, task_definitions, Ctx};
use crate::domain::now;
use crate::domain::task_change::{self, TaskStateReport};
use crate::error::ApiError;
use crate::store::{StoreError, StoreExt};

#[derive(Serialize)]
pub struct SubmitStateChangeResponse {
    acknowledgment: String,
}

pub async fn submit_task_state_change(
    ctx: &Ctx,
    report: TaskStateReport,
) -> Result<SubmitStateChangeResponse, ApiError> {
    let reference = report
        .task
        .clone()
        .ok_or_else(|| ApiError::invalid_parameter("Missing required parameter 'task'."))?;
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, report.cluster.as_deref())?;
            let unknown = || {
                ApiError::invalid_parameter(format!("Invalid 'task': no task '{reference}' in cluster '{cluster}'."))
            };
            let id = tx
                .scope()
                .resource_id(&reference, "task")
                .filter(|r| r.cluster.is_none_or(|c| c == cluster))
                .ok_or_else(unknown)?
                .id
                .to_owned();
            let task = tx.task(&cluster, &id)?.ok_or_else(unknown)?;
            let definition = task_definitions::find(tx, &task.task_definition_arn)?
                .map(|d| d.spec())
                .transpose()
                .map_err(StoreError::from)?;
            let essential = |name: &str| {
                definition
                    .as_ref()
                    .and_then(|d| d.container_definitions.iter().find(|c| c.name == name))
                    .is_none_or(|c| c.essential != Some(false))
            };
            let mut next = task.clone();
            task_change::apply(&mut next, &report, essential, now())?;
            save_task(tx, &cluster, &task, next)?;
            Ok(SubmitStateChangeResponse {
                acknowledgment: "ACK".into(),
            })
        })
        .await
}
