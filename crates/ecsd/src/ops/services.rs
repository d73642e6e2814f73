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

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::tasks::{self, save_task, Rules, TaskRequest};
use super::{active_cluster, arn_for, failure, members, Ctx, Page};
use crate::domain::events;
use crate::domain::placement::Strategy;
use crate::domain::records::{
    Deployment, History, SchedulerState, Service, ServiceDeploymentRecord, ServiceEvent, Tag, Task, TaskSetRecord,
};
use crate::domain::status::{ServiceStatus, TaskStatus};
use crate::domain::{is_valid_name, new_id, now};
use crate::error::{ApiError, ErrorCode};
use crate::model::Model;
use crate::shapes::{
    self, CreateServiceRequest, CreateServiceResponse, CreateTaskSetRequest, CreateTaskSetResponse,
    DeleteServiceRequest, DeleteServiceResponse, DeleteTaskSetRequest, DeleteTaskSetResponse,
    DescribeServiceDeploymentsRequest, DescribeServiceDeploymentsResponse, DescribeServiceRevisionsRequest,
    DescribeServiceRevisionsResponse, DescribeServicesRequest, DescribeServicesResponse, DescribeTaskSetsRequest,
    DescribeTaskSetsResponse, ListServiceDeploymentsRequest, ListServiceDeploymentsResponse,
    ListServicesByNamespaceRequest, ListServicesByNamespaceResponse, ListServicesRequest, ListServicesResponse,
    SchedulingStrategy, ServiceDeploymentBrief, ServiceDeploymentStatus, ServiceField, StopServiceDeploymentRequest,
    StopServiceDeploymentResponse, StopServiceDeploymentStopType, UpdateServicePrimaryTaskSetRequest,
    UpdateServicePrimaryTaskSetResponse, UpdateServiceRequest, UpdateServiceResponse, UpdateTaskSetRequest,
    UpdateTaskSetResponse,
};
use crate::store::{StoreError, StoreExt, Tx};

const MAX_EVENTS: usize = 100;
/// Service deployments and revisions kept per service.
const MAX_HISTORY: usize = 25;
pub const DEPLOYMENT_STATE_CHANGE: &str = "ECS Deployment State Change";
pub const SERVICE_ACTION: &str = "ECS Service Action";
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

/// Members a service keeps that its `Service` shape does not show.
const HIDDEN: [&str; 1] = ["serviceConnectConfiguration"];

/// The members of a request that a service keeps as sent: those of the model's `Service`, and
/// its Service Connect configuration (which ListServicesByNamespace looks for).
fn kept_options(request: &impl serde::Serialize, except: &[&str]) -> Map<String, Value> {
    let model = Model::get();
    let mut options = members(request, except);
    options.retain(|member, _| model.shape_has_member("Service", member) || HIDDEN.contains(&member.as_str()));
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
        service_deployment: String::new(),
        capacity_provider_strategy: service.options.get("capacityProviderStrategy").cloned(),
    }
}

/// The service revision a deployment rolls out: the digits of its `ecs-svc/` id.
fn revision_id(deployment: &str) -> &str {
    deployment.strip_prefix("ecs-svc/").unwrap_or(deployment)
}

/// The ARN of a service's `kind` (service-deployment, service-revision) `id`.
fn child_arn(service: &Service, kind: &str, id: &str) -> String {
    format!(
        "{}/{id}",
        service.service_arn.replacen(":service/", &format!(":{kind}/"), 1)
    )
}

/// The circuit breaker's threshold: half the desired count, within [3, 200].
fn breaker_threshold(desired: i64) -> i64 {
    ((desired + 1) / 2).clamp(3, 200)
}

fn breaker(service: &Service) -> (bool, bool) {
    let b = &service.deployment_configuration["deploymentCircuitBreaker"];
    (
        b["enable"].as_bool().unwrap_or(false),
        b["rollback"].as_bool().unwrap_or(false),
    )
}

/// Makes a new deployment the PRIMARY one; the others become ACTIVE. It carries out a new
/// service deployment, or `continuing` (a rollback's), whose target it becomes.
fn start_deployment(service: &mut Service, now: f64, continuing: Option<String>) {
    let sources: Vec<String> = service
        .deployments
        .iter()
        .map(|d| revision_id(&d.id).to_owned())
        .collect();
    for d in &mut service.deployments {
        d.status = "ACTIVE".into();
        d.updated_at = now;
    }
    let mut deployment = new_deployment(service, now);
    let revision = revision_id(&deployment.id).to_owned();
    let mut shown = json!({
        "serviceRevisionArn": child_arn(service, "service-revision", &revision),
        "serviceArn": service.service_arn,
        "clusterArn": service.cluster_arn,
        "taskDefinition": service.task_definition,
        "launchType": service.launch_type,
        "loadBalancers": service.options.get("loadBalancers").cloned().unwrap_or(json!([])),
        "serviceRegistries": service.options.get("serviceRegistries").cloned().unwrap_or(json!([])),
        "guardDutyEnabled": false,
        "createdAt": now,
    });
    for member in ["networkConfiguration", "platformVersion", "capacityProviderStrategy"] {
        if let Some(value) = service.options.get(member) {
            shown[member] = value.clone();
        }
    }
    if service.launch_type.is_empty() {
        shown.as_object_mut().map(|m| m.remove("launchType"));
    }
    service.history.revisions.insert(0, (revision.clone(), shown));
    let (enabled, _) = breaker(service);
    let id = match continuing {
        Some(id) => {
            if let Some(record) = service.history.deployments.iter_mut().find(|r| r.id == id) {
                record.target_revision = revision;
                record.updated_at = now;
            }
            id
        }
        None => {
            // A newer service deployment supersedes those still under way.
            for record in &mut service.history.deployments {
                if matches!(
                    record.status.as_str(),
                    "PENDING" | "IN_PROGRESS" | "ROLLBACK_REQUESTED" | "ROLLBACK_IN_PROGRESS"
                ) {
                    record.status = "STOPPED".into();
                    record.status_reason = Some("Superseded by a newer service deployment.".into());
                    record.stopped_at = Some(now);
                    record.updated_at = now;
                }
            }
            let id: String = new_id().chars().take(21).collect();
            service.history.deployments.insert(
                0,
                ServiceDeploymentRecord {
                    id: id.clone(),
                    status: "IN_PROGRESS".into(),
                    status_reason: None,
                    created_at: now,
                    started_at: Some(now),
                    finished_at: None,
                    stopped_at: None,
                    updated_at: now,
                    source_revisions: sources,
                    target_revision: revision,
                    deployment_configuration: service.deployment_configuration.clone(),
                    rollback: None,
                    breaker_failures: 0,
                    breaker_threshold: breaker_threshold(service.desired_count),
                    breaker_status: if enabled { "MONITORING" } else { "DISABLED" }.into(),
                },
            );
            id
        }
    };
    deployment.service_deployment = id;
    service.deployments.insert(0, deployment);
    service.history.deployments.truncate(MAX_HISTORY);
    service.history.revisions.truncate(MAX_HISTORY);
    service.scheduler.failed_starts = 0;
    service.scheduler.hold_until = 0.0;
    service.scheduler.primary_ran = false;
    service.scheduler.health_failures = 0;
}

/// The record of a deployment's service deployment.
fn record_of<'a>(history: &'a mut History, deployment: &Deployment) -> Option<&'a mut ServiceDeploymentRecord> {
    history
        .deployments
        .iter_mut()
        .find(|r| r.id == deployment.service_deployment)
}

