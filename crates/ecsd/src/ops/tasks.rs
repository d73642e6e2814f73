//! RunTask, StartTask, StopTask, DescribeTasks and ListTasks, and `save_task`, the one place
//! where an existing task changes: every change bumps its `version` there.

use serde_json::{json, Map, Value};

use super::tags::{check_tags, merge_tags};
use super::{active_cluster, arn_for, capacity_providers, failure, fargate, fingerprint, task_definitions, Ctx, Page};
use crate::domain::placement::{self, BinpackField, Candidate, Placement, Reservation, Strategy};
use crate::domain::quantities;
use crate::domain::query::{self, Expr};
use crate::domain::records::{
    Attachment, Container, ContainerInstance, KeyValuePair, StoredTaskDefinition, Tag, Task, TaskDefinitionSpec,
};
use crate::domain::status::{ContainerInstanceStatus, ContainerStatus, TaskDefinitionStatus, TaskStatus};
use crate::domain::{events, new_id, now, Scope};
use crate::error::ApiError;
use crate::shapes::{
    self, CapacityProviderStrategyItem, DescribeTasksRequest, DescribeTasksResponse, Failure, ListTasksRequest,
    ListTasksResponse, PlacementConstraint, PlacementStrategy, PropagateTags, RunTaskRequest, RunTaskResponse,
    StartTaskRequest, StartTaskResponse, StopTaskRequest, StopTaskResponse, TaskField,
};
use crate::store::{NewTask, StoreError, StoreExt, TaskFilter, Tx};

const MAX_RUN_COUNT: i32 = 10;
const MAX_START_INSTANCES: usize = 10;
const MAX_DESCRIBE: usize = 100;
const MAX_STRATEGIES: usize = 5;
const MAX_CONSTRAINTS: usize = 10;
const MAX_STARTED_BY: usize = 128;
const MAX_CLIENT_TOKEN: usize = 64;

/// Stores `next` in place of `previous` (the task as this transaction found it stored) if
/// anything changed, with the next `version`, moves what it holds on its instance with its
/// status, and appends its state-change event in the same transaction. Returns the task as
/// stored.
pub(crate) fn save_task(tx: &mut Tx<'_>, cluster: &str, previous: &Task, mut next: Task) -> Result<Task, StoreError> {
    if next == *previous {
        return Ok(next);
    }
    next.version = previous.version + 1;
    tx.update(previous, &next)?;
    if let Some(instance) = previous
        .container_instance_arn
        .as_deref()
        .filter(|_| previous.last_status != next.last_status)
    {
        let instance = id_of(instance);
        let reservation = tx.reservation(cluster, previous.id())?;
        let mut usage = tx.usage(cluster, instance)?;
        usage.transition(
            &reservation,
            previous.group.as_deref().unwrap_or_default(),
            previous.last_status,
            next.last_status,
        );
        tx.put_usage(cluster, instance, &usage)?;
    }
    append_task_event(tx, cluster, &next)?;
    Ok(next)
}

/// Stores a new task, holding its reservation on its instance until it is STOPPED, and its
/// first state-change event.
pub(crate) fn insert_task(tx: &mut Tx<'_>, cluster: &str, new: &NewTask<'_>) -> Result<(), StoreError> {
    tx.insert_task(new)?;
    let task = new.task;
    if let Some(instance) = task.container_instance_arn.as_deref().map(id_of) {
        let mut usage = tx.usage(cluster, instance)?;
        usage.place(
            new.reservation,
            task.group.as_deref().unwrap_or_default(),
            task.last_status,
        );
        tx.put_usage(cluster, instance, &usage)?;
    }
    append_task_event(tx, cluster, task)
}

fn append_task_event(tx: &mut Tx<'_>, cluster: &str, task: &Task) -> Result<(), StoreError> {
    let time = now();
    let event = events::task_event(tx.scope(), task, time);
    let notice = events::Notice::of_task(task).map(|n| n.encode());
    tx.append_event(cluster, events::TASK_STATE_CHANGE, time, &event, notice.as_deref())
}

