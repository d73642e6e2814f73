//! A fake ECS agent for the agent channels, written from the ACS and TCS models: it opens the
//! channels with SigV4-signed upgrades found through DiscoverPollEndpoint, acknowledges
//! heartbeats and payloads, reports task changes through SubmitTaskStateChange, answers task
//! manifests with stop verifications as the real agent does, and can be killed or frozen.
//! Every message it receives is checked against the model (exact member names and types);
//! every message it sends is too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_ecs::types::ContainerStateChange;
use ecsd::model::Model;
use ecsd_agent::acs;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use super::{Running, REGION};

/// How long a test waits for something the server should do.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A task as the fake agent holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalTask {
    pub desired: String,
    pub stopped: bool,
    /// The names of its containers, which its reports carry.
    pub containers: Vec<String>,
}

#[derive(Default)]
struct Shared {
    /// Every message received, as `{"type", "message"}`.
    received: Vec<Value>,
    /// Messages received that did not match their shape in the model.
    violations: Vec<String>,
    tasks: BTreeMap<String, LocalTask>,
    /// The highest payload or manifest sequence number seen.
    latest_seq: i64,
    /// The id of the last manifest answered with a stop verification: only its ack is taken.
    manifest_id: Option<String>,
    closed: bool,
}

struct State {
    shared: Mutex<Shared>,
    changed: Notify,
    ack_payloads: AtomicBool,
}

enum Control {
    Send(Message),
    Freeze,
}

/// The headers that sign a GET of `url` with `body`, as `test`/`test` (or the given keys).
pub fn sign_get(url: &str, body: &[u8], access_key: &str, secret: &str) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let identity = aws_credential_types::Credentials::new(access_key, secret, None, None, "tests").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("ecs")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    // Go's signer reads `+` in a query as a space, and signs it as `%20`.
    let http_url = url.replacen("ws://", "http://", 1).replace('+', "%20");
    let headers = [("host", host.as_str())];
    let signable = SignableRequest::new("GET", &http_url, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut out = vec![("Host".to_owned(), host)];
    out.extend(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())));
    out
}

