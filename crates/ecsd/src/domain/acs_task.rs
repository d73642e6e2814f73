//! A task as ACS hands it to an agent (`Task` of the ACS model): built from the task and its
//! task definition, with the run's overrides applied.
//!
//! Container fields the ACS `Container` carries go there directly; what else Docker needs
//! (labels, user, working directory, hostname, health check, log configuration, DNS, extra
//! hosts, ulimits, ...) goes into `dockerConfig.config` and `dockerConfig.hostConfig` as Docker
//! Engine API JSON, which the agent lays over the container configuration it builds itself.
//! `dockerConfig.version` is left out: it pins the agent's Docker client to that API version,
//! and current Docker engines refuse the old versions ECS names there.

use serde_json::{json, Map, Value};

use super::placement::{parse_cpu, parse_memory};
use super::records::Task;

const MIB: i64 = 1024 * 1024;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The ACS `Task` for `task`, whose definition is `definition` (the `TaskDefinition` shape).
pub fn acs_task(task: &Task, definition: &Map<String, Value>) -> Value {
    let text = |member: &str| definition.get(member).and_then(Value::as_str);
    let network_mode = text("networkMode").unwrap_or("bridge");
    let mut out = Map::new();
    out.insert("arn".into(), task.task_arn.clone().into());
    out.insert("taskClusterArn".into(), task.cluster_arn.clone().into());
    out.insert("desiredStatus".into(), task.desired_status.as_str().into());
    if let Some(family) = text("family") {
        out.insert("family".into(), family.into());
    }
    if let Some(revision) = definition.get("revision").and_then(Value::as_i64) {
        out.insert("version".into(), revision.to_string().into());
    }
    if let Some(account) = text("taskDefinitionArn").and_then(|arn| arn.split(':').nth(4)) {
        out.insert("taskDefinitionAccountId".into(), account.into());
    }
    out.insert("networkMode".into(), network_mode.into());
    if let Some(launch_type) = &task.launch_type {
        out.insert("launchType".into(), launch_type.clone().into());
    }
    for member in ["pidMode", "ipcMode"] {
        if let Some(mode) = text(member) {
            out.insert(member.into(), mode.into());
        }
    }
    if let Some(group) = &task.group {
        out.insert("group".into(), group.clone().into());
    }
    // Task-level sizes: vCPUs (the agent's cgroup quota is vCPUs times the period) and MiB.
    if let Some(units) = task.cpu.as_deref().and_then(|c| parse_cpu(c).ok()) {
        out.insert("cpu".into(), json!(units as f64 / 1024.0));
    }
    if let Some(mib) = task.memory.as_deref().and_then(|m| parse_memory(m).ok()) {
        out.insert("memory".into(), mib.into());
    }
    if let Some(zone) = task.extra.get("availabilityZone") {
        out.insert("zone".into(), zone.clone());
    }
    out.insert("volumes".into(), volumes(definition.get("volumes")));
    let overrides = task.overrides["containerOverrides"].as_array();
    let containers = definition
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_object)
        .map(|spec| {
            let name = spec.get("name").and_then(Value::as_str).unwrap_or_default();
            let container_override = overrides
                .and_then(|list| list.iter().find(|o| o["name"].as_str() == Some(name)))
                .and_then(Value::as_object);
            let arn = task
                .containers
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.container_arn.as_str());
            container(spec, container_override, arn, network_mode)
        })
        .collect();
    out.insert("containers".into(), Value::Array(containers));
    Value::Object(out)
}

/// Task definition volumes as ACS `Volume`s: a volume with neither a Docker nor an EFS
/// configuration is a host volume (an empty `host` makes it a scratch volume).
fn volumes(defined: Option<&Value>) -> Value {
    let list = defined.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        list.iter()
            .filter_map(Value::as_object)
            .map(|v| {
                let mut out = Map::new();
                out.insert("name".into(), v.get("name").cloned().unwrap_or(Value::Null));
                let typed = [
                    ("dockerVolumeConfiguration", "docker"),
                    ("efsVolumeConfiguration", "efs"),
                    ("fsxWindowsFileServerVolumeConfiguration", "fsxWindowsFileServer"),
                ]
                .into_iter()
                .find(|(member, _)| v.contains_key(*member));
                match typed {
                    Some((member, kind)) => {
                        out.insert("type".into(), kind.into());
                        out.insert(member.into(), v[member].clone());
                    }
                    None => {
                        out.insert("type".into(), "host".into());
                        out.insert("host".into(), v.get("host").cloned().unwrap_or_else(|| json!({})));
                    }
                }
                Value::Object(out)
            })
            .collect(),
    )
}

