//! Task scale-in protection: UpdateTaskProtection and GetTaskProtection, and [`protected`],
//! what the service scheduler asks before it stops a task for a scale-in or a deployment.

use std::collections::HashSet;

use super::tasks::id_of;
use super::{active_cluster, arn_for, failure, Ctx};
use crate::domain::now;
use crate::domain::records::{Task, TaskProtection};
use crate::domain::status::TaskStatus;
use crate::error::ApiError;
use crate::shapes::{
    Failure, GetTaskProtectionRequest, GetTaskProtectionResponse, ProtectedTask, UpdateTaskProtectionRequest,
    UpdateTaskProtectionResponse,
};
use crate::store::sql::Param;
use crate::store::{StoreExt, Tx};

const MAX_TASKS: usize = 10;
const DEFAULT_MINUTES: i32 = 120;
const MAX_MINUTES: i32 = 2880;

fn check_tasks(tasks: &[String]) -> Result<(), ApiError> {
    if tasks.is_empty() || tasks.len() > MAX_TASKS {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'tasks': between 1 and {MAX_TASKS} tasks are allowed."
        )));
    }
    Ok(())
}

/// The ids of the tasks of `cluster` whose protection has not expired; the expired ones are
/// forgotten (the scheduler asks within a write).
pub(crate) fn protected(tx: &mut Tx<'_>, cluster: &str) -> Result<HashSet<String>, ApiError> {
    let at = now();
    let mut live = HashSet::new();
    for p in tx.list::<TaskProtection>(&[cluster.into()], &[], None, usize::MAX)? {
        let id = id_of(&p.task_arn).to_owned();
        if p.expiration_date > at {
            live.insert(id);
        } else {
            tx.delete::<TaskProtection>(&[Param::Text(cluster), Param::Text(&id)])?;
        }
    }
    Ok(live)
}

/// Each task the request names, found in `cluster`, or the failure that names it.
fn resolve(tx: &mut Tx<'_>, cluster: &str, references: &[String]) -> Result<Vec<Result<Task, Failure>>, ApiError> {
    let scope = tx.scope().clone();
    let mut out = Vec::new();
    for reference in references {
        let found = match scope.id_in(reference, "task", cluster) {
            Some(id) => tx.task(cluster, id)?,
            None => None,
        };
        let arn = arn_for(reference, |id| scope.task_arn(cluster, id));
        out.push(match found {
            Some(task) if task.group.as_deref().is_some_and(|g| g.starts_with("service:")) => {
                if task.last_status == TaskStatus::Stopped {
                    Err(Failure {
                        detail: Some("The task is stopped.".into()),
                        ..failure(&arn, "TASK_NOT_VALID")
                    })
                } else {
                    Ok(task)
                }
            }
            Some(_) => Err(Failure {
                detail: Some("The task is not part of a service.".into()),
                ..failure(&arn, "TASK_NOT_VALID")
            }),
            None => Err(failure(&arn, "MISSING")),
        });
    }
    Ok(out)
}

fn shown(task_arn: &str, protection: Option<&TaskProtection>) -> ProtectedTask {
    let live = protection.filter(|p| p.expiration_date > now());
    ProtectedTask {
        task_arn: Some(task_arn.to_owned()),
        protection_enabled: Some(live.is_some()),
        expiration_date: live.map(|p| p.expiration_date),
    }
}

pub async fn update_task_protection(
    ctx: &Ctx,
    req: UpdateTaskProtectionRequest,
) -> Result<UpdateTaskProtectionResponse, ApiError> {
    check_tasks(&req.tasks)?;
    let minutes = req.expires_in_minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'expiresInMinutes': it must be between 1 and {MAX_MINUTES}."
        )));
    }
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, Some(&req.cluster))?;
            let (mut protected_tasks, mut failures) = (Vec::new(), Vec::new());
            for found in resolve(tx, &cluster, &req.tasks)? {
                let task = match found {
                    Ok(task) => task,
                    Err(f) => {
                        failures.push(f);
                        continue;
                    }
                };
                if req.protection_enabled {
                    let protection = TaskProtection {
                        task_arn: task.task_arn.clone(),
                        expiration_date: now() + f64::from(minutes) * 60.0,
                    };
                    tx.put(&protection)?;
                    protected_tasks.push(shown(&task.task_arn, Some(&protection)));
                } else {
                    tx.delete::<TaskProtection>(&[Param::Text(&cluster), Param::Text(task.id())])?;
                    protected_tasks.push(shown(&task.task_arn, None));
                }
            }
            Ok(UpdateTaskProtectionResponse {
                protected_tasks: Some(protected_tasks),
                failures: Some(failures),
            })
        })
        .await
}

pub async fn get_task_protection(
    ctx: &Ctx,
    req: GetTaskProtectionRequest,
) -> Result<GetTaskProtectionResponse, ApiError> {
    let tasks = req.tasks.unwrap_or_default();
    check_tasks(&tasks)?;
    ctx.store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, Some(&req.cluster))?;
            let (mut protected_tasks, mut failures) = (Vec::new(), Vec::new());
            for found in resolve(tx, &cluster, &tasks)? {
                match found {
                    Ok(task) => {
                        let protection = tx.get::<TaskProtection>(&[Param::Text(&cluster), Param::Text(task.id())])?;
                        protected_tasks.push(shown(&task.task_arn, protection.as_ref()));
                    }
                    Err(f) => failures.push(f),
                }
            }
            Ok(GetTaskProtectionResponse {
                protected_tasks: Some(protected_tasks),
                failures: Some(failures),
            })
        })
        .await
}
