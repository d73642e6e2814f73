//! CreateService, UpdateService, DeleteService, DescribeServices, ListServices, and
//! [`reconcile`], the service scheduler's one pass over a service.
//!
//! A REPLICA service keeps `desiredCount` tasks of its PRIMARY deployment running. A change
//! that needs new tasks (a task definition, `forceNewDeployment`, network or placement) starts
//! a new PRIMARY deployment and the older ones become ACTIVE; the scheduler then rolls tasks
//! over within `deploymentConfiguration`: tasks PENDING, RUNNING or stopping, of every
//! deployment, never exceed ⌊maximumPercent⌋ of the desired count, and RUNNING tasks never drop
//! below ⌈minimumHealthyPercent⌉; old tasks stop only as new ones run. Every pass is one store
//! transaction, so the scheduler keeps nothing in memory: a restart or another process sharing
//! the store carries on from what is stored, and concurrent passes cannot overshoot.

use serde_json::{json, Map, Value};

use super::tasks::{self, save_task, Rules, TaskRequest};
use super::{active_cluster, arn_for, failure, members, Ctx, Page};
use crate::domain::placement::Strategy;
use crate::domain::records::{Deployment, SchedulerState, Service, ServiceEvent, Tag, Task};
use crate::domain::status::{ServiceStatus, TaskStatus};
use crate::domain::{is_valid_name, new_id, now};
use crate::error::{ApiError, ErrorCode};
use crate::model::Model;
use crate::shapes::{
    self, CreateServiceRequest, CreateServiceResponse, DeleteServiceRequest, DeleteServiceResponse,
    DescribeServicesRequest, DescribeServicesResponse, ListServicesRequest, ListServicesResponse, SchedulingStrategy,
    ServiceField, UpdateServiceRequest, UpdateServiceResponse,
};
use crate::store::{StoreError, StoreExt, Tx};

const MAX_EVENTS: usize = 100;
const MAX_DESCRIBE: usize = 10;
/// The longest back-off after tasks that failed to start.
const MAX_HOLD_SECS: f64 = 900.0;

fn service_not_found() -> ApiError {
    ApiError::new(ErrorCode::ServiceNotFoundException, "Service not found.")
}

fn service_not_active() -> ApiError {
    ApiError::new(ErrorCode::ServiceNotActiveException, "Service was not ACTIVE.")
}

/// A new deployment id: `ecs-svc/` and 19 digits, as ECS makes them.
fn deployment_id() -> String {
    let digits: String = new_id().bytes().map(|b| char::from(b'0' + b % 10)).take(19).collect();
    format!("ecs-svc/{digits}")
}

/// `deploymentConfiguration` with ECS's defaults filled in.
fn deployment_configuration(requested: Option<&shapes::DeploymentConfiguration>) -> Result<Value, ApiError> {
    let mut config = requested
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let max = config.get("maximumPercent").and_then(Value::as_i64).unwrap_or(200);
    let min = config
        .get("minimumHealthyPercent")
        .and_then(Value::as_i64)
        .unwrap_or(100);
    if !(0..=100).contains(&min) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'deploymentConfiguration.minimumHealthyPercent': it must be between 0 and 100.",
        ));
    }
    if max < 100 || max < min {
        return Err(ApiError::invalid_parameter(
            "Invalid 'deploymentConfiguration.maximumPercent': it must be at least 100 and at least minimumHealthyPercent.",
        ));
    }
    config.insert("maximumPercent".into(), max.into());
    config.insert("minimumHealthyPercent".into(), min.into());
    config
        .entry("deploymentCircuitBreaker")
        .or_insert(json!({"enable": false, "rollback": false}));
    Ok(Value::Object(config))
}

/// The members of a request that a service keeps as sent: those of the model's `Service`.
fn kept_options(request: &impl serde::Serialize, except: &[&str]) -> Map<String, Value> {
    let model = Model::get();
    let mut options = members(request, except);
    options.retain(|member, _| model.shape_has_member("Service", member));
    options
}

fn new_deployment(service: &Service, now: f64) -> Deployment {
    Deployment {
        id: deployment_id(),
        status: "PRIMARY".into(),
        task_definition: service.task_definition.clone(),
        desired_count: service.desired_count,
        failed_tasks: 0,
        created_at: now,
        updated_at: now,
        launch_type: service.launch_type.clone(),
        rollout_state: "IN_PROGRESS".into(),
        rollout_state_reason: "ECS deployment in progress.".into(),
        network_configuration: service.options.get("networkConfiguration").cloned(),
    }
}