/// The id at the end of an ARN.
pub(crate) fn id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or_default()
}

/// What RunTask, StartTask and the service scheduler share: how each new task is made.
pub(crate) struct TaskRequest {
    pub(crate) cluster: Option<String>,
    pub(crate) task_definition: String,
    pub(crate) overrides: Option<Value>,
    pub(crate) started_by: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) network_configuration: Option<Value>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) propagate_tags: Option<PropagateTags>,
    pub(crate) enable_execute_command: bool,
}

/// A member ecsd keeps as JSON, as the client sent it.
fn as_json(member: Option<impl serde::Serialize>) -> Option<Value> {
    member.and_then(|m| serde_json::to_value(m).ok())
}

/// RunTask and StartTask name the members they share alike.
macro_rules! task_request_from {
    ($($request:ty),*) => {$(
        impl From<&$request> for TaskRequest {
            fn from(req: &$request) -> Self {
                TaskRequest {
                    cluster: req.cluster.clone(),
                    task_definition: req.task_definition.clone(),
                    overrides: as_json(req.overrides.as_ref()),
                    started_by: req.started_by.clone(),
                    group: req.group.clone(),
                    network_configuration: as_json(req.network_configuration.as_ref()),
                    tags: req.tags.clone().unwrap_or_default(),
                    propagate_tags: req.propagate_tags,
                    enable_execute_command: req.enable_execute_command.unwrap_or(false),
                }
            }
        }
    )*};
}

task_request_from!(RunTaskRequest, StartTaskRequest);

/// A checked [`TaskRequest`], ready to make tasks from.
pub(crate) struct Template {
    pub(crate) cluster: String,
    spec: TaskDefinitionSpec,
    overrides: Value,
    pub(crate) need: Reservation,
    group: String,
    pub(crate) tags: Vec<Tag>,
    subnet: Option<String>,
    launch_type: String,
    client_token: Option<ClientToken>,
    extra: Map<String, Value>,
    /// The subnets a Fargate task's network interface may be in (it takes one at random).
    fargate_subnets: Vec<String>,
    /// The task definition's own `memberOf` constraints.
    pub(crate) constraints: Vec<Expr>,
}

/// RunTask's idempotency token and the fingerprint of the request it came with.
#[derive(Clone)]
pub(crate) struct ClientToken {
    token: String,
    fingerprint: String,
}