/// Rolls the PRIMARY deployment back to the revision its service deployment started from: a
/// new deployment of that configuration, under the same service deployment.
fn roll_back(service: &mut Service, at: f64, reason: &str) -> bool {
    let Some(primary) = service.deployments.first().cloned() else {
        return false;
    };
    let Some(record) = record_of(&mut service.history, &primary).cloned() else {
        return false;
    };
    let target = record
        .source_revisions
        .first()
        .and_then(|id| service.history.revisions.iter().find(|(r, _)| r == id))
        .map(|(id, shown)| (id.clone(), shown.clone()));
    let Some((revision, shown)) = target else {
        if let Some(record) = record_of(&mut service.history, &primary) {
            record.status = "ROLLBACK_FAILED".into();
            record.status_reason = Some(format!("{reason} There is no earlier revision to roll back to."));
            record.finished_at = Some(at);
            record.updated_at = at;
        }
        return false;
    };
    if let Some(definition) = shown["taskDefinition"].as_str() {
        service.task_definition = definition.to_owned();
    }
    if let Some(record) = record_of(&mut service.history, &primary) {
        record.status = "ROLLBACK_IN_PROGRESS".into();
        record.status_reason = Some(reason.to_owned());
        record.rollback = Some((reason.to_owned(), at, revision));
        record.updated_at = at;
    }
    start_deployment(service, at, Some(record.id));
    true
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
    let daemon = req.scheduling_strategy == Some(SchedulingStrategy::Daemon);
    if daemon {
        if req.desired_count.is_some() {
            return Err(ApiError::invalid_parameter(
                "The daemon scheduling strategy does not support a desired count for services. Remove the desired count value and try again",
            ));
        }
        if req
            .deployment_configuration
            .as_ref()
            .and_then(|c| c.maximum_percent)
            .is_some_and(|max| max != 100)
        {
            return Err(ApiError::invalid_parameter(
                "The daemon scheduling strategy does not support values above 100 for maximumPercent on a deployment configuration. Change the maximumPercent value to 100, and try again",
            ));
        }
        if req.capacity_provider_strategy.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid_parameter(
                "Specifying a capacity provider strategy is not supported when you create a service using the DAEMON scheduling strategy.",
            ));
        }
        if req.placement_strategy.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid_parameter(
                "Placement strategies are not supported with the DAEMON scheduling strategy.",
            ));
        }
    }
    // EXTERNAL and CODE_DEPLOY services run task sets; a CODE_DEPLOY one starts with a task
    // set of its task definition (later ones come from CodeDeploy, which ecsd does not run).
    let controller = req.deployment_controller.as_ref().map(|c| c.r#type);
    let code_deploy = controller == Some(shapes::DeploymentControllerType::CodeDeploy);
    let external = code_deploy || controller == Some(shapes::DeploymentControllerType::External);
    if code_deploy && req.task_definition.is_none() {
        return Err(ApiError::invalid_parameter(
            "A task definition is required with the CODE_DEPLOY deployment controller.",
        ));
    }
    if external && daemon {
        return Err(ApiError::invalid_parameter(
            "The DAEMON scheduling strategy can only be used with the ECS deployment controller.",
        ));
    }
    let reference = match (&req.task_definition, external) {
        (Some(reference), _) => Some(reference.clone()),
        (None, true) => None,
        (None, false) => {
            return Err(ApiError::invalid_parameter(
                "A task definition is required with the ECS deployment controller.",
            ))
        }
    };
    let requested_strategy = req.capacity_provider_strategy.clone().unwrap_or_default();
    if req.launch_type.is_some() && !requested_strategy.is_empty() {
        return Err(ApiError::invalid_parameter(
            "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
        ));
    }
    super::capacity_providers::check_strategy(&requested_strategy)?;
    if daemon && req.launch_type == Some(shapes::LaunchType::Fargate) {
        return Err(ApiError::invalid_parameter(
            "The DAEMON scheduling strategy is not supported with the FARGATE launch type.",
        ));
    }
    let desired = i64::from(req.desired_count.unwrap_or(0));
    if desired < 0 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'desiredCount': it cannot be negative.",
        ));
    }
    let requested_launch_type = req
        .launch_type
        .map(|l| tasks::check_launch_type(Some(l.as_str())))
        .transpose()?;
    let mut configuration = deployment_configuration(req.deployment_configuration.as_ref())?;
    if daemon {
        // A daemon runs one task per instance: it replaces in place, by default none kept.
        configuration["maximumPercent"] = 100.into();
        if req
            .deployment_configuration
            .as_ref()
            .and_then(|c| c.minimum_healthy_percent)
            .is_none()
        {
            configuration["minimumHealthyPercent"] = 0.into();
        }
    }
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
            "capacityProviderStrategy",
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
    let fingerprint = super::fingerprint(&req);
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            // With neither a launch type nor a strategy, the cluster's default strategy (if it
            // has one) is the service's.
            let mut options = options.clone();
            let launch_type = match &requested_launch_type {
                Some(launch_type) => launch_type.clone(),
                None => {
                    let record = tx.cluster(&cluster)?.ok_or_else(ApiError::cluster_not_found)?;
                    let strategy = if requested_strategy.is_empty() && !daemon {
                        super::capacity_providers::default_strategy(&record)
                    } else {
                        requested_strategy.clone()
                    };
                    if strategy.is_empty() {
                        "EC2".to_owned()
                    } else {
                        super::capacity_providers::check_strategy_on(&record, &strategy)?;
                        options.insert(
                            "capacityProviderStrategy".into(),
                            serde_json::to_value(&strategy).map_err(StoreError::from)?,
                        );
                        String::new()
                    }
                }
            };
            let task_definition = match &reference {
                Some(reference) => resolve_definition(tx, reference)?,
                None => String::new(),
            };
            let on_fargate = launch_type == "FARGATE"
                || (launch_type.is_empty()
                    && options
                        .get("capacityProviderStrategy")
                        .and_then(|s| s.pointer("/0/capacityProvider"))
                        .and_then(Value::as_str)
                        .is_some_and(|p| p.starts_with("FARGATE")));
            if on_fargate {
                options.entry("platformVersion").or_insert(json!("LATEST"));
                options.entry("platformFamily").or_insert(json!("Linux"));
            }
            let scope = tx.scope().clone();
            let existing = tx.get::<Service>(&[cluster.as_str().into(), req.service_name.as_str().into()])?;
            if let Some(existing) = existing.filter(|s| s.status != ServiceStatus::Inactive) {
                // The same request again answers the service it made; another is refused.
                if existing.scheduler.request == fingerprint {
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
                scheduling_strategy: if daemon { "DAEMON" } else { "REPLICA" }.into(),
                deployment_configuration: configuration.clone(),
                deployments: Vec::new(),
                events: Vec::new(),
                created_at: at,
                created_by: principal.clone(),
                scheduler: SchedulerState {
                    request: fingerprint.clone(),
                    ..SchedulerState::default()
                },
                history: History::default(),
                task_sets: Vec::new(),
                options: options.clone(),
            };
            if daemon {
                service.desired_count =
                    daemon_instances(tx, &cluster, &service, &service.task_definition)?.len() as i64;
            }
            if !external {
                start_deployment(&mut service, at, None);
            }
            if code_deploy {
                let id = deployment_id();
                service.task_sets.push(TaskSetRecord {
                    task_set_arn: child_arn(&service, "task-set", revision_id(&id)),
                    id,
                    status: "PRIMARY".into(),
                    task_definition: service.task_definition.clone(),
                    launch_type: service.launch_type.clone(),
                    scale: 100.0,
                    stability_status: "STABILIZING".into(),
                    stability_status_at: at,
                    created_at: at,
                    updated_at: at,
                    options: service
                        .options
                        .iter()
                        .filter(|(k, _)| {
                            matches!(
                                k.as_str(),
                                "networkConfiguration" | "loadBalancers" | "serviceRegistries"
                            )
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                });
            }
            tx.put(&service)?;
            if !external {
                announce_deployment(tx, &cluster, &service)?;
            }
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
            if is_external(&service)
                && (req.task_definition.is_some()
                    || req.force_new_deployment == Some(true)
                    || req.network_configuration.is_some()
                    || req.load_balancers.is_some()
                    || req.platform_version.is_some())
            {
                return Err(ApiError::invalid_parameter(
                    "With the EXTERNAL deployment controller, the task definition, launch type, network configuration, load balancers and platform version belong to task sets: use CreateTaskSet.",
                ));
            }
            if service.scheduling_strategy == "DAEMON" && req.desired_count.is_some() {
                return Err(ApiError::invalid_parameter(
                    "The daemon scheduling strategy does not support a desired count for services. Remove the desired count value and try again",
                ));
            }
            if let Some(strategy) = req.capacity_provider_strategy.as_ref().filter(|s| !s.is_empty()) {
                let record = tx.cluster(&cluster)?.ok_or_else(ApiError::cluster_not_found)?;
                super::capacity_providers::check_strategy_on(&record, strategy)?;
                service.launch_type = String::new();
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
                        | "capacityProviderStrategy"
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
                start_deployment(&mut service, at, None);
            }
            tx.put(&service)?;
            if deploy {
                announce_deployment(tx, &cluster, &service)?;
            }
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
    map.remove("history");
    if service.launch_type.is_empty() {
        map.remove("launchType");
    }
    let sets: Vec<Value> = service
        .task_sets
        .iter()
        .map(|set| task_set_view(&service, set, &tasks))
        .collect();
    map.insert("taskSets".into(), sets.into());
    for member in HIDDEN {
        map.remove(member);
    }
    if let Some(record) = service.history.deployments.first() {
        map.insert(
            "currentServiceDeployment".into(),
            child_arn(&service, "service-deployment", &record.id).into(),
        );
    }
    let current: Vec<Value> = service
        .deployments
        .iter()
        .map(|d| {
            json!({
                "arn": child_arn(&service, "service-revision", revision_id(&d.id)),
                "requestedTaskCount": d.desired_count,
                "runningTaskCount": count(Some(&d.id), Phase::Running),
                "pendingTaskCount": count(Some(&d.id), Phase::Pending),
            })
        })
        .collect();
    map.insert("currentServiceRevisions".into(), current.into());
    map.insert("runningCount".into(), count(None, Phase::Running).into());
    map.insert("pendingCount".into(), count(None, Phase::Pending).into());
    if let Some(Value::Array(deployments)) = map.get_mut("deployments") {
        for (shown, deployment) in deployments.iter_mut().zip(&service.deployments) {
            if let Some(fields) = shown.as_object_mut() {
                fields.remove("serviceDeployment");
                if deployment.launch_type.is_empty() {
                    fields.remove("launchType");
                }
            }
            shown["runningCount"] = count(Some(&deployment.id), Phase::Running).into();
            shown["pendingCount"] = count(Some(&deployment.id), Phase::Pending).into();
        }
    }
    if !with_tags {
        map.remove("tags");
    }
    Ok(shapes::Service(out.into()))
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
    let mut stops: Vec<(String, String)> = Vec::new();
    health(tx, &mut service, &mut live, &mut stops, at)?;

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
    if live
        .iter()
        .chain(&stopped)
        .any(|t| t.started_by.as_deref() == Some(primary_id.as_str()) && t.started_at.is_some())
    {
        service.scheduler.primary_ran = true;
    }
    let mut announcements = Vec::new();
    if service.status == ServiceStatus::Active {
        requested(&mut service, at, &mut announcements);
        circuit_breaker(&mut service, at, &mut announcements);
    }

    if service.status == ServiceStatus::Draining {
        for task in &live {
            if phase(task) != Phase::Stopping {
                stops.push((task.id().to_owned(), "Service is being deleted".into()));
            }
        }
        if live.is_empty() {
            service.status = ServiceStatus::Inactive;
            service.deployments.clear();
            service.task_sets.clear();
        }
    } else if is_external(&service) {
        let started = task_sets_pass(tx, cluster, &mut service, &live, &mut stops, at)?;
        live.extend(started);
    } else if service.scheduling_strategy == "DAEMON" {
        let started = daemon(tx, cluster, &mut service, &live, &mut stops, at)?;
        live.extend(started);
        retire(&mut service, &live, at, &mut announcements);
    } else {
        let protected = super::protection::protected(tx, cluster)?;
        plan(&mut service, &live, &protected, &mut stops, at)?;
        let starting = starts_due(&service, &live);
        if starting > 0 && at >= service.scheduler.hold_until {
            let target = Target::from(&service.deployments[0]);
            let started = launch(tx, cluster, &mut service, &target, &live, starting, at)?;
            live.extend(started);
        }
        retire(&mut service, &live, at, &mut announcements);
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
    for (detail_type, event_name, reason) in &announcements {
        announce(tx, cluster, &service, detail_type, event_name, reason)?;
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
    let Some(primary) = service.deployments.first().filter(|d| d.rollout_state != "FAILED") else {
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
fn plan(
    service: &mut Service,
    live: &[Task],
    protected: &HashSet<String>,
    stops: &mut Vec<(String, String)>,
    at: f64,
) -> Result<(), ApiError> {
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
        let excess = primary_active.len() - desired as usize;
        // Protected tasks are not scaled in until their protection ends.
        primary_active.retain(|t| !protected.contains(t.id()));
        let held = excess.saturating_sub(primary_active.len());
        if held > 0 {
            note(
                service,
                format!("(service {name}) was unable to scale in due to (reason: {held} tasks under protection)."),
                at,
            );
        }
        primary_active.sort_by_key(|t| {
            let crowd = live
                .iter()
                .filter(|o| o.container_instance_arn == t.container_instance_arn)
                .count();
            (phase(t) == Phase::Running, std::cmp::Reverse(crowd))
        });
        for task in primary_active.iter().take(excess.min(primary_active.len())) {
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
        .filter(|t| t.started_by.as_deref() != Some(primary.id.as_str()) && !protected.contains(t.id()))
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
/// What new tasks are made of: the deployment or task set they belong to.
struct Target {
    /// Their `startedBy`.
    id: String,
    task_definition: String,
    /// Empty when a capacity provider strategy spreads them.
    launch_type: String,
    capacity_provider_strategy: Vec<shapes::CapacityProviderStrategyItem>,
    network_configuration: Option<Value>,
}

impl From<&Deployment> for Target {
    fn from(d: &Deployment) -> Self {
        Target {
            id: d.id.clone(),
            task_definition: d.task_definition.clone(),
            launch_type: d.launch_type.clone(),
            capacity_provider_strategy: d
                .capacity_provider_strategy
                .as_ref()
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
            network_configuration: d.network_configuration.clone(),
        }
    }
}

fn launch(
    tx: &mut Tx<'_>,
    cluster: &str,
    service: &mut Service,
    target: &Target,
    live: &[Task],
    count: usize,
    at: f64,
) -> Result<Vec<Task>, ApiError> {
    let name = service.service_name.clone();
    let options = &service.options;
    let platform_version = options
        .get("platformVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
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
        task_definition: target.task_definition.clone(),
        overrides: None,
        started_by: Some(target.id.clone()),
        group: Some(format!("service:{name}")),
        network_configuration: target.network_configuration.clone(),
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
    let (member_of, distinct_instance) = tasks::constraints(&requested_constraints)?;
    // What each provider of the strategy runs of the service already.
    let mut running: Vec<(String, i64)> = Vec::new();
    for task in live.iter().filter(|t| phase(t) != Phase::Stopping) {
        if let Some(provider) = super::capacity_providers::of_task(task) {
            match running.iter_mut().find(|(p, _)| p == provider) {
                Some((_, n)) => *n += 1,
                None => running.push((provider.to_owned(), 1)),
            }
        }
    }
    let batches = match tasks::capacity(
        tx,
        cluster,
        Some(&target.launch_type),
        &target.capacity_provider_strategy,
        &running,
        count,
    ) {
        Ok(batches) => batches,
        Err(e) if e.code.http_status() < 500 => {
            placement_error(service, &e.message);
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut started = Vec::new();
    for batch in batches {
        let mut extra = tasks::extra_members(platform_version.as_deref());
        if let Some(provider) = &batch.provider {
            extra.insert("capacityProviderName".into(), provider.clone().into());
        }
        let mut template = match request.template(tx, batch.launch_type.clone(), None, extra) {
            Ok(template) => template,
            Err(e) if e.code.http_status() < 500 => {
                placement_error(service, &e.message);
                continue;
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
        let member_of = [member_of.as_slice(), &template.constraints].concat();
        let rules = Rules {
            strategies: &strategies,
            member_of: &member_of,
            distinct_instance,
        };
        let (placed, refusals) = match tasks::place_tasks(tx, &request, &template, batch.count, &rules) {
            Ok(placed) => placed,
            Err(e) if e.code.http_status() < 500 => {
                placement_error(service, &e.message);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some((_, why)) = refusals.first() {
            placement_error(service, &format!("{why}."));
        }
        started.extend(placed);
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
fn retire(service: &mut Service, live: &[Task], at: f64, announcements: &mut Vec<Announcement>) {
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
        let primary = primary.clone();
        if let Some(record) = record_of(&mut service.history, &primary) {
            record.status = match record.status.as_str() {
                "ROLLBACK_IN_PROGRESS" => "ROLLBACK_SUCCESSFUL",
                _ => "SUCCESSFUL",
            }
            .into();
            record.finished_at = Some(at);
            record.updated_at = at;
        }
        note(
            service,
            format!("(service {name}) (deployment {id}) deployment completed."),
            at,
        );
        announcements.push((
            DEPLOYMENT_STATE_CHANGE,
            "SERVICE_DEPLOYMENT_COMPLETED",
            format!("ECS deployment {id} completed."),
        ));
    }
    if steady {
        let message = format!("(service {name}) has reached a steady state.");
        if service.events.first().is_none_or(|e| e.message != message) {
            announcements.push((SERVICE_ACTION, "SERVICE_STEADY_STATE", message.clone()));
        }
        note(service, message, at);
    }
}

/// An event for the event log: its detail type, its `eventName` and its reason.
type Announcement = (&'static str, &'static str, String);

/// The event of a deployment that has started.
fn announce_deployment(tx: &mut Tx<'_>, cluster: &str, service: &Service) -> Result<(), StoreError> {
    announce(
        tx,
        cluster,
        service,
        DEPLOYMENT_STATE_CHANGE,
        "SERVICE_DEPLOYMENT_IN_PROGRESS",
        "ECS deployment in progress.",
    )
}

/// Tells the ACTIVE services of `cluster` that spread their tasks over `provider` that it has
/// the capacity they need (`CAPACITY_PROVIDER_STEADY_STATE`).
pub(crate) fn capacity_steady(
    tx: &mut Tx<'_>,
    cluster: &str,
    provider: &crate::domain::records::CapacityProviderRecord,
) -> Result<(), ApiError> {
    let services = tx.list::<Service>(&[cluster.into()], &[], None, usize::MAX)?;
    for service in services.iter().filter(|s| s.status == ServiceStatus::Active) {
        let uses = service
            .options
            .get("capacityProviderStrategy")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|i| i["capacityProvider"] == provider.name.as_str()));
        if !uses {
            continue;
        }
        let at = now();
        let detail: Map<String, Value> = [
            ("eventType".to_owned(), json!("INFO")),
            ("eventName".to_owned(), json!("CAPACITY_PROVIDER_STEADY_STATE")),
            ("clusterArn".to_owned(), json!(service.cluster_arn)),
            (
                "capacityProviderArns".to_owned(),
                json!([provider.capacity_provider_arn]),
            ),
            ("createdAt".to_owned(), json!(at)),
        ]
        .into_iter()
        .collect();
        let event = events::envelope(tx.scope(), SERVICE_ACTION, &service.service_arn, &detail, at);
        tx.append_event(cluster, SERVICE_ACTION, at, &event, None)?;
    }
    Ok(())
}

/// Appends an "ECS Deployment State Change" or "ECS Service Action" event about the service.
fn announce(
    tx: &mut Tx<'_>,
    cluster: &str,
    service: &Service,
    detail_type: &str,
    name: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let at = now();
    let mut detail = Map::new();
    let error = name.ends_with("FAILED") || name.ends_with("IMPAIRED");
    detail.insert("eventType".into(), if error { "ERROR" } else { "INFO" }.into());
    detail.insert("eventName".into(), name.into());
    detail.insert("clusterArn".into(), service.cluster_arn.clone().into());
    if detail_type == DEPLOYMENT_STATE_CHANGE {
        if let Some(primary) = service.deployments.first() {
            detail.insert("deploymentId".into(), primary.id.clone().into());
        }
        detail.insert("reason".into(), reason.into());
    } else {
        detail.insert("createdAt".into(), at.into());
    }
    let event = events::envelope(tx.scope(), detail_type, &service.service_arn, &detail, at);
    tx.append_event(cluster, detail_type, at, &event, None)
}

/// The circuit breaker: a PRIMARY deployment none of whose tasks has run, with as many tasks
/// failed to start as the threshold, is FAILED; with `rollback`, the service goes back to the
/// revision it came from.
fn circuit_breaker(service: &mut Service, at: f64, announcements: &mut Vec<Announcement>) {
    let (enabled, rollback) = breaker(service);
    let Some(primary) = service.deployments.first().cloned() else {
        return;
    };
    if !enabled || primary.rollout_state != "IN_PROGRESS" {
        return;
    }
    let threshold = breaker_threshold(service.desired_count);
    let health_failures = service.scheduler.health_failures;
    let start_failures = primary.failed_tasks - health_failures;
    let tripped = (!service.scheduler.primary_ran && start_failures >= threshold) || health_failures >= threshold;
    if let Some(record) = record_of(&mut service.history, &primary) {
        record.breaker_failures = primary.failed_tasks;
        record.breaker_threshold = threshold;
        if tripped {
            record.breaker_status = "TRIGGERED".into();
        }
    }
    if !tripped {
        return;
    }
    let reason = if health_failures >= threshold {
        "ECS deployment circuit breaker: tasks failed health checks."
    } else {
        "ECS deployment circuit breaker: tasks failed to start."
    };
    let name = service.service_name.clone();
    if let Some(d) = service.deployments.first_mut() {
        d.rollout_state = "FAILED".into();
        d.rollout_state_reason = reason.into();
        d.updated_at = at;
    }
    let why = reason.trim_start_matches("ECS deployment circuit breaker: ");
    note(
        service,
        format!("(service {name}) (deployment {}) deployment failed: {why}", primary.id),
        at,
    );
    announcements.push((DEPLOYMENT_STATE_CHANGE, "SERVICE_DEPLOYMENT_FAILED", reason.into()));
    if rollback {
        if roll_back(service, at, reason) {
            announcements.push((
                DEPLOYMENT_STATE_CHANGE,
                "SERVICE_DEPLOYMENT_IN_PROGRESS",
                "ECS deployment in progress.".into(),
            ));
        }
    } else if let Some(record) = record_of(&mut service.history, &primary) {
        record.status = "STOPPED".into();
        record.status_reason = Some(reason.into());
        record.stopped_at = Some(at);
        record.updated_at = at;
    }
}

/// What StopServiceDeployment asked for: a rollback, or stopping where the deployment is.
fn requested(service: &mut Service, at: f64, announcements: &mut Vec<Announcement>) {
    let Some(primary) = service.deployments.first().cloned() else {
        return;
    };
    let status = record_of(&mut service.history, &primary).map(|r| r.status.clone());
    let stop = |service: &mut Service, why: &str| {
        if let Some(d) = service.deployments.first_mut() {
            d.rollout_state = "FAILED".into();
            d.rollout_state_reason = why.into();
            d.updated_at = at;
        }
    };
    match status.as_deref() {
        Some("ROLLBACK_REQUESTED") => {
            stop(service, "Service deployment rolled back on request.");
            if roll_back(
                service,
                at,
                "Service deployment rolled back because of a StopServiceDeployment request.",
            ) {
                announcements.push((
                    DEPLOYMENT_STATE_CHANGE,
                    "SERVICE_DEPLOYMENT_IN_PROGRESS",
                    "ECS deployment in progress.".into(),
                ));
            }
        }
        Some("STOP_REQUESTED") => {
            stop(service, "Service deployment stopped on request.");
            if let Some(record) = record_of(&mut service.history, &primary) {
                record.status = "STOPPED".into();
                record.status_reason =
                    Some("Service deployment stopped because of a StopServiceDeployment request.".into());
                record.stopped_at = Some(at);
                record.updated_at = at;
            }
        }
        _ => {}
    }
}

/// The service and id a `service-deployment` or `service-revision` ARN names, if it is of this
/// scope.
fn child_of<'a>(tx: &Tx<'_>, arn: &'a str, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let scope = tx.scope();
    let prefix = format!("arn:aws:ecs:{}:{}:{kind}/", scope.region, scope.account);
    let mut parts = arn.strip_prefix(&prefix)?.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(cluster), Some(service), Some(id)) if !id.contains('/') => Some((cluster, service, id)),
        _ => None,
    }
}

/// A stored service deployment as the model's `ServiceDeployment`.
fn deployment_view(service: &Service, record: &ServiceDeploymentRecord, live: &[Task]) -> shapes::ServiceDeployment {
    let summary = |revision: &str| {
        let deployment = service.deployments.iter().find(|d| revision_id(&d.id) == revision);
        let count = |wanted: Phase| {
            deployment.map_or(0, |d| {
                live.iter()
                    .filter(|t| t.started_by.as_deref() == Some(d.id.as_str()) && phase(t) == wanted)
                    .count()
            })
        };
        json!({
            "arn": child_arn(service, "service-revision", revision),
            "requestedTaskCount": deployment.map_or(0, |d| if d.status == "PRIMARY" { service.desired_count } else { 0 }),
            "runningTaskCount": count(Phase::Running),
            "pendingTaskCount": count(Phase::Pending),
        })
    };
    let mut out = json!({
        "serviceDeploymentArn": child_arn(service, "service-deployment", &record.id),
        "serviceArn": service.service_arn,
        "clusterArn": service.cluster_arn,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
        "sourceServiceRevisions": record.source_revisions.iter().map(|r| summary(r)).collect::<Vec<_>>(),
        "targetServiceRevision": summary(&record.target_revision),
        "status": record.status,
        "deploymentConfiguration": record.deployment_configuration,
        "deploymentCircuitBreaker": {
            "status": record.breaker_status,
            "failureCount": record.breaker_failures,
            "threshold": record.breaker_threshold,
        },
    });
    for (member, value) in [
        ("startedAt", record.started_at),
        ("finishedAt", record.finished_at),
        ("stoppedAt", record.stopped_at),
    ] {
        if let Some(value) = value {
            out[member] = value.into();
        }
    }
    if let Some(reason) = &record.status_reason {
        out["statusReason"] = reason.clone().into();
    }
    if let Some((reason, started_at, revision)) = &record.rollback {
        out["rollback"] = json!({
            "reason": reason,
            "startedAt": started_at,
            "serviceRevisionArn": child_arn(service, "service-revision", revision),
        });
    }
    shapes::ServiceDeployment(out.into())
}

pub async fn list_service_deployments(
    ctx: &Ctx,
    req: ListServiceDeploymentsRequest,
) -> Result<ListServiceDeploymentsResponse, ApiError> {
    let page = Page::new("service-deployments", req.max_results, req.next_token.as_deref())?;
    let (after, limit) = (page.after.clone(), page.fetch());
    let statuses: Option<Vec<&'static str>> = req
        .status
        .as_ref()
        .map(|s| s.iter().map(|status| status.as_str()).collect());
    let window = req.created_at.clone().unwrap_or_default();
    let found = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let service = find(tx, &cluster, &req.service)?.ok_or_else(service_not_found)?;
            let mut past_token = after.is_none();
            let mut out = Vec::new();
            for record in &service.history.deployments {
                if !past_token {
                    past_token = after.as_deref() == Some(record.id.as_str());
                    continue;
                }
                let wanted = statuses.as_ref().is_none_or(|s| s.contains(&record.status.as_str()))
                    && window.after.is_none_or(|t| record.created_at >= t)
                    && window.before.is_none_or(|t| record.created_at <= t);
                if wanted {
                    out.push((
                        record.id.clone(),
                        ServiceDeploymentBrief {
                            service_deployment_arn: Some(child_arn(&service, "service-deployment", &record.id)),
                            service_arn: Some(service.service_arn.clone()),
                            cluster_arn: Some(service.cluster_arn.clone()),
                            created_at: Some(record.created_at),
                            started_at: record.started_at,
                            finished_at: record.finished_at,
                            target_service_revision_arn: Some(child_arn(
                                &service,
                                "service-revision",
                                &record.target_revision,
                            )),
                            status: serde_json::from_value::<ServiceDeploymentStatus>(json!(record.status)).ok(),
                            status_reason: record.status_reason.clone(),
                        },
                    ));
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok::<_, ApiError>(out)
        })
        .await?;
    let (found, next_token) = page.finish(found, |(id, _)| id.clone());
    Ok(ListServiceDeploymentsResponse {
        service_deployments: Some(found.into_iter().map(|(_, brief)| brief).collect()),
        next_token,
    })
}

pub async fn describe_service_deployments(
    ctx: &Ctx,
    req: DescribeServiceDeploymentsRequest,
) -> Result<DescribeServiceDeploymentsResponse, ApiError> {
    if req.service_deployment_arns.is_empty() || req.service_deployment_arns.len() > 20 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'serviceDeploymentArns': between 1 and 20 service deployments can be described at once.",
        ));
    }
    ctx.store
        .read(&ctx.scope, move |tx| {
            let (shown, failures) = describe_children(
                tx,
                &req.service_deployment_arns,
                "service-deployment",
                |tx, cluster, service, id| {
                    let live = tx.group_tasks(cluster, &format!("service:{}", service.service_name), f64::MAX)?;
                    Ok(service
                        .history
                        .deployments
                        .iter()
                        .find(|r| r.id == id)
                        .map(|record| deployment_view(&service, record, &live)))
                },
            )?;
            Ok(DescribeServiceDeploymentsResponse {
                service_deployments: Some(shown),
                failures: Some(failures),
            })
        })
        .await
}

/// What `pick` finds of each ARN of `kind` (a service's deployment or revision), and a
/// MISSING failure for each it does not.
fn describe_children<T>(
    tx: &mut Tx<'_>,
    arns: &[String],
    kind: &str,
    mut pick: impl FnMut(&mut Tx<'_>, &str, Service, &str) -> Result<Option<T>, ApiError>,
) -> Result<(Vec<T>, Vec<shapes::Failure>), ApiError> {
    let (mut shown, mut failures) = (Vec::new(), Vec::new());
    for arn in arns {
        let found = match child_of(tx, arn, kind) {
            Some((cluster, name, id)) => match tx.get::<Service>(&[cluster.into(), name.into()])? {
                Some(service) => pick(tx, cluster, service, id)?,
                None => None,
            },
            None => None,
        };
        match found {
            Some(found) => shown.push(found),
            None => failures.push(failure(arn, "MISSING")),
        }
    }
    Ok((shown, failures))
}

pub async fn describe_service_revisions(
    ctx: &Ctx,
    req: DescribeServiceRevisionsRequest,
) -> Result<DescribeServiceRevisionsResponse, ApiError> {
    if req.service_revision_arns.is_empty() || req.service_revision_arns.len() > 20 {
        return Err(ApiError::invalid_parameter(
            "Invalid 'serviceRevisionArns': between 1 and 20 service revisions can be described at once.",
        ));
    }
    ctx.store
        .read(&ctx.scope, move |tx| {
            let (shown, failures) = describe_children(
                tx,
                &req.service_revision_arns,
                "service-revision",
                |_, _, service, id| {
                    Ok(service
                        .history
                        .revisions
                        .into_iter()
                        .find(|(r, _)| r == id)
                        .map(|(_, revision)| shapes::ServiceRevision(revision.into())))
                },
            )?;
            Ok(DescribeServiceRevisionsResponse {
                service_revisions: Some(shown),
                failures: Some(failures),
            })
        })
        .await
}

pub async fn stop_service_deployment(
    ctx: &Ctx,
    req: StopServiceDeploymentRequest,
) -> Result<StopServiceDeploymentResponse, ApiError> {
    let rollback = req
        .stop_type
        .is_none_or(|t| t == StopServiceDeploymentStopType::Rollback);
    ctx.store
        .write(&ctx.scope, move |tx| {
            let not_found = || {
                ApiError::new(
                    ErrorCode::ServiceDeploymentNotFoundException,
                    format!("Service deployment {} not found.", req.service_deployment_arn),
                )
            };
            let (cluster, name, id) =
                child_of(tx, &req.service_deployment_arn, "service-deployment").ok_or_else(not_found)?;
            let (cluster, name, id) = (cluster.to_owned(), name.to_owned(), id.to_owned());
            let mut service = tx
                .get::<Service>(&[cluster.as_str().into(), name.as_str().into()])?
                .ok_or_else(not_found)?;
            let record = service
                .history
                .deployments
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(not_found)?;
            if !matches!(record.status.as_str(), "PENDING" | "IN_PROGRESS") {
                return Err(ApiError::new(
                    ErrorCode::ConflictException,
                    format!(
                        "The service deployment is {}: only a PENDING or IN_PROGRESS one can be stopped.",
                        record.status
                    ),
                ));
            }
            record.status = if rollback {
                "ROLLBACK_REQUESTED"
            } else {
                "STOP_REQUESTED"
            }
            .into();
            record.updated_at = now();
            tx.put(&service)?;
            Ok(StopServiceDeploymentResponse {
                service_deployment_arn: Some(req.service_deployment_arn.clone()),
            })
        })
        .await
}

/// A DAEMON service's pass: one task of the PRIMARY deployment on every ACTIVE instance that
/// meets its constraints, none elsewhere. A new deployment replaces each instance's task in
/// place: the old one stops first (while `minimumHealthyPercent` allows), then the new one
/// starts. The desired count follows the number of such instances.
fn daemon(
    tx: &mut Tx<'_>,
    cluster: &str,
    service: &mut Service,
    live: &[Task],
    stops: &mut Vec<(String, String)>,
    at: f64,
) -> Result<Vec<Task>, ApiError> {
    use crate::domain::placement::misfit;
    let Some(primary) = service.deployments.first().cloned() else {
        return Ok(Vec::new());
    };
    let name = service.service_name.clone();
    let eligible = daemon_instances(tx, cluster, service, &primary.task_definition)?;
    let desired = eligible.len() as i64;
    if service.desired_count != desired {
        service.desired_count = desired;
        if let Some(d) = service.deployments.first_mut() {
            d.desired_count = desired;
            d.updated_at = at;
        }
    }
    let reason = format!("Scaling activity initiated by (deployment {})", primary.id);
    let on = |task: &Task, arn: &str| task.container_instance_arn.as_deref() == Some(arn);
    // Tasks where the service no longer belongs.
    for task in live.iter().filter(|t| phase(t) != Phase::Stopping) {
        let placed = eligible.iter().any(|c| on(task, &c.instance.container_instance_arn));
        if !placed {
            stops.push((task.id().to_owned(), reason.clone()));
        }
    }
    let min_percent = service.deployment_configuration["minimumHealthyPercent"]
        .as_i64()
        .unwrap_or(0);
    let floor = (desired * min_percent + 99) / 100;
    let mut running = live.iter().filter(|t| phase(t) == Phase::Running).count() as i64;
    let is_primary = |t: &Task| t.started_by.as_deref() == Some(primary.id.as_str());
    let mut due = Vec::new();
    for candidate in &eligible {
        let arn = &candidate.instance.container_instance_arn;
        let here: Vec<&Task> = live
            .iter()
            .filter(|t| on(t, arn) && phase(t) != Phase::Stopped)
            .collect();
        if here.iter().any(|t| is_primary(t) && phase(t) != Phase::Stopping) {
            continue;
        }
        let old: Vec<&&Task> = here
            .iter()
            .filter(|t| !is_primary(t) && phase(t) != Phase::Stopping)
            .collect();
        if old.is_empty() {
            // Nothing of the service holds the instance any more: the new task may start.
            if here.is_empty() && primary.rollout_state != "FAILED" {
                due.push(candidate);
            }
            continue;
        }
        for task in old {
            if phase(task) == Phase::Running {
                if running <= floor {
                    continue;
                }
                running -= 1;
            }
            stops.push((task.id().to_owned(), reason.clone()));
        }
    }
    if due.is_empty() || at < service.scheduler.hold_until {
        return Ok(Vec::new());
    }
    let request = TaskRequest {
        cluster: Some(cluster.to_owned()),
        task_definition: primary.task_definition.clone(),
        overrides: None,
        started_by: Some(primary.id.clone()),
        group: Some(format!("service:{name}")),
        network_configuration: primary.network_configuration.clone(),
        tags: Vec::new(),
        propagate_tags: None,
        enable_execute_command: false,
    };
    let template = match request.template(tx, primary.launch_type.clone(), None, tasks::extra_members(None)) {
        Ok(template) => template,
        Err(e) if e.code.http_status() < 500 => {
            note(service, format!("(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {}", e.message), at);
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut started = Vec::new();
    for candidate in due {
        if let Some(why) = misfit(&candidate.instance, &candidate.load, &template.need) {
            note(
                service,
                format!(
                    "(service {name}) was unable to place a task on {}. Reason: {why}.",
                    candidate.instance.container_instance_arn
                ),
                at,
            );
            continue;
        }
        started.push(request.create(tx, &template, Some(&candidate.instance))?);
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

/// The instances a DAEMON service belongs on: the ACTIVE ones that meet its constraints and
/// its task definition's.
fn daemon_instances(
    tx: &mut Tx<'_>,
    cluster: &str,
    service: &Service,
    task_definition: &str,
) -> Result<Vec<crate::domain::placement::Candidate>, ApiError> {
    let requested: Vec<shapes::PlacementConstraint> = service
        .options
        .get("placementConstraints")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let (mut member_of, _) = tasks::constraints(&requested)?;
    member_of.extend(tasks::definition_constraints(tx, task_definition)?);
    let mut candidates = tasks::candidates(tx, cluster, |_| true)?;
    candidates.retain(|c| member_of.iter().all(|e| e.matches(&c.facts())));
    Ok(candidates)
}

pub async fn list_services_by_namespace(
    ctx: &Ctx,
    req: ListServicesByNamespaceRequest,
) -> Result<ListServicesByNamespaceResponse, ApiError> {
    let page = Page::new("services-by-namespace", req.max_results, req.next_token.as_deref())?;
    let (after, limit) = (page.after.clone(), page.fetch());
    // A namespace is named by its name or its Cloud Map ARN; either matches what the service's
    // Service Connect configuration gave.
    let wanted = req.namespace.clone();
    let short = wanted.rsplit('/').next().unwrap_or(&wanted).to_owned();
    // The request names no cluster: a principal limited to some sees only theirs.
    let principal = ctx.principal.clone();
    let found = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let mut services = tx.list::<Service>(
                &[],
                &[crate::store::Filter::Ne(
                    "status",
                    ServiceStatus::Inactive.as_str().into(),
                )],
                None,
                usize::MAX,
            )?;
            services.retain(|s| {
                crate::domain::arn::cluster_of(&s.service_arn).is_some_and(|c| principal.may_use_cluster(c))
                    && s.options
                        .get("serviceConnectConfiguration")
                        .and_then(|c| c.get("namespace"))
                        .and_then(Value::as_str)
                        .is_some_and(|n| n == wanted || n == short || n.rsplit('/').next() == Some(short.as_str()))
            });
            let mut arns: Vec<String> = services.into_iter().map(|s| s.service_arn).collect();
            arns.sort();
            arns.retain(|arn| after.as_ref().is_none_or(|a| arn > a));
            arns.truncate(limit);
            Ok::<_, ApiError>(arns)
        })
        .await?;
    let (arns, next_token) = page.finish(found, Clone::clone);
    Ok(ListServicesByNamespaceResponse {
        service_arns: Some(arns),
        next_token,
    })
}

/// Whether the service runs task sets (the EXTERNAL and CODE_DEPLOY controllers).
fn is_external(service: &Service) -> bool {
    matches!(
        service
            .options
            .get("deploymentController")
            .and_then(|c| c["type"].as_str()),
        Some("EXTERNAL" | "CODE_DEPLOY")
    )
}

/// The tasks a task set runs: its scale of the service's desired count, rounded up.
fn computed_desired(service: &Service, set: &TaskSetRecord) -> i64 {
    if set.status == "DRAINING" {
        return 0;
    }
    (service.desired_count as f64 * set.scale / 100.0).ceil() as i64
}

/// A task set as the model's `TaskSet`, as answered on its own.
fn task_set_shape(service: &Service, set: &TaskSetRecord, tasks: &[Task]) -> shapes::TaskSet {
    shapes::TaskSet(task_set_view(service, set, tasks).into())
}

/// A task set, rendered as the model's `TaskSet`.
fn task_set_view(service: &Service, set: &TaskSetRecord, tasks: &[Task]) -> Value {
    let count = |wanted: Phase| {
        tasks
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(set.id.as_str()) && phase(t) == wanted)
            .count() as i64
    };
    let mut out = json!({
        "id": set.id,
        "taskSetArn": set.task_set_arn,
        "serviceArn": service.service_arn,
        "clusterArn": service.cluster_arn,
        "startedBy": set.id,
        "status": set.status,
        "taskDefinition": set.task_definition,
        "computedDesiredCount": computed_desired(service, set),
        "pendingCount": count(Phase::Pending),
        "runningCount": count(Phase::Running),
        "createdAt": set.created_at,
        "updatedAt": set.updated_at,
        "launchType": set.launch_type,
        "scale": {"value": set.scale, "unit": "PERCENT"},
        "stabilityStatus": set.stability_status,
        "stabilityStatusAt": set.stability_status_at,
    });
    for (member, value) in &set.options {
        out[member] = value.clone();
    }
    out
}

/// An EXTERNAL service's pass: each task set runs its computed desired count; a deleted
/// (DRAINING) task set stops its tasks and then leaves the service.
fn task_sets_pass(
    tx: &mut Tx<'_>,
    cluster: &str,
    service: &mut Service,
    live: &[Task],
    stops: &mut Vec<(String, String)>,
    at: f64,
) -> Result<Vec<Task>, ApiError> {
    let mut started = Vec::new();
    let known: Vec<String> = service.task_sets.iter().map(|s| s.id.clone()).collect();
    // Tasks of no task set the service has any more.
    for task in live.iter().filter(|t| phase(t) != Phase::Stopping) {
        if !known.iter().any(|id| task.started_by.as_deref() == Some(id.as_str())) {
            stops.push((task.id().to_owned(), "Task set deleted".into()));
        }
    }
    for index in 0..service.task_sets.len() {
        let set = service.task_sets[index].clone();
        let want = computed_desired(service, &set);
        let mut mine: Vec<&Task> = live
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(set.id.as_str()) && phase(t) != Phase::Stopping)
            .collect();
        let have = mine.len() as i64;
        if have > want {
            // Pending tasks go before running ones.
            mine.sort_by_key(|t| phase(t) == Phase::Running);
            for task in mine.iter().take((have - want) as usize) {
                stops.push((
                    task.id().to_owned(),
                    format!("Scaling activity initiated by (task set {})", set.id),
                ));
            }
        } else if have < want && at >= service.scheduler.hold_until {
            let target = Target {
                id: set.id.clone(),
                task_definition: set.task_definition.clone(),
                launch_type: set.launch_type.clone(),
                capacity_provider_strategy: Vec::new(),
                network_configuration: set.options.get("networkConfiguration").cloned(),
            };
            started.extend(launch(tx, cluster, service, &target, live, (want - have) as usize, at)?);
        }
        let of_set = |t: &&Task| t.started_by.as_deref() == Some(set.id.as_str());
        let running = live
            .iter()
            .chain(&started)
            .filter(of_set)
            .filter(|t| phase(t) == Phase::Running)
            .count() as i64;
        let alive = live
            .iter()
            .chain(&started)
            .filter(of_set)
            .filter(|t| phase(t) != Phase::Stopped)
            .count() as i64;
        let stability = if running == want && alive == want {
            "STEADY_STATE"
        } else {
            "STABILIZING"
        };
        let set = &mut service.task_sets[index];
        if set.stability_status != stability {
            set.stability_status = stability.into();
            set.stability_status_at = at;
        }
    }
    // Deleted task sets leave once their tasks are gone.
    service.task_sets.retain(|set| {
        set.status != "DRAINING" || live.iter().any(|t| t.started_by.as_deref() == Some(set.id.as_str()))
    });
    Ok(started)
}

/// The task set a request names (id or ARN) of a service.
fn task_set_index(service: &Service, reference: &str) -> Result<usize, ApiError> {
    service
        .task_sets
        .iter()
        .position(|s| s.id == reference || s.task_set_arn == reference)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TaskSetNotFoundException,
                "The specified task set does not exist.",
            )
        })
}

/// The ACTIVE EXTERNAL service a task set request names.
fn external_service(tx: &mut Tx<'_>, cluster: &str, reference: &str) -> Result<Service, ApiError> {
    let service = find(tx, cluster, reference)?.ok_or_else(service_not_found)?;
    if service.status != ServiceStatus::Active {
        return Err(service_not_active());
    }
    let controller = service
        .options
        .get("deploymentController")
        .and_then(|c| c["type"].as_str());
    if controller != Some("EXTERNAL") {
        return Err(ApiError::invalid_parameter(
            "Task sets can only be managed in services with the EXTERNAL deployment controller.",
        ));
    }
    Ok(service)
}

fn scale_of(scale: Option<&shapes::Scale>) -> Result<f64, ApiError> {
    let value = scale.and_then(|s| s.value).unwrap_or(100.0);
    if !(0.0..=100.0).contains(&value) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'scale.value': it must be between 0 and 100.",
        ));
    }
    Ok(value)
}

/// Stores a changed service and answers with one of its task sets.
fn task_set_answer(
    tx: &mut Tx<'_>,
    cluster: &str,
    service: &Service,
    index: usize,
) -> Result<shapes::TaskSet, ApiError> {
    tx.put(service)?;
    let tasks = tx.group_tasks(cluster, &format!("service:{}", service.service_name), f64::MAX)?;
    Ok(task_set_shape(service, &service.task_sets[index], &tasks))
}

pub async fn create_task_set(ctx: &Ctx, req: CreateTaskSetRequest) -> Result<CreateTaskSetResponse, ApiError> {
    let scale = scale_of(req.scale.as_ref())?;
    let launch_type = tasks::check_launch_type(req.launch_type.map(|l| l.as_str()))?;
    let options = members(
        &req,
        &[
            "service",
            "cluster",
            "taskDefinition",
            "launchType",
            "scale",
            "clientToken",
        ],
    );
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, Some(&req.cluster))?;
            let mut service = external_service(tx, &cluster, &req.service)?;
            let task_definition = resolve_definition(tx, &req.task_definition)?;
            let at = now();
            let id = deployment_id();
            let set = TaskSetRecord {
                task_set_arn: child_arn(&service, "task-set", revision_id(&id)),
                id,
                status: if service.task_sets.is_empty() {
                    "PRIMARY"
                } else {
                    "ACTIVE"
                }
                .into(),
                task_definition,
                launch_type: launch_type.clone(),
                scale,
                stability_status: "STABILIZING".into(),
                stability_status_at: at,
                created_at: at,
                updated_at: at,
                options: options.clone(),
            };
            service.task_sets.push(set);
            let index = service.task_sets.len() - 1;
            Ok(CreateTaskSetResponse {
                task_set: Some(task_set_answer(tx, &cluster, &service, index)?),
            })
        })
        .await
}

