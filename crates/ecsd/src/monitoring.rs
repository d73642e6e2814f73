//! What the server measures, in Prometheus' text format on `GET /metrics`: API calls by
//! operation and error code with their latency, store commits (latency, group size), connected
//! agents, ACS messages sent, acknowledged and re-sent, events appended, webhook backlogs and
//! throttled calls. The names are here, in one place; the measuring is done where the thing
//! happens, through the `metrics` facade.
//!
//! `/metrics` answers callers on a loopback address without a signature; any other caller signs
//! the request (SigV4, as API calls) as a principal allowed `ecsd:ReadMetrics`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::gate::{self, Signed};
use crate::state::AppState;
use crate::throttle::Family;
use crate::wire::error_response;

/// The action that permits reading `/metrics` from other than a loopback address.
pub const READ_METRICS: &str = "ecsd:ReadMetrics";

pub const REQUESTS: &str = "ecsd_requests_total";
pub const REQUEST_SECONDS: &str = "ecsd_request_duration_seconds";
pub const THROTTLED: &str = "ecsd_throttled_requests_total";
pub const COMMIT_SECONDS: &str = "ecsd_store_commit_duration_seconds";
pub const COMMIT_GROUP: &str = "ecsd_store_commit_group_size";
pub const AGENTS_CONNECTED: &str = "ecsd_agents_connected";
pub const ACS_SENT: &str = "ecsd_acs_messages_sent_total";
pub const ACS_ACKNOWLEDGED: &str = "ecsd_acs_messages_acknowledged_total";
pub const ACS_RESENT: &str = "ecsd_acs_tasks_resent_total";
pub const EVENTS_APPENDED: &str = "ecsd_events_appended_total";
pub const WEBHOOK_BACKLOG: &str = "ecsd_webhook_backlog_events";

/// Seconds buckets for latencies: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process's recorder, installed on first use: every server of the process reports to it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(COMMIT_GROUP.into()),
                    GROUP_BUCKETS,
                )
            })
            .expect("the buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (a test harness's) keeps its place; this one then
        // renders nothing, which is all that is lost.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "API calls answered, by operation and error code (OK when none)"
    );
    metrics::describe_histogram!(REQUEST_SECONDS, metrics::Unit::Seconds, "Time to answer an API call");
    metrics::describe_counter!(THROTTLED, "Calls refused by throttling, by operation family");
    metrics::describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time to commit a write transaction (a group, for SQLite)"
    );
    metrics::describe_histogram!(COMMIT_GROUP, "Writes committed together by one commit");
    metrics::describe_gauge!(AGENTS_CONNECTED, "Agents connected to this process over ACS");
    metrics::describe_counter!(ACS_SENT, "ACS messages sent to agents, by kind");
    metrics::describe_counter!(ACS_ACKNOWLEDGED, "ACS payloads agents acknowledged");
    metrics::describe_counter!(
        ACS_RESENT,
        "Tasks sent again because their payload was not acknowledged in time"
    );
    metrics::describe_counter!(EVENTS_APPENDED, "Events appended to the event log, by detail type");
    metrics::describe_gauge!(WEBHOOK_BACKLOG, "Events committed but not yet delivered, by webhook");
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let peer = request.extensions().get::<SocketAddr>().copied();
    if !peer.is_some_and(|p| p.ip().is_loopback()) {
        let signed = Signed {
            method: request.method().as_str(),
            path_and_query: request.uri().path_and_query().map_or("/", |p| p.as_str()),
            headers: request.headers(),
            body: b"",
        };
        if let Err(e) = gate::admit(&state, &signed, Family::Read, READ_METRICS) {
            return error_response(&uuid::Uuid::new_v4().to_string(), &e);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle().render(),
    )
        .into_response()
}
