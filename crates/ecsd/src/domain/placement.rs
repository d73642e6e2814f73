//! Resource accounting and placement: what a task needs (CPU units, MiB, host ports), what a
//! container instance has left, and which instance a new task goes to.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::query::{Expr, Facts};
use super::records::{ContainerInstance, Resource, TaskDefinitionSpec};
use super::status::TaskStatus;
use crate::error::ApiError;

/// What a task holds on its container instance while it is not STOPPED.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
}

/// The sum of what the tasks on one container instance hold, with their counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceLoad {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
    pub running: i64,
    pub pending: i64,
    /// The groups of those tasks (`task:group` in the query language).
    pub groups: BTreeSet<String>,
}

impl InstanceLoad {
    pub fn add(&mut self, r: &Reservation, pending: bool, group: &str) {
        self.groups.insert(group.to_owned());
        self.cpu += r.cpu;
        self.memory += r.memory;
        self.tcp_ports.extend(r.tcp_ports.iter().copied());
        self.udp_ports.extend(r.udp_ports.iter().copied());
        if pending {
            self.pending += 1;
        } else {
            self.running += 1;
        }
    }
}

/// What the unstopped tasks on one instance hold, kept as tasks come and go so that placement
/// reads one record per instance instead of every task (multisets: two tasks can share a
/// group, and the count says when the last one leaves).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub running: i64,
    pub pending: i64,
    pub tcp_ports: BTreeMap<u16, u32>,
    pub udp_ports: BTreeMap<u16, u32>,
    pub groups: BTreeMap<String, u32>,
}