/// One ACS `Container` from its container definition and the run's override for it.
fn container(
    spec: &Map<String, Value>,
    container_override: Option<&Map<String, Value>>,
    arn: Option<&str>,
    network_mode: &str,
) -> Value {
    let overridden = |member: &str| {
        container_override
            .and_then(|o| o.get(member))
            .or_else(|| spec.get(member))
    };
    let mut out = Map::new();
    // Members that the ACS Container shares with the ECS ContainerDefinition, name for name.
    for member in [
        "name",
        "image",
        "links",
        "entryPoint",
        "mountPoints",
        "volumesFrom",
        "dependsOn",
        "startTimeout",
        "stopTimeout",
        "privileged",
        "firelensConfiguration",
        "credentialSpecs",
        "restartPolicy",
    ] {
        if let Some(value) = spec.get(member).filter(|v| !v.is_null()) {
            out.insert(member.into(), value.clone());
        }
    }
    if let Some(arn) = arn {
        out.insert("containerArn".into(), arn.into());
    }
    out.insert(
        "essential".into(),
        spec.get("essential").and_then(Value::as_bool).unwrap_or(true).into(),
    );
    out.insert(
        "cpu".into(),
        overridden("cpu").and_then(Value::as_i64).unwrap_or(0).into(),
    );
    let memory = overridden("memory").and_then(Value::as_i64);
    if let Some(memory) = memory {
        out.insert("memory".into(), memory.into());
    }
    if let Some(command) = overridden("command").filter(|c| !c.is_null()) {
        out.insert("command".into(), command.clone());
    }
    out.insert(
        "environment".into(),
        Value::Object(environment(spec, container_override)),
    );
    let mut files: Vec<Value> = spec
        .get("environmentFiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(extra) = container_override
        .and_then(|o| o.get("environmentFiles"))
        .and_then(Value::as_array)
    {
        files.extend(extra.iter().cloned());
    }
    if !files.is_empty() {
        out.insert("environmentFiles".into(), files.into());
    }
    out.insert(
        "portMappings".into(),
        port_mappings(spec.get("portMappings"), network_mode),
    );
    if let Some(linux) = spec.get("linuxParameters").and_then(Value::as_object) {
        let mut acs = Map::new();
        for member in ["capabilities", "devices", "initProcessEnabled", "sharedMemorySize"] {
            if let Some(value) = linux.get(member) {
                acs.insert(member.into(), value.clone());
            }
        }
        out.insert("linuxParameters".into(), Value::Object(acs));
    }
    if let Some(secrets) = spec.get("secrets").and_then(Value::as_array) {
        out.insert("secrets".into(), secrets.iter().map(secret).collect());
    }
    if let Some(credentials) = spec
        .get("repositoryCredentials")
        .and_then(|c| c.get("credentialsParameter"))
    {
        out.insert(
            "registryAuthentication".into(),
            json!({"type": "asm", "asmAuthData": {"credentialsParameter": credentials}}),
        );
    }
    let config = docker_config(spec);
    let host_config = docker_host_config(spec, container_override, memory);
    if config.contains_key("Healthcheck") {
        out.insert("healthCheckType".into(), "docker".into());
    }
    let mut docker = Map::new();
    if !config.is_empty() {
        docker.insert("config".into(), Value::Object(config).to_string().into());
    }
    if !host_config.is_empty() {
        docker.insert("hostConfig".into(), Value::Object(host_config).to_string().into());
    }
    if !docker.is_empty() {
        out.insert("dockerConfig".into(), Value::Object(docker));
    }
    Value::Object(out)
}

/// The definition's environment with the override's variables laid over it.
fn environment(spec: &Map<String, Value>, container_override: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut env = Map::new();
    let lists = [
        spec.get("environment"),
        container_override.and_then(|o| o.get("environment")),
    ];
    for pair in lists.into_iter().flatten().filter_map(Value::as_array).flatten() {
        if let (Some(name), Some(value)) = (pair["name"].as_str(), pair["value"].as_str()) {
            env.insert(name.into(), value.into());
        }
    }
    env
}

/// Port mappings as ACS carries them. With host networking the host port is the container
/// port; with bridge networking a missing host port (0) lets Docker pick one.
fn port_mappings(defined: Option<&Value>, network_mode: &str) -> Value {
    let list = defined.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        list.iter()
            .map(|m| {
                let mut out = Map::new();
                let container_port = m["containerPort"].as_i64();
                if let Some(port) = container_port {
                    out.insert("containerPort".into(), port.into());
                }
                if let Some(range) = m["containerPortRange"].as_str() {
                    out.insert("containerPortRange".into(), range.into());
                }
                let host_port = m["hostPort"]
                    .as_i64()
                    .or(if network_mode == "host" { container_port } else { None });
                if container_port.is_some() {
                    out.insert("hostPort".into(), host_port.unwrap_or(0).into());
                }
                out.insert("protocol".into(), m["protocol"].as_str().unwrap_or("tcp").into());
                Value::Object(out)
            })
            .collect(),
    )
}

