//! TCS: the telemetry channel (`GET /tcs/ws?cluster=…&containerInstance=…`).
//!
//! Each agent message is a SigV4-signed HTTP header block, a blank line, then the JSON
//! envelope; the block signs a GET of the channel's own URL with the envelope as its body, and
//! is verified like any request. ecsd acknowledges `PublishMetricsRequest`,
//! `PublishHealthRequest` and `PublishInstanceStatusRequest` and sends heartbeats. Container
//! health becomes the containers' and tasks' `healthStatus`; instance status becomes the
//! instance's `healthStatus`. Metrics are acknowledged and not kept.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::{interval, MissedTickBehavior};

use super::{frame, open, send, Channel, Envelope, QueryParams, Refused, Upgrade};
use crate::auth::sigv4::{self, SignedRequest};
use crate::domain::health::InstanceStatus;
use crate::domain::Scope;
use crate::gate::SIGNING_NAME;
use crate::model::Model;
use crate::ops::acs::Instance;
use crate::ops::tcs::{self as ops, TaskHealth};
use crate::shapes::tcs;
use crate::state::AppState;

const CHANNEL: Channel = Channel {
    action: "ecs:StartTelemetrySession",
    cluster: "cluster",
    instance: "containerInstance",
};

/// `GET /tcs/ws`: verifies the agent and its instance, then upgrades to the TCS session.
pub async fn connect(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    query: QueryParams,
    upgrade: Upgrade,
) -> Response {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    match open(&state, &CHANNEL, &uri, &headers, query, upgrade).await {
        Ok((scope, instance, upgrade)) => upgrade.on_upgrade(move |socket| {
            let telemetry = Telemetry {
                state,
                scope,
                instance,
                path_and_query,
            };
            telemetry.run(socket)
        }),
        // TCS has no cluster or instance exceptions; its model has this one.
        Err(refused) if refused.kind.ends_with("ClusterException") || refused.kind.ends_with("InstanceException") => {
            Refused::new(refused.status, "ResourceValidationException", refused.message).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

struct Telemetry {
    state: Arc<AppState>,
    scope: Scope,
    instance: Instance,
    /// What every message's signature covers, with its body.
    path_and_query: String,
}

/// A message the agent sent, with what it needs answered.
enum Reply {
    Ack(Ack),
    Error(Refusal, String),
}

/// What a published message is acknowledged with.
enum Ack {
    Health,
    InstanceStatus,
    Metric,
}

/// Why a published message is refused.
#[derive(Debug)]
enum Refusal {
    BadRequest,
    InvalidParameter,
    Server,
}

impl Telemetry {
    async fn run(self, mut socket: WebSocket) {
        let timings = self.state.timings;
        let mut shutdown = self.state.shutdown.clone();
        let mut heartbeat = interval(timings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        tracing::debug!(instance = %self.instance.arn, "telemetry session opened");
        loop {
            let outgoing = tokio::select! {
                received = socket.recv() => match received {
                    Some(Ok(Message::Text(text))) => {
                        last_heard = Instant::now();
                        self.receive(text.as_bytes()).await
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        last_heard = Instant::now();
                        self.receive(&bytes).await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        last_heard = Instant::now();
                        continue;
                    }
                    _ => break,
                },
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > timings.idle_timeout {
                        break;
                    }
                    frame(Model::tcs(), &tcs::HeartbeatMessage { healthy: Some(true) })
                }
                _ = shutdown.changed() => break,
            };
            if send(&mut socket, outgoing, timings.send_timeout).await.is_err() {
                break;
            }
        }
        tracing::debug!(instance = %self.instance.arn, "telemetry session closed");
    }

    /// Verifies, records and answers one message.
    async fn receive(&self, data: &[u8]) -> Message {
        let reply = match self.handle(data).await {
            Ok(reply) | Err(reply) => reply,
        };
        match reply {
            Reply::Ack(ack) => {
                let message = Some(String::new());
                match ack {
                    Ack::Health => frame(Model::tcs(), &tcs::AckPublishHealth { message }),
                    Ack::InstanceStatus => frame(Model::tcs(), &tcs::AckPublishInstanceStatus { message }),
                    Ack::Metric => frame(Model::tcs(), &tcs::AckPublishMetric { message }),
                }
            }
            Reply::Error(why, message) => {
                tracing::debug!(instance = %self.instance.arn, ?why, %message, "telemetry message refused");
                let message = Some(message);
                match why {
                    Refusal::BadRequest => frame(Model::tcs(), &tcs::BadRequestException { message }),
                    Refusal::InvalidParameter => frame(Model::tcs(), &tcs::InvalidParameterException { message }),
                    Refusal::Server => frame(Model::tcs(), &tcs::ServerException { message }),
                }
            }
        }
    }

    async fn handle(&self, data: &[u8]) -> Result<Reply, Reply> {
        let bad = |m: &str| Reply::Error(Refusal::BadRequest, m.to_owned());
        let split = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("A message is a signed header block, a blank line, then the JSON envelope."))?;
        let (head, body) = (&data[..split], &data[split + 4..]);
        let headers = parse_headers(head).ok_or_else(|| bad("The message's header block is malformed."))?;
        let request = SignedRequest {
            method: "GET",
            path_and_query: &self.path_and_query,
            headers: &headers,
            body,
        };
        let caller = sigv4::verify(&self.state.keys, SIGNING_NAME, &request, SystemTime::now())
            .map_err(|e| Reply::Error(Refusal::BadRequest, format!("{}: {}", e.code.as_str(), e.message)))?;
        if caller.principal.account_id() != self.scope.account || caller.region != self.scope.region {
            return Err(bad(
                "The message is signed for another account or region than the connection.",
            ));
        }
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|_| bad("The message body is not an envelope."))?;
        const RECEIVED: [&str; 3] = [
            "PublishMetricsRequest",
            "PublishHealthRequest",
            "PublishInstanceStatusRequest",
        ];
        if !RECEIVED.contains(&envelope.kind.as_str()) {
            return Err(bad(&format!("Unknown message type '{}'.", envelope.kind)));
        }
        let message = Model::tcs()
            .check_received(&envelope.kind, envelope.message)
            .map_err(|e| Reply::Error(Refusal::InvalidParameter, e.message))?;
        let invalid = |e: serde_json::Error| Reply::Error(Refusal::InvalidParameter, e.to_string());
        let store = self.state.store.clone();
        let failed = |e: crate::error::ApiError| Reply::Error(Refusal::Server, e.message);
        match envelope.kind.as_str() {
            "PublishHealthRequest" => {
                #[derive(Deserialize)]
                struct Health {
                    #[serde(default)]
                    tasks: Vec<TaskHealth>,
                }
                let health: Health = serde_json::from_value(message).map_err(invalid)?;
                ops::record_health(store.as_ref(), &self.instance, health.tasks)
                    .await
                    .map_err(failed)?;
                Ok(Reply::Ack(Ack::Health))
            }
            "PublishInstanceStatusRequest" => {
                #[derive(Deserialize)]
                struct Statuses {
                    #[serde(default)]
                    statuses: Vec<InstanceStatus>,
                }
                let statuses: Statuses = serde_json::from_value(message).map_err(invalid)?;
                ops::record_instance_status(store.as_ref(), &self.instance, statuses.statuses)
                    .await
                    .map_err(failed)?;
                Ok(Reply::Ack(Ack::InstanceStatus))
            }
            _ => Ok(Reply::Ack(Ack::Metric)),
        }
    }
}

/// `Name: value` lines separated by CRLF.
fn parse_headers(head: &[u8]) -> Option<HeaderMap> {
    let text = std::str::from_utf8(head).ok()?;
    let mut headers = HeaderMap::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
        let value = HeaderValue::from_str(value.trim()).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_header_block() {
        let headers = parse_headers(b"Authorization: AWS4 x\r\nHost: h:1\r\nX-Amz-Date: 20260101T000000Z").unwrap();
        assert_eq!(headers["host"], "h:1");
        assert_eq!(headers["x-amz-date"], "20260101T000000Z");
        assert!(parse_headers(b"no colon here").is_none());
    }
}