impl TaskRequest {
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        if let Some(overrides) = &self.overrides {
            quantities::check_overrides(overrides)?;
        }
        if self.started_by.as_ref().is_some_and(|s| s.len() > MAX_STARTED_BY) {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid 'startedBy': it must be at most {MAX_STARTED_BY} characters long."
            )));
        }
        check_tags(&self.tags)
    }

    /// Resolves the cluster and task definition and works out what each task needs.
    pub(crate) fn template(
        &self,
        tx: &mut Tx<'_>,
        launch_type: String,
        client_token: Option<ClientToken>,
        extra: Map<String, Value>,
    ) -> Result<Template, ApiError> {
        let cluster = active_cluster(tx, self.cluster.as_deref())?;
        let stored = task_definitions::find(tx, &self.task_definition)?
            .ok_or_else(|| ApiError::client("Unable to find the task definition."))?;
        let spec = stored.spec().map_err(StoreError::from)?;
        if spec.status != TaskDefinitionStatus::Active {
            return Err(ApiError::client(
                "The task definition is not ACTIVE; register a new revision to run it.",
            ));
        }
        let awsvpc = spec.network_mode.as_deref() == Some("awsvpc");
        let subnet = self
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
        let mut extra = extra;
        let mut fargate_subnets = Vec::new();
        if launch_type == "FARGATE" {
            fargate_subnets = self.fargate(&stored, &mut extra)?;
        }
        let overrides = overrides(self.overrides.clone());
        let need = placement::reservation(&spec, &overrides)?;
        let tags = match self.propagate_tags {
            Some(PropagateTags::TaskDefinition) => merge_tags(&stored.tags, &self.tags),
            _ => self.tags.clone(),
        };
        check_tags(&tags)?;
        let constraints = constraints_of(&stored)?;
        Ok(Template {
            group: self.group.clone().unwrap_or_else(|| format!("family:{}", spec.family)),
            cluster,
            spec,
            overrides,
            need,
            tags,
            subnet: subnet.filter(|_| awsvpc),
            launch_type,
            client_token,
            extra,
            fargate_subnets,
            constraints,
        })
    }

    /// Checks what a Fargate task needs and adds the members a Fargate task shows; the subnets
    /// it may take.
    fn fargate(&self, stored: &StoredTaskDefinition, extra: &mut Map<String, Value>) -> Result<Vec<String>, ApiError> {
        let compatible = stored
            .definition
            .get("compatibilities")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c == "FARGATE"));
        if !compatible {
            return Err(ApiError::invalid_parameter(
                "Task definition does not support launch_type FARGATE.",
            ));
        }
        let subnets: Vec<String> = self
            .network_configuration
            .as_ref()
            .and_then(|n| n.pointer("/awsvpcConfiguration/subnets"))
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if let Some(bad) = subnets.iter().find(|s| !fargate::is_subnet_id(s)) {
            return Err(ApiError::invalid_parameter(format!(
                "Error retrieving subnet information for [{bad}]: The subnet ID '{bad}' is malformed"
            )));
        }
        if subnets.len() > 16 {
            return Err(ApiError::invalid_parameter(
                "Invalid 'networkConfiguration.awsvpcConfiguration.subnets': at most 16 subnets are allowed.",
            ));
        }
        let version = fargate::platform_version(extra.get("platformVersion").and_then(Value::as_str))?;
        extra.insert("platformVersion".into(), version.into());
        let family = stored
            .definition
            .get("runtimePlatform")
            .and_then(|p| p.get("operatingSystemFamily"))
            .and_then(Value::as_str)
            .filter(|f| *f != "LINUX")
            .unwrap_or("Linux");
        extra.insert("platformFamily".into(), family.into());
        extra.entry("capacityProviderName").or_insert("FARGATE".into());
        let storage = stored
            .definition
            .get("ephemeralStorage")
            .cloned()
            .unwrap_or_else(|| json!({"sizeInGiB": 20}));
        extra.insert("ephemeralStorage".into(), storage);
        Ok(subnets)
    }

    /// Makes and stores a task of `template` on `instance` (none: on Fargate).
    pub(crate) fn create(
        &self,
        tx: &mut Tx<'_>,
        template: &Template,
        instance: Option<&ContainerInstance>,
    ) -> Result<Task, StoreError> {
        let scope: Scope = tx.scope().clone();
        let cluster = &template.cluster;
        let id = new_id();
        let task_arn = scope.task_arn(cluster, &id);
        let mut extra = template.extra.clone();
        let mut subnet = template.subnet.clone();
        if !template.fargate_subnets.is_empty() {
            let pick = usize::from(uuid::Uuid::new_v4().as_bytes()[0]) % template.fargate_subnets.len();
            let chosen = template.fargate_subnets[pick].clone();
            extra.insert(
                "availabilityZone".into(),
                fargate::zone_of(&scope.region, &chosen).into(),
            );
            subnet = Some(chosen);
        }
        if let Some(zone) = instance.and_then(|instance| {
            instance
                .attributes
                .iter()
                .find(|a| a.name == "ecs.availability-zone")
                .and_then(|a| a.value.clone())
        }) {
            extra.insert("availabilityZone".into(), zone.into());
        }
        let spec = &template.spec;
        let task = Task {
            containers: containers(
                spec,
                &template.overrides,
                |c| scope.container_arn(cluster, &id, c),
                &task_arn,
            ),
            task_arn,
            cluster_arn: scope.cluster_arn(cluster),
            task_definition_arn: spec.task_definition_arn.clone(),
            container_instance_arn: instance.map(|i| i.container_instance_arn.clone()),
            overrides: template.overrides.clone(),
            last_status: if subnet.is_some() || instance.is_none() {
                TaskStatus::Provisioning
            } else {
                TaskStatus::Pending
            },
            desired_status: TaskStatus::Running,
            cpu: task_size(&template.overrides, "cpu", &spec.cpu),
            memory: task_size(&template.overrides, "memory", &spec.memory),
            started_by: self.started_by.clone(),
            version: 1,
            stopped_reason: None,
            stop_code: None,
            connectivity: None,
            connectivity_at: None,
            pull_started_at: None,
            pull_stopped_at: None,
            execution_stopped_at: None,
            created_at: now(),
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            group: Some(template.group.clone()),
            launch_type: Some(template.launch_type.clone()),
            attachments: subnet
                .iter()
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
            tags: template.tags.clone(),
            enable_execute_command: self.enable_execute_command,
            extra,
        };
        insert_task(
            tx,
            cluster,
            &NewTask {
                client_token: template.client_token.as_ref().map(|t| t.token.as_str()),
                client_request: template.client_token.as_ref().map(|t| t.fingerprint.as_str()),
                task: &task,
                reservation: &template.need,
            },
        )?;
        Ok(task)
    }
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

