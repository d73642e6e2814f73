//! ACS: the channel that hands tasks to an agent (`GET /acs/ws?clusterArn=…&containerInstanceArn=…`).
//!
//! ecsd sends `HeartbeatMessage`s, `PayloadMessage`s with every task placed on the instance
//! whose desired status the agent has not acknowledged (until its `AckRequest` arrives, on this
//! connection or a later one), `TaskManifestMessage`s listing what should be on the instance,
//! and `TaskStopVerificationAck`s confirming which of the agent's stop candidates to stop. While
//! a connection is open the instance shows `agentConnected: true`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::{interval, interval_at, MissedTickBehavior};

use super::{epoch_millis, frame, open, send, Channel, Envelope, QueryParams, Upgrade};
use crate::domain::status::TaskStatus;
use crate::model::Model;
use crate::monitoring;
use crate::ops::acs::{self as ops, Instance};
use crate::sessions::Listener;
use crate::shapes::{acs, ChannelMessage};
use crate::state::AppState;

const CHANNEL: Channel = Channel {
    action: "ecs:Poll",
    cluster: "clusterArn",
    instance: "containerInstanceArn",
};
/// Tasks sent in one payload at most.
const TASKS_PER_PAYLOAD: usize = 10;
/// Longest version string kept from a connection's query.
const MAX_VERSION: usize = 255;

/// `GET /acs/ws`: verifies the agent and its instance, then upgrades to the ACS session.
pub async fn connect(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    query: QueryParams,
    upgrade: Upgrade,
) -> Response {
    let versions = query.as_ref().ok().and_then(|q| versions(&q.0));
    match open(&state, &CHANNEL, &uri, &headers, query, upgrade).await {
        Ok((_, instance, upgrade)) => upgrade.on_upgrade(move |socket| session(state, instance, versions, socket)),
        Err(refused) => refused.into_response(),
    }
}

/// The instance's `versionInfo` from what the agent tells when it connects: the Go agent gives
/// its versions here (`agentVersion`, `agentHash`, `dockerVersion`), not when it registers.
fn versions(query: &HashMap<String, String>) -> Option<Value> {
    let mut info = serde_json::Map::new();
    for member in ["agentVersion", "agentHash", "dockerVersion"] {
        if let Some(value) = query.get(member).filter(|v| !v.is_empty() && v.len() <= MAX_VERSION) {
            info.insert(member.into(), value.as_str().into());
        }
    }
    (!info.is_empty()).then_some(Value::Object(info))
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The agent closed the connection, or it broke.
    Gone,
    /// The agent stopped answering.
    Silent,
    /// A newer connection of the same instance took over.
    Replaced,
    /// The instance was deregistered.
    Deregistered,
    /// The server is stopping.
    Shutdown,
}

struct Session {
    state: Arc<AppState>,
    instance: Instance,
    listener: Arc<Listener>,
    /// Payloads sent and not acknowledged, by message id: the tasks each carried (id, desired
    /// status).
    outstanding: HashMap<String, Vec<(String, TaskStatus)>>,
    /// When each task was last sent, and with which desired status.
    sent: HashMap<String, (TaskStatus, Instant)>,
    last_heard: Instant,
}

