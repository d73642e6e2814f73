//! Simulated container instances: virtual ECS agents that register with an ecsd (or any ECS
//! endpoint) over the public API, signed with SigV4, pick up the tasks placed on them and
//! report them PENDING (image digests, pull times) → RUNNING (network bindings) → STOPPED (exit
//! codes, `executionStoppedAt`) through SubmitTaskStateChange, as the real agent does. They
//! honour StopTask and re-register with their old identity after a restart (`state_file`).
//!
//! How a simulated container behaves is set with `dockerLabels` on its container definition:
//! - `ecsd.simulate.run-seconds`: seconds it runs before it exits (default: until stopped);
//! - `ecsd.simulate.exit-code`: the code it exits with (default 0);
//! - `ecsd.simulate.pull-error`: if set, pulling its image fails with this message and the task
//!   stops before it starts (`TaskFailedToStart`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::client::{ClientError, Credentials, EcsClient};
use crate::domain::now;
use crate::domain::records::{Task, TaskDefinitionSpec};
use crate::domain::status::{ContainerStatus, TaskStatus};

pub const RUN_SECONDS: &str = "ecsd.simulate.run-seconds";
pub const EXIT_CODE: &str = "ecsd.simulate.exit-code";
pub const PULL_ERROR: &str = "ecsd.simulate.pull-error";
/// Exit code of a container stopped by StopTask (SIGTERM).
const STOPPED_BY_SIGNAL: i32 = 143;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub endpoint: String,
    pub cluster: String,
    pub instances: usize,
    /// CPU units (1024 per vCPU) and MiB each instance registers with.
    pub cpu: i32,
    pub memory: i32,
    pub credentials: Credentials,
    /// Where the instances' identities are kept across restarts.
    pub state_file: Option<PathBuf>,
    pub poll: Duration,
}

#[derive(Default, Serialize, Deserialize)]
struct Checkpoint {
    instances: Vec<String>,
}

/// Registers the instances and runs them until `shutdown` becomes true.
pub async fn run(options: SimOptions, shutdown: watch::Receiver<bool>) -> Result<(), ClientError> {
    let client = EcsClient::new(&options.endpoint, options.credentials.clone());
    let mut checkpoint: Checkpoint = options
        .state_file
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut agents = Vec::new();
    for i in 0..options.instances {
        let arn = register(&client, &options, checkpoint.instances.get(i).cloned()).await?;
        if i < checkpoint.instances.len() {
            checkpoint.instances[i] = arn.clone();
        } else {
            checkpoint.instances.push(arn.clone());
        }
        agents.push(Agent::new(client.clone(), options.cluster.clone(), arn, i));
    }
    if let Some(path) = &options.state_file {
        if let Err(e) = std::fs::write(path, serde_json::to_vec(&checkpoint).unwrap_or_default()) {
            tracing::warn!(error = %e, "cannot save the simulated agents' identities");
        }
    }
    tracing::info!(instances = agents.len(), cluster = %options.cluster, "simulated agents running");
    let handles: Vec<_> = agents
        .into_iter()
        .map(|agent| tokio::spawn(agent.run(options.poll, shutdown.clone())))
        .collect();
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}

fn resources(options: &SimOptions) -> Value {
    json!([
        {"name": "CPU", "type": "INTEGER", "integerValue": options.cpu},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": options.memory},
        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678", "51679"]},
        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
    ])
}

/// What a real Linux agent registers with.
fn attributes() -> Value {
    let mut list = vec![
        json!({"name": "ecs.os-type", "value": "linux"}),
        json!({"name": "ecs.os-family", "value": "LINUX"}),
        json!({"name": "ecs.cpu-architecture", "value": "x86_64"}),
        json!({"name": "ecs.capability.simulated", "value": "true"}),
    ];
    for capability in [
        "com.amazonaws.ecs.capability.docker-remote-api.1.44",
        "com.amazonaws.ecs.capability.logging-driver.json-file",
        "ecs.capability.task-eni",
        "ecs.capability.execution-role-awslogs",
        "ecs.capability.container-health-check",
    ] {
        list.push(json!({"name": capability}));
    }
    Value::Array(list)
}

async fn register(client: &EcsClient, options: &SimOptions, previous: Option<String>) -> Result<String, ClientError> {
    let mut request = json!({
        "cluster": options.cluster,
        "totalResources": resources(options),
        "attributes": attributes(),
        "versionInfo": {"agentVersion": "1.105.0", "agentHash": "simulated", "dockerVersion": "DockerVersion: 25.0.0"},
    });
    if let Some(arn) = previous {
        request["containerInstanceArn"] = json!(arn);
    }
    let answer: Value = match client.call("RegisterContainerInstance", &request).await {
        Err(e) if e.code() == Some("ClusterNotFoundException") => {
            // As the real agent does: create the cluster it was told to join.
            client
                .call::<_, Value>("CreateCluster", &json!({"clusterName": options.cluster}))
                .await?;
            client.call("RegisterContainerInstance", &request).await?
        }
        other => other?,
    };
    answer["containerInstance"]["containerInstanceArn"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Protocol("RegisterContainerInstance answered no ARN".into()))
}