pub(crate) fn check_launch_type(launch_type: Option<&str>) -> Result<String, ApiError> {
    let launch_type = launch_type.unwrap_or("EC2");
    if matches!(launch_type, "EC2" | "EXTERNAL" | "FARGATE") {
        Ok(launch_type.to_owned())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "Invalid 'launchType': {launch_type} tasks cannot run here; use EC2, EXTERNAL or FARGATE."
        )))
    }
}

/// Tasks to launch alike: how many, with which launch type, on which capacity provider.
pub(crate) struct Batch {
    pub(crate) launch_type: String,
    pub(crate) provider: Option<String>,
    pub(crate) count: usize,
}

/// How `count` new tasks are launched on `cluster`: with the launch type a request names,
/// else by the capacity provider strategy it names, else by the cluster's default strategy,
/// else as EC2 tasks. `running` counts what each provider of the strategy runs already (a
/// service's tasks).
pub(crate) fn capacity(
    tx: &mut Tx<'_>,
    cluster: &str,
    launch_type: Option<&str>,
    strategy: &[CapacityProviderStrategyItem],
    running: &[(String, i64)],
    count: usize,
) -> Result<Vec<Batch>, ApiError> {
    if let Some(launch_type) = launch_type.filter(|l| !l.is_empty()) {
        return Ok(vec![Batch {
            launch_type: launch_type.to_owned(),
            provider: (launch_type == "FARGATE").then(|| "FARGATE".to_owned()),
            count,
        }]);
    }
    let record = tx.cluster(cluster)?.ok_or_else(ApiError::cluster_not_found)?;
    let strategy = if strategy.is_empty() {
        capacity_providers::default_strategy(&record)
    } else {
        strategy.to_vec()
    };
    if strategy.is_empty() {
        return Ok(vec![Batch {
            launch_type: "EC2".into(),
            provider: None,
            count,
        }]);
    }
    capacity_providers::check_strategy_on(&record, &strategy)?;
    let counts: Vec<i64> = strategy
        .iter()
        .map(|i| {
            running
                .iter()
                .find(|(p, _)| *p == i.capacity_provider)
                .map_or(0, |(_, n)| *n)
        })
        .collect();
    let mut per_provider = vec![0usize; strategy.len()];
    for i in capacity_providers::split(&strategy, &counts, count) {
        per_provider[i] += 1;
    }
    Ok(strategy
        .iter()
        .zip(per_provider)
        .filter(|(_, n)| *n > 0)
        .map(|(item, n)| Batch {
            launch_type: capacity_providers::launch_type_of(&item.capacity_provider).to_owned(),
            provider: Some(item.capacity_provider.clone()),
            count: n,
        })
        .collect())
}

/// Task members copied from the request as sent.
pub(crate) fn extra_members(platform_version: Option<&str>) -> Map<String, Value> {
    let mut extra = Map::new();
    if let Some(version) = platform_version {
        extra.insert("platformVersion".into(), version.into());
    }
    extra
}

