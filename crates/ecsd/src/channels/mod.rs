//! The agent channels: the websockets an ECS agent keeps open to its control plane, ACS
//! (`GET /acs/ws`, tasks pushed to the agent) and TCS (`GET /tcs/ws`, telemetry from it).
//! DiscoverPollEndpoint points agents at them.
//!
//! Both are opened with a SigV4-signed upgrade, verified like any API request (same
//! credentials, regions, throttle and permissions: `ecs:Poll` and `ecs:StartTelemetrySession`).
//! Messages are text frames `{"type": "<Shape>", "message": {...}}` with the member names of the
//! ACS and TCS models. A refused upgrade is answered with an error message of that form, which
//! the agent decodes. This module knows websockets, not SQL: what a message does to stored
//! state is in [`crate::ops::acs`] and [`crate::ops::tcs`].

pub mod acs;
pub mod tcs;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::Scope;
use crate::error::{ApiError, ErrorCode};
use crate::gate::{self, Signed};
use crate::model::Model;
use crate::ops::acs::{self as ops, Instance, Refusal};
use crate::shapes::ChannelMessage;
use crate::state::AppState;
use crate::throttle::Family;

/// Largest message an agent may send on a channel: ACS messages are small; TCS caps a metrics
/// message at 1 MiB plus its signed header block.
const MAX_AGENT_MESSAGE: usize = 2 * 1024 * 1024;
/// Read and write buffers of a channel. Agent messages are mostly small, and a server holds a
/// channel per agent: the websocket default (128 KiB) would cost 128 MB for 1,000 agents.
pub const BUFFER_SIZE: usize = 8 * 1024;

/// A message as both channels frame it.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Value,
}

/// A message of `model` (ACS or TCS) as a text frame. Debug builds check it against its shape in
/// the model first, as they check API responses: a message an agent cannot decode is our bug.
fn frame<M: ChannelMessage>(model: &Model, message: &M) -> Message {
    let kind = M::KIND;
    let message = serde_json::to_value(message).unwrap_or_default();
    if cfg!(debug_assertions) {
        if let Err(e) = model.check_sent(kind, &message) {
            panic!("ecsd sent a {kind} that its model does not describe: {}", e.message);
        }
    }
    Message::Text(json!({"type": kind, "message": message}).to_string().into())
}

/// Milliseconds since the Unix epoch (`generatedAt`).
fn epoch_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends one message, or gives up on an agent that does not take it in time.
async fn send(socket: &mut WebSocket, message: Message, timeout: Duration) -> Result<(), ()> {
    match tokio::time::timeout(timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A refused upgrade: the HTTP status and the model's exception, as the agent decodes it.
struct Refused {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Refused {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Refused::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// A signature, permission or throttling refusal from the API's own checks.
    fn from_api(err: ApiError) -> Self {
        match err.code {
            ErrorCode::ThrottlingException => {
                Refused::new(StatusCode::TOO_MANY_REQUESTS, "ServerException", err.message)
            }
            code if code.http_status() >= 500 => {
                tracing::error!(error = %err, "channel refused by a server fault");
                Refused::new(StatusCode::INTERNAL_SERVER_ERROR, "ServerException", err.message)
            }
            code => Refused::new(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!("{}: {}", code.as_str(), err.message),
            ),
        }
    }

    fn from_refusal(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidCluster(m) => Refused::new(StatusCode::BAD_REQUEST, "InvalidClusterException", m),
            Refusal::InvalidInstance(m) => Refused::new(StatusCode::BAD_REQUEST, "InvalidInstanceException", m),
            Refusal::InactiveInstance(m) => Refused::new(StatusCode::BAD_REQUEST, "InactiveInstanceException", m),
            Refusal::Failed(e) => Refused::from_api(e),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        tracing::warn!(status = self.status.as_u16(), kind = self.kind, message = %self.message, "agent channel refused");
        let body = json!({"type": self.kind, "message": {"message": self.message}});
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// What a channel's upgrade handler receives besides the state, URI and headers.
type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;
type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;

/// How a channel is opened: the permission it takes and the query parameters that name the
/// cluster and the container instance.
struct Channel {
    action: &'static str,
    cluster: &'static str,
    instance: &'static str,
}

/// Verifies a channel's upgrade request like an API call (signature, region, throttle, the
/// channel's permission and the cluster's) and finds the instance it is for.
async fn open(
    state: &AppState,
    channel: &Channel,
    uri: &Uri,
    headers: &HeaderMap,
    query: QueryParams,
    upgrade: Upgrade,
) -> Result<(Scope, Instance, WebSocketUpgrade), Refused> {
    let signed = Signed {
        method: "GET",
        path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()),
        headers,
        body: b"",
    };
    let admitted = gate::admit(state, &signed, Family::Agent, channel.action).map_err(Refused::from_api)?;
    let query = query.map_err(|e| Refused::bad_request(e.body_text()))?.0;
    let required = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Refused::bad_request(format!("Missing required query parameter '{name}'.")))
    };
    let (cluster, instance) = (required(channel.cluster)?, required(channel.instance)?);
    admitted.check_cluster(cluster).map_err(Refused::from_api)?;
    admitted.check_arn(instance).map_err(Refused::from_api)?;
    let scope = admitted.scope;
    let instance = ops::open(state.store.as_ref(), &scope, cluster, instance)
        .await
        .map_err(Refused::from_refusal)?;
    let upgrade =
        upgrade.map_err(|e| Refused::bad_request(format!("Expected a websocket upgrade: {}", e.body_text())))?;
    let upgrade = upgrade
        .max_message_size(MAX_AGENT_MESSAGE)
        .read_buffer_size(BUFFER_SIZE)
        .write_buffer_size(BUFFER_SIZE);
    Ok((scope, instance, upgrade))
}
