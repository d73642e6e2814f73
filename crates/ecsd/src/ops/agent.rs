//! The calls ECS agents make: SubmitTaskStateChange, SubmitContainerStateChange,
//! SubmitAttachmentStateChanges and DiscoverPollEndpoint.
//!
//! Errors matter here more than anywhere: the agent drops a report only on
//! `InvalidParameterException` and retries everything else forever, so a report that can never
//! succeed (unknown task, invalid member) must be `InvalidParameterException`.

use super::tasks::save_task;
use super::{active_cluster, task_definitions, write_in_cluster, Ctx};
use crate::domain::now;
use crate::domain::records::{Cluster, ClusterState, Task};
use crate::domain::status::ClusterStatus;
use crate::domain::status::TaskStatus;
use crate::domain::task_change::{self, ContainerReport, TaskStateReport};
use crate::domain::Scope;
use crate::error::ApiError;
use crate::shapes::{
    DiscoverPollEndpointRequest, DiscoverPollEndpointResponse, SubmitAttachmentStateChangesRequest,
    SubmitAttachmentStateChangesResponse, SubmitContainerStateChangeRequest, SubmitContainerStateChangeResponse,
    SubmitTaskStateChangeResponse,
};
use crate::store::{ReadAhead, StoreError, Tx};

fn ack() -> Option<String> {
    Some("ACK".into())
}

fn unknown_task(reference: &str, cluster: &str) -> ApiError {
    ApiError::invalid_parameter(format!("Invalid 'task': no task '{reference}' in cluster '{cluster}'."))
}

/// The task a report names (id or ARN), which must belong to `cluster`.
fn reported_task(tx: &mut Tx<'_>, cluster: &str, reference: Option<&str>) -> Result<Task, ApiError> {
    let reference = reference.ok_or_else(|| ApiError::invalid_parameter("Missing required parameter 'task'."))?;
    let id = tx
        .scope()
        .id_in(reference, "task", cluster)
        .ok_or_else(|| unknown_task(reference, cluster))?
        .to_owned();
    tx.task(cluster, &id)?.ok_or_else(|| unknown_task(reference, cluster))
}

/// The active cluster a report names and the task it reports on, as [`active_cluster`] and
/// [`reported_task`] find them, both read at once when the names allow.
fn reported(tx: &mut Tx<'_>, cluster: Option<&str>, task: Option<&str>) -> Result<(String, Task), ApiError> {
    let scope = tx.scope().clone();
    let name = scope.cluster_name(cluster.unwrap_or("default"));
    let both = name
        .zip(task)
        .and_then(|(name, task)| Some((name, task, scope.id_in(task, "task", name)?)));
    let Some((name, reference, id)) = both else {
        let cluster = active_cluster(tx, cluster)?;
        let task = reported_task(tx, &cluster, task)?;
        return Ok((cluster, task));
    };
    let (cluster, task) =
        tx.get_pair_as::<Cluster, ClusterState, Task, Task>(&[name.into()], &[name.into(), id.into()])?;
    if !cluster.is_some_and(|c| c.status == ClusterStatus::Active) {
        return Err(ApiError::cluster_not_found());
    }
    let task = task.ok_or_else(|| unknown_task(reference, name))?;
    Ok((name.to_owned(), task))
}

/// What [`reported`] reads of `cluster`: the cluster, and the task if its reference names one
/// of the cluster's.
fn report_reads(scope: &Scope, cluster: &str, task: Option<&str>) -> Vec<ReadAhead> {
    let mut reads = vec![ReadAhead::record::<Cluster>(scope, &[cluster])];
    if let Some(id) = task.and_then(|t| scope.id_in(t, "task", cluster)) {
        reads.push(ReadAhead::record::<Task>(scope, &[cluster, id]));
    }
    reads
}

/// Which containers of a task's definition are essential (all, if the definition is gone).
pub(crate) fn essential_containers(tx: &mut Tx<'_>, task: &Task) -> Result<Vec<String>, ApiError> {
    let definition = task_definitions::find(tx, &task.task_definition_arn)?
        .map(|d| d.spec())
        .transpose()
        .map_err(StoreError::from)?;
    Ok(task
        .containers
        .iter()
        .filter(|c| {
            definition
                .as_ref()
                .and_then(|d| d.container_definitions.iter().find(|spec| spec.name == c.name))
                .is_none_or(|spec| spec.essential != Some(false))
        })
        .map(|c| c.name.clone())
        .collect())
}