async fn session(state: Arc<AppState>, instance: Instance, versions: Option<Value>, mut socket: WebSocket) {
    let hub = state.channels.clone();
    // Shutdown waits for this until the session has recorded its end.
    let _running = hub.running();
    let transitions = hub.transitions(&instance.arn);
    let listener = {
        let _order = transitions.lock().await;
        let listener = hub.register(&instance.arn);
        if let Err(e) = ops::set_connected(state.store.as_ref(), &instance, hub.process(), versions).await {
            tracing::warn!(instance = %instance.arn, error = %e, "cannot record the agent as connected");
        }
        listener
    };
    tracing::info!(instance = %instance.arn, "agent connected (ACS)");
    metrics::gauge!(monitoring::AGENTS_CONNECTED).increment(1.0);
    let mut session = Session {
        state: state.clone(),
        instance: instance.clone(),
        listener: listener.clone(),
        outstanding: HashMap::new(),
        sent: HashMap::new(),
        last_heard: Instant::now(),
    };
    let end = session.run(&mut socket).await;
    let reason = match end {
        End::Replaced => "ConnectionReplaced: a newer connection of this instance took over",
        End::Deregistered => "InactiveInstance: the container instance was deregistered",
        End::Shutdown => "ServerShutdown: reconnect to continue",
        End::Silent => "ConnectionIdle: no heartbeat acknowledgement",
        End::Gone => "",
    };
    if end != End::Gone {
        let close = Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: reason.into(),
        }));
        let _ = send(&mut socket, close, state.timings.send_timeout).await;
    }
    drop(socket);
    metrics::gauge!(monitoring::AGENTS_CONNECTED).decrement(1.0);
    let _order = transitions.lock().await;
    if hub.unregister(&instance.arn, &listener) {
        if let Err(e) = ops::set_disconnected(state.store.as_ref(), &instance, hub.process()).await {
            tracing::warn!(instance = %instance.arn, error = %e, "cannot record the agent as disconnected");
        }
    }
    tracing::info!(instance = %instance.arn, ?end, "agent disconnected (ACS)");
}

impl Session {
    async fn run(&mut self, socket: &mut WebSocket) -> End {
        let timings = self.state.timings;
        let mut shutdown = self.state.shutdown.clone();
        let mut heartbeat = interval(timings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut manifest = interval_at(tokio::time::Instant::now() + timings.manifest, timings.manifest);
        manifest.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if let Err(end) = self.deliver(socket).await {
            return end;
        }
        loop {
            let step = tokio::select! {
                received = socket.recv() => match received {
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        self.receive(socket, message).await
                    }
                    _ => Err(End::Gone),
                },
                _ = self.listener.wake.notified() => self.woken(socket).await,
                _ = self.listener.replaced.notified() => Err(End::Replaced),
                _ = heartbeat.tick() => self.heartbeat(socket).await,
                _ = manifest.tick() => self.manifest(socket).await,
                _ = shutdown.changed() => Err(End::Shutdown),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn send<M: ChannelMessage>(&self, socket: &mut WebSocket, message: &M) -> Result<(), End> {
        metrics::counter!(monitoring::ACS_SENT, "kind" => M::KIND).increment(1);
        send(socket, frame(Model::acs(), message), self.state.timings.send_timeout)
            .await
            .map_err(|()| End::Gone)
    }

    /// Sends every task the agent has yet to acknowledge, except those sent too recently to
    /// have been acknowledged yet.
    async fn deliver(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        let store = self.state.store.clone();
        let pending = match ops::undelivered(store.as_ref(), &self.instance).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(instance = %self.instance.arn, error = %e, "cannot read the tasks to deliver");
                return Ok(());
            }
        };
        let resend_after = self.state.timings.resend_after;
        let expired: Vec<String> = self
            .sent
            .iter()
            .filter(|(_, (_, at))| at.elapsed() >= resend_after)
            .map(|(id, _)| id.clone())
            .collect();
        self.sent.retain(|_, (_, at)| at.elapsed() < resend_after);
        // Acknowledgements that did not come in time are forgotten: their tasks are sent again.
        let sent = &self.sent;
        self.outstanding.retain(|_, tasks| {
            tasks
                .iter()
                .all(|(id, desired)| sent.get(id).is_some_and(|(d, _)| d == desired))
        });
        let due: Vec<_> = pending
            .into_iter()
            .filter(|d| self.sent.get(&d.id).is_none_or(|(desired, _)| *desired != d.desired))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let resent = due.iter().filter(|d| expired.contains(&d.id)).count();
        metrics::counter!(monitoring::ACS_RESENT).increment(resent as u64);
        let chunks: Vec<_> = due.chunks(TASKS_PER_PAYLOAD).collect();
        let first = match ops::next_seq(store.as_ref(), &self.instance, chunks.len() as i64).await {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(instance = %self.instance.arn, error = %e, "cannot number a payload");
                return Ok(());
            }
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let message_id = uuid::Uuid::new_v4().to_string();
            let message = acs::PayloadMessage {
                cluster_arn: Some(self.instance.cluster_arn.clone()),
                container_instance_arn: Some(self.instance.arn.clone()),
                tasks: Some(chunk.iter().map(|d| acs::Task(d.task.clone().into())).collect()),
                generated_at: Some(epoch_millis()),
                message_id: Some(message_id.clone()),
                seq_num: Some(i32::try_from(first + i as i64).unwrap_or(i32::MAX)),
                timeline: None,
            };
            self.send(socket, &message).await?;
            let now = Instant::now();
            for d in chunk {
                self.sent.insert(d.id.clone(), (d.desired, now));
            }
            let tasks = chunk.iter().map(|d| (d.id.clone(), d.desired)).collect();
            self.outstanding.insert(message_id, tasks);
        }
        Ok(())
    }

