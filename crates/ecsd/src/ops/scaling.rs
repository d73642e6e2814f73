//! Capacity providers of Auto Scaling groups at work: [`pass`] places the provider's tasks that
//! wait in PROVISIONING for capacity, stops those that waited past the timeout, runs the tasks
//! of the container instances ecsd launched for it (as the simulated agents would), and, with
//! managed scaling ENABLED, launches and retires those instances to keep the provider's
//! CapacityProviderReservation at `targetCapacity`. The group's bounds and its instances' size
//! come from the provider's tags (`ecsd:min-size`, `ecsd:max-size`, `ecsd:instance-cpu`,
//! `ecsd:instance-memory`). All of it lives in the store: any process can make the next pass.

use std::time::Duration;

use serde_json::json;

use super::capacity_providers::{self, INSTANCE_ATTRIBUTE};
use super::container_instances::save_instance;
use super::fargate::{self, FargateCapacity};
use super::tasks::save_task;
use crate::domain::placement::{self, Candidate, Reservation};
use crate::domain::records::{Attribute, CapacityProviderRecord, ContainerInstance, Resource, Task};
use crate::domain::status::{ContainerInstanceStatus, TaskStatus};
use crate::domain::{new_id, now};
use crate::error::ApiError;
use crate::shapes::{ManagedScalingStatus, ManagedTerminationProtection};
use crate::store::sql::Param;
use crate::store::{Filter, Tx};

/// The agent version the instances ecsd runs report.
const AGENT_VERSION: &str = "1.105.0";

/// How long managed scaling waits, as ECS does.
#[derive(Clone, Copy, Debug)]
pub struct ScalingTimings {
    /// A surplus of instances lasts this long before instances are retired (ECS: 15 minutes
    /// of CloudWatch datapoints).
    pub scale_in_after: Duration,
    /// A task waits this long in PROVISIONING for capacity before it is stopped.
    pub provisioning_timeout: Duration,
}