/// Tasks as the model's `Task`.
fn shown(tasks: Vec<Task>) -> Result<Option<Vec<shapes::Task>>, StoreError> {
    tasks
        .into_iter()
        .map(|t| Ok(shapes::Task(shapes::Rendered::of(&t)?)))
        .collect::<Result<_, StoreError>>()
        .map(Some)
}

pub(crate) fn strategies(requested: &[PlacementStrategy]) -> Result<Vec<Strategy>, ApiError> {
    if requested.len() > MAX_STRATEGIES {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'placementStrategy': at most {MAX_STRATEGIES} strategies are allowed."
        )));
    }
    requested
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field = s.field.as_deref();
            match (s.r#type.map(|t| t.as_str()), field) {
                (Some("random"), None) => Ok(Strategy::Random),
                (Some("binpack"), Some("cpu" | "CPU")) => Ok(Strategy::Binpack(BinpackField::Cpu)),
                (Some("binpack"), Some("memory" | "MEMORY")) => Ok(Strategy::Binpack(BinpackField::Memory)),
                (Some("spread"), Some(f)) if f == "instanceId" || f == "host" || f.starts_with("attribute:") => {
                    Ok(Strategy::Spread(f.to_owned()))
                }
                (kind, field) => Err(ApiError::invalid_parameter(format!(
                    "Invalid 'placementStrategy[{i}]': type {} with field {} is not a placement strategy \
                     (random; binpack on cpu or memory; spread on instanceId, host or attribute:NAME).",
                    kind.unwrap_or("(none)"),
                    field.unwrap_or("(none)")
                ))),
            }
        })
        .collect()
}

/// The `memberOf` expressions and whether `distinctInstance` applies.
pub(crate) fn constraints(requested: &[PlacementConstraint]) -> Result<(Vec<Expr>, bool), ApiError> {
    if requested.len() > MAX_CONSTRAINTS {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'placementConstraints': at most {MAX_CONSTRAINTS} constraints are allowed."
        )));
    }
    let mut member_of = Vec::new();
    let mut distinct = false;
    for (i, c) in requested.iter().enumerate() {
        match (c.r#type.map(|t| t.as_str()), c.expression.as_deref()) {
            (Some("distinctInstance"), None) => distinct = true,
            (Some("memberOf"), Some(expression)) => member_of.push(query::parse(expression)?),
            (Some("distinctInstance"), Some(_)) => {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid 'placementConstraints[{i}]': distinctInstance takes no expression."
                )))
            }
            (Some("memberOf"), None) => {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid 'placementConstraints[{i}]': memberOf needs an expression."
                )))
            }
            (kind, _) => {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid 'placementConstraints[{i}]': unknown type {}.",
                    kind.unwrap_or("(none)")
                )))
            }
        }
    }
    Ok((member_of, distinct))
}

/// The task definition's own `memberOf` constraints.
pub(crate) fn definition_constraints(tx: &mut Tx<'_>, reference: &str) -> Result<Vec<Expr>, ApiError> {
    match task_definitions::find(tx, reference)? {
        Some(stored) => constraints_of(&stored),
        None => Ok(Vec::new()),
    }
}

fn constraints_of(stored: &StoredTaskDefinition) -> Result<Vec<Expr>, ApiError> {
    let list = stored
        .definition
        .get("placementConstraints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("memberOf"))
        .filter_map(|c| c.get("expression").and_then(Value::as_str))
        .map(query::parse)
        .collect()
}

/// Where new tasks may go: strategies, `memberOf` expressions and `distinctInstance`.
pub(crate) struct Rules<'a> {
    pub strategies: &'a [Strategy],
    pub member_of: &'a [Expr],
    pub distinct_instance: bool,
}