    async fn woken(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        if self.listener.instance_changed.swap(false, Ordering::Relaxed) {
            self.check_instance().await?;
        }
        self.deliver(socket).await
    }

    /// Ends the session of a deregistered instance; restores `agentConnected` if it was cleared
    /// while this connection was open (this process's lease was taken for lapsed, say).
    async fn check_instance(&self) -> Result<(), End> {
        let store = self.state.store.clone();
        match ops::instance_state(store.as_ref(), &self.instance).await {
            Ok((false, _)) => Err(End::Deregistered),
            Ok((true, false)) => {
                let transitions = self.state.channels.transitions(&self.instance.arn);
                let _order = transitions.lock().await;
                let process = self.state.channels.process();
                if let Err(e) = ops::set_connected(store.as_ref(), &self.instance, process, None).await {
                    tracing::warn!(instance = %self.instance.arn, error = %e, "cannot record the agent as connected");
                }
                Ok(())
            }
            Ok((true, true)) => Ok(()),
            Err(e) => {
                tracing::warn!(instance = %self.instance.arn, error = %e, "cannot read the instance");
                Ok(())
            }
        }
    }

    async fn heartbeat(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        if self.last_heard.elapsed() > self.state.timings.idle_timeout {
            return Err(End::Silent);
        }
        let message = acs::HeartbeatMessage {
            healthy: Some(true),
            message_id: Some(uuid::Uuid::new_v4().to_string()),
        };
        self.send(socket, &message).await?;
        // Tasks whose acknowledgement did not come in time go out again.
        self.deliver(socket).await
    }

