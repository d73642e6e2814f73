//! Resource accounting and placement: what a task needs (CPU units, MiB, host ports), what a
//! container instance has left, and which instance a new task goes to.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::{ContainerInstance, Resource, TaskDefinitionSpec};
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
}

impl InstanceLoad {
    pub fn add(&mut self, r: &Reservation, pending: bool) {
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
                Some("CPU") => set_numeric(&mut out, numeric(r) - load.cpu),
                Some("MEMORY") => set_numeric(&mut out, numeric(r) - load.memory),
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
    if need.cpu > cpu - load.cpu {
        return Some("RESOURCE:CPU");
    }
    if need.memory > memory - load.memory {
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

/// Where each of `count` tasks goes: the instance with the fewest tasks that the task fits on
/// (ties go to the earliest registered), spreading a batch across the cluster. Returns the index
/// into `candidates` per placed task, and for tasks that fit nowhere, the reason per instance.
pub fn place(
    candidates: &mut [(ContainerInstance, InstanceLoad)],
    need: &Reservation,
    count: usize,
) -> (Vec<usize>, Vec<(String, &'static str)>) {
    let mut placed = Vec::with_capacity(count);
    for _ in 0..count {
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, (instance, load))| misfit(instance, load, need).is_none())
            .min_by(|(_, (a, la)), (_, (b, lb))| {
                (la.running + la.pending)
                    .cmp(&(lb.running + lb.pending))
                    .then(a.registered_at.total_cmp(&b.registered_at))
            })
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                candidates[i].1.add(need, true);
                placed.push(i);
            }
            None => {
                let failures = candidates
                    .iter()
                    .filter_map(|(instance, load)| {
                        misfit(instance, load, need).map(|why| (instance.container_instance_arn.clone(), why))
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
                    kind: Some("INTEGER".into()),
                    integer_value: Some(cpu),
                    ..Default::default()
                },
                Resource {
                    name: Some("MEMORY".into()),
                    kind: Some("INTEGER".into()),
                    integer_value: Some(memory),
                    ..Default::default()
                },
                Resource {
                    name: Some("PORTS".into()),
                    kind: Some("STRINGSET".into()),
                    string_set_value: Some(vec!["22".into()]),
                    ..Default::default()
                },
            ],
            status: "ACTIVE".into(),
            agent_connected: false,
            attributes: vec![],
            registered_at: at,
            attachments: vec![],
            tags: vec![],
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
        load.add(&need, false);
        assert_eq!(misfit(&i, &load, &need), Some("RESOURCE:PORTS"));
        let no_ports = Reservation {
            tcp_ports: vec![],
            ..need.clone()
        };
        load.add(&no_ports, false);
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

    #[test]
    fn place_spreads_and_reports_failures_per_instance() {
        let mut candidates = vec![
            (instance("a", 1024, 1024, 1.0), InstanceLoad::default()),
            (instance("b", 1024, 1024, 2.0), InstanceLoad::default()),
        ];
        let need = Reservation {
            cpu: 512,
            memory: 512,
            ..Default::default()
        };
        let (placed, failures) = place(&mut candidates, &need, 3);
        assert_eq!(placed, vec![0, 1, 0]);
        assert!(failures.is_empty());
        let (placed, failures) = place(&mut candidates, &need, 2);
        assert_eq!(placed, vec![1]);
        assert_eq!(
            failures,
            vec![("a".to_string(), "RESOURCE:CPU"), ("b".to_string(), "RESOURCE:CPU")]
        );
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