/// An ECS `Secret` (`name`, `valueFrom`) as ACS describes it: where it comes from (Secrets
/// Manager ARNs, else Parameter Store) and that it becomes an environment variable.
fn secret(defined: &Value) -> Value {
    let value_from = defined["valueFrom"].as_str().unwrap_or_default();
    let provider = if value_from.contains(":secretsmanager:") {
        "asm"
    } else {
        "ssm"
    };
    let mut out = json!({
        "name": defined["name"],
        "valueFrom": value_from,
        "provider": provider,
        "type": "ENVIRONMENT_VARIABLE",
        "target": "CONTAINER",
    });
    if let Some(region) = value_from.strip_prefix("arn:").and_then(|arn| arn.split(':').nth(2)) {
        out["region"] = region.into();
    }
    out
}

/// Docker `Config` members the ACS container does not carry itself.
fn docker_config(spec: &Map<String, Value>) -> Map<String, Value> {
    let mut config = Map::new();
    let copies = [
        ("hostname", "Hostname"),
        ("user", "User"),
        ("workingDirectory", "WorkingDir"),
        ("dockerLabels", "Labels"),
        ("disableNetworking", "NetworkDisabled"),
        ("interactive", "OpenStdin"),
        ("pseudoTerminal", "Tty"),
    ];
    for (member, docker) in copies {
        if let Some(value) = spec.get(member).filter(|v| !v.is_null()) {
            config.insert(docker.into(), value.clone());
        }
    }
    if let Some(check) = spec.get("healthCheck").and_then(Value::as_object) {
        // ECS gives seconds; Docker wants nanoseconds.
        let seconds = |member: &str, default: i64| check.get(member).and_then(Value::as_i64).unwrap_or(default);
        let mut docker = json!({
            "Test": check.get("command").cloned().unwrap_or_else(|| json!([])),
            "Interval": seconds("interval", 30) * NANOS_PER_SECOND,
            "Timeout": seconds("timeout", 5) * NANOS_PER_SECOND,
            "Retries": seconds("retries", 3),
        });
        if let Some(start) = check.get("startPeriod").and_then(Value::as_i64) {
            docker["StartPeriod"] = (start * NANOS_PER_SECOND).into();
        }
        config.insert("Healthcheck".into(), docker);
    }
    config
}