fn count_in<K: Ord + Clone>(map: &mut BTreeMap<K, u32>, key: &K, add: bool) {
    if add {
        *map.entry(key.clone()).or_default() += 1;
    } else if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Usage {
    /// A new task, in `status`, holding `r`.
    pub fn place(&mut self, r: &Reservation, group: &str, status: TaskStatus) {
        self.hold(r, group, status, true);
    }

    /// A task holding `r` moved from one status to another.
    pub fn transition(&mut self, r: &Reservation, group: &str, from: TaskStatus, to: TaskStatus) {
        if !from.holds_resources() || from == to {
            return;
        }
        if !to.holds_resources() {
            self.hold(r, group, from, false);
        } else if from.is_pending() != to.is_pending() {
            self.pending -= if from.is_pending() { 1 } else { -1 };
            self.running += if from.is_pending() { 1 } else { -1 };
        }
    }

    fn hold(&mut self, r: &Reservation, group: &str, status: TaskStatus, add: bool) {
        let sign = if add { 1 } else { -1 };
        self.cpu += sign * r.cpu;
        self.memory += sign * r.memory;
        if status.is_pending() {
            self.pending += sign;
        } else {
            self.running += sign;
        }
        for port in &r.tcp_ports {
            count_in(&mut self.tcp_ports, port, add);
        }
        for port in &r.udp_ports {
            count_in(&mut self.udp_ports, port, add);
        }
        count_in(&mut self.groups, &group.to_owned(), add);
    }

    /// The instance's load as placement reads it.
    pub fn load(&self) -> InstanceLoad {
        InstanceLoad {
            cpu: self.cpu,
            memory: self.memory,
            tcp_ports: self.tcp_ports.keys().copied().collect(),
            udp_ports: self.udp_ports.keys().copied().collect(),
            running: self.running,
            pending: self.pending,
            groups: self.groups.keys().cloned().collect(),
        }
    }
}

/// What a task of `definition` with `overrides` (a `TaskOverride`) needs.
pub fn reservation(definition: &TaskDefinitionSpec, overrides: &Value) -> Result<Reservation, ApiError> {
    let container_override = |name: &str, member: &str| {
        overrides
            .get("containerOverrides")
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter()
                    .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(|o| o.get(member))
            .and_then(Value::as_i64)
    };
    let task_cpu = overrides
        .get("cpu")
        .and_then(Value::as_str)
        .or(definition.cpu.as_deref());
    let task_memory = overrides
        .get("memory")
        .and_then(Value::as_str)
        .or(definition.memory.as_deref());
    let cpu = match task_cpu {
        Some(text) => parse_cpu(text)?,
        None => definition
            .container_definitions
            .iter()
            .map(|c| container_override(&c.name, "cpu").unwrap_or(c.cpu.unwrap_or(0).into()))
            // Nothing negative is accepted now, but a definition stored before that was must
            // not give resources back.
            .map(|cpu| cpu.max(0))
            .sum(),
    };
    let memory = match task_memory {
        Some(text) => parse_memory(text)?,
        None => definition
            .container_definitions
            .iter()
            .map(|c| {
                // A soft limit is what ECS reserves when one is set.
                container_override(&c.name, "memoryReservation")
                    .or(c.memory_reservation.map(i64::from))
                    .or(container_override(&c.name, "memory"))
                    .or(c.memory.map(i64::from))
                    .unwrap_or(0)
                    .max(0)
            })
            .sum(),
    };
    let mut tcp_ports = Vec::new();
    let mut udp_ports = Vec::new();
    let network_mode = definition.network_mode.as_deref().unwrap_or("bridge");
    if network_mode != "awsvpc" && network_mode != "none" {
        for mapping in definition.container_definitions.iter().flat_map(|c| &c.port_mappings) {
            let host_port = match network_mode {
                "host" => mapping.host_port.filter(|p| *p != 0).or(mapping.container_port),
                _ => mapping.host_port.filter(|p| *p != 0),
            };
            let Some(port) = host_port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            match mapping.protocol.as_deref() {
                Some("udp") => udp_ports.push(port),
                _ => tcp_ports.push(port),
            }
        }
    }
    tcp_ports.sort_unstable();
    udp_ports.sort_unstable();
    Ok(Reservation {
        cpu,
        memory,
        tcp_ports,
        udp_ports,
    })
}

/// Task-level CPU: units (`"256"`) or vCPUs (`"0.25 vCPU"`, `"1 vcpu"`).
pub fn parse_cpu(text: &str) -> Result<i64, ApiError> {
    let t = text.trim().to_ascii_lowercase();
    let parsed = match t.strip_suffix("vcpu") {
        Some(v) => v.trim().parse::<f64>().ok().map(|v| (v * 1024.0).round() as i64),
        None => t.parse::<i64>().ok(),
    };
    parsed
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::client(format!("Invalid 'cpu' setting for task: '{text}'.")))
}

/// Task-level memory: MiB (`"512"`) or GB (`"1 GB"`, `"2gb"`).
pub fn parse_memory(text: &str) -> Result<i64, ApiError> {
    let t = text.trim().to_ascii_lowercase();
    let parsed = match t.strip_suffix("gb") {
        Some(v) => v.trim().parse::<f64>().ok().map(|v| (v * 1024.0).round() as i64),
        None => t.strip_suffix("mb").unwrap_or(&t).trim().parse::<i64>().ok(),
    };
    parsed
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::client(format!("Invalid 'memory' setting for task: '{text}'.")))
}

fn resource<'a>(resources: &'a [Resource], name: &str) -> Option<&'a Resource> {
    resources.iter().find(|r| r.name.as_deref() == Some(name))
}

fn numeric(r: &Resource) -> i64 {
    r.integer_value
        .map(i64::from)
        .or(r.long_value)
        .or(r.double_value.map(|d| d as i64))
        .unwrap_or(0)
}