/// The tasks placed, and the instances refused with why.
pub(crate) type Placed = (Vec<Task>, Vec<(String, &'static str)>);

/// The ACTIVE instances of `cluster` that `keep` keeps, each with what its tasks hold.
pub(crate) fn candidates(
    tx: &mut Tx<'_>,
    cluster: &str,
    keep: impl Fn(&ContainerInstance) -> bool,
) -> Result<Vec<Candidate>, StoreError> {
    let (instances, mut loads) = tx.instances_and_loads(cluster, ContainerInstanceStatus::Active)?;
    Ok(instances
        .into_iter()
        .filter(|i| keep(i))
        .map(|instance| {
            let load = loads
                .remove(id_of(&instance.container_instance_arn))
                .unwrap_or_default();
            Candidate { instance, load }
        })
        .collect())
}

/// Places `count` tasks of `template` on the cluster's ACTIVE instances and stores them:
/// the tasks made, and why the others could not be placed.
pub(crate) fn place_tasks(
    tx: &mut Tx<'_>,
    task: &TaskRequest,
    template: &Template,
    count: usize,
    rules: &Rules<'_>,
) -> Result<Placed, ApiError> {
    if template.launch_type == "FARGATE" {
        // Fargate provides the capacity: nothing to place on.
        let tasks = (0..count)
            .map(|_| task.create(tx, template, None))
            .collect::<Result<_, _>>()?;
        return Ok((tasks, Vec::new()));
    }
    let provider = template.extra.get("capacityProviderName").and_then(Value::as_str);
    // A provider's tasks run on its own instances.
    let mut candidates = candidates(tx, &template.cluster, |i| {
        provider.is_none_or(|p| capacity_providers::of_instance(i) == Some(p))
    })?;
    if candidates.is_empty() && provider.is_none() {
        return Err(ApiError::invalid_parameter(
            "No Container Instances were found in your cluster.",
        ));
    }
    let placement = Placement {
        need: &template.need,
        count,
        strategies: rules.strategies,
        member_of: rules.member_of,
        distinct_instance: rules.distinct_instance,
        group: &template.group,
    };
    let (placed, refusals) = placement::place(&mut candidates, &placement);
    let mut tasks = Vec::with_capacity(count);
    for index in &placed {
        tasks.push(task.create(tx, template, Some(&candidates[*index].instance))?);
    }
    if provider.is_some() {
        // What does not fit waits in PROVISIONING for the provider to have capacity.
        for _ in placed.len()..count {
            tasks.push(task.create(tx, template, None)?);
        }
        return Ok((tasks, Vec::new()));
    }
    Ok((tasks, refusals))
}

pub async fn run_task(ctx: &Ctx, req: RunTaskRequest) -> Result<RunTaskResponse, ApiError> {
    let fingerprint = fingerprint(&req);
    let task = TaskRequest::from(&req);
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_RUN_COUNT).contains(&count) {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'count': it must be between 1 and {MAX_RUN_COUNT}."
        )));
    }
    if req.launch_type.is_some() && req.capacity_provider_strategy.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_parameter(
            "Specifying both a launch type and capacity provider strategy is not supported.",
        ));
    }
    let launch_type = req
        .launch_type
        .map(|l| check_launch_type(Some(l.as_str())))
        .transpose()?;
    let requested_strategy = req.capacity_provider_strategy.clone().unwrap_or_default();
    capacity_providers::check_strategy(&requested_strategy)?;
    if req
        .client_token
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > MAX_CLIENT_TOKEN || !t.bytes().all(|b| (33..=126).contains(&b)))
    {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'clientToken': it must be 1 to {MAX_CLIENT_TOKEN} characters from the range 33-126."
        )));
    }
    task.check()?;
    let strategies = strategies(req.placement_strategy.as_deref().unwrap_or_default())?;
    let (member_of, distinct_instance) = constraints(req.placement_constraints.as_deref().unwrap_or_default())?;
    ctx.store
        .write(&ctx.scope, move |tx| {
            let client_token = req.client_token.clone().map(|token| ClientToken {
                token,
                fingerprint: fingerprint.clone(),
            });
            let cluster = active_cluster(tx, task.cluster.as_deref())?;
            if let Some(token) = &client_token {
                let earlier = tx.tasks_by_client_token(&cluster, &token.token)?;
                // The same token with the same request answers with what that request made; with
                // another request, it is a conflict.
                if earlier
                    .iter()
                    .any(|(_, made_by)| made_by.as_ref().is_some_and(|f| *f != token.fingerprint))
                {
                    return Err(ApiError::conflict(
                        format!(
                            "The clientToken '{}' is already in use with a different RunTask request.",
                            token.token
                        ),
                        earlier.into_iter().map(|(task, _)| task.task_arn).collect(),
                    ));
                }
                if !earlier.is_empty() {
                    return Ok(RunTaskResponse {
                        tasks: shown(earlier.into_iter().map(|(task, _)| task).collect())?,
                        failures: Some(Vec::new()),
                    });
                }
            }
            let batches = capacity(
                tx,
                &cluster,
                launch_type.as_deref(),
                &requested_strategy,
                &[],
                count as usize,
            )?;
            let (mut tasks, mut failures) = (Vec::new(), Vec::new());
            for batch in batches {
                let mut extra = extra_members(req.platform_version.as_deref());
                if let Some(provider) = &batch.provider {
                    extra.insert("capacityProviderName".into(), provider.clone().into());
                }
                let template = task.template(tx, batch.launch_type.clone(), client_token.clone(), extra)?;
                let member_of = [member_of.as_slice(), &template.constraints].concat();
                let rules = Rules {
                    strategies: &strategies,
                    member_of: &member_of,
                    distinct_instance,
                };
                let (placed, refusals) = place_tasks(tx, &task, &template, batch.count, &rules)?;
                tasks.extend(placed);
                failures.extend(refusals.iter().map(|(arn, why)| failure(arn, why)));
            }
            Ok(RunTaskResponse {
                tasks: shown(tasks)?,
                failures: Some(failures),
            })
        })
        .await
}