/// Applies a report to a task and stores the result if it changed anything.
fn apply_report(tx: &mut Tx<'_>, cluster: &str, task: Task, report: &TaskStateReport) -> Result<Task, ApiError> {
    // Which containers are essential matters only to a task that stops; most reports are not
    // that, and skip reading the task definition.
    let stopping = report.status.as_deref() == Some("STOPPED") && task.last_status != TaskStatus::Stopped;
    let essential = if stopping {
        essential_containers(tx, &task)?
    } else {
        Vec::new()
    };
    let is_essential = |name: &str| essential.iter().any(|e| e == name);
    let mut next = task.clone();
    task_change::apply(&mut next, report, is_essential, now())?;
    Ok(save_task(tx, cluster, &task, next)?)
}

pub async fn submit_task_state_change(
    ctx: &Ctx,
    report: TaskStateReport,
) -> Result<SubmitTaskStateChangeResponse, ApiError> {
    let (reference, task) = (report.cluster.clone(), report.task.clone());
    let reads = move |scope: &Scope, cluster: &str| report_reads(scope, cluster, task.as_deref());
    write_in_cluster(ctx, reference.as_deref(), reads, move |tx| {
        let (cluster, task) = reported(tx, report.cluster.as_deref(), report.task.as_deref())?;
        apply_report(tx, &cluster, task, &report)?;
        Ok(SubmitTaskStateChangeResponse { acknowledgment: ack() })
    })
    .await
}

/// One container's change, as older agents report it; the task's status follows from its
/// containers as ECS derives it.
pub async fn submit_container_state_change(
    ctx: &Ctx,
    req: SubmitContainerStateChangeRequest,
) -> Result<SubmitContainerStateChangeResponse, ApiError> {
    if req.container_name.is_none() {
        return Err(ApiError::invalid_parameter(
            "Missing required parameter 'containerName'.",
        ));
    }
    let (reference, task) = (req.cluster.clone(), req.task.clone());
    let reads = move |scope: &Scope, cluster: &str| report_reads(scope, cluster, task.as_deref());
    write_in_cluster(ctx, reference.as_deref(), reads, move |tx| {
        let (cluster, task) = reported(tx, req.cluster.as_deref(), req.task.as_deref())?;
        let container = ContainerReport {
            container_name: req.container_name.clone(),
            image_digest: None,
            runtime_id: req.runtime_id.clone(),
            exit_code: req.exit_code,
            network_bindings: req.network_bindings.clone(),
            reason: req.reason.clone(),
            status: req.status.clone(),
        };
        let mut report = TaskStateReport {
            containers: Some(vec![container]),
            ..TaskStateReport::default()
        };
        // Validate and apply the container first, then let the task follow.
        let essential = essential_containers(tx, &task)?;
        let is_essential = |name: &str| essential.iter().any(|e| e == name);
        let mut probe = task.clone();
        task_change::apply(&mut probe, &report, is_essential, now())?;
        report.status = task_change::status_from_containers(&probe, is_essential).map(|s| s.as_str().to_owned());
        apply_report(tx, &cluster, task, &report)?;
        Ok(SubmitContainerStateChangeResponse { acknowledgment: ack() })
    })
    .await
}

pub async fn submit_attachment_state_changes(
    ctx: &Ctx,
    req: SubmitAttachmentStateChangesRequest,
) -> Result<SubmitAttachmentStateChangesResponse, ApiError> {
    if req.attachments.is_empty() {
        return Err(ApiError::invalid_parameter(
            "Invalid 'attachments': at least one attachment is required.",
        ));
    }
    let reference = req.cluster.clone();
    let reads = |scope: &Scope, cluster: &str| report_reads(scope, cluster, None);
    write_in_cluster(ctx, reference.as_deref(), reads, move |tx| {
        let cluster = active_cluster(tx, req.cluster.as_deref())?;
        for (i, attachment) in req.attachments.iter().enumerate() {
            let id = attachment.attachment_arn.rsplit('/').next().unwrap_or_default();
            let task = tx.task_with_attachment(&cluster, id)?.ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "Invalid 'attachments[{i}].attachmentArn': no attachment '{}' in cluster '{cluster}'.",
                    attachment.attachment_arn
                ))
            })?;
            let report = TaskStateReport {
                attachments: Some(vec![attachment.clone()]),
                ..TaskStateReport::default()
            };
            apply_report(tx, &cluster, task, &report)?;
        }
        Ok(SubmitAttachmentStateChangesResponse { acknowledgment: ack() })
    })
    .await
}

/// Where agents reach ecsd's ACS (task delivery) and TCS (telemetry) endpoints.
pub async fn discover_poll_endpoint(
    ctx: &Ctx,
    _req: DiscoverPollEndpointRequest,
) -> Result<DiscoverPollEndpointResponse, ApiError> {
    let base = ctx.advertise_url.trim_end_matches('/');
    Ok(DiscoverPollEndpointResponse {
        endpoint: Some(format!("{base}/acs")),
        telemetry_endpoint: Some(format!("{base}/tcs")),
        service_connect_endpoint: Some(format!("{base}/service-connect")),
    })
}