/// Makes `deployment` the PRIMARY one; the others become ACTIVE.
fn start_deployment(service: &mut Service, now: f64) {
    for d in &mut service.deployments {
        d.status = "ACTIVE".into();
        d.updated_at = now;
    }
    let deployment = new_deployment(service, now);
    service.deployments.insert(0, deployment);
    service.scheduler.failed_starts = 0;
    service.scheduler.hold_until = 0.0;
}

/// Adds an event, unless it repeats the newest one.
fn note(service: &mut Service, message: String, at: f64) {
    if service.events.first().is_some_and(|e| e.message == message) {
        return;
    }
    service.events.insert(
        0,
        ServiceEvent {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: at,
            message,
        },
    );
    service.events.truncate(MAX_EVENTS);
}

/// The resolved ARN of the task definition a request names (its latest ACTIVE revision for a
/// bare family), which must be ACTIVE.
fn resolve_definition(tx: &mut Tx<'_>, reference: &str) -> Result<String, ApiError> {
    let stored = tasks_definition(tx, reference)?;
    if stored.status() != crate::domain::status::TaskDefinitionStatus::Active {
        return Err(ApiError::client(format!("TaskDefinition is inactive: {reference}")));
    }
    stored
        .definition
        .get("taskDefinitionArn")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::internal("a stored task definition has no ARN"))
}

fn tasks_definition(
    tx: &mut Tx<'_>,
    reference: &str,
) -> Result<crate::domain::records::StoredTaskDefinition, ApiError> {
    super::task_definitions::find(tx, reference)?
        .ok_or_else(|| ApiError::client(format!("TaskDefinition not found: {reference}")))
}

/// The service a request names (name or ARN) in `cluster`.
fn find(tx: &mut Tx<'_>, cluster: &str, reference: &str) -> Result<Option<Service>, ApiError> {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    if reference.starts_with("arn:") && tx.scope().id_in(reference, "service", cluster).is_none() {
        return Ok(None);
    }
    Ok(tx.get::<Service>(&[cluster.into(), name.into()])?)
}

pub async fn create_service(ctx: &Ctx, req: CreateServiceRequest) -> Result<CreateServiceResponse, ApiError> {
    if !is_valid_name(&req.service_name) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'serviceName': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    if req.scheduling_strategy == Some(SchedulingStrategy::Daemon) {
        return Err(ApiError::invalid_parameter(
            "The DAEMON scheduling strategy is not supported by ecsd yet; use REPLICA.",
        ));
    }
    if req
        .deployment_controller
        .as_ref()
        .is_some_and(|c| c.r#type != shapes::DeploymentControllerType::Ecs)
    {
        return Err(ApiError::invalid_parameter(
            "Only the ECS deployment controller is supported by ecsd yet.",
        ));
    }
    let Some(reference) = req.task_definition.clone() else {
        return Err(ApiError::invalid_parameter(
            "A task definition is required with the ECS deployment controller.",
        ));
    };
    let desired = i64::from(req.desired_count.unwrap_or(0));
    if desired < 0 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'desiredCount': it cannot be negative.",
        ));
    }
    let launch_type = tasks::check_launch_type(req.launch_type.map(|l| l.as_str()))?;
    let configuration = deployment_configuration(req.deployment_configuration.as_ref())?;
    tasks::strategies(req.placement_strategy.as_deref().unwrap_or_default())?;
    tasks::constraints(req.placement_constraints.as_deref().unwrap_or_default())?;
    super::tags::check_tags(req.tags.as_deref().unwrap_or_default())?;
    let mut options = kept_options(
        &req,
        &[
            "serviceName",
            "taskDefinition",
            "desiredCount",
            "launchType",
            "deploymentConfiguration",
            "schedulingStrategy",
        ],
    );
    options.entry("tags").or_insert(json!([]));
    options.entry("placementConstraints").or_insert(json!([]));
    options.entry("placementStrategy").or_insert(json!([]));
    options.entry("propagateTags").or_insert(json!("NONE"));
    options.entry("enableECSManagedTags").or_insert(json!(false));
    options.entry("enableExecuteCommand").or_insert(json!(false));
    options.entry("loadBalancers").or_insert(json!([]));
    options.entry("serviceRegistries").or_insert(json!([]));
    options.entry("deploymentController").or_insert(json!({"type": "ECS"}));
    let principal = ctx.principal.arn();
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let task_definition = resolve_definition(tx, &reference)?;
            let scope = tx.scope().clone();
            let existing = tx.get::<Service>(&[cluster.as_str().into(), req.service_name.as_str().into()])?;
            if let Some(existing) = existing.filter(|s| s.status != ServiceStatus::Inactive) {
                // The same request again answers the service it made; another is refused.
                let same = existing.task_definition == task_definition
                    && existing.desired_count == desired
                    && existing.launch_type == launch_type;
                if same {
                    return Ok(CreateServiceResponse {
                        service: Some(view(tx, &cluster, existing, false)?),
                    });
                }
                return Err(ApiError::invalid_parameter("Creation of service was not idempotent."));
            }
            let at = now();
            let mut service = Service {
                service_arn: format!(
                    "arn:aws:ecs:{}:{}:service/{cluster}/{}",
                    scope.region, scope.account, req.service_name
                ),
                service_name: req.service_name.clone(),
                cluster_arn: scope.cluster_arn(&cluster),
                status: ServiceStatus::Active,
                desired_count: desired,
                task_definition,
                launch_type: launch_type.clone(),
                scheduling_strategy: "REPLICA".into(),
                deployment_configuration: configuration.clone(),
                deployments: Vec::new(),
                events: Vec::new(),
                created_at: at,
                created_by: principal.clone(),
                scheduler: SchedulerState::default(),
                options: options.clone(),
            };
            start_deployment(&mut service, at);
            tx.put(&service)?;
            Ok(CreateServiceResponse {
                service: Some(view(tx, &cluster, service, false)?),
            })
        })
        .await
}