pub async fn start_task(ctx: &Ctx, req: StartTaskRequest) -> Result<StartTaskResponse, ApiError> {
    let task = TaskRequest::from(&req);
    if req.container_instances.is_empty() || req.container_instances.len() > MAX_START_INSTANCES {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'containerInstances': between 1 and {MAX_START_INSTANCES} container instances are allowed."
        )));
    }
    task.check()?;
    ctx.store
        .write(&ctx.scope, move |tx| {
            let extra = extra_members(None);
            let template = task.template(tx, "EC2".into(), None, extra)?;
            let scope = tx.scope().clone();
            let (mut tasks, mut failures): (Vec<Task>, Vec<Failure>) = (Vec::new(), Vec::new());
            for reference in &req.container_instances {
                let resolved = scope.id_in(reference, "container-instance", &template.cluster);
                let arn = scope.container_instance_arn(&template.cluster, resolved.unwrap_or(reference));
                let instance = match resolved {
                    Some(id) => tx.container_instance(&template.cluster, id)?,
                    None => None,
                };
                let Some(instance) = instance else {
                    failures.push(failure(&arn, "MISSING"));
                    continue;
                };
                if instance.status != ContainerInstanceStatus::Active {
                    failures.push(failure(&arn, instance.status.as_str()));
                    continue;
                }
                let load = tx.instance_load(&template.cluster, id_of(&arn))?;
                if let Some(why) = placement::misfit(&instance, &load, &template.need) {
                    failures.push(failure(&arn, why));
                    continue;
                }
                tasks.push(task.create(tx, &template, Some(&instance))?);
            }
            Ok(StartTaskResponse {
                tasks: shown(tasks)?,
                failures: Some(failures),
            })
        })
        .await
}