struct Agent {
    client: EcsClient,
    cluster: String,
    instance: String,
    /// Tasks placed here that have not been reported STOPPED.
    tracked: BTreeSet<String>,
    definitions: HashMap<String, TaskDefinitionSpec>,
    next_host_port: u16,
    /// The first poll also picks up tasks stopped while the agent was away.
    first_poll: bool,
}

impl Agent {
    fn new(client: EcsClient, cluster: String, instance: String, index: usize) -> Agent {
        Agent {
            client,
            cluster,
            instance,
            tracked: BTreeSet::new(),
            definitions: HashMap::new(),
            next_host_port: 32768 + (index as u16 % 8) * 1000,
            first_poll: true,
        }
    }

    async fn run(mut self, poll: Duration, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if let Err(e) = self.poll().await {
                tracing::warn!(instance = %self.instance, error = %e, "simulated agent poll failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn list(&self, desired: &str) -> Result<Vec<String>, ClientError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request =
                json!({"cluster": self.cluster, "containerInstance": self.instance, "desiredStatus": desired});
            if let Some(t) = &token {
                request["nextToken"] = json!(t);
            }
            let page: Value = self.client.call("ListTasks", &request).await?;
            arns.extend(
                page["taskArns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned)),
            );
            match page["nextToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(arns),
            }
        }
    }

    async fn poll(&mut self) -> Result<(), ClientError> {
        for arn in self.list("RUNNING").await? {
            self.tracked.insert(arn);
        }
        if self.first_poll {
            for arn in self.list("STOPPED").await? {
                self.tracked.insert(arn);
            }
            self.first_poll = false;
        }
        let arns: Vec<String> = self.tracked.iter().cloned().collect();
        for chunk in arns.chunks(100) {
            let described: Value = self
                .client
                .call("DescribeTasks", &json!({"cluster": self.cluster, "tasks": chunk}))
                .await?;
            let tasks: Vec<Task> = serde_json::from_value(described["tasks"].clone()).unwrap_or_default();
            for arn in chunk {
                if !tasks.iter().any(|t| t.task_arn == *arn) {
                    self.tracked.remove(arn);
                }
            }
            for task in tasks {
                if let Err(e) = self.drive(&task).await {
                    tracing::warn!(task = %task.task_arn, error = %e, "simulated agent report failed");
                }
            }
        }
        Ok(())
    }

    async fn definition(&mut self, arn: &str) -> Result<TaskDefinitionSpec, ClientError> {
        if let Some(spec) = self.definitions.get(arn) {
            return Ok(spec.clone());
        }
        let answer: Value = self
            .client
            .call("DescribeTaskDefinition", &json!({"taskDefinition": arn}))
            .await?;
        let spec: TaskDefinitionSpec = serde_json::from_value(answer["taskDefinition"].clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.definitions.insert(arn.to_owned(), spec.clone());
        Ok(spec)
    }

    async fn report(&self, task: &Task, body: Value) -> Result<(), ClientError> {
        let mut body = body;
        body["cluster"] = json!(self.cluster);
        body["task"] = json!(task.task_arn);
        self.client
            .call::<_, Value>("SubmitTaskStateChange", &body)
            .await
            .map(|_| ())
    }

    /// Moves one task a step along, as its containers would.
    async fn drive(&mut self, task: &Task) -> Result<(), ClientError> {
        if task.last_status == TaskStatus::Stopped {
            self.tracked.remove(&task.task_arn);
            return Ok(());
        }
        let spec = self.definition(&task.task_definition_arn).await?;
        let label = |name: &str, key: &str| {
            spec.container_definitions
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.docker_labels.get(key).cloned())
        };
        let essential = |name: &str| {
            spec.container_definitions
                .iter()
                .find(|c| c.name == name)
                .is_none_or(|c| c.essential != Some(false))
        };

        if task.desired_status == TaskStatus::Stopped {
            let containers: Vec<Value> = task
                .containers
                .iter()
                .map(|c| {
                    let mut change = json!({"containerName": c.name, "status": "STOPPED", "networkBindings": []});
                    if c.last_status == ContainerStatus::Running {
                        change["exitCode"] = json!(STOPPED_BY_SIGNAL);
                    }
                    change
                })
                .collect();
            return self
                .report(
                    task,
                    json!({"status": "STOPPED", "containers": containers, "executionStoppedAt": now()}),
                )
                .await;
        }

        if task.last_status == TaskStatus::Provisioning {
            let attachments: Vec<Value> = task
                .attachments
                .iter()
                .map(|a| {
                    let prefix = task.task_arn.split(":task/").next().unwrap_or_default();
                    json!({"attachmentArn": format!("{prefix}:attachment/{}", a.id), "status": "ATTACHED"})
                })
                .collect();
            return self.report(task, json!({"attachments": attachments})).await;
        }

        if task.last_status < TaskStatus::Running {
            if let Some((name, error)) = task
                .containers
                .iter()
                .find_map(|c| label(&c.name, PULL_ERROR).map(|e| (c.name.clone(), e)))
            {
                let reason = format!("CannotPullContainerError: {error}");
                let containers: Vec<Value> = task
                    .containers
                    .iter()
                    .map(|c| {
                        let mut change = json!({"containerName": c.name, "status": "STOPPED", "networkBindings": []});
                        if c.name == name {
                            change["reason"] = json!(reason);
                        }
                        change
                    })
                    .collect();
                return self
                    .report(
                        task,
                        json!({"status": "STOPPED", "reason": reason, "containers": containers}),
                    )
                    .await;
            }
            let pull_started = now();
            let digests: Vec<Value> = task
                .containers
                .iter()
                .map(|c| {
                    json!({"containerName": c.name, "status": "PENDING", "networkBindings": [],
                           "imageDigest": digest(c.image.as_deref().unwrap_or(&c.name))})
                })
                .collect();
            self.report(
                task,
                json!({"status": "PENDING", "containers": digests, "pullStartedAt": pull_started, "pullStoppedAt": now()}),
            )
            .await?;
            let network_mode = spec.network_mode.clone().unwrap_or_else(|| "bridge".into());
            let mut running = Vec::new();
            for c in &task.containers {
                let mut bindings = Vec::new();
                if network_mode != "awsvpc" && network_mode != "none" {
                    let mappings = spec
                        .container_definitions
                        .iter()
                        .find(|d| d.name == c.name)
                        .map(|d| d.port_mappings.clone())
                        .unwrap_or_default();
                    for m in mappings {
                        let Some(container_port) = m.container_port else {
                            continue;
                        };
                        let host_port = match (network_mode.as_str(), m.host_port.filter(|p| *p != 0)) {
                            (_, Some(p)) => p,
                            ("host", None) => container_port,
                            _ => {
                                self.next_host_port = self.next_host_port.checked_add(1).unwrap_or(32768);
                                i32::from(self.next_host_port)
                            }
                        };
                        bindings.push(
                            json!({"bindIP": "0.0.0.0", "containerPort": container_port, "hostPort": host_port,
                                             "protocol": m.protocol.clone().unwrap_or_else(|| "tcp".into())}),
                        );
                    }
                }
                running.push(
                    json!({"containerName": c.name, "status": "RUNNING", "networkBindings": bindings,
                                    "runtimeId": uuid::Uuid::new_v4().simple().to_string()}),
                );
            }
            return self
                .report(task, json!({"status": "RUNNING", "containers": running}))
                .await;
        }

        // RUNNING: containers whose run time is up exit.
        let started = task.started_at.unwrap_or_else(now);
        let exited: Vec<&str> = task
            .containers
            .iter()
            .filter(|c| c.last_status == ContainerStatus::Running)
            .filter(|c| {
                label(&c.name, RUN_SECONDS)
                    .and_then(|s| s.parse::<f64>().ok())
                    .is_some_and(|secs| now() >= started + secs)
            })
            .map(|c| c.name.as_str())
            .collect();
        if exited.is_empty() {
            return Ok(());
        }
        let exit_code = |name: &str| label(name, EXIT_CODE).and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        let task_stops = exited.iter().any(|n| essential(n));
        let containers: Vec<Value> = task
            .containers
            .iter()
            .filter(|c| task_stops || exited.contains(&c.name.as_str()))
            .map(|c| {
                let code = if exited.contains(&c.name.as_str()) {
                    Some(exit_code(&c.name))
                } else if c.last_status == ContainerStatus::Running {
                    Some(STOPPED_BY_SIGNAL)
                } else {
                    None
                };
                let mut change = json!({"containerName": c.name, "status": "STOPPED", "networkBindings": []});
                if let Some(code) = code {
                    change["exitCode"] = json!(code);
                }
                change
            })
            .collect();
        if task_stops {
            self.report(
                task,
                json!({"status": "STOPPED", "containers": containers, "executionStoppedAt": now()}),
            )
            .await
        } else {
            self.report(task, json!({"status": "RUNNING", "containers": containers}))
                .await
        }
    }
}

/// A stable, made-up image digest for an image name.
fn digest(image: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::from("sha256:");
    for round in 0..4u64 {
        for b in image.bytes().chain(round.to_le_bytes()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{hash:016x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_and_well_formed() {
        let d = digest("nginx:1.27");
        assert_eq!(d, digest("nginx:1.27"));
        assert_ne!(d, digest("nginx:1.28"));
        assert_eq!(d.len(), "sha256:".len() + 64);
    }
}
