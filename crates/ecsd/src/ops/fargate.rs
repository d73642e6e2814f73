//! Fargate: the task sizes and platform versions it accepts, and the capacity ecsd provides
//! itself for FARGATE and FARGATE_SPOT tasks. Such a task has no container instance; [`advance`]
//! moves it one step through Fargate's lifecycle (PROVISIONING → PENDING → ACTIVATING → RUNNING →
//! DEACTIVATING → STOPPING → DEPROVISIONING → STOPPED) each time the runner looks at it, its
//! network interface holding an address of its subnet from PENDING until it stops. Its
//! containers behave as the simulated agents' do (the `ecsd.simulate.*` labels). The tasks of
//! the instances ecsd launches for capacity providers (`scaling`) take the same steps, less those
//! of a network interface when they have none.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::task_definitions;
use super::tasks::save_task;
use crate::domain::health::task_health;
use crate::domain::now;
use crate::domain::placement;
use crate::domain::records::{ContainerInstance, KeyValuePair, NetworkAddress, Task};
use crate::domain::status::{ContainerStatus, TaskStatus};
use crate::error::ApiError;
use crate::store::sql::Param;
use crate::store::{NewTask, StoreError, Tx};

/// The platform version LATEST stands for, and the versions there are.
pub const LATEST: &str = "1.4.0";
const PLATFORM_VERSIONS: [&str; 2] = ["1.3.0", "1.4.0"];

/// Container labels the simulation reads (the simulated agents read the same).
pub const RUN_SECONDS: &str = "ecsd.simulate.run-seconds";
pub const EXIT_CODE: &str = "ecsd.simulate.exit-code";
pub const PULL_ERROR: &str = "ecsd.simulate.pull-error";
pub const HEALTH: &str = "ecsd.simulate.health";
/// The tag that interrupts a FARGATE_SPOT task, as a reclaim of Spot capacity would.
pub const SPOT_INTERRUPTION_TAG: &str = "ecsd:spot-interruption";
/// Exit code of a container stopped by a stop request (SIGTERM).
const STOPPED_BY_SIGNAL: i32 = 143;