pub async fn stop_task(ctx: &Ctx, req: StopTaskRequest) -> Result<StopTaskResponse, ApiError> {
    if req.reason.as_ref().is_some_and(|r| r.len() > 255) {
        return Err(ApiError::invalid_parameter(
            "Invalid 'reason': it must be at most 255 characters long.",
        ));
    }
    ctx.store
        .write(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let not_found = || ApiError::invalid_parameter("The referenced task was not found.");
            let id = tx
                .scope()
                .id_in(&req.task, "task", &cluster)
                .ok_or_else(not_found)?
                .to_owned();
            let task = tx.task(&cluster, &id)?.ok_or_else(not_found)?;
            let mut next = task.clone();
            if next.desired_status != TaskStatus::Stopped {
                next.desired_status = TaskStatus::Stopped;
                next.stopping_at.get_or_insert_with(now);
                next.stop_code.get_or_insert_with(|| "UserInitiated".into());
                next.stopped_reason = Some(req.reason.clone().unwrap_or_else(|| "Task stopped by user".into()));
            }
            let task = save_task(tx, &cluster, &task, next)?;
            Ok(StopTaskResponse {
                task: Some(shapes::Task(shapes::Rendered::of(&task).map_err(StoreError::from)?)),
            })
        })
        .await
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
    let with_tags = req.include.as_deref().unwrap_or_default().contains(&TaskField::Tags);
    ctx.store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let scope = tx.scope().clone();
            let (mut tasks, mut failures) = (Vec::new(), Vec::new());
            for reference in &req.tasks {
                let found = match scope.id_in(reference, "task", &cluster) {
                    Some(id) => tx.get_text::<Task>(&[cluster.as_str().into(), id.into()])?,
                    None => None,
                };
                match found {
                    Some(doc) => tasks.push(described(doc, with_tags)?),
                    None => {
                        let arn = arn_for(reference, |id| scope.task_arn(&cluster, id));
                        failures.push(failure(&arn, "MISSING"));
                    }
                }
            }
            Ok(DescribeTasksResponse {
                tasks: Some(tasks),
                failures: Some(failures),
            })
        })
        .await
}

/// A stored task as DescribeTasks shows it. The stored document is the `Task` shape, so it is
/// answered as it is, unparsed, unless it holds tags the caller did not ask for.
fn described(doc: String, with_tags: bool) -> Result<shapes::Task, StoreError> {
    if with_tags || Task::untagged(&doc) {
        // What makes answering unparsed right: a stored task reads back as the very text its
        // record renders (no member defaulted or normalized on the way).
        debug_assert_eq!(serde_json::to_string(&serde_json::from_str::<Task>(&doc)?)?, doc);
        return Ok(shapes::Task(shapes::Rendered::from_text(doc)?));
    }
    let mut task: Task = serde_json::from_str(&doc)?;
    task.tags.clear();
    Ok(shapes::Task(shapes::Rendered::of(&task)?))
}

pub async fn list_tasks(ctx: &Ctx, req: ListTasksRequest) -> Result<ListTasksResponse, ApiError> {
    let page = Page::new("tasks", req.max_results, req.next_token.as_deref())?;
    let (limit, after) = (page.fetch(), page.after.clone());
    let desired_status = req.desired_status.map_or(TaskStatus::Running, TaskStatus::from);
    let ids = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let cluster = active_cluster(tx, req.cluster.as_deref())?;
            let container_instance = match &req.container_instance {
                Some(reference) => Some(
                    tx.scope()
                        .id_in(reference, "container-instance", &cluster)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            ApiError::invalid_parameter("Invalid 'containerInstance': not an instance of this cluster.")
                        })?,
                ),
                None => None,
            };
            let filter = TaskFilter {
                desired_status,
                container_instance,
                family: req.family.clone(),
                started_by: req.started_by.clone(),
                launch_type: req.launch_type.map(|l| l.as_str().to_owned()),
                // A service's tasks are its group's.
                group: req.service_name.as_deref().map(|name| {
                    let name = name.rsplit('/').next().unwrap_or(name);
                    format!("service:{name}")
                }),
            };
            let ids = tx.list_tasks(&cluster, &filter, after.as_deref(), limit)?;
            Ok::<_, ApiError>((cluster, ids))
        })
        .await?;
    let (cluster, ids) = ids;
    let (ids, next_token) = page.finish(ids, Clone::clone);
    Ok(ListTasksResponse {
        task_arns: Some(ids.iter().map(|id| ctx.scope.task_arn(&cluster, id)).collect()),
        next_token,
    })
}