/// Opens a websocket to `url` with a signed upgrade; on refusal, the HTTP status and body.
pub async fn open(
    url: &str,
    access_key: &str,
    secret: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, (u16, Value)>
{
    let mut request = url.into_client_request().unwrap();
    for (k, v) in sign_get(url, b"", access_key, secret) {
        if k != "Host" {
            request.headers_mut().insert(
                k.parse::<tokio_tungstenite::tungstenite::http::HeaderName>().unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("cannot reach the channel: {e}"),
    }
}

/// The ACS and TCS endpoints DiscoverPollEndpoint gives an instance, as websocket URLs.
async fn discover(server: &Running, cluster: &str, instance: &str) -> (String, String) {
    let found = server
        .client()
        .discover_poll_endpoint()
        .cluster(cluster)
        .container_instance(instance)
        .send()
        .await
        .unwrap();
    (
        found.endpoint().unwrap().to_owned(),
        found.telemetry_endpoint().unwrap().to_owned(),
    )
}

/// The ACS URL for an instance, found the way the agent finds it.
pub async fn acs_url(server: &Running, cluster: &str, instance: &str) -> String {
    let (endpoint, _) = discover(server, cluster, instance).await;
    acs::channel_url(
        &endpoint,
        &[
            ("agentHash", "fake"),
            ("agentVersion", "1.105.0"),
            ("clusterArn", cluster),
            ("containerInstanceArn", instance),
            ("dockerVersion", "DockerVersion: 28.2.2"),
            ("protocolVersion", "2"),
            ("sendCredentials", "true"),
            ("seqNum", "1"),
        ],
    )
}

/// The TCS URL for an instance, found the way the agent finds it.
pub async fn tcs_url(server: &Running, cluster: &str, instance: &str) -> String {
    let (_, endpoint) = discover(server, cluster, instance).await;
    acs::channel_url(
        &endpoint,
        &[
            ("agentHash", "fake"),
            ("agentVersion", "1.105.0"),
            ("cluster", cluster),
            ("containerInstance", instance),
            ("dockerVersion", "28.2.2"),
        ],
    )
}

/// Checks a message against its shape in a model; the error names what is wrong.
pub fn check_shape(model: &Model, envelope: &Value) -> Result<(), String> {
    let kind = envelope["type"].as_str().ok_or("a message without a type")?;
    model
        .check_sent(kind, &envelope["message"])
        .map_err(|e| format!("{kind}: {}", e.message))
}

pub struct FakeAgent {
    pub cluster: String,
    pub instance: String,
    state: Arc<State>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

impl FakeAgent {
    /// Connects to ACS for `instance` of `cluster` (short name) and starts behaving.
    pub async fn connect(server: &Running, cluster: &str, instance: &str) -> FakeAgent {
        let url = acs_url(server, cluster, instance).await;
        let socket = open(&url, "test", "test").await.expect("the ACS upgrade is accepted");
        let state = Arc::new(State {
            shared: Mutex::new(Shared::default()),
            changed: Notify::new(),
            ack_payloads: AtomicBool::new(true),
        });
        let (control, commands) = mpsc::unbounded_channel();
        let client = server.client();
        let task = tokio::spawn(run(
            socket,
            state.clone(),
            commands,
            client,
            cluster.to_owned(),
            control.clone(),
        ));
        FakeAgent {
            cluster: cluster.to_owned(),
            instance: instance.to_owned(),
            state,
            control,
            task,
        }
    }

    /// Whether payloads are acknowledged (they are unless turned off).
    pub fn acknowledge_payloads(&self, on: bool) {
        self.state.ack_payloads.store(on, Ordering::SeqCst);
    }

    /// Sends a raw message as the agent.
    pub fn send_raw(&self, message: Message) {
        let _ = self.control.send(Control::Send(message));
    }

    /// Sends a message as the agent, checked against the model first.
    pub fn send(&self, kind: &str, message: Value) {
        let envelope = acs::envelope(kind, message);
        check_shape(Model::acs(), &envelope).expect("the fake agent sends what the model describes");
        self.send_raw(Message::Text(envelope.to_string().into()));
    }

    /// Holds the connection open and stops reading and answering, like a hung agent.
    pub fn freeze(&self) {
        let _ = self.control.send(Control::Freeze);
    }

    /// Drops the connection without a close message, like a killed agent.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Makes the agent hold a task ecsd does not know, running.
    pub fn adopt(&self, arn: &str) {
        let mut shared = self.state.shared.lock().unwrap();
        shared.tasks.insert(
            arn.to_owned(),
            LocalTask {
                desired: "RUNNING".into(),
                stopped: false,
                containers: Vec::new(),
            },
        );
    }

    /// Waits until `f` finds what it looks for in the agent's view.
    pub async fn wait_for<T>(&self, what: &str, f: impl Fn(&AgentView<'_>) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.state.changed.notified();
            {
                let shared = self.state.shared.lock().unwrap();
                assert!(
                    shared.violations.is_empty(),
                    "messages outside the model: {:?}",
                    shared.violations
                );
                if let Some(found) = f(&AgentView { shared: &shared }) {
                    return found;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let shared = self.state.shared.lock().unwrap();
                panic!("timed out waiting for {what}; received: {:#?}", shared.received);
            }
        }
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Value> {
        self.state.shared.lock().unwrap().received.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.shared.lock().unwrap().violations.clone()
    }
}

/// What the agent has seen and holds.
pub struct AgentView<'a> {
    shared: &'a Shared,
}

impl AgentView<'_> {
    /// Received messages of one type.
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.shared
            .received
            .iter()
            .filter(|m| m["type"] == kind)
            .map(|m| &m["message"])
            .collect()
    }

    /// Tasks received in payloads, with the desired status each was sent with, in order.
    pub fn payload_tasks(&self) -> Vec<(String, String)> {
        self.of("PayloadMessage")
            .iter()
            .flat_map(|m| m["tasks"].as_array().cloned().unwrap_or_default())
            .map(|t| {
                (
                    t["arn"].as_str().unwrap_or_default().to_owned(),
                    t["desiredStatus"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub fn task(&self, arn: &str) -> Option<&LocalTask> {
        self.shared.tasks.get(arn)
    }

    pub fn closed(&self) -> bool {
        self.shared.closed
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    mut socket: Socket,
    state: Arc<State>,
    mut commands: mpsc::UnboundedReceiver<Control>,
    client: aws_sdk_ecs::Client,
    cluster: String,
    control: mpsc::UnboundedSender<Control>,
) {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Control::Send(message)) => {
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
                Some(Control::Freeze) => {
                    // Hold the socket and never read it again.
                    std::future::pending::<()>().await;
                }
                None => break,
            },
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let envelope: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    handle(&state, &envelope, &client, &cluster, &control);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    state.shared.lock().unwrap().closed = true;
    state.changed.notify_waiters();
}

/// What the real agent does with each message.
fn handle(
    state: &Arc<State>,
    envelope: &Value,
    client: &aws_sdk_ecs::Client,
    cluster: &str,
    control: &mpsc::UnboundedSender<Control>,
) {
    let reply = |kind: &str, message: Value| {
        let envelope = acs::envelope(kind, message);
        check_shape(Model::acs(), &envelope).expect("the fake agent sends what the model describes");
        let _ = control.send(Control::Send(Message::Text(envelope.to_string().into())));
    };
    let message = &envelope["message"];
    let mut shared = state.shared.lock().unwrap();
    let mut reports = Vec::new();
    shared.received.push(envelope.clone());
    if let Err(violation) = check_shape(Model::acs(), envelope) {
        shared.violations.push(violation);
    }
    match envelope["type"].as_str().unwrap_or_default() {
        "HeartbeatMessage" => reply("HeartbeatAckRequest", acs::heartbeat_ack(message)),
        "PayloadMessage" => {
            let seq = message["seqNum"].as_i64().unwrap_or_default();
            shared.latest_seq = shared.latest_seq.max(seq);
            for task in message["tasks"].as_array().cloned().unwrap_or_default() {
                let arn = task["arn"].as_str().unwrap_or_default().to_owned();
                let desired = task["desiredStatus"].as_str().unwrap_or_default().to_owned();
                let known = shared.tasks.get(&arn).cloned();
                let containers: Vec<String> = task["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect();
                let status = match (desired.as_str(), known) {
                    ("RUNNING", None) => "RUNNING",
                    // Never started, it stops at once.
                    ("STOPPED", None) => "STOPPED",
                    ("STOPPED", Some(t)) if !t.stopped => "STOPPED",
                    _ => continue,
                };
                shared.tasks.insert(
                    arn.clone(),
                    LocalTask {
                        desired: desired.clone(),
                        stopped: status == "STOPPED",
                        containers: containers.clone(),
                    },
                );
                reports.push((arn, status, containers));
            }
            if state.ack_payloads.load(Ordering::SeqCst) {
                reply("AckRequest", acs::ack_request(message));
            }
        }
        "TaskManifestMessage" => {
            let timeline = message["timeline"].as_i64().unwrap_or_default();
            // A manifest no newer than what the agent has seen is stale, and dropped.
            if timeline > shared.latest_seq {
                shared.latest_seq = timeline;
                reply("AckRequest", acs::ack_request(message));
                let listed = acs::manifest_tasks(message);
                let candidates: Vec<String> = shared
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.desired == "RUNNING" && !t.stopped)
                    .filter(|(arn, _)| !listed.iter().any(|(a, d)| a == *arn && d == "RUNNING"))
                    .map(|(arn, _)| arn.clone())
                    .collect();
                if !candidates.is_empty() {
                    shared.manifest_id = message["messageId"].as_str().map(str::to_owned);
                    reply(
                        "TaskStopVerificationMessage",
                        acs::stop_verification(message, &candidates),
                    );
                }
            }
        }
        "TaskStopVerificationAck" => {
            // The agent takes the ack of the manifest it answered, once, and stops what it
            // names: the task's containers stop and the task is reported STOPPED.
            let id = message["messageId"].as_str();
            if id.is_none() || id != shared.manifest_id.as_deref() {
                return;
            }
            shared.manifest_id = None;
            for task in message["stopTasks"].as_array().cloned().unwrap_or_default() {
                let Some(arn) = task["taskArn"].as_str() else {
                    continue;
                };
                if let Some(local) = shared.tasks.get_mut(arn).filter(|t| !t.stopped) {
                    local.desired = "STOPPED".into();
                    local.stopped = true;
                    reports.push((arn.to_owned(), "STOPPED", local.containers.clone()));
                }
            }
        }
        _ => {}
    }
    drop(shared);
    state.changed.notify_waiters();
    for (arn, status, containers) in reports {
        tokio::spawn(report(client.clone(), cluster.to_owned(), arn, status, containers));
    }
}

/// Reports a task's new status as the agent does, containers inside.
async fn report(
    client: aws_sdk_ecs::Client,
    cluster: String,
    arn: String,
    status: &'static str,
    containers: Vec<String>,
) {
    let mut call = client
        .submit_task_state_change()
        .cluster(cluster)
        .task(arn)
        .status(status);
    for name in containers {
        let mut change = ContainerStateChange::builder()
            .container_name(name)
            .status(status)
            .set_network_bindings(Some(vec![]));
        if status == "STOPPED" {
            change = change.exit_code(0);
        }
        call = call.containers(change.build());
    }
    // The agent drops a report ECS answers with InvalidParameterException (a task it does not
    // know, as a stray the agent stopped); it retries any other error until the report is
    // taken, and the tests' reports all are.
    if let Err(e) = call.send().await {
        let error = e.into_service_error();
        assert!(
            error.is_invalid_parameter_exception(),
            "the agent's report is taken or dropped: {error:?}"
        );
    }
}

/// A telemetry channel, signing each message as the agent does.
pub struct FakeTelemetry {
    url: String,
    socket: Socket,
}

impl FakeTelemetry {
    pub async fn connect(server: &Running, cluster: &str, instance: &str) -> FakeTelemetry {
        let url = tcs_url(server, cluster, instance).await;
        let socket = open(&url, "test", "test").await.expect("the TCS upgrade is accepted");
        FakeTelemetry { url, socket }
    }

    /// The frame the agent sends: signed header block, blank line, envelope.
    pub fn framed(&self, kind: &str, message: Value, secret: &str) -> Vec<u8> {
        let envelope = acs::envelope(kind, message.clone());
        let body = envelope.to_string().into_bytes();
        let mut frame = Vec::new();
        for (k, v) in sign_get(&self.url, &body, "test", secret) {
            frame.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        frame.extend_from_slice(b"\r\n");
        frame.extend_from_slice(&body);
        frame
    }

    /// Sends a message (checked against the TCS model) and returns the next reply that is not a
    /// heartbeat.
    pub async fn publish(&mut self, kind: &str, message: Value) -> Value {
        let envelope = acs::envelope(kind, message.clone());
        check_shape(Model::tcs(), &envelope).expect("the fake agent sends what the model describes");
        let frame = self.framed(kind, message, "test");
        self.send_bytes(frame).await
    }

    /// Sends raw bytes as a text message and returns the next reply that is not a heartbeat.
    pub async fn send_bytes(&mut self, frame: Vec<u8>) -> Value {
        let text = String::from_utf8(frame).unwrap();
        self.socket.send(Message::Text(text.into())).await.unwrap();
        loop {
            let reply = self.next().await;
            if reply["type"] != "HeartbeatMessage" {
                return reply;
            }
        }
    }

    /// The next message from the server, checked against the TCS model.
    pub async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the server answers in time")
                .expect("the channel is open")
                .unwrap();
            if let Message::Text(text) = message {
                let envelope: Value = serde_json::from_str(&text).unwrap();
                check_shape(Model::tcs(), &envelope).unwrap();
                return envelope;
            }
        }
    }
}