fn ports(r: Option<&Resource>) -> BTreeSet<u16> {
    r.and_then(|r| r.string_set_value.as_ref())
        .map(|set| set.iter().filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// `remainingResources` as ECS shows it: CPU and MEMORY left, PORTS and PORTS_UDP in use
/// (the instance's reserved ports and every host port its tasks hold).
pub fn remaining_resources(registered: &[Resource], load: &InstanceLoad) -> Vec<Resource> {
    registered
        .iter()
        .map(|r| {
            let mut out = r.clone();
            match r.name.as_deref() {
                Some("CPU") => set_numeric(&mut out, left(numeric(r), load.cpu)),
                Some("MEMORY") => set_numeric(&mut out, left(numeric(r), load.memory)),
                Some(name @ ("PORTS" | "PORTS_UDP")) => {
                    let used = if name == "PORTS" {
                        &load.tcp_ports
                    } else {
                        &load.udp_ports
                    };
                    let mut all = ports(Some(r));
                    all.extend(used.iter().copied());
                    out.string_set_value = Some(all.iter().map(u16::to_string).collect());
                }
                _ => {}
            }
            out
        })
        .collect()
}

/// What is left of `total` with `held` in use: never below nothing nor above the total, whatever
/// was stored (a task stored before negative sizes were refused holds a negative amount).
fn left(total: i64, held: i64) -> i64 {
    let total = total.max(0);
    (total - held.max(0)).clamp(0, total)
}

fn set_numeric(r: &mut Resource, value: i64) {
    if r.integer_value.is_some() {
        r.integer_value = Some(i32::try_from(value).unwrap_or(i32::MIN));
    } else if r.long_value.is_some() {
        r.long_value = Some(value);
    } else if r.double_value.is_some() {
        r.double_value = Some(value as f64);
    }
}

/// Why a task does not fit on an instance, as ECS names it in `failures[].reason`.
pub fn misfit(instance: &ContainerInstance, load: &InstanceLoad, need: &Reservation) -> Option<&'static str> {
    let registered = &instance.registered_resources;
    let cpu = resource(registered, "CPU").map(numeric).unwrap_or(0);
    let memory = resource(registered, "MEMORY").map(numeric).unwrap_or(0);
    if need.cpu.max(0) > left(cpu, load.cpu) {
        return Some("RESOURCE:CPU");
    }
    if need.memory.max(0) > left(memory, load.memory) {
        return Some("RESOURCE:MEMORY");
    }
    let taken_tcp = ports(resource(registered, "PORTS"));
    let taken_udp = ports(resource(registered, "PORTS_UDP"));
    let clash = |wanted: &[u16], reserved: &BTreeSet<u16>, used: &BTreeSet<u16>| {
        wanted.iter().any(|p| reserved.contains(p) || used.contains(p))
    };
    if clash(&need.tcp_ports, &taken_tcp, &load.tcp_ports) || clash(&need.udp_ports, &taken_udp, &load.udp_ports) {
        return Some("RESOURCE:PORTS");
    }
    None
}

/// How ECS picks among the instances a task fits on (`PlacementStrategy` in the model).
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Fewest of this resource left (`cpu` or `memory`), to fill instances one by one.
    Binpack(BinpackField),
    /// Fewest tasks per value of `instanceId`/`host` or of an attribute (`attribute:NAME`).
    Spread(String),
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinpackField {
    Cpu,
    Memory,
}

/// What a RunTask asks of placement besides resources.
pub struct Placement<'a> {
    pub need: &'a Reservation,
    pub count: usize,
    /// Applied in order; later ones break the ties of earlier ones.
    pub strategies: &'a [Strategy],
    /// `memberOf` constraints of the request and of the task definition.
    pub member_of: &'a [Expr],
    /// `distinctInstance`: no two tasks of this placement on one instance.
    pub distinct_instance: bool,
    /// The group the new tasks join (counted by `task:group` in later placements).
    pub group: &'a str,
}

/// An instance that may take tasks, with what its tasks hold.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub instance: ContainerInstance,
    pub load: InstanceLoad,
}

const MEMBER_OF_UNSATISFIED: &str = "MemberOf placement constraint unsatisfied.";
const DISTINCT_UNSATISFIED: &str = "DistinctInstance placement constraint unsatisfied.";