/// Fargate's task sizes above 256 CPU units: CPU units, and the memory (MiB) each allows: from,
/// to, step.
const SIZES: [(i64, i64, i64, i64); 6] = [
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// Whether `cpu` units and `memory` MiB are a Fargate task size (256 CPU takes 512, 1024 or
/// 2048 MiB).
pub fn is_size(cpu: i64, memory: i64) -> bool {
    if cpu == 256 {
        return matches!(memory, 512 | 1024 | 2048);
    }
    SIZES
        .iter()
        .any(|&(c, from, to, step)| c == cpu && (from..=to).contains(&memory) && (memory - from) % step == 0)
}

/// Why a task definition cannot run on Fargate, if it cannot (in ECS's words).
pub fn unfit(definition: &serde_json::Map<String, Value>) -> Option<String> {
    if definition.get("networkMode").and_then(Value::as_str) != Some("awsvpc") {
        return Some("Fargate only supports network mode 'awsvpc'.".into());
    }
    let Some(cpu) = definition.get("cpu").and_then(Value::as_str) else {
        return Some("Fargate requires that 'cpu' be defined at the task level.".into());
    };
    let Some(memory) = definition.get("memory").and_then(Value::as_str) else {
        return Some("Fargate requires that 'memory' be defined at the task level.".into());
    };
    let (Ok(cpu), Ok(memory)) = (
        crate::domain::placement::parse_cpu(cpu),
        crate::domain::placement::parse_memory(memory),
    ) else {
        return Some("No Fargate configuration exists for given values.".into());
    };
    if !is_size(cpu, memory) {
        return Some(format!(
            "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
        ));
    }
    None
}

/// The platform version a request names, resolved (LATEST and none are [`LATEST`]).
pub fn platform_version(requested: Option<&str>) -> Result<String, ApiError> {
    match requested {
        None | Some("LATEST") => Ok(LATEST.into()),
        Some(v) if PLATFORM_VERSIONS.contains(&v) => Ok(v.into()),
        Some(_) => Err(ApiError::invalid_parameter("The specified platform does not exist.")),
    }
}

/// A subnet id as EC2 writes them.
pub fn is_subnet_id(id: &str) -> bool {
    id.strip_prefix("subnet-")
        .is_some_and(|hex| (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The zone a subnet is in: one of the region's first three, the same for a subnet always.
pub fn zone_of(region: &str, subnet: &str) -> String {
    let letter = ['a', 'b', 'c'][usize::from(digest(subnet)[0]) % 3];
    format!("{region}{letter}")
}

/// An IPv4 range, as `10.0.1.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for Range {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text} is not a range such as 10.0.1.0/24"))?;
        let address: Ipv4Addr = address.parse().map_err(|e| format!("{text}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{text}: {e}"))?;
        if !(16..=28).contains(&prefix) {
            return Err(format!("{text}: a subnet's prefix is /16 to /28, as in a VPC"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Range {
            base: u32::from(address) & mask,
            prefix,
        })
    }
}

impl Range {
    /// The addresses tasks can hold: all but the first four and the last, as in a VPC subnet.
    fn usable(self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        (self.base + 4..self.base + size - 1).map(Ipv4Addr::from)
    }
}

/// How ecsd provides Fargate's capacity: where the network interfaces of Fargate tasks take
/// their addresses (a range per subnet, as configured; a subnet not configured gets a /24 of
/// 10.0.0.0/8 derived from its id), and whether their containers run on real agents.
#[derive(Clone, Debug, Default)]
pub struct FargateCapacity {
    pub ranges: BTreeMap<String, Range>,
    /// The cluster (of each account) whose container instances run Fargate tasks, instead of
    /// ecsd's simulation.
    pub pool: Option<String>,
}

impl FargateCapacity {
    fn range(&self, subnet: &str) -> Range {
        self.ranges.get(subnet).copied().unwrap_or_else(|| {
            let d = digest(subnet);
            Range {
                base: u32::from(Ipv4Addr::new(10, d[0], d[1], 0)),
                prefix: 24,
            }
        })
    }
}

/// The free address of `subnet` that a new network interface takes, stored as held by
/// `task_arn`; none when the range is used up.
fn allocate(
    tx: &mut Tx<'_>,
    subnets: &FargateCapacity,
    subnet: &str,
    task_arn: &str,
) -> Result<Option<String>, StoreError> {
    let taken: HashSet<String> = tx
        .list::<NetworkAddress>(&[Param::Text(subnet)], &[], None, usize::MAX)?
        .into_iter()
        .map(|a| a.address)
        .collect();
    let Some(address) = subnets
        .range(subnet)
        .usable()
        .map(|a| a.to_string())
        .find(|a| !taken.contains(a))
    else {
        return Ok(None);
    };
    tx.put(&NetworkAddress {
        subnet: subnet.to_owned(),
        address: address.clone(),
        task_arn: task_arn.to_owned(),
    })?;
    Ok(Some(address))
}

fn detail<'a>(task: &'a Task, name: &str) -> Option<&'a str> {
    task.attachments
        .first()
        .and_then(|a| a.details.iter().find(|d| d.name.as_deref() == Some(name)))
        .and_then(|d| d.value.as_deref())
}

fn set_attachment_status(task: &mut Task, status: &str) {
    for attachment in &mut task.attachments {
        attachment.status = status.into();
    }
}

/// What the containers of a task's definition say about how they behave.
struct Behaviour {
    /// Per container (by name): run seconds, exit code, pull error, health, has a health check,
    /// essential.
    containers: BTreeMap<String, ContainerBehaviour>,
}

#[derive(Default)]
struct ContainerBehaviour {
    run_seconds: Option<f64>,
    exit_code: i32,
    pull_error: Option<String>,
    health: Option<String>,
    has_check: bool,
    essential: bool,
}

fn behaviour(tx: &mut Tx<'_>, task: &Task) -> Result<Behaviour, ApiError> {
    let definition = task_definitions::find(tx, &task.task_definition_arn)?;
    let mut containers = BTreeMap::new();
    let list = definition
        .as_ref()
        .and_then(|d| d.definition.get("containerDefinitions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &list {
        let label = |name: &str| c.pointer(&format!("/dockerLabels/{name}")).and_then(Value::as_str);
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        containers.insert(
            name,
            ContainerBehaviour {
                run_seconds: label(RUN_SECONDS).and_then(|s| s.parse().ok()),
                exit_code: label(EXIT_CODE).and_then(|s| s.parse().ok()).unwrap_or(0),
                pull_error: label(PULL_ERROR).map(str::to_owned),
                health: label(HEALTH).map(str::to_owned),
                has_check: c.get("healthCheck").is_some(),
                essential: c.get("essential").and_then(Value::as_bool).unwrap_or(true),
            },
        );
    }
    Ok(Behaviour { containers })
}

/// Moves the task `id` (on Fargate, or on an instance ecsd runs itself) one step on; whether
/// it changed. A task without a network interface of its own has no ACTIVATING, DEACTIVATING
/// or DEPROVISIONING step.
pub fn advance(tx: &mut Tx<'_>, subnets: &FargateCapacity, cluster: &str, id: &str) -> Result<bool, ApiError> {
    let Some(task) = tx.task(cluster, id)? else {
        return Ok(false);
    };
    if task.last_status == TaskStatus::Stopped {
        return Ok(false);
    }
    if let Some(pool) = subnets
        .pool
        .as_deref()
        .filter(|_| task.launch_type.as_deref() == Some("FARGATE"))
    {
        let next = on_pool(tx, subnets, pool, &task)?;
        let changed = next != task;
        save_task(tx, cluster, &task, next)?;
        return Ok(changed);
    }
    let behaviour = behaviour(tx, &task)?;
    let mut next = step(tx, subnets, &task, &behaviour)?;
    while next.attachments.is_empty()
        && matches!(
            next.last_status,
            TaskStatus::Activating | TaskStatus::Deactivating | TaskStatus::Deprovisioning
        )
    {
        next = step(tx, subnets, &next, &behaviour)?;
    }
    let changed = next != task;
    save_task(tx, cluster, &task, next)?;
    Ok(changed)
}

/// Whether [`advance`] would move the task on (a read-only look, so that a task that runs
/// quietly costs no write): anything but a RUNNING task that nothing asks to stop is due.
pub fn due(tx: &mut Tx<'_>, capacity: &FargateCapacity, task: &Task) -> Result<bool, ApiError> {
    let stopping = task.desired_status == TaskStatus::Stopped;
    if task.last_status == TaskStatus::Stopped {
        return Ok(false);
    }
    if let Some(pool) = capacity
        .pool
        .as_deref()
        .filter(|_| task.launch_type.as_deref() == Some("FARGATE"))
    {
        let carrier = tx.task(pool, task.id())?;
        return Ok(match task.last_status {
            TaskStatus::Provisioning if !stopping => pool_instance(tx, pool, task)?.is_some(),
            TaskStatus::Pending | TaskStatus::Running if !stopping => carrier.is_none_or(|c| {
                let mut followed = task.clone();
                follow(&mut followed, &c);
                c.last_status == TaskStatus::Stopped
                    || c.last_status >= TaskStatus::Running && followed != *task
                    || task.last_status == TaskStatus::Pending && c.last_status == TaskStatus::Running
            }),
            TaskStatus::Stopping => carrier.is_none_or(|c| c.last_status == TaskStatus::Stopped),
            _ => true,
        });
    }
    if task.last_status != TaskStatus::Running || stopping {
        return Ok(true);
    }
    let spot = task.extra.get("capacityProviderName").and_then(Value::as_str) == Some("FARGATE_SPOT");
    if spot
        && task
            .tags
            .iter()
            .any(|t| t.key.as_deref() == Some(SPOT_INTERRUPTION_TAG))
    {
        return Ok(true);
    }
    let behaviour = behaviour(tx, task)?;
    let started = task.started_at.unwrap_or_default();
    Ok(task.containers.iter().any(|c| {
        c.last_status == ContainerStatus::Running
            && behaviour
                .containers
                .get(&c.name)
                .and_then(|b| b.run_seconds)
                .is_some_and(|s| started + s <= now())
    }))
}

/// The task one step on.
fn step(tx: &mut Tx<'_>, subnets: &FargateCapacity, task: &Task, behaviour: &Behaviour) -> Result<Task, ApiError> {
    let at = now();
    let mut next = task.clone();
    let stopping = task.desired_status == TaskStatus::Stopped;
    let spot = task.extra.get("capacityProviderName").and_then(Value::as_str) == Some("FARGATE_SPOT");
    if spot
        && !stopping
        && task
            .tags
            .iter()
            .any(|t| t.key.as_deref() == Some(SPOT_INTERRUPTION_TAG))
    {
        next.desired_status = TaskStatus::Stopped;
        next.stopping_at = Some(at);
        next.stop_code = Some("SpotInterruption".into());
        next.stopped_reason = Some("Your Spot Task was interrupted.".into());
        return Ok(next);
    }
    match task.last_status {
        TaskStatus::Provisioning if stopping => {
            next.last_status = TaskStatus::Deprovisioning;
        }
        TaskStatus::Provisioning => {
            let subnet = detail(task, "subnetId").unwrap_or_default().to_owned();
            match allocate(tx, subnets, &subnet, &task.task_arn)? {
                Some(address) => {
                    attach(&mut next, tx.scope().region.as_str(), &subnet, &address);
                    next.last_status = TaskStatus::Pending;
                    next.pull_started_at = Some(at);
                }
                None => {
                    next.desired_status = TaskStatus::Stopped;
                    next.stop_code = Some("TaskFailedToStart".into());
                    next.stopped_reason = Some(format!(
                        "ResourceInitializationError: unable to create a network interface: subnet {subnet} has no free addresses"
                    ));
                    next.stopping_at = Some(at);
                    next.last_status = TaskStatus::Deprovisioning;
                }
            }
        }
        TaskStatus::Pending if stopping => stop_containers(&mut next, at, TaskStatus::Deprovisioning),
        TaskStatus::Pending => {
            next.pull_stopped_at = Some(at);
            let failed = next
                .containers
                .iter()
                .find_map(|c| behaviour.containers.get(&c.name)?.pull_error.clone());
            if let Some(message) = failed {
                for c in &mut next.containers {
                    c.last_status = ContainerStatus::Stopped;
                    c.reason = Some(format!("CannotPullContainerError: {message}"));
                }
                next.desired_status = TaskStatus::Stopped;
                next.stop_code = Some("TaskFailedToStart".into());
                next.stopped_reason = Some(format!("CannotPullContainerError: {message}"));
                next.stopping_at = Some(at);
                next.execution_stopped_at = Some(at);
                next.last_status = TaskStatus::Deprovisioning;
                set_attachment_status(&mut next, "DELETED");
            } else {
                next.last_status = TaskStatus::Activating;
            }
        }
        TaskStatus::Activating if stopping => stop_containers(&mut next, at, TaskStatus::Deactivating),
        TaskStatus::Activating => {
            next.last_status = TaskStatus::Running;
            next.started_at = Some(at);
            next.connectivity = Some("CONNECTED".into());
            next.connectivity_at = Some(at);
            let task_id = task.id().to_owned();
            for (i, c) in next.containers.iter_mut().enumerate() {
                let b = behaviour.containers.get(&c.name);
                c.last_status = ContainerStatus::Running;
                c.runtime_id = Some(format!("{task_id}-{i}"));
                c.image_digest = Some(format!(
                    "sha256:{}",
                    hex(&digest(c.image.as_deref().unwrap_or_default()))
                ));
                c.health_status = Some(match b {
                    Some(b) if b.has_check => b.health.clone().unwrap_or_else(|| "HEALTHY".into()),
                    _ => "UNKNOWN".into(),
                });
            }
            next.health_status = Some(task_health(
                next.containers
                    .iter()
                    .filter(|c| {
                        behaviour
                            .containers
                            .get(&c.name)
                            .is_some_and(|b| b.essential && b.has_check)
                    })
                    .filter_map(|c| c.health_status.as_deref()),
            ));
        }
        TaskStatus::Running if stopping => {
            next.last_status = TaskStatus::Deactivating;
        }
        TaskStatus::Running => {
            let started = task.started_at.unwrap_or(at);
            let mut essential_exited = false;
            for c in &mut next.containers {
                let Some(b) = behaviour.containers.get(&c.name) else {
                    continue;
                };
                if c.last_status == ContainerStatus::Running && b.run_seconds.is_some_and(|s| started + s <= at) {
                    c.last_status = ContainerStatus::Stopped;
                    c.exit_code = Some(b.exit_code);
                    essential_exited |= b.essential;
                }
            }
            if essential_exited {
                next.desired_status = TaskStatus::Stopped;
                next.stop_code = Some("EssentialContainerExited".into());
                next.stopped_reason = Some("Essential container in task exited".into());
                next.stopping_at = Some(at);
                next.last_status = TaskStatus::Deactivating;
            }
        }
        TaskStatus::Deactivating => next.last_status = TaskStatus::Stopping,
        TaskStatus::Stopping => {
            stop_containers(&mut next, at, TaskStatus::Deprovisioning);
            set_attachment_status(&mut next, "DETACHING");
        }
        TaskStatus::Deprovisioning => deprovision(tx, task, &mut next, at)?,
        TaskStatus::Stopped | TaskStatus::Deleted => {}
    }
    Ok(next)
}

/// The group of the tasks that carry Fargate tasks' containers on the pool's instances.
pub const POOL_GROUP: &str = "ecsd:fargate";
/// The cluster whose instances run Fargate tasks with `--fargate-on-agents`.
pub const POOL_CLUSTER: &str = "ecsd-fargate";

/// The Fargate task one step on when its containers run on the pool's instances: its carrier, a
/// task of the pool cluster with the same id, placed on one of them and run by its agent (real
/// or simulated, over ACS), which the Fargate task follows as Fargate's lifecycle allows.
fn on_pool(tx: &mut Tx<'_>, capacity: &FargateCapacity, pool: &str, task: &Task) -> Result<Task, ApiError> {
    let at = now();
    let mut next = task.clone();
    let stopping = task.desired_status == TaskStatus::Stopped;
    let carrier = tx.task(pool, task.id())?;
    // What the user asks of the Fargate task, its carrier does.
    if let Some(c) = carrier
        .as_ref()
        .filter(|c| stopping && c.desired_status != TaskStatus::Stopped)
    {
        let mut stop = c.clone();
        stop.desired_status = TaskStatus::Stopped;
        stop.stopping_at = Some(at);
        stop.stop_code = task.stop_code.clone();
        stop.stopped_reason = task.stopped_reason.clone();
        save_task(tx, pool, c, stop)?;
    }
    let carrier_stopped = carrier.as_ref().is_some_and(|c| c.last_status == TaskStatus::Stopped);
    if let Some(c) = &carrier {
        follow(&mut next, c);
    }
    match task.last_status {
        TaskStatus::Provisioning if stopping => next.last_status = TaskStatus::Deprovisioning,
        TaskStatus::Provisioning => {
            let Some(instance) = pool_instance(tx, pool, task)? else {
                return Ok(next);
            };
            let subnet = detail(task, "subnetId").unwrap_or_default().to_owned();
            let Some(address) = allocate(tx, capacity, &subnet, &task.task_arn)? else {
                next.desired_status = TaskStatus::Stopped;
                next.stop_code = Some("TaskFailedToStart".into());
                next.stopped_reason = Some(format!(
                    "ResourceInitializationError: unable to create a network interface: subnet {subnet} has no free addresses"
                ));
                next.last_status = TaskStatus::Deprovisioning;
                return Ok(next);
            };
            carry(tx, pool, task, &instance)?;
            attach(&mut next, tx.scope().region.as_str(), &subnet, &address);
            next.last_status = TaskStatus::Pending;
            next.pull_started_at = Some(at);
        }
        TaskStatus::Pending | TaskStatus::Activating | TaskStatus::Running if carrier_stopped || stopping => {
            if carrier_stopped && !stopping {
                let c = carrier.as_ref().expect("a stopped carrier");
                next.desired_status = TaskStatus::Stopped;
                next.stopping_at = Some(at);
                next.stop_code = c.stop_code.clone();
                next.stopped_reason = c.stopped_reason.clone();
            }
            next.last_status = if task.last_status == TaskStatus::Pending {
                TaskStatus::Deprovisioning
            } else {
                TaskStatus::Deactivating
            };
        }
        TaskStatus::Pending if carrier.as_ref().is_some_and(|c| c.last_status == TaskStatus::Running) => {
            next.last_status = TaskStatus::Activating;
            next.pull_stopped_at = carrier.as_ref().and_then(|c| c.pull_stopped_at).or(Some(at));
        }
        TaskStatus::Activating => {
            next.last_status = TaskStatus::Running;
            next.started_at = carrier.as_ref().and_then(|c| c.started_at).or(Some(at));
        }
        TaskStatus::Deactivating => next.last_status = TaskStatus::Stopping,
        TaskStatus::Stopping if carrier_stopped || carrier.is_none() => {
            next.execution_stopped_at = carrier.as_ref().and_then(|c| c.execution_stopped_at).or(Some(at));
            set_attachment_status(&mut next, "DETACHING");
            next.last_status = TaskStatus::Deprovisioning;
        }
        TaskStatus::Deprovisioning => deprovision(tx, task, &mut next, at)?,
        _ => {}
    }
    Ok(next)
}

/// What the Fargate task shows of its carrier's containers.
fn follow(task: &mut Task, carrier: &Task) {
    for c in &mut task.containers {
        let Some(from) = carrier.containers.iter().find(|f| f.name == c.name) else {
            continue;
        };
        c.last_status = from.last_status;
        c.exit_code = from.exit_code;
        c.reason = from.reason.clone();
        c.runtime_id = from.runtime_id.clone();
        c.image_digest = from.image_digest.clone();
        c.health_status = from.health_status.clone();
        c.network_bindings = from.network_bindings.clone();
    }
    task.health_status = carrier.health_status.clone();
    if carrier.last_status >= TaskStatus::Running && task.connectivity.is_none() {
        task.connectivity = Some("CONNECTED".into());
        task.connectivity_at = carrier.started_at;
    }
}

/// An ACTIVE instance of the pool the task fits on (the one with the fewest tasks).
fn pool_instance(tx: &mut Tx<'_>, pool: &str, task: &Task) -> Result<Option<ContainerInstance>, ApiError> {
    let need = tx.reservation(task_cluster(task), task.id())?;
    let mut candidates = super::tasks::candidates(tx, pool, |_| true)?;
    Ok(placement::place_one(&mut candidates, &need, POOL_GROUP).map(|i| candidates[i].instance.clone()))
}

fn task_cluster(task: &Task) -> &str {
    crate::domain::arn::cluster_of(&task.task_arn).unwrap_or_default()
}

/// Stores the carrier of a Fargate task on `instance` of the pool: the same containers, run as
/// the agent can run them without an ENI of AWS's (bridge networking, see [`for_agents`]).
fn carry(tx: &mut Tx<'_>, pool: &str, task: &Task, instance: &ContainerInstance) -> Result<(), ApiError> {
    let scope = tx.scope().clone();
    let need = tx.reservation(task_cluster(task), task.id())?;
    let id = task.id().to_owned();
    let mut carrier = task.clone();
    carrier.task_arn = scope.task_arn(pool, &id);
    carrier.cluster_arn = scope.cluster_arn(pool);
    carrier.container_instance_arn = Some(instance.container_instance_arn.clone());
    carrier.last_status = TaskStatus::Pending;
    carrier.desired_status = TaskStatus::Running;
    carrier.version = 1;
    carrier.created_at = now();
    carrier.attachments = Vec::new();
    carrier.launch_type = Some("EC2".into());
    carrier.group = Some(POOL_GROUP.into());
    carrier.started_by = Some(task.task_arn.clone());
    carrier.tags = Vec::new();
    carrier.extra = serde_json::Map::new();
    for c in &mut carrier.containers {
        c.container_arn = scope.container_arn(pool, &id, &crate::domain::new_id());
        c.task_arn = carrier.task_arn.clone();
        c.network_interfaces = Vec::new();
    }
    super::tasks::insert_task(
        tx,
        pool,
        &NewTask {
            client_token: None,
            client_request: None,
            task: &carrier,
            reservation: &need,
        },
    )?;
    Ok(())
}

/// The task definition of a Fargate task's carrier as its agent gets it: bridge networking,
/// each container port on a port of the host's choosing.
pub fn for_agents(definition: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut out = definition.clone();
    out.insert("networkMode".into(), "bridge".into());
    if let Some(containers) = out.get_mut("containerDefinitions").and_then(Value::as_array_mut) {
        for mapping in containers
            .iter_mut()
            .filter_map(|c| c.get_mut("portMappings").and_then(Value::as_array_mut))
            .flatten()
        {
            if let Some(m) = mapping.as_object_mut() {
                m.insert("hostPort".into(), 0.into());
            }
        }
    }
    out
}

/// The last step: the address goes back to its subnet, the attachment is deleted, the task and
/// its containers are STOPPED.
fn deprovision(tx: &mut Tx<'_>, task: &Task, next: &mut Task, at: f64) -> Result<(), StoreError> {
    if let (Some(subnet), Some(address)) = (detail(task, "subnetId"), detail(task, "privateIPv4Address")) {
        tx.delete::<NetworkAddress>(&[Param::Text(subnet), Param::Text(address)])?;
    }
    set_attachment_status(next, "DELETED");
    next.last_status = TaskStatus::Stopped;
    next.stopped_at = Some(at);
    next.execution_stopped_at.get_or_insert(at);
    for c in &mut next.containers {
        c.last_status = ContainerStatus::Stopped;
    }
    Ok(())
}

/// Stops what still runs of the task's containers (as a stop request does) and moves it on.
fn stop_containers(task: &mut Task, at: f64, then: TaskStatus) {
    for c in &mut task.containers {
        if c.last_status == ContainerStatus::Running {
            c.exit_code = Some(STOPPED_BY_SIGNAL);
        }
        c.last_status = ContainerStatus::Stopped;
    }
    task.execution_stopped_at.get_or_insert(at);
    task.last_status = then;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Gives the task's network interface its identity and `address`, and its containers theirs.
fn attach(task: &mut Task, region: &str, subnet: &str, address: &str) {
    let d = digest(&task.task_arn);
    let eni = format!("eni-{}", &hex(&d)[..17]);
    let mac = format!(
        "0e:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        d[20], d[21], d[22], d[23], d[24]
    );
    let domain = if region == "us-east-1" {
        "ec2.internal".to_owned()
    } else {
        format!("{region}.compute.internal")
    };
    let dns = format!("ip-{}.{domain}", address.replace('.', "-"));
    let Some(attachment) = task.attachments.first_mut() else {
        return;
    };
    attachment.status = "ATTACHED".into();
    attachment.details = [
        ("subnetId", subnet),
        ("networkInterfaceId", eni.as_str()),
        ("macAddress", mac.as_str()),
        ("privateDnsName", dns.as_str()),
        ("privateIPv4Address", address),
    ]
    .into_iter()
    .map(|(name, value)| KeyValuePair {
        name: Some(name.into()),
        value: Some(value.into()),
    })
    .collect();
    let attachment_id = attachment.id.clone();
    for c in &mut task.containers {
        c.network_interfaces = vec![json!({"attachmentId": attachment_id, "privateIpv4Address": address})];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_sizes_are_fargates() {
        assert!(is_size(256, 512));
        assert!(is_size(256, 1024));
        assert!(is_size(256, 2048));
        assert!(!is_size(256, 4096));
        assert!(!is_size(512, 512));
        assert!(is_size(1024, 3072));
        assert!(is_size(4096, 30720));
        assert!(!is_size(8192, 17408));
        assert!(is_size(8192, 20480));
        assert!(!is_size(300, 1024));
    }

    #[test]
    fn ranges_leave_out_what_a_vpc_reserves() {
        let range: Range = "10.1.2.0/28".parse().unwrap();
        let usable: Vec<String> = range.usable().map(|a| a.to_string()).collect();
        assert_eq!(usable.first().map(String::as_str), Some("10.1.2.4"));
        assert_eq!(usable.last().map(String::as_str), Some("10.1.2.14"));
        assert_eq!(usable.len(), 11);
        assert!("10.1.2.0".parse::<Range>().is_err());
        assert!("10.1.2.0/8".parse::<Range>().is_err());
    }

    #[test]
    fn platform_versions_resolve() {
        assert_eq!(platform_version(None).unwrap(), LATEST);
        assert_eq!(platform_version(Some("LATEST")).unwrap(), LATEST);
        assert_eq!(platform_version(Some("1.3.0")).unwrap(), "1.3.0");
        assert!(platform_version(Some("9.9.9")).is_err());
    }

    #[test]
    fn subnets_have_a_zone_and_a_range() {
        assert_eq!(
            zone_of("eu-west-1", "subnet-0abc1234"),
            zone_of("eu-west-1", "subnet-0abc1234")
        );
        assert!(zone_of("eu-west-1", "subnet-0abc1234").starts_with("eu-west-1"));
        assert!(is_subnet_id("subnet-0abc1234"));
        assert!(!is_subnet_id("subnet-xyz"));
        assert!(!is_subnet_id("sg-0abc1234"));
    }
}