pub async fn update_task_set(ctx: &Ctx, req: UpdateTaskSetRequest) -> Result<UpdateTaskSetResponse, ApiError> {
    let scale = scale_of(Some(&req.scale))?;
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, Some(&req.cluster))?;
            let mut service = external_service(tx, &cluster, &req.service)?;
            let index = task_set_index(&service, &req.task_set)?;
            let at = now();
            let set = &mut service.task_sets[index];
            set.scale = scale;
            set.updated_at = at;
            set.stability_status = "STABILIZING".into();
            set.stability_status_at = at;
            Ok(UpdateTaskSetResponse {
                task_set: Some(task_set_answer(tx, &cluster, &service, index)?),
            })
        })
        .await
}

pub async fn delete_task_set(ctx: &Ctx, req: DeleteTaskSetRequest) -> Result<DeleteTaskSetResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, Some(&req.cluster))?;
            let mut service = external_service(tx, &cluster, &req.service)?;
            let index = task_set_index(&service, &req.task_set)?;
            let set = &mut service.task_sets[index];
            if set.status == "PRIMARY" && set.scale > 0.0 && !req.force.unwrap_or(false) {
                return Err(ApiError::invalid_parameter(
                    "The primary task set cannot be deleted while it is scaled above 0; scale it to 0 or delete with force.",
                ));
            }
            set.status = "DRAINING".into();
            set.updated_at = now();
            Ok(DeleteTaskSetResponse {
                task_set: Some(task_set_answer(tx, &cluster, &service, index)?),
            })
        })
        .await
}