impl Candidate {
    /// The instance as the cluster query language sees it.
    pub fn facts(&self) -> Facts<'_> {
        let i = &self.instance;
        Facts {
            attributes: i
                .attributes
                .iter()
                .map(|a| (a.name.as_str(), a.value.as_deref()))
                .collect(),
            ec2_instance_id: i.ec2_instance_id.as_deref(),
            agent_connected: i.agent_connected,
            agent_version: i
                .version_info
                .as_ref()
                .and_then(|v| v.get("agentVersion"))
                .and_then(serde_json::Value::as_str),
            registered_at: i.registered_at,
            running_tasks_count: self.load.running,
            task_groups: self.load.groups.iter().map(String::as_str).collect(),
        }
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        self.instance
            .attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_deref().unwrap_or(""))
    }

    fn left(&self, field: BinpackField) -> i64 {
        let name = match field {
            BinpackField::Cpu => "CPU",
            BinpackField::Memory => "MEMORY",
        };
        let used = match field {
            BinpackField::Cpu => self.load.cpu,
            BinpackField::Memory => self.load.memory,
        };
        resource(&self.instance.registered_resources, name)
            .map(numeric)
            .unwrap_or(0)
            - used
    }
}

/// Why `candidate` cannot take the next task, if it cannot.
fn refusal(candidate: &Candidate, placement: &Placement<'_>, taken: &[usize], index: usize) -> Option<&'static str> {
    if placement.distinct_instance && taken.contains(&index) {
        return Some(DISTINCT_UNSATISFIED);
    }
    if !placement.member_of.is_empty() {
        let facts = candidate.facts();
        if !placement.member_of.iter().all(|e| e.matches(&facts)) {
            return Some(MEMBER_OF_UNSATISFIED);
        }
    }
    misfit(&candidate.instance, &candidate.load, placement.need)
}

/// Where one task of `group` needing `need` goes, by the default strategy and no constraint
/// (what background placement does: a task waiting for capacity, a Fargate task's carrier).
pub fn place_one(candidates: &mut [Candidate], need: &Reservation, group: &str) -> Option<usize> {
    let placement = Placement {
        need,
        count: 1,
        strategies: &[],
        member_of: &[],
        distinct_instance: false,
        group,
    };
    place(candidates, &placement).0.first().copied()
}

/// Where each of the tasks goes: among the instances it fits on and whose constraints hold,
/// the best by the strategies (by default, the fewest tasks), ties going to the earliest
/// registered. Returns the index into `candidates` of each placed task and, if some task fits
/// nowhere, why each instance refused it.
pub fn place(candidates: &mut [Candidate], placement: &Placement<'_>) -> (Vec<usize>, Vec<(String, &'static str)>) {
    let default = [Strategy::Spread("instanceId".into())];
    let strategies = if placement.strategies.is_empty() {
        &default[..]
    } else {
        placement.strategies
    };
    let mut placed = Vec::with_capacity(placement.count);
    for _ in 0..placement.count {
        let eligible: Vec<usize> = (0..candidates.len())
            .filter(|i| refusal(&candidates[*i], placement, &placed, *i).is_none())
            .collect();
        let best = eligible.iter().copied().min_by(|a, b| {
            let (a, b) = (&candidates[*a], &candidates[*b]);
            let key = |c: &Candidate| -> Vec<f64> {
                strategies
                    .iter()
                    .map(|s| match s {
                        Strategy::Binpack(field) => c.left(*field) as f64,
                        Strategy::Random => (uuid::Uuid::new_v4().as_u128() >> 75) as f64,
                        Strategy::Spread(field) if field == "instanceId" || field == "host" => {
                            (c.load.running + c.load.pending) as f64
                        }
                        Strategy::Spread(field) => {
                            let name = field.strip_prefix("attribute:").unwrap_or(field);
                            let value = c.attribute(name);
                            candidates
                                .iter()
                                .filter(|o| o.attribute(name) == value)
                                .map(|o| (o.load.running + o.load.pending) as f64)
                                .sum()
                        }
                    })
                    .collect()
            };
            key(a)
                .iter()
                .zip(key(b).iter())
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.instance.registered_at.total_cmp(&b.instance.registered_at))
                .then_with(|| {
                    a.instance
                        .container_instance_arn
                        .cmp(&b.instance.container_instance_arn)
                })
        });
        match best {
            Some(i) => {
                candidates[i].load.add(placement.need, true, placement.group);
                placed.push(i);
            }
            None => {
                let failures = candidates
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        refusal(c, placement, &placed, i).map(|why| (c.instance.container_instance_arn.clone(), why))
                    })
                    .collect();
                return (placed, failures);
            }
        }
    }
    (placed, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::{ContainerSpec, PortMappingSpec};
    use serde_json::json;

    fn instance(arn: &str, cpu: i32, memory: i32, at: f64) -> ContainerInstance {
        ContainerInstance {
            container_instance_arn: arn.into(),
            ec2_instance_id: None,
            version: 1,
            version_info: None,
            registered_resources: vec![
                Resource {
                    name: Some("CPU".into()),
                    r#type: Some("INTEGER".into()),
                    integer_value: Some(cpu),
                    ..Default::default()
                },
                Resource {
                    name: Some("MEMORY".into()),
                    r#type: Some("INTEGER".into()),
                    integer_value: Some(memory),
                    ..Default::default()
                },
                Resource {
                    name: Some("PORTS".into()),
                    r#type: Some("STRINGSET".into()),
                    string_set_value: Some(vec!["22".into()]),
                    ..Default::default()
                },
            ],
            status: crate::domain::status::ContainerInstanceStatus::Active,
            agent_connected: false,
            attributes: vec![],
            registered_at: at,
            attachments: vec![],
            tags: vec![],
            health_status: None,
        }
    }

    fn definition(network_mode: Option<&str>) -> TaskDefinitionSpec {
        TaskDefinitionSpec {
            network_mode: network_mode.map(Into::into),
            container_definitions: vec![
                ContainerSpec {
                    name: "web".into(),
                    cpu: Some(256),
                    memory: Some(512),
                    port_mappings: vec![PortMappingSpec {
                        container_port: Some(80),
                        host_port: Some(8080),
                        protocol: None,
                    }],
                    ..Default::default()
                },
                ContainerSpec {
                    name: "side".into(),
                    cpu: Some(128),
                    memory: Some(256),
                    memory_reservation: Some(64),
                    port_mappings: vec![PortMappingSpec {
                        container_port: Some(53),
                        host_port: Some(0),
                        protocol: Some("udp".into()),
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn reservation_sums_containers_and_prefers_soft_memory_limits() {
        let r = reservation(&definition(None), &json!({})).unwrap();
        assert_eq!((r.cpu, r.memory), (384, 576));
        assert_eq!(r.tcp_ports, vec![8080]);
        assert!(r.udp_ports.is_empty(), "dynamic host ports are not reserved");
    }

    #[test]
    fn task_level_sizes_and_overrides_win() {
        let mut d = definition(Some("awsvpc"));
        d.cpu = Some("1 vCPU".into());
        d.memory = Some("2 GB".into());
        let r = reservation(&d, &json!({})).unwrap();
        assert_eq!((r.cpu, r.memory), (1024, 2048));
        assert!(r.tcp_ports.is_empty(), "awsvpc tasks use their own ENI");
        let r = reservation(&d, &json!({"cpu": "512", "memory": "1024"})).unwrap();
        assert_eq!((r.cpu, r.memory), (512, 1024));
        let r = reservation(
            &definition(None),
            &json!({"containerOverrides": [{"name": "web", "cpu": 1000}]}),
        )
        .unwrap();
        assert_eq!(r.cpu, 1128);
        assert!(parse_cpu("lots").is_err());
    }

    #[test]
    fn host_mode_reserves_container_ports() {
        let mut d = definition(Some("host"));
        d.container_definitions[0].port_mappings[0].host_port = None;
        let r = reservation(&d, &json!({})).unwrap();
        assert_eq!(r.tcp_ports, vec![80]);
        assert_eq!(r.udp_ports, vec![53]);
    }

    #[test]
    fn misfit_names_the_scarce_resource() {
        let i = instance("a", 1024, 1024, 1.0);
        let mut load = InstanceLoad::default();
        let need = Reservation {
            cpu: 512,
            memory: 512,
            tcp_ports: vec![8080],
            udp_ports: vec![],
        };
        assert_eq!(misfit(&i, &load, &need), None);
        load.add(&need, false, "g");
        assert_eq!(misfit(&i, &load, &need), Some("RESOURCE:PORTS"));
        let no_ports = Reservation {
            tcp_ports: vec![],
            ..need.clone()
        };
        load.add(&no_ports, false, "g");
        assert_eq!(misfit(&i, &load, &no_ports), Some("RESOURCE:CPU"));
        let reserved = Reservation {
            cpu: 0,
            memory: 0,
            tcp_ports: vec![22],
            udp_ports: vec![],
        };
        assert_eq!(misfit(&i, &InstanceLoad::default(), &reserved), Some("RESOURCE:PORTS"));
        let big = Reservation {
            cpu: 0,
            memory: 4096,
            ..Default::default()
        };
        assert_eq!(misfit(&i, &InstanceLoad::default(), &big), Some("RESOURCE:MEMORY"));
    }

    fn candidates(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                instance: instance(&format!("arn/{i}"), 1024, 1024, i as f64),
                load: InstanceLoad::default(),
            })
            .collect()
    }

    fn placement<'a>(need: &'a Reservation, count: usize, strategies: &'a [Strategy]) -> Placement<'a> {
        Placement {
            need,
            count,
            strategies,
            member_of: &[],
            distinct_instance: false,
            group: "g",
        }
    }

    #[test]
    fn place_spreads_and_reports_failures_per_instance() {
        let mut cs = candidates(2);
        let need = Reservation {
            cpu: 512,
            memory: 512,
            ..Default::default()
        };
        let (placed, failures) = place(&mut cs, &placement(&need, 3, &[]));
        assert_eq!(placed, vec![0, 1, 0]);
        assert!(failures.is_empty());
        let (placed, failures) = place(&mut cs, &placement(&need, 2, &[]));
        assert_eq!(placed, vec![1]);
        assert_eq!(
            failures,
            vec![
                ("arn/0".to_string(), "RESOURCE:CPU"),
                ("arn/1".to_string(), "RESOURCE:CPU")
            ]
        );
    }

    #[test]
    fn binpack_fills_the_fullest_instance_first() {
        let mut cs = candidates(3);
        cs[1].load.add(
            &Reservation {
                memory: 512,
                ..Default::default()
            },
            false,
            "g",
        );
        let need = Reservation {
            cpu: 10,
            memory: 256,
            ..Default::default()
        };
        let (placed, _) = place(
            &mut cs,
            &placement(&need, 3, &[Strategy::Binpack(BinpackField::Memory)]),
        );
        assert_eq!(
            placed,
            vec![1, 1, 0],
            "instance 1 has least memory left until it is full"
        );
    }

    #[test]
    fn spread_by_attribute_balances_values() {
        let mut cs = candidates(3);
        let zone = |z: &str| crate::domain::records::Attribute {
            name: "ecs.availability-zone".into(),
            value: Some(z.into()),
            target_type: None,
            target_id: None,
        };
        cs[0].instance.attributes.push(zone("a"));
        cs[1].instance.attributes.push(zone("a"));
        cs[2].instance.attributes.push(zone("b"));
        let need = Reservation {
            cpu: 1,
            memory: 1,
            ..Default::default()
        };
        let strategies = [Strategy::Spread("attribute:ecs.availability-zone".into())];
        let (placed, _) = place(&mut cs, &placement(&need, 4, &strategies));
        let in_b = placed.iter().filter(|i| **i == 2).count();
        assert_eq!(in_b, 2, "{placed:?}: zone b takes half the tasks");
    }

    #[test]
    fn random_places_everything_that_fits() {
        let mut cs = candidates(4);
        let need = Reservation {
            cpu: 256,
            memory: 1,
            ..Default::default()
        };
        let (placed, failures) = place(&mut cs, &placement(&need, 10, &[Strategy::Random]));
        assert_eq!(placed.len(), 10);
        assert!(failures.is_empty());
        assert!(cs.iter().all(|c| c.load.cpu <= 1024));
    }

    #[test]
    fn constraints_limit_the_instances() {
        let mut cs = candidates(3);
        cs[2].instance.attributes.push(crate::domain::records::Attribute {
            name: "gpu".into(),
            value: Some("yes".into()),
            target_type: None,
            target_id: None,
        });
        let need = Reservation {
            cpu: 1,
            memory: 1,
            ..Default::default()
        };
        let member_of = [crate::domain::query::parse("attribute:gpu == yes").unwrap()];
        let p = Placement {
            member_of: &member_of,
            ..placement(&need, 2, &[])
        };
        let (placed, failures) = place(&mut cs, &p);
        assert_eq!(placed, vec![2, 2]);
        assert!(failures.is_empty());

        let mut cs = candidates(2);
        let p = Placement {
            distinct_instance: true,
            ..placement(&need, 3, &[])
        };
        let (placed, failures) = place(&mut cs, &p);
        assert_eq!(placed, vec![0, 1]);
        assert_eq!(failures[0].1, DISTINCT_UNSATISFIED);

        let member_of = [crate::domain::query::parse("task:group == g").unwrap()];
        let mut cs = candidates(2);
        cs[1].load.add(&need, false, "g");
        let p = Placement {
            member_of: &member_of,
            ..placement(&need, 1, &[])
        };
        assert_eq!(place(&mut cs, &p).0, vec![1], "memberOf task:group follows the group");
    }

    #[test]
    fn usage_follows_tasks_through_their_lifecycle() {
        let r = Reservation {
            cpu: 100,
            memory: 200,
            tcp_ports: vec![8080],
            udp_ports: vec![53],
        };
        let mut u = Usage::default();
        u.place(&r, "g", TaskStatus::Provisioning);
        u.place(&r, "g", TaskStatus::Pending);
        assert_eq!((u.cpu, u.memory, u.pending, u.running), (200, 400, 2, 0));
        u.transition(&r, "g", TaskStatus::Provisioning, TaskStatus::Pending);
        assert_eq!((u.pending, u.running), (2, 0));
        u.transition(&r, "g", TaskStatus::Pending, TaskStatus::Running);
        assert_eq!((u.pending, u.running), (1, 1));
        u.transition(&r, "g", TaskStatus::Running, TaskStatus::Stopped);
        assert_eq!((u.cpu, u.pending, u.running), (100, 1, 0));
        assert_eq!(
            u.load().tcp_ports.into_iter().collect::<Vec<_>>(),
            vec![8080],
            "the other task still holds it"
        );
        assert!(u.load().groups.contains("g"));
        u.transition(&r, "g", TaskStatus::Stopped, TaskStatus::Stopped);
        u.transition(&r, "g", TaskStatus::Pending, TaskStatus::Stopped);
        assert_eq!(u, Usage::default(), "everything released");
    }

    #[test]
    fn remaining_resources_subtract_and_list_used_ports() {
        let i = instance("a", 1024, 2048, 1.0);
        let mut load = InstanceLoad::default();
        load.add(
            &Reservation {
                cpu: 256,
                memory: 512,
                tcp_ports: vec![8080],
                udp_ports: vec![],
            },
            false,
            "g",
        );
        let left = remaining_resources(&i.registered_resources, &load);
        assert_eq!(left[0].integer_value, Some(768));
        assert_eq!(left[1].integer_value, Some(1536));
        assert_eq!(
            left[2].string_set_value,
            Some(vec!["22".to_string(), "8080".to_string()])
        );
    }
}
