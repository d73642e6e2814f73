//! Simulated container instances: virtual ECS agents that register with an ecsd over the public
//! API, receive the tasks placed on them over ACS (a SigV4-signed websocket found through
//! DiscoverPollEndpoint) and report them PENDING (image digests, pull times) → RUNNING (network
//! bindings) → STOPPED (exit codes, `executionStoppedAt`) through SubmitTaskStateChange, as the
//! real agent does. They acknowledge what ACS sends, honour StopTask, answer task manifests
//! with stop verifications, reconnect when the channel drops, and re-register with their old
//! identity after a restart (`state_file`), picking the tasks they held back up from the
//! manifest.
//!
//! How a simulated container behaves is set with `dockerLabels` on its container definition:
//! - `ecsd.simulate.run-seconds`: seconds it runs before it exits (default: until stopped);
//! - `ecsd.simulate.exit-code`: the code it exits with (default 0);
//! - `ecsd.simulate.pull-error`: if set, pulling its image fails with this message and the task
//!   stops before it starts (`TaskFailedToStart`);
//! - `ecsd.simulate.health`: the health (HEALTHY or UNHEALTHY) it reports over TCS once it runs;
//!   containers with a `healthCheck` report HEALTHY without it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use ecsd::domain::acs_task::acs_task;
use ecsd::domain::now;
use ecsd::domain::records::Task;
use ecsd::domain::status::{ContainerStatus, TaskStatus};

use crate::acs;
use crate::client::{ClientError, Credentials, EcsClient, WebSocket};

pub const RUN_SECONDS: &str = "ecsd.simulate.run-seconds";
pub const EXIT_CODE: &str = "ecsd.simulate.exit-code";
pub const PULL_ERROR: &str = "ecsd.simulate.pull-error";
/// The versions a simulated agent reports on its ACS connection.
pub const AGENT_VERSION: &str = "1.105.0";
pub const AGENT_HASH: &str = "simulated";
pub const DOCKER_VERSION: &str = "DockerVersion: 25.0.0";
/// The health a simulated container with a health check reports: HEALTHY or UNHEALTHY.
const HEALTH: &str = "ecsd.simulate.health";
/// Exit code of a container stopped by StopTask (SIGTERM).
const STOPPED_BY_SIGNAL: i32 = 143;
/// Longest wait between attempts to reach ACS.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    /// How often an instance checks its containers' run times and retries failed reports.
    pub tick: Duration,
    /// The capacity provider the instances belong to (the `ecsd.capacity-provider` attribute).
    pub capacity_provider: Option<String>,
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
        .map(|agent| tokio::spawn(agent.run(options.tick, shutdown.clone())))
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

/// What a real Linux agent registers with, and the capacity provider it belongs to.
fn attributes(capacity_provider: Option<&str>) -> Value {
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
    if let Some(provider) = capacity_provider {
        list.push(json!({"name": "ecsd.capacity-provider", "value": provider}));
    }
    Value::Array(list)
}

async fn register(client: &EcsClient, options: &SimOptions, previous: Option<String>) -> Result<String, ClientError> {
    let mut request = json!({
        "cluster": options.cluster,
        "totalResources": resources(options),
        "attributes": attributes(options.capacity_provider.as_deref()),
    });
    if let Some(arn) = &previous {
        request["containerInstanceArn"] = json!(arn);
    }
    let answer: Value = match client.call("RegisterContainerInstance", &request).await {
        // Its old identity was deregistered, which is final: it registers as a new instance.
        Err(e) if previous.is_some() && e.code() == Some("ClientException") => {
            tracing::info!(instance = previous.as_deref().unwrap_or_default(), error = %e, "registering anew");
            request.as_object_mut().map(|r| r.remove("containerInstanceArn"));
            client.call("RegisterContainerInstance", &request).await?
        }
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

/// One simulated container, from the ACS `Container` it was sent as.
#[derive(Debug)]
struct SimContainer {
    name: String,
    image: String,
    essential: bool,
    labels: BTreeMap<String, String>,
    /// (containerPort, hostPort: 0 or missing for one Docker picks, protocol).
    ports: Vec<(i64, i64, String)>,
    running: bool,
    /// Its definition has a health check: the agent reports its health over TCS.
    health_checked: bool,
}

impl SimContainer {
    fn from_acs(container: &Value) -> SimContainer {
        let labels: BTreeMap<String, String> = container["dockerConfig"]["config"]
            .as_str()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            .and_then(|c| serde_json::from_value(c["Labels"].clone()).ok())
            .unwrap_or_default();
        let ports = container["portMappings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some((
                    m["containerPort"].as_i64()?,
                    m["hostPort"].as_i64().unwrap_or(0),
                    m["protocol"].as_str().unwrap_or("tcp").to_owned(),
                ))
            })
            .collect();
        SimContainer {
            name: container["name"].as_str().unwrap_or_default().to_owned(),
            image: container["image"].as_str().unwrap_or_default().to_owned(),
            essential: container["essential"].as_bool().unwrap_or(true),
            health_checked: container["healthCheckType"] == "docker" || labels.contains_key(HEALTH),
            labels,
            ports,
            running: false,
        }
    }

    fn label<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.labels.get(key).and_then(|v| v.parse().ok())
    }
}