pub async fn update_service(ctx: &Ctx, req: UpdateServiceRequest) -> Result<UpdateServiceResponse, ApiError> {
    let configuration = match &req.deployment_configuration {
        Some(c) => Some(deployment_configuration(Some(c))?),
        None => None,
    };
    if req.desired_count.is_some_and(|d| d < 0) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'desiredCount': it cannot be negative.",
        ));
    }
    if let Some(strategy) = &req.placement_strategy {
        tasks::strategies(strategy)?;
    }
    if let Some(constraints) = &req.placement_constraints {
        tasks::constraints(constraints)?;
    }
    // Members that need new tasks when they change.
    let rolling = kept_options(
        &req,
        &[
            "cluster",
            "service",
            "desiredCount",
            "taskDefinition",
            "deploymentConfiguration",
            "forceNewDeployment",
        ],
    );
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let mut service = find(tx, &cluster, &req.service)?.ok_or_else(service_not_found)?;
            if service.status != ServiceStatus::Active {
                return Err(service_not_active());
            }
            let at = now();
            let mut deploy = req.force_new_deployment.unwrap_or(false);
            if let Some(reference) = &req.task_definition {
                let arn = resolve_definition(tx, reference)?;
                deploy |= arn != service.task_definition;
                service.task_definition = arn;
            }
            for (member, value) in &rolling {
                let changes_tasks = matches!(
                    member.as_str(),
                    "networkConfiguration"
                        | "placementConstraints"
                        | "placementStrategy"
                        | "platformVersion"
                        | "launchType"
                );
                if service.options.get(member) != Some(value) {
                    deploy |= changes_tasks;
                    service.options.insert(member.clone(), value.clone());
                }
            }
            if let Some(config) = &configuration {
                service.deployment_configuration = config.clone();
            }
            if let Some(desired) = req.desired_count {
                service.desired_count = i64::from(desired);
                if let Some(primary) = service.deployments.first_mut() {
                    primary.desired_count = service.desired_count;
                    primary.updated_at = at;
                }
            }
            if deploy {
                start_deployment(&mut service, at);
            }
            tx.put(&service)?;
            Ok(UpdateServiceResponse {
                service: Some(view(tx, &cluster, service, false)?),
            })
        })
        .await
}