pub async fn describe_task_sets(ctx: &Ctx, req: DescribeTaskSetsRequest) -> Result<DescribeTaskSetsResponse, ApiError> {
    ctx.store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, Some(&req.cluster))?;
            let service = find(tx, &cluster, &req.service)?.ok_or_else(service_not_found)?;
            let tasks = tx.group_tasks(&cluster, &format!("service:{}", service.service_name), f64::MAX)?;
            let (mut shown, mut failures) = (Vec::new(), Vec::new());
            match &req.task_sets {
                None => shown.extend(service.task_sets.iter().map(|s| task_set_shape(&service, s, &tasks))),
                Some(wanted) => {
                    for reference in wanted {
                        match task_set_index(&service, reference) {
                            Ok(i) => shown.push(task_set_shape(&service, &service.task_sets[i], &tasks)),
                            Err(_) => failures.push(failure(reference, "MISSING")),
                        }
                    }
                }
            }
            Ok(DescribeTaskSetsResponse {
                task_sets: Some(shown),
                failures: Some(failures),
            })
        })
        .await
}

pub async fn update_service_primary_task_set(
    ctx: &Ctx,
    req: UpdateServicePrimaryTaskSetRequest,
) -> Result<UpdateServicePrimaryTaskSetResponse, ApiError> {
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, Some(&req.cluster))?;
            let mut service = external_service(tx, &cluster, &req.service)?;
            let index = task_set_index(&service, &req.primary_task_set)?;
            if service.task_sets[index].status == "DRAINING" {
                return Err(ApiError::invalid_parameter(
                    "A deleted task set cannot become the primary one.",
                ));
            }
            let at = now();
            for (i, set) in service.task_sets.iter_mut().enumerate() {
                let status = if i == index { "PRIMARY" } else { "ACTIVE" };
                if set.status != "DRAINING" && set.status != status {
                    set.status = status.into();
                    set.updated_at = at;
                }
            }
            // The service shows what its primary task set runs.
            service.task_definition = service.task_sets[index].task_definition.clone();
            Ok(UpdateServicePrimaryTaskSetResponse {
                task_set: Some(task_set_answer(tx, &cluster, &service, index)?),
            })
        })
        .await
}