/// Where a simulated task is in its life.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Received; its containers have not started.
    Created,
    /// Its containers run since this time.
    Running(f64),
}

#[derive(Debug)]
struct SimTask {
    arn: String,
    network_mode: String,
    containers: Vec<SimContainer>,
    phase: Phase,
    /// ACS asked for it to stop.
    stop: bool,
    /// An awsvpc task's network interface is reported attached.
    attached: bool,
    /// Its containers' health has been published (once they run).
    health_published: bool,
}

impl SimTask {
    fn from_acs(task: &Value) -> SimTask {
        SimTask {
            arn: task["arn"].as_str().unwrap_or_default().to_owned(),
            network_mode: task["networkMode"].as_str().unwrap_or("bridge").to_owned(),
            containers: task["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(SimContainer::from_acs)
                .collect(),
            phase: Phase::Created,
            stop: task["desiredStatus"] == "STOPPED",
            attached: false,
            health_published: false,
        }
    }
}

struct Agent {
    client: EcsClient,
    cluster: String,
    instance: String,
    /// Tasks received and not yet reported STOPPED, by ARN.
    tasks: HashMap<String, SimTask>,
    next_host_port: u16,
    /// The highest payload or manifest sequence number seen; older manifests are stale.
    latest_seq: i64,
}

/// Why a session with ACS ended.
enum SessionEnd {
    Shutdown,
    Dropped,
}

impl Agent {
    fn new(client: EcsClient, cluster: String, instance: String, index: usize) -> Agent {
        Agent {
            client,
            cluster,
            instance,
            tasks: HashMap::new(),
            next_host_port: 32768 + (index as u16 % 8) * 1000,
            latest_seq: 0,
        }
    }