pub async fn delete_service(ctx: &Ctx, req: DeleteServiceRequest) -> Result<DeleteServiceResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let mut service = find(tx, &cluster, &req.service)?.ok_or_else(service_not_found)?;
            match service.status {
                ServiceStatus::Inactive => return Err(service_not_active()),
                ServiceStatus::Draining => {}
                ServiceStatus::Active => {
                    if service.desired_count > 0 && !req.force.unwrap_or(false) {
                        return Err(ApiError::invalid_parameter(
                            "The service cannot be stopped while it is scaled above 0.",
                        ));
                    }
                    service.status = ServiceStatus::Draining;
                    service.desired_count = 0;
                    tx.put(&service)?;
                }
            }
            Ok(DeleteServiceResponse {
                service: Some(view(tx, &cluster, service, false)?),
            })
        })
        .await
}

pub async fn describe_services(ctx: &Ctx, req: DescribeServicesRequest) -> Result<DescribeServicesResponse, ApiError> {
    if req.services.is_empty() || req.services.len() > MAX_DESCRIBE {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'services': between 1 and {MAX_DESCRIBE} services can be described at once."
        )));
    }
    let with_tags = req.include.unwrap_or_default().contains(&ServiceField::Tags);
    ctx.store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let (mut services, mut failures) = (Vec::new(), Vec::new());
            for reference in &req.services {
                match find(tx, &cluster, reference)? {
                    Some(service) => services.push(view(tx, &cluster, service, with_tags)?),
                    None => {
                        let arn = arn_for(reference, |name| {
                            format!(
                                "arn:aws:ecs:{}:{}:service/{cluster}/{name}",
                                tx.scope().region,
                                tx.scope().account
                            )
                        });
                        failures.push(failure(&arn, "MISSING"));
                    }
                }
            }
            Ok(DescribeServicesResponse {
                services: Some(services),
                failures: Some(failures),
            })
        })
        .await
}

pub async fn list_services(ctx: &Ctx, req: ListServicesRequest) -> Result<ListServicesResponse, ApiError> {
    let page = Page::new("services", req.max_results, req.next_token.as_deref())?;
    let (after, limit) = (page.after.clone(), page.fetch());
    let launch_type = req.launch_type.map(|l| l.as_str());
    let strategy = req.scheduling_strategy.map(|s| s.as_str());
    let found = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let listed = tx.list::<Service>(
                &[cluster.as_str().into()],
                &[crate::store::Filter::Ne(
                    "status",
                    ServiceStatus::Inactive.as_str().into(),
                )],
                after.as_deref(),
                usize::MAX,
            )?;
            Ok::<_, ApiError>(
                listed
                    .into_iter()
                    .filter(|s| launch_type.is_none_or(|l| s.launch_type == l))
                    .filter(|s| strategy.is_none_or(|st| s.scheduling_strategy == st))
                    .take(limit)
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
    let (found, next_token) = page.finish(found, |s| s.service_name.clone());
    Ok(ListServicesResponse {
        service_arns: Some(found.into_iter().map(|s| s.service_arn).collect()),
        next_token,
    })
}

/// What a task is to the scheduler.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    /// Told to stop, not yet STOPPED.
    Stopping,
    Stopped,
}