    async fn manifest(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        self.check_instance().await?;
        let store = self.state.store.clone();
        let tasks = match ops::manifest(store.as_ref(), &self.instance).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(instance = %self.instance.arn, error = %e, "cannot read the task manifest");
                return Ok(());
            }
        };
        let timeline = match ops::next_seq(store.as_ref(), &self.instance, 1).await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(instance = %self.instance.arn, error = %e, "cannot number a task manifest");
                return Ok(());
            }
        };
        let message = acs::TaskManifestMessage {
            cluster_arn: Some(self.instance.cluster_arn.clone()),
            container_instance_arn: Some(self.instance.arn.clone()),
            tasks: Some(tasks),
            generated_at: Some(epoch_millis()),
            message_id: Some(uuid::Uuid::new_v4().to_string()),
            timeline: Some(timeline),
        };
        self.send(socket, &message).await
    }

    /// One message from the agent.
    async fn receive(&mut self, socket: &mut WebSocket, message: Message) -> Result<(), End> {
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => return self.bad_request(socket, "Messages are UTF-8 JSON text.").await,
            },
            Message::Close(_) => return Err(End::Gone),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
            return self
                .bad_request(socket, "Messages are JSON objects {\"type\": ..., \"message\": {...}}.")
                .await;
        };
        // What agents send: acknowledgements, stop verification, failure reports.
        const RECEIVED: [&str; 6] = [
            "HeartbeatAckRequest",
            "IAMRoleCredentialsAckRequest",
            "AckRequest",
            "TaskStopVerificationMessage",
            "NackRequest",
            "ErrorMessage",
        ];
        if !RECEIVED.contains(&envelope.kind.as_str()) {
            let unknown = format!("Unknown message type '{}'.", envelope.kind);
            return self.bad_request(socket, &unknown).await;
        }
        let message = match Model::acs().check_received(&envelope.kind, envelope.message) {
            Ok(message) => message,
            Err(e) => {
                return self
                    .bad_request(socket, &format!("{}: {}", envelope.kind, e.message))
                    .await
            }
        };
        match envelope.kind.as_str() {
            "HeartbeatAckRequest" | "IAMRoleCredentialsAckRequest" => Ok(()),
            "AckRequest" => {
                let Some(id) = message["messageId"].as_str() else {
                    return self.bad_request(socket, "AckRequest needs a messageId.").await;
                };
                // Acknowledgements of manifests and heartbeats need nothing more.
                if let Some(acked) = self.outstanding.remove(id) {
                    metrics::counter!(monitoring::ACS_ACKNOWLEDGED).increment(1);
                    let store = self.state.store.clone();
                    if let Err(e) = ops::acknowledge(store.as_ref(), &self.instance, acked).await {
                        tracing::warn!(instance = %self.instance.arn, error = %e, "cannot record an acknowledgement");
                    }
                }
                Ok(())
            }
            "TaskStopVerificationMessage" => self.verify_stops(socket, message).await,
            _ => {
                tracing::info!(instance = %self.instance.arn, kind = %envelope.kind, %message, "agent reported a failure");
                Ok(())
            }
        }
    }

    /// Answers a `TaskStopVerificationMessage` with the candidates ecsd wants stopped.
    async fn verify_stops(&mut self, socket: &mut WebSocket, message: Value) -> Result<(), End> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Verification {
            message_id: Option<String>,
            #[serde(default)]
            stop_candidates: Vec<Candidate>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Candidate {
            task_arn: Option<String>,
        }
        let Ok(verification) = serde_json::from_value::<Verification>(message) else {
            return self
                .bad_request(socket, "TaskStopVerificationMessage is malformed.")
                .await;
        };
        let candidates = verification
            .stop_candidates
            .into_iter()
            .filter_map(|c| c.task_arn)
            .collect();
        let store = self.state.store.clone();
        let confirmed = match ops::confirm_stops(store.as_ref(), &self.instance, candidates).await {
            Ok(confirmed) => confirmed,
            Err(e) => {
                tracing::warn!(instance = %self.instance.arn, error = %e, "cannot verify stop candidates");
                return Ok(());
            }
        };
        let stop_tasks = confirmed
            .into_iter()
            .map(|arn| acs::TaskIdentifier {
                task_arn: Some(arn),
                task_cluster_arn: Some(self.instance.cluster_arn.clone()),
                desired_status: Some(TaskStatus::Stopped.as_str().to_owned()),
            })
            .collect();
        let ack = acs::TaskStopVerificationAck {
            generated_at: Some(epoch_millis()),
            message_id: verification.message_id,
            stop_tasks: Some(stop_tasks),
        };
        self.send(socket, &ack).await
    }

    async fn bad_request(&self, socket: &mut WebSocket, message: &str) -> Result<(), End> {
        tracing::debug!(instance = %self.instance.arn, message, "unusable message from an agent");
        let refusal = acs::BadRequestException {
            message: Some(message.to_owned()),
        };
        self.send(socket, &refusal).await
    }
}