    /// Keeps a session with ACS open (reconnecting with backoff) until shutdown.
    async fn run(mut self, tick: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(250);
        while !*shutdown.borrow() {
            match self.session(tick, &mut shutdown).await {
                Ok(SessionEnd::Shutdown) => return,
                Ok(SessionEnd::Dropped) => backoff = Duration::from_millis(250),
                Err(e) => {
                    tracing::warn!(instance = %self.instance, error = %e, "simulated agent cannot reach ACS");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The ACS and TCS URLs of this instance, found the way the agent finds them.
    async fn channel_urls(&self) -> Result<(String, String), ClientError> {
        let found: Value = self
            .client
            .call(
                "DiscoverPollEndpoint",
                &json!({"cluster": self.cluster, "containerInstance": self.instance}),
            )
            .await?;
        let endpoint = found["endpoint"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("DiscoverPollEndpoint answered no endpoint".into()))?;
        let telemetry = found["telemetryEndpoint"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("DiscoverPollEndpoint answered no telemetry endpoint".into()))?;
        let tcs = acs::channel_url(
            telemetry,
            &[
                ("agentHash", AGENT_HASH),
                ("agentVersion", AGENT_VERSION),
                ("cluster", self.cluster.as_str()),
                ("containerInstance", self.instance.as_str()),
                ("dockerVersion", DOCKER_VERSION.trim_start_matches("DockerVersion: ")),
            ],
        );
        let acs = acs::channel_url(
            endpoint,
            &[
                // As the real agent does, it tells its versions here, not when it registers.
                ("agentHash", AGENT_HASH),
                ("agentVersion", AGENT_VERSION),
                ("clusterArn", self.cluster.as_str()),
                ("containerInstanceArn", self.instance.as_str()),
                ("dockerVersion", DOCKER_VERSION),
                ("protocolVersion", "2"),
                ("sendCredentials", "true"),
                ("seqNum", "1"),
            ],
        );
        Ok((acs, tcs))
    }

    async fn session(
        &mut self,
        tick: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<SessionEnd, ClientError> {
        let (url, telemetry_url) = self.channel_urls().await?;
        let mut socket = self.client.websocket(&url).await?;
        // Health goes out over TCS; without it the session still runs tasks.
        let mut telemetry = match self.client.websocket(&telemetry_url).await {
            Ok(tcs) => Some(tcs),
            Err(e) => {
                tracing::warn!(instance = %self.instance, error = %e, "cannot open TCS; no health will be published");
                None
            }
        };
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = socket.next() => match received {
                    Some(Ok(Message::Text(text))) => {
                        let Some((kind, message)) = acs::parse(&text) else { continue };
                        if self.receive(&mut socket, &kind, &message).await.is_err() {
                            return Ok(SessionEnd::Dropped);
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(SessionEnd::Dropped),
                    Some(Ok(_)) => {}
                },
                _ = ticker.tick() => {
                    self.advance_all().await;
                    if let Some(tcs) = telemetry.as_mut() {
                        if self.publish_health(tcs, &telemetry_url).await.is_err() {
                            telemetry = None;
                        }
                    }
                }
                heard = async {
                    match telemetry.as_mut() {
                        Some(tcs) => tcs.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Heartbeats and acknowledgements need no answer; a closed channel ends.
                    if !matches!(heard, Some(Ok(_))) {
                        telemetry = None;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = socket.close(None).await;
                    return Ok(SessionEnd::Shutdown);
                }
            }
        }
    }

    async fn reply(socket: &mut WebSocket, kind: &str, message: Value) -> Result<(), ()> {
        let text = acs::envelope(kind, message).to_string();
        socket.send(Message::Text(text.into())).await.map_err(|_| ())
    }

    /// Publishes the health of the containers with health checks of each task that has started
    /// running and not yet had its health published: `ecsd.simulate.health` (HEALTHY by default).
    async fn publish_health(&mut self, tcs: &mut WebSocket, url: &str) -> Result<(), ()> {
        let mut reports = Vec::new();
        for task in self.tasks.values_mut() {
            if task.health_published || !matches!(task.phase, Phase::Running(_)) || task.stop {
                continue;
            }
            task.health_published = true;
            let containers: Vec<Value> = task
                .containers
                .iter()
                .filter(|c| c.health_checked)
                .map(|c| {
                    let status = c.labels.get(HEALTH).map_or("HEALTHY", String::as_str);
                    json!({"containerName": c.name, "healthStatus": status, "statusSince": now()})
                })
                .collect();
            if !containers.is_empty() {
                reports.push(json!({"taskArn": task.arn, "containers": containers}));
            }
        }
        if reports.is_empty() {
            return Ok(());
        }
        let message = json!({
            "metadata": {"cluster": self.cluster, "containerInstance": self.instance, "messageId": ecsd::domain::new_id(), "fin": true},
            "tasks": reports,
            "timestamp": now(),
        });
        let body = acs::envelope("PublishHealthRequest", message).to_string();
        let frame = self.client.telemetry_frame(url, &body).map_err(|_| ())?;
        tcs.send(Message::Text(frame.into())).await.map_err(|_| ())
    }

    /// What the real agent does with each ACS message.
    async fn receive(&mut self, socket: &mut WebSocket, kind: &str, message: &Value) -> Result<(), ()> {
        match kind {
            "HeartbeatMessage" => {
                Self::reply(socket, "HeartbeatAckRequest", acs::heartbeat_ack(message)).await?;
            }
            "PayloadMessage" => {
                self.latest_seq = self.latest_seq.max(message["seqNum"].as_i64().unwrap_or_default());
                let mut touched = Vec::new();
                for task in message["tasks"].as_array().into_iter().flatten() {
                    let arn = task["arn"].as_str().unwrap_or_default().to_owned();
                    match self.tasks.get_mut(&arn) {
                        Some(known) => known.stop |= task["desiredStatus"] == "STOPPED",
                        None => {
                            self.tasks.insert(arn.clone(), SimTask::from_acs(task));
                        }
                    }
                    touched.push(arn);
                }
                Self::reply(socket, "AckRequest", acs::ack_request(message)).await?;
                for arn in touched {
                    self.advance(&arn).await;
                }
            }
            "TaskManifestMessage" => {
                let timeline = message["timeline"].as_i64().unwrap_or_default();
                if timeline <= self.latest_seq {
                    return Ok(());
                }
                self.latest_seq = timeline;
                Self::reply(socket, "AckRequest", acs::ack_request(message)).await?;
                let listed = acs::manifest_tasks(message);
                // Tasks this agent was given before it restarted: picked back up.
                let unknown: Vec<String> = listed
                    .iter()
                    .filter(|(arn, _)| !self.tasks.contains_key(arn))
                    .map(|(arn, _)| arn.clone())
                    .collect();
                if !unknown.is_empty() {
                    if let Err(e) = self.adopt(&unknown).await {
                        tracing::warn!(instance = %self.instance, error = %e, "cannot pick up the manifest's tasks");
                    }
                }
                let candidates: Vec<String> = self
                    .tasks
                    .values()
                    .filter(|t| !t.stop && !listed.iter().any(|(arn, d)| *arn == t.arn && d == "RUNNING"))
                    .map(|t| t.arn.clone())
                    .collect();
                if !candidates.is_empty() {
                    let verification = acs::stop_verification(message, &candidates);
                    Self::reply(socket, "TaskStopVerificationMessage", verification).await?;
                }
            }
            "TaskStopVerificationAck" => {
                let confirmed: Vec<String> = message["stopTasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["taskArn"].as_str().map(str::to_owned))
                    .collect();
                for arn in confirmed {
                    if let Some(task) = self.tasks.get_mut(&arn) {
                        task.stop = true;
                    }
                    self.advance(&arn).await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes over tasks ACS says are placed here, as they are now.
    async fn adopt(&mut self, arns: &[String]) -> Result<(), ClientError> {
        let mut definitions: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
        for chunk in arns.chunks(100) {
            let described: Value = self
                .client
                .call("DescribeTasks", &json!({"cluster": self.cluster, "tasks": chunk}))
                .await?;
            let tasks: Vec<Task> =
                serde_json::from_value(described["tasks"].clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
            for task in tasks {
                let arn = &task.task_definition_arn;
                if !definitions.contains_key(arn) {
                    let answer: Value = self
                        .client
                        .call("DescribeTaskDefinition", &json!({"taskDefinition": arn}))
                        .await?;
                    let definition = answer["taskDefinition"].as_object().cloned().unwrap_or_default();
                    definitions.insert(arn.clone(), definition);
                }
                let mut sim = SimTask::from_acs(&acs_task(&task, &definitions[arn]));
                if task.last_status == TaskStatus::Running {
                    sim.phase = Phase::Running(task.started_at.unwrap_or_else(now));
                    sim.attached = true;
                    for (container, known) in sim.containers.iter_mut().zip(&task.containers) {
                        container.running = known.last_status == ContainerStatus::Running;
                    }
                }
                self.tasks.insert(task.task_arn.clone(), sim);
            }
        }
        for arn in arns {
            self.advance(arn).await;
        }
        Ok(())
    }

    async fn advance_all(&mut self) {
        let arns: Vec<String> = self.tasks.keys().cloned().collect();
        for arn in arns {
            self.advance(&arn).await;
        }
    }

    /// Moves a task a step along, as its containers would; a report that fails is tried again
    /// on the next tick.
    async fn advance(&mut self, arn: &str) {
        let Some(mut task) = self.tasks.remove(arn) else {
            return;
        };
        match self.step(&mut task).await {
            Ok(true) => {}
            Ok(false) => {
                self.tasks.insert(arn.to_owned(), task);
            }
            Err(e) => {
                tracing::warn!(task = %arn, error = %e, "simulated agent report failed");
                self.tasks.insert(arn.to_owned(), task);
            }
        }
    }

    async fn report(&self, task: &SimTask, body: Value) -> Result<(), ClientError> {
        let mut body = body;
        body["cluster"] = json!(self.cluster);
        body["task"] = json!(task.arn);
        match self.client.call::<_, Value>("SubmitTaskStateChange", &body).await {
            // The real agent drops a report the control plane calls invalid (a task it forgot).
            Err(e) if e.code() == Some("InvalidParameterException") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// One step of a task's life; true once it is reported STOPPED.
    async fn step(&mut self, task: &mut SimTask) -> Result<bool, ClientError> {
        if task.stop {
            let containers: Vec<Value> = task
                .containers
                .iter()
                .map(|c| {
                    let mut change = json!({"containerName": c.name, "status": "STOPPED", "networkBindings": []});
                    if c.running {
                        change["exitCode"] = json!(STOPPED_BY_SIGNAL);
                    }
                    change
                })
                .collect();
            self.report(
                task,
                json!({"status": "STOPPED", "containers": containers, "executionStoppedAt": now()}),
            )
            .await?;
            return Ok(true);
        }
        match task.phase {
            Phase::Created => self.start(task).await,
            Phase::Running(since) => self.check_exits(task, since).await,
        }
    }

    /// Attaches an awsvpc task's interface, pulls and starts the containers.
    async fn start(&mut self, task: &mut SimTask) -> Result<bool, ClientError> {
        if task.network_mode == "awsvpc" && !task.attached {
            let described: Value = self
                .client
                .call("DescribeTasks", &json!({"cluster": self.cluster, "tasks": [task.arn]}))
                .await?;
            let prefix = task.arn.split(":task/").next().unwrap_or_default().to_owned();
            let attachments: Vec<Value> = described["tasks"][0]["attachments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["id"].as_str())
                .map(|id| json!({"attachmentArn": format!("{prefix}:attachment/{id}"), "status": "ATTACHED"}))
                .collect();
            if !attachments.is_empty() {
                self.report(task, json!({"attachments": attachments})).await?;
            }
            task.attached = true;
        }
        if let Some((name, error)) = task
            .containers
            .iter()
            .find_map(|c| c.labels.get(PULL_ERROR).map(|e| (c.name.clone(), e.clone())))
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
            // As the real agent does: the reason is the container's; the task's stays empty.
            self.report(task, json!({"status": "STOPPED", "containers": containers}))
                .await?;
            return Ok(true);
        }
        let pull_started = now();
        let digests: Vec<Value> = task
            .containers
            .iter()
            .map(|c| {
                json!({"containerName": c.name, "status": "PENDING", "networkBindings": [],
                       "imageDigest": digest(if c.image.is_empty() { &c.name } else { &c.image })})
            })
            .collect();
        self.report(
            task,
            json!({"status": "PENDING", "containers": digests, "pullStartedAt": pull_started, "pullStoppedAt": now()}),
        )
        .await?;
        let mut running = Vec::new();
        for c in &task.containers {
            let mut bindings = Vec::new();
            if task.network_mode != "awsvpc" && task.network_mode != "none" {
                for (container_port, host_port, protocol) in &c.ports {
                    let host_port = match (task.network_mode.as_str(), *host_port) {
                        (_, p) if p != 0 => p,
                        ("host", _) => *container_port,
                        _ => {
                            self.next_host_port = self.next_host_port.checked_add(1).unwrap_or(32768);
                            i64::from(self.next_host_port)
                        }
                    };
                    bindings.push(json!({"bindIP": "0.0.0.0", "containerPort": container_port,
                                         "hostPort": host_port, "protocol": protocol}));
                }
            }
            running.push(
                json!({"containerName": c.name, "status": "RUNNING", "networkBindings": bindings,
                                "runtimeId": ecsd::domain::new_id()}),
            );
        }
        self.report(task, json!({"status": "RUNNING", "containers": running}))
            .await?;
        for c in &mut task.containers {
            c.running = true;
        }
        task.phase = Phase::Running(now());
        Ok(false)
    }

    /// Containers whose run time is up exit; the task stops when an essential one does.
    async fn check_exits(&mut self, task: &mut SimTask, since: f64) -> Result<bool, ClientError> {
        let exited: Vec<usize> = task
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.running)
            .filter(|(_, c)| c.label::<f64>(RUN_SECONDS).is_some_and(|secs| now() >= since + secs))
            .map(|(i, _)| i)
            .collect();
        if exited.is_empty() {
            return Ok(false);
        }
        let task_stops = exited.iter().any(|i| task.containers[*i].essential);
        let containers: Vec<Value> = task
            .containers
            .iter()
            .enumerate()
            .filter(|(i, _)| task_stops || exited.contains(i))
            .map(|(i, c)| {
                let code = if exited.contains(&i) {
                    Some(c.label::<i32>(EXIT_CODE).unwrap_or(0))
                } else if c.running {
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
            .await?;
            return Ok(true);
        }
        self.report(task, json!({"status": "RUNNING", "containers": containers}))
            .await?;
        for i in exited {
            task.containers[i].running = false;
        }
        Ok(false)
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

    #[test]
    fn reads_a_task_as_acs_sends_it() {
        let config = json!({"Labels": {RUN_SECONDS: "2", EXIT_CODE: "3"}}).to_string();
        let task = SimTask::from_acs(&json!({
            "arn": "arn:aws:ecs:us-east-1:1:task/c/t",
            "desiredStatus": "RUNNING",
            "networkMode": "bridge",
            "containers": [{"name": "main", "image": "busybox", "essential": false,
                            "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
                            "dockerConfig": {"config": config}}]
        }));
        assert!(!task.stop);
        let c = &task.containers[0];
        assert!(!c.essential);
        assert_eq!(c.label::<f64>(RUN_SECONDS), Some(2.0));
        assert_eq!(c.label::<i32>(EXIT_CODE), Some(3));
        assert_eq!(c.ports, vec![(80, 0, "tcp".to_owned())]);
    }
}