fn phase(task: &Task) -> Phase {
    if task.last_status == TaskStatus::Stopped {
        Phase::Stopped
    } else if task.desired_status == TaskStatus::Stopped {
        Phase::Stopping
    } else if task.last_status == TaskStatus::Running {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// A service as the model's `Service`: counts derived from its tasks.
fn view(tx: &mut Tx<'_>, cluster: &str, service: Service, with_tags: bool) -> Result<shapes::Service, StoreError> {
    let tasks = tx.group_tasks(cluster, &format!("service:{}", service.service_name), f64::MAX)?;
    let count = |deployment: Option<&str>, wanted: Phase| {
        tasks
            .iter()
            .filter(|t| deployment.is_none_or(|d| t.started_by.as_deref() == Some(d)))
            .filter(|t| phase(t) == wanted)
            .count() as i64
    };
    let mut out = serde_json::to_value(&service)?;
    let map = out.as_object_mut().expect("a record serializes as an object");
    map.remove("scheduler");
    map.insert("runningCount".into(), count(None, Phase::Running).into());
    map.insert("pendingCount".into(), count(None, Phase::Pending).into());
    if let Some(Value::Array(deployments)) = map.get_mut("deployments") {
        for (shown, deployment) in deployments.iter_mut().zip(&service.deployments) {
            shown["runningCount"] = count(Some(&deployment.id), Phase::Running).into();
            shown["pendingCount"] = count(Some(&deployment.id), Phase::Pending).into();
        }
    }
    if !with_tags {
        map.remove("tags");
    }
    Ok(shapes::Service(out))
}

/// One pass of the scheduler over a service: starts, stops and retires what its deployments
/// call for, within the deployment configuration, and records what it did. Returns whether
/// anything changed.
pub fn reconcile(tx: &mut Tx<'_>, cluster: &str, name: &str) -> Result<bool, ApiError> {
    let Some(mut service) = tx.get::<Service>(&[cluster.into(), name.into()])? else {
        return Ok(false);
    };
    let before = service.clone();
    let at = now();
    let group = format!("service:{name}");
    let all = tx.group_tasks(cluster, &group, service.scheduler.checked_until)?;
    service.scheduler.checked_until = at;
    let (mut live, stopped): (Vec<Task>, Vec<Task>) = all.into_iter().partition(|t| phase(t) != Phase::Stopped);
    let primary_id = service.deployments.first().map(|d| d.id.clone()).unwrap_or_default();

    // Tasks of the PRIMARY deployment that stopped before they ran hold further starts back.
    let failed = stopped
        .iter()
        .filter(|t| t.started_by.as_deref() == Some(primary_id.as_str()) && t.started_at.is_none())
        .count() as i64;
    if failed > 0 {
        service.scheduler.failed_starts += failed as u32;
        if let Some(primary) = service.deployments.first_mut() {
            primary.failed_tasks += failed;
        }
        let hold = (2f64.powi(service.scheduler.failed_starts.min(10) as i32)).min(MAX_HOLD_SECS);
        service.scheduler.hold_until = at + hold;
        if service.scheduler.failed_starts >= 3 {
            note(
                &mut service,
                format!("(service {name}) is unable to consistently start tasks successfully."),
                at,
            );
        }
    } else if stopped
        .iter()
        .any(|t| t.started_by.as_deref() == Some(primary_id.as_str()) && t.started_at.is_some())
    {
        service.scheduler.failed_starts = 0;
    }

    let mut stops: Vec<(String, String)> = Vec::new();
    if service.status == ServiceStatus::Draining {
        for task in &live {
            if phase(task) != Phase::Stopping {
                stops.push((task.id().to_owned(), "Service is being deleted".into()));
            }
        }
        if live.is_empty() {
            service.status = ServiceStatus::Inactive;
            service.deployments.clear();
        }
    } else {
        plan(&mut service, &live, &mut stops, at)?;
        let starting = starts_due(&service, &live);
        if starting > 0 && at >= service.scheduler.hold_until {
            let started = launch(tx, cluster, &mut service, starting, at)?;
            live.extend(started);
        }
        retire(&mut service, &live, at);
    }
    let stopped_now = stop(tx, cluster, &stops)?;
    if !stopped_now.is_empty() && service.status != ServiceStatus::Inactive {
        let ids: Vec<String> = stopped_now.iter().map(|id| format!("(task {id})")).collect();
        note(
            &mut service,
            format!(
                "(service {name}) has stopped {} running tasks: {}.",
                ids.len(),
                ids.join(" ")
            ),
            at,
        );
    }
    let changed = service != before;
    // Only the time of the last look moved: nothing worth a write.
    let mut unchanged = service.clone();
    unchanged.scheduler.checked_until = before.scheduler.checked_until;
    if unchanged != before {
        tx.put(&service)?;
    }
    Ok(changed && unchanged != before)
}

/// How many tasks the PRIMARY deployment should start now: what it lacks, within the room
/// `maximumPercent` leaves across every deployment.
fn starts_due(service: &Service, live: &[Task]) -> usize {
    let Some(primary) = service.deployments.first() else {
        return 0;
    };
    let desired = service.desired_count.max(0);
    let max_percent = service.deployment_configuration["maximumPercent"]
        .as_i64()
        .unwrap_or(200);
    let ceiling = desired * max_percent / 100;
    let primary_active = live
        .iter()
        .filter(|t| t.started_by.as_deref() == Some(primary.id.as_str()) && phase(t) != Phase::Stopping)
        .count() as i64;
    let occupied = live.len() as i64;
    (desired - primary_active).min(ceiling - occupied).max(0) as usize
}

/// Which tasks to stop: the PRIMARY deployment's beyond the desired count, and older
/// deployments' as far as `minimumHealthyPercent` allows.
fn plan(service: &mut Service, live: &[Task], stops: &mut Vec<(String, String)>, at: f64) -> Result<(), ApiError> {
    let Some(primary) = service.deployments.first().cloned() else {
        return Ok(());
    };
    let name = service.service_name.clone();
    let desired = service.desired_count.max(0);
    let min_percent = service.deployment_configuration["minimumHealthyPercent"]
        .as_i64()
        .unwrap_or(100);
    let floor = (desired * min_percent + 99) / 100;
    let reason = |d: &str| format!("Scaling activity initiated by (deployment {d})");
    // Scale-in: pending tasks first, then running ones from the most crowded instance.
    let mut primary_active: Vec<&Task> = live
        .iter()
        .filter(|t| t.started_by.as_deref() == Some(primary.id.as_str()) && phase(t) != Phase::Stopping)
        .collect();
    if primary_active.len() as i64 > desired {
        primary_active.sort_by_key(|t| {
            let crowd = live
                .iter()
                .filter(|o| o.container_instance_arn == t.container_instance_arn)
                .count();
            (phase(t) == Phase::Running, std::cmp::Reverse(crowd))
        });
        for task in primary_active.iter().take(primary_active.len() - desired as usize) {
            stops.push((task.id().to_owned(), reason(&primary.id)));
        }
    }
    // Older deployments: their pending tasks go at once; running ones only while enough
    // tasks run.
    let mut running = live.iter().filter(|t| phase(t) == Phase::Running).count() as i64
        - stops
            .iter()
            .filter(|(id, _)| live.iter().any(|t| t.id() == id && phase(t) == Phase::Running))
            .count() as i64;
    let mut blocked = false;
    for task in live
        .iter()
        .filter(|t| t.started_by.as_deref() != Some(primary.id.as_str()))
    {
        match phase(task) {
            Phase::Pending => stops.push((task.id().to_owned(), reason(&primary.id))),
            Phase::Running if running > floor => {
                stops.push((task.id().to_owned(), reason(&primary.id)));
                running -= 1;
            }
            Phase::Running => blocked = true,
            Phase::Stopping | Phase::Stopped => {}
        }
    }
    if blocked && starts_due(service, live) == 0 && !live.iter().any(|t| phase(t) == Phase::Stopping) {
        let primary_pending = live
            .iter()
            .any(|t| t.started_by.as_deref() == Some(primary.id.as_str()) && phase(t) == Phase::Pending);
        if !primary_pending {
            note(
                service,
                format!(
                    "(service {name}) was unable to stop or start tasks during a deployment because of the service deployment configuration. Update the minimumHealthyPercent or maximumPercent value and try again."
                ),
                at,
            );
        }
    }
    Ok(())
}

/// Starts `count` tasks of the PRIMARY deployment; placement failures become service events.
fn launch(tx: &mut Tx<'_>, cluster: &str, service: &mut Service, count: usize, at: f64) -> Result<Vec<Task>, ApiError> {
    let primary = service.deployments[0].clone();
    let name = service.service_name.clone();
    let options = &service.options;
    let service_tags: Vec<Tag> = options
        .get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let propagate = options.get("propagateTags").and_then(Value::as_str).unwrap_or("NONE");
    let tags = match propagate {
        "SERVICE" => service_tags,
        _ => Vec::new(),
    };
    let managed = options.get("enableECSManagedTags").and_then(Value::as_bool) == Some(true);
    let request = TaskRequest {
        cluster: Some(cluster.to_owned()),
        task_definition: primary.task_definition.clone(),
        overrides: None,
        started_by: Some(primary.id.clone()),
        group: Some(format!("service:{name}")),
        network_configuration: primary.network_configuration.clone(),
        tags,
        propagate_tags: (propagate == "TASK_DEFINITION").then_some(shapes::PropagateTags::TaskDefinition),
        enable_execute_command: options.get("enableExecuteCommand").and_then(Value::as_bool) == Some(true),
    };
    let placement_error = |service: &mut Service, reason: &str| {
        note(
            service,
            format!("(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {reason}"),
            at,
        );
    };
    let requested_strategies: Vec<shapes::PlacementStrategy> = options
        .get("placementStrategy")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let mut strategies = tasks::strategies(&requested_strategies)?;
    if strategies.is_empty() {
        // ECS's default for services: balance across zones, then across instances.
        strategies = vec![
            Strategy::Spread("attribute:ecs.availability-zone".into()),
            Strategy::Spread("instanceId".into()),
        ];
    }
    let requested_constraints: Vec<shapes::PlacementConstraint> = options
        .get("placementConstraints")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let (mut member_of, distinct_instance) = tasks::constraints(&requested_constraints)?;
    let extra = tasks::extra_members(options.get("platformVersion").and_then(Value::as_str));
    let mut template = match request.template(tx, primary.launch_type.clone(), None, extra) {
        Ok(template) => template,
        Err(e) if e.code.http_status() < 500 => {
            placement_error(service, &e.message);
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    if managed {
        // ECS's own tags: past the `aws:` prefix the rules keep from clients.
        for (key, value) in [("aws:ecs:serviceName", name.as_str()), ("aws:ecs:clusterName", cluster)] {
            template.tags.push(Tag {
                key: Some(key.into()),
                value: Some(value.into()),
            });
        }
    }
    member_of.extend(tasks::definition_constraints(tx, &primary.task_definition)?);
    let rules = Rules {
        strategies: &strategies,
        member_of: &member_of,
        distinct_instance,
    };
    let (started, refusals) = match tasks::place_tasks(tx, &request, &template, count, &rules) {
        Ok(placed) => placed,
        Err(e) if e.code.http_status() < 500 => {
            placement_error(service, &e.message);
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    if let Some((_, why)) = refusals.first() {
        placement_error(service, &format!("{why}."));
    }
    if !started.is_empty() {
        let ids: Vec<String> = started.iter().map(|t| format!("(task {})", t.id())).collect();
        note(
            service,
            format!("(service {name}) has started {} tasks: {}.", ids.len(), ids.join(" ")),
            at,
        );
    }
    Ok(started)
}

/// Tells the tasks to stop (the scheduler's stop code and reason); the ids stopped.
fn stop(tx: &mut Tx<'_>, cluster: &str, stops: &[(String, String)]) -> Result<Vec<String>, ApiError> {
    let mut done = Vec::new();
    for (id, reason) in stops {
        let Some(task) = tx.task(cluster, id)? else { continue };
        if task.desired_status == TaskStatus::Stopped {
            continue;
        }
        let mut next = task.clone();
        next.desired_status = TaskStatus::Stopped;
        next.stopping_at.get_or_insert_with(now);
        next.stop_code = Some("ServiceSchedulerInitiated".into());
        next.stopped_reason = Some(reason.clone());
        save_task(tx, cluster, &task, next)?;
        done.push(id.clone());
    }
    Ok(done)
}

/// Retires the older deployments that hold no task any more, and completes the PRIMARY one
/// once it runs the desired count alone.
fn retire(service: &mut Service, live: &[Task], at: f64) {
    let name = service.service_name.clone();
    let holds = |d: &Deployment| live.iter().any(|t| t.started_by.as_deref() == Some(d.id.as_str()));
    let mut kept = Vec::with_capacity(service.deployments.len());
    for (i, d) in service.deployments.drain(..).enumerate() {
        if i == 0 || holds(&d) {
            kept.push(d);
        }
    }
    service.deployments = kept;
    let desired = service.desired_count;
    let Some(primary) = service.deployments.first_mut() else {
        return;
    };
    let running = live
        .iter()
        .filter(|t| t.started_by.as_deref() == Some(primary.id.as_str()) && phase(t) == Phase::Running)
        .count() as i64;
    let alone = live
        .iter()
        .all(|t| t.started_by.as_deref() == Some(primary.id.as_str()) && phase(t) == Phase::Running);
    let steady = running == desired && alone;
    if steady && primary.rollout_state == "IN_PROGRESS" {
        primary.rollout_state = "COMPLETED".into();
        primary.rollout_state_reason = format!("ECS deployment {} completed.", primary.id);
        primary.updated_at = at;
        let id = primary.id.clone();
        note(
            service,
            format!("(service {name}) (deployment {id}) deployment completed."),
            at,
        );
    }
    if steady {
        note(service, format!("(service {name}) has reached a steady state."), at);
    }
}