/// Docker `HostConfig` members the ACS container does not carry itself.
fn docker_host_config(
    spec: &Map<String, Value>,
    container_override: Option<&Map<String, Value>>,
    memory: Option<i64>,
) -> Map<String, Value> {
    let mut host = Map::new();
    let copies = [
        ("dnsServers", "Dns"),
        ("dnsSearchDomains", "DnsSearch"),
        ("readonlyRootFilesystem", "ReadonlyRootfs"),
        ("dockerSecurityOptions", "SecurityOpt"),
    ];
    for (member, docker) in copies {
        if let Some(value) = spec.get(member).filter(|v| !v.is_null()) {
            host.insert(docker.into(), value.clone());
        }
    }
    if let Some(log) = spec.get("logConfiguration").and_then(Value::as_object) {
        host.insert(
            "LogConfig".into(),
            json!({
                "Type": log.get("logDriver").cloned().unwrap_or(Value::Null),
                "Config": log.get("options").cloned().unwrap_or_else(|| json!({})),
            }),
        );
    }
    if let Some(hosts) = spec.get("extraHosts").and_then(Value::as_array) {
        let entries: Vec<Value> = hosts
            .iter()
            .filter_map(|h| Some(format!("{}:{}", h["hostname"].as_str()?, h["ipAddress"].as_str()?).into()))
            .collect();
        host.insert("ExtraHosts".into(), entries.into());
    }
    if let Some(limits) = spec.get("ulimits").and_then(Value::as_array) {
        let entries: Vec<Value> = limits
            .iter()
            .map(|u| json!({"Name": u["name"], "Soft": u["softLimit"], "Hard": u["hardLimit"]}))
            .collect();
        host.insert("Ulimits".into(), entries.into());
    }
    if let Some(controls) = spec.get("systemControls").and_then(Value::as_array) {
        let sysctls: Map<String, Value> = controls
            .iter()
            .filter_map(|c| Some((c["namespace"].as_str()?.to_owned(), c["value"].as_str()?.into())))
            .collect();
        host.insert("Sysctls".into(), Value::Object(sysctls));
    }
    let reservation = container_override
        .and_then(|o| o.get("memoryReservation"))
        .or_else(|| spec.get("memoryReservation"))
        .and_then(Value::as_i64);
    if let Some(mib) = reservation {
        host.insert("MemoryReservation".into(), (mib * MIB).into());
    }
    if let Some(linux) = spec.get("linuxParameters").and_then(Value::as_object) {
        if let Some(mounts) = linux.get("tmpfs").and_then(Value::as_array) {
            let tmpfs: Map<String, Value> = mounts
                .iter()
                .filter_map(|m| {
                    let mut options = vec![format!("size={}m", m["size"].as_i64()?)];
                    options.extend(
                        m["mountOptions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned),
                    );
                    Some((m["containerPath"].as_str()?.to_owned(), options.join(",").into()))
                })
                .collect();
            host.insert("Tmpfs".into(), Value::Object(tmpfs));
        }
        if let (Some(swap), Some(memory)) = (linux.get("maxSwap").and_then(Value::as_i64), memory) {
            // Docker's MemorySwap is memory plus swap; -1 is unlimited swap.
            let total = if swap < 0 { -1 } else { (memory + swap) * MIB };
            host.insert("MemorySwap".into(), total.into());
        }
        if let Some(swappiness) = linux.get("swappiness") {
            host.insert("MemorySwappiness".into(), swappiness.clone());
        }
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::Container;
    use crate::domain::status::{ContainerStatus, TaskStatus};

    fn task(overrides: Value) -> Task {
        serde_json::from_value(json!({
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/default/t1",
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/default",
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3",
            "overrides": overrides,
            "lastStatus": "PENDING",
            "desiredStatus": "RUNNING",
            "cpu": "512",
            "memory": "1 GB",
            "containers": [serde_json::to_value(Container {
                container_arn: "arn:aws:ecs:us-east-1:123456789012:container/default/t1/c1".into(),
                task_arn: "arn:aws:ecs:us-east-1:123456789012:task/default/t1".into(),
                name: "app".into(),
                image: Some("nginx".into()),
                image_digest: None,
                runtime_id: None,
                last_status: ContainerStatus::Pending,
                exit_code: None,
                reason: None,
                network_bindings: vec![],
                network_interfaces: vec![],
                health_status: None,
                managed_agents: vec![],
                cpu: None,
                memory: None,
                memory_reservation: None,
            }).unwrap()],
            "version": 1,
            "createdAt": 1.0,
            "launchType": "EXTERNAL",
            "attachments": [],
            "tags": [],
            "enableExecuteCommand": false,
        }))
        .unwrap()
    }

    fn definition() -> Map<String, Value> {
        json!({
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3",
            "family": "web",
            "revision": 3,
            "networkMode": "host",
            "volumes": [{"name": "scratch"}, {"name": "logs", "host": {"sourcePath": "/var/log"}}],
            "containerDefinitions": [{
                "name": "app",
                "image": "nginx",
                "cpu": 128,
                "memory": 256,
                "memoryReservation": 128,
                "command": ["nginx", "-g", "daemon off;"],
                "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "portMappings": [{"containerPort": 80}],
                "mountPoints": [{"sourceVolume": "logs", "containerPath": "/logs"}],
                "user": "nobody",
                "workingDirectory": "/srv",
                "dockerLabels": {"team": "web"},
                "healthCheck": {"command": ["CMD", "true"], "interval": 10, "retries": 2},
                "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "1m"}},
                "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.2"}],
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
                "readonlyRootFilesystem": true
            }]
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn builds_the_task_with_its_definition() {
        let out = acs_task(&task(json!({"containerOverrides": []})), &definition());
        assert_eq!(out["arn"], "arn:aws:ecs:us-east-1:123456789012:task/default/t1");
        assert_eq!(out["family"], "web");
        assert_eq!(out["version"], "3");
        assert_eq!(out["desiredStatus"], "RUNNING");
        assert_eq!(out["networkMode"], "host");
        assert_eq!(out["launchType"], "EXTERNAL");
        assert_eq!(out["taskDefinitionAccountId"], "123456789012");
        assert_eq!(out["cpu"], 0.5);
        assert_eq!(out["memory"], 1024);
        assert_eq!(
            out["volumes"][0],
            json!({"name": "scratch", "type": "host", "host": {}})
        );
        assert_eq!(out["volumes"][1]["host"]["sourcePath"], "/var/log");
        let c = &out["containers"][0];
        assert_eq!(c["name"], "app");
        assert_eq!(
            c["containerArn"],
            "arn:aws:ecs:us-east-1:123456789012:container/default/t1/c1"
        );
        assert_eq!(c["essential"], true);
        assert_eq!(c["cpu"], 128);
        assert_eq!(c["memory"], 256);
        assert_eq!(c["environment"], json!({"A": "1", "B": "2"}));
        assert_eq!(
            c["portMappings"],
            json!([{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}])
        );
        assert_eq!(c["healthCheckType"], "docker");
        let config: Value = serde_json::from_str(c["dockerConfig"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(config["User"], "nobody");
        assert_eq!(config["WorkingDir"], "/srv");
        assert_eq!(config["Labels"]["team"], "web");
        assert_eq!(config["Healthcheck"]["Interval"], 10_000_000_000i64);
        assert_eq!(config["Healthcheck"]["Retries"], 2);
        let host: Value = serde_json::from_str(c["dockerConfig"]["hostConfig"].as_str().unwrap()).unwrap();
        assert_eq!(
            host["LogConfig"],
            json!({"Type": "json-file", "Config": {"max-size": "1m"}})
        );
        assert_eq!(host["ExtraHosts"], json!(["db:10.0.0.2"]));
        assert_eq!(host["Ulimits"], json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}]));
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["MemoryReservation"], 128 * MIB);
        assert!(c["dockerConfig"].get("version").is_none());
    }

    #[test]
    fn applies_the_container_overrides() {
        let overrides = json!({"containerOverrides": [{
            "name": "app",
            "command": ["sleep", "5"],
            "environment": [{"name": "B", "value": "override"}, {"name": "C", "value": "3"}],
            "memory": 512
        }]});
        let mut t = task(overrides);
        t.desired_status = TaskStatus::Stopped;
        let out = acs_task(&t, &definition());
        assert_eq!(out["desiredStatus"], "STOPPED");
        let c = &out["containers"][0];
        assert_eq!(c["command"], json!(["sleep", "5"]));
        assert_eq!(c["environment"], json!({"A": "1", "B": "override", "C": "3"}));
        assert_eq!(c["memory"], 512);
    }

    #[test]
    fn bridge_ports_without_a_host_port_are_dynamic() {
        let mut d = definition();
        d.insert("networkMode".into(), "bridge".into());
        let out = acs_task(&task(json!({"containerOverrides": []})), &d);
        assert_eq!(out["containers"][0]["portMappings"][0]["hostPort"], 0);
    }
}