impl Default for ScalingTimings {
    fn default() -> Self {
        ScalingTimings {
            scale_in_after: Duration::from_secs(15 * 60),
            provisioning_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The Auto Scaling group's bounds and instance size, from the provider's tags.
struct Group {
    min_size: usize,
    max_size: usize,
    cpu: i64,
    memory: i64,
}

impl Group {
    fn of(record: &CapacityProviderRecord) -> Group {
        let tag = |key: &str, default: i64| {
            record
                .tags
                .iter()
                .find(|t| t.key.as_deref() == Some(key))
                .and_then(|t| t.value.as_deref())
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v >= 0)
                .unwrap_or(default)
        };
        Group {
            min_size: tag("ecsd:min-size", 0) as usize,
            max_size: tag("ecsd:max-size", 20) as usize,
            cpu: tag("ecsd:instance-cpu", 2048).max(1),
            memory: tag("ecsd:instance-memory", 4096).max(1),
        }
    }
}

/// One pass over the capacity provider `name`; whether anything changed.
pub fn pass(
    tx: &mut Tx<'_>,
    subnets: &FargateCapacity,
    timings: &ScalingTimings,
    name: &str,
) -> Result<bool, ApiError> {
    let Some((mut record, cluster)) = provider(tx, name)? else {
        return Ok(false);
    };
    let before = record.clone();
    let at = now();
    let mut changed = false;

    // The tasks of the instances ecsd runs for the provider move on.
    for id in record.scaler.instances.clone() {
        for (task, _) in tx.instance_tasks(&cluster, &id)? {
            changed |= fargate::advance(tx, subnets, &cluster, task.id())?;
        }
    }

    // Tasks waiting for capacity take what there is now, oldest first.
    let mut candidates = candidates(tx, &cluster, name)?;
    let mut unplaced = Vec::new();
    for task in waiting(tx, &cluster, name)? {
        if task.desired_status == TaskStatus::Stopped {
            changed |= fargate::advance(tx, subnets, &cluster, task.id())?;
            continue;
        }
        let need = tx.reservation(&cluster, task.id())?;
        let group = task.group.clone().unwrap_or_default();
        if let Some(i) = placement::place_one(&mut candidates, &need, &group) {
            assign(tx, &cluster, &task, &candidates[i].instance)?;
            changed = true;
        } else if task.created_at + timings.provisioning_timeout.as_secs_f64() <= at {
            let mut next = task.clone();
            next.desired_status = TaskStatus::Stopped;
            next.last_status = TaskStatus::Stopped;
            next.stop_code = Some("TaskFailedToStart".into());
            next.stopped_reason = Some(format!(
                "Timeout waiting for capacity: capacity provider {name} could not provide an instance for the task."
            ));
            next.stopping_at = Some(at);
            next.stopped_at = Some(at);
            save_task(tx, &cluster, &task, next)?;
            changed = true;
        } else {
            unplaced.push(need);
        }
    }

    let provider = record.auto_scaling_group_provider.clone();
    let scaling = provider.managed_scaling.clone().unwrap_or_default();
    let mut steady = unplaced.is_empty();
    if scaling.status == Some(ManagedScalingStatus::Enabled) {
        let group = Group::of(&record);
        let current = candidates.len();
        let desired = desired_size(&record, &group, &candidates, &unplaced);
        let min_step = scaling.minimum_scaling_step_size.unwrap_or(1).max(1) as usize;
        let max_step = scaling.maximum_scaling_step_size.unwrap_or(10000).max(1) as usize;
        if desired > current {
            let step = (desired - current).clamp(min_step, max_step);
            let room = group.max_size.saturating_sub(current);
            for _ in 0..step.min(room) {
                launch_instance(tx, &cluster, &mut record, &group)?;
            }
            record.scaler.surplus_since = None;
            steady = false;
        } else if desired < current {
            // More than it needs is steady still: nothing waits.
            let since = *record.scaler.surplus_since.get_or_insert(at);
            if at - since >= timings.scale_in_after.as_secs_f64() {
                let protect = provider.managed_termination_protection == Some(ManagedTerminationProtection::Enabled);
                // Empty instances go first; with managed termination protection, only those.
                let mut retiring: Vec<&Candidate> = candidates
                    .iter()
                    .filter(|c| {
                        record
                            .scaler
                            .instances
                            .iter()
                            .any(|id| c.instance.container_instance_arn.ends_with(id))
                    })
                    .filter(|c| !protect || c.load.running + c.load.pending == 0)
                    .collect();
                retiring.sort_by_key(|c| c.load.running + c.load.pending);
                let ids: Vec<String> = retiring
                    .iter()
                    .filter(|c| c.load.running + c.load.pending == 0)
                    .take(current - desired)
                    .map(|c| super::tasks::id_of(&c.instance.container_instance_arn).to_owned())
                    .collect();
                for id in ids {
                    retire_instance(tx, &cluster, &mut record, &id)?;
                }
                record.scaler.surplus_since = None;
            }
        } else {
            record.scaler.surplus_since = None;
        }
    }
    if steady && !record.scaler.steady {
        super::services::capacity_steady(tx, &cluster, &record)?;
    }
    record.scaler.steady = steady;
    if record != before {
        tx.put(&record)?;
        changed = true;
    }
    Ok(changed)
}

/// How many instances the provider's group should have: enough for the instances with tasks
/// and the waiting tasks (`unplaced`) to make its reservation `targetCapacity`, within its
/// bounds.
fn desired_size(
    record: &CapacityProviderRecord,
    group: &Group,
    candidates: &[Candidate],
    unplaced: &[Reservation],
) -> usize {
    let busy = candidates
        .iter()
        .filter(|c| c.load.running + c.load.pending > 0)
        .count();
    // The instances the waiting tasks need besides, each of the group's size.
    let more = if unplaced.is_empty() {
        0
    } else {
        let cpu = unplaced.iter().map(|n| n.cpu.max(0) as u64).sum::<u64>();
        let memory = unplaced.iter().map(|n| n.memory.max(0) as u64).sum::<u64>();
        let fit = cpu.div_ceil(group.cpu as u64).max(memory.div_ceil(group.memory as u64));
        (fit as usize).max(1)
    };
    let scaling = record
        .auto_scaling_group_provider
        .managed_scaling
        .clone()
        .unwrap_or_default();
    let target = scaling.target_capacity.unwrap_or(100).clamp(1, 100) as usize;
    ((busy + more) * 100)
        .div_ceil(target)
        .clamp(group.min_size, group.max_size.max(group.min_size))
}

/// The provider's ACTIVE instances in `cluster`, with what their tasks hold.
fn candidates(tx: &mut Tx<'_>, cluster: &str, name: &str) -> Result<Vec<Candidate>, ApiError> {
    Ok(super::tasks::candidates(tx, cluster, |i| {
        capacity_providers::of_instance(i) == Some(name)
    })?)
}

/// The ACTIVE provider `name` and the cluster it is associated with, if both are there.
fn provider(tx: &mut Tx<'_>, name: &str) -> Result<Option<(CapacityProviderRecord, String)>, ApiError> {
    let Some(record) = tx
        .get::<CapacityProviderRecord>(&[Param::Text(name)])?
        .filter(|r| r.status == "ACTIVE")
    else {
        return Ok(None);
    };
    let cluster = capacity_providers::clusters_with(tx, name)?.into_iter().next();
    Ok(cluster.map(|c| (record, c.cluster_name)))
}

/// The provider's tasks in `cluster` that wait for capacity (no instance yet), oldest first.
fn waiting(tx: &mut Tx<'_>, cluster: &str, name: &str) -> Result<Vec<Task>, ApiError> {
    let mut waiting: Vec<Task> = tx
        .list::<Task>(
            &[Param::Text(cluster)],
            &[Filter::Eq("last_status", "PROVISIONING".into())],
            None,
            usize::MAX,
        )?
        .into_iter()
        .filter(|t| t.container_instance_arn.is_none() && capacity_providers::of_task(t) == Some(name))
        .collect();
    waiting.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
    Ok(waiting)
}

/// Whether a [`pass`] over the provider `name` has anything to do (a read-only look, so that
/// a quiet provider costs no write).
pub fn due(
    tx: &mut Tx<'_>,
    capacity: &FargateCapacity,
    timings: &ScalingTimings,
    name: &str,
) -> Result<bool, ApiError> {
    let Some((record, cluster)) = provider(tx, name)? else {
        return Ok(false);
    };
    for id in &record.scaler.instances {
        for (task, _) in tx.instance_tasks(&cluster, id)? {
            if fargate::due(tx, capacity, &task)? {
                return Ok(true);
            }
        }
    }
    if !waiting(tx, &cluster, name)?.is_empty() || !record.scaler.steady {
        return Ok(true);
    }
    let scaling = record
        .auto_scaling_group_provider
        .managed_scaling
        .clone()
        .unwrap_or_default();
    if scaling.status != Some(ManagedScalingStatus::Enabled) {
        return Ok(false);
    }
    let candidates = candidates(tx, &cluster, name)?;
    let desired = desired_size(&record, &Group::of(&record), &candidates, &[]);
    if desired > candidates.len() {
        return Ok(true);
    }
    // A surplus: due once to note since when, then once it has lasted, if an instance ecsd
    // launched is empty to retire.
    let retirable = candidates.iter().any(|c| {
        c.load.running + c.load.pending == 0
            && record
                .scaler
                .instances
                .iter()
                .any(|id| c.instance.container_instance_arn.ends_with(id))
    });
    Ok(match record.scaler.surplus_since {
        _ if desired == candidates.len() => false,
        None => true,
        Some(since) => retirable && now() - since >= timings.scale_in_after.as_secs_f64(),
    })
}

/// Puts a task that waited for capacity on `instance`: it holds its resources there from now.
fn assign(tx: &mut Tx<'_>, cluster: &str, task: &Task, instance: &ContainerInstance) -> Result<(), ApiError> {
    let reservation = tx.reservation(cluster, task.id())?;
    let id = super::tasks::id_of(&instance.container_instance_arn).to_owned();
    let mut next = task.clone();
    next.container_instance_arn = Some(instance.container_instance_arn.clone());
    if next.attachments.is_empty() {
        next.last_status = TaskStatus::Pending;
    }
    if let Some(zone) = instance
        .attributes
        .iter()
        .find(|a| a.name == "ecs.availability-zone")
        .and_then(|a| a.value.clone())
    {
        next.extra.insert("availabilityZone".into(), zone.into());
    }
    let mut usage = tx.usage(cluster, &id)?;
    usage.place(
        &reservation,
        task.group.as_deref().unwrap_or_default(),
        next.last_status,
    );
    tx.put_usage(cluster, &id, &usage)?;
    save_task(tx, cluster, task, next)?;
    Ok(())
}

fn hex_id(n: usize) -> String {
    new_id().chars().filter(char::is_ascii_hexdigit).take(n).collect()
}

/// Launches an instance of the provider's group, registered in `cluster` and run by ecsd.
fn launch_instance(
    tx: &mut Tx<'_>,
    cluster: &str,
    record: &mut CapacityProviderRecord,
    group: &Group,
) -> Result<(), ApiError> {
    let scope = tx.scope().clone();
    let id = new_id();
    let zone = ['a', 'b', 'c'][record.scaler.instances.len() % 3];
    let attribute = |name: &str, value: &str| Attribute {
        name: name.into(),
        value: Some(value.into()),
        target_type: None,
        target_id: None,
    };
    let integer = |name: &str, value: i64| Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(i32::try_from(value).unwrap_or(i32::MAX)),
        ..Resource::default()
    };
    let ports = |name: &str, ports: &[&str]| Resource {
        name: Some(name.into()),
        r#type: Some("STRINGSET".into()),
        string_set_value: Some(ports.iter().map(|p| (*p).to_owned()).collect()),
        ..Resource::default()
    };
    let instance = ContainerInstance {
        container_instance_arn: scope.container_instance_arn(cluster, &id),
        ec2_instance_id: Some(format!("i-{}", hex_id(17))),
        version: 1,
        version_info: Some(json!({
            "agentVersion": AGENT_VERSION,
            "agentHash": "ecsd",
            "dockerVersion": "DockerVersion: 25.0.0",
        })),
        registered_resources: vec![
            integer("CPU", group.cpu),
            integer("MEMORY", group.memory),
            ports("PORTS", &["22", "2375", "2376", "51678", "51679"]),
            ports("PORTS_UDP", &[]),
        ],
        status: ContainerInstanceStatus::Active,
        agent_connected: true,
        attributes: vec![
            attribute(INSTANCE_ATTRIBUTE, &record.name),
            attribute("ecs.availability-zone", &format!("{}{zone}", scope.region)),
            attribute("ecs.os-type", "linux"),
            attribute("ecs.os-family", "LINUX"),
            attribute("ecs.cpu-architecture", "x86_64"),
        ],
        registered_at: now(),
        attachments: Vec::new(),
        tags: Vec::new(),
        health_status: None,
    };
    save_instance(tx, cluster, &id, &instance)?;
    record.scaler.instances.push(id);
    Ok(())
}

/// Deregisters an instance ecsd launched for the provider (its group scaled in).
fn retire_instance(
    tx: &mut Tx<'_>,
    cluster: &str,
    record: &mut CapacityProviderRecord,
    id: &str,
) -> Result<(), ApiError> {
    if let Some(mut instance) = tx.container_instance(cluster, id)? {
        instance.status = ContainerInstanceStatus::Inactive;
        instance.agent_connected = false;
        instance.version += 1;
        save_instance(tx, cluster, id, &instance)?;
    }
    record.scaler.instances.retain(|i| i != id);
    Ok(())
}