/// Whether a task definition has a container with a health check.
fn definition_has_check(tx: &mut Tx<'_>, arn: &str) -> Result<bool, ApiError> {
    Ok(super::task_definitions::find(tx, arn)?.is_some_and(|d| {
        d.definition["containerDefinitions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c.get("healthCheck").is_some()))
    }))
}

/// Container health, as the scheduler weighs it: a RUNNING task with a health check counts as
/// running only once HEALTHY (it is taken for pending until then); one UNHEALTHY past the
/// service's `healthCheckGracePeriodSeconds` is replaced, and counts against its deployment's
/// circuit breaker.
fn health(
    tx: &mut Tx<'_>,
    service: &mut Service,
    live: &mut [Task],
    stops: &mut Vec<(String, String)>,
    at: f64,
) -> Result<(), ApiError> {
    let grace = service
        .options
        .get("healthCheckGracePeriodSeconds")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let primary = service.deployments.first().map(|d| d.id.clone());
    let mut checked: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let name = service.service_name.clone();
    for task in live.iter_mut().filter(|t| phase(t) == Phase::Running) {
        let definition = task.task_definition_arn.clone();
        let has_check = match checked.get(&definition) {
            Some(known) => *known,
            None => {
                let known = definition_has_check(tx, &definition)?;
                checked.insert(definition, known);
                known
            }
        };
        if !has_check {
            continue;
        }
        match task.health_status.as_deref() {
            Some("HEALTHY") => continue,
            Some("UNHEALTHY") if task.started_at.is_some_and(|s| s + grace <= at) => {
                stops.push((task.id().to_owned(), "Task failed container health checks".into()));
                note(
                    service,
                    format!("(service {name}) (task {}) failed container health checks.", task.id()),
                    at,
                );
                if task.started_by == primary {
                    service.scheduler.health_failures += 1;
                    if let Some(d) = service.deployments.first_mut() {
                        d.failed_tasks += 1;
                    }
                }
            }
            _ => {}
        }
        // Not ready: weighed as a task still starting.
        task.last_status = TaskStatus::Pending;
    }
    Ok(())
}
