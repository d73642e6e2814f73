//! Reading the event log over HTTP, signed with SigV4 like every API call:
//! `GET /events?after=SEQ&limit=N` answers a JSON page, and `GET /events/stream` the same events
//! as Server-Sent Events (`id:` the sequence number, `data:` the envelope), resumable with
//! `Last-Event-ID`. Both see only the caller's account and region, optionally one cluster
//! (`cluster=`) and one kind of event (`detail-type=`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::gate::{self, Signed};
use crate::state::AppState;
use crate::store::{EventQuery, StoredEvent};
use crate::throttle::Family;
use crate::wire::error_response;

/// The action that permits reading events (part of the operator and admin permission sets).
pub const READ_EVENTS: &str = "ecs:ReadEvents";
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
const STREAM_BATCH: usize = 500;
/// How long a stream waits for a commit before it looks again (and sends a keep-alive).
const STREAM_POLL: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub struct EventsParams {
    after: Option<i64>,
    limit: Option<usize>,
    cluster: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
}

/// Lets a read of the event log through the gate and turns its parameters into a query.
fn authorize(state: &AppState, request: &Request, params: &EventsParams) -> Result<EventQuery, ApiError> {
    let signed = Signed {
        method: request.method().as_str(),
        path_and_query: request.uri().path_and_query().map_or("/", |p| p.as_str()),
        headers: request.headers(),
        body: b"",
    };
    let admitted = gate::admit(state, &signed, Family::Read, READ_EVENTS)?;
    let scope = &admitted.scope;
    let cluster = params
        .cluster
        .as_deref()
        .map(|c| scope.cluster_name(c).unwrap_or(c).to_owned());
    match &cluster {
        Some(name) => admitted.check_cluster(name)?,
        None if !admitted.sees_every_cluster() => return Err(admitted.denied("every cluster")),
        None => {}
    }
    Ok(EventQuery {
        after: params.after.unwrap_or(0).max(0),
        limit: params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
        account: Some(admitted.scope.account.clone()),
        region: Some(admitted.scope.region.clone()),
        cluster,
        detail_type: params.detail_type.clone(),
        noticed: false,
    })
}

#[derive(serde::Serialize)]
struct Page<'a> {
    events: Vec<Entry<'a>>,
    #[serde(rename = "lastSeq")]
    last_seq: i64,
}

#[derive(serde::Serialize)]
struct Entry<'a> {
    seq: i64,
    event: &'a RawValue,
}

/// `GET /events`: one page of events after `after`. `lastSeq` is where the next page starts.
pub async fn page(
    State(state): State<Arc<AppState>>,
    Query(params): Query<EventsParams>,
    request: Request,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let query = match authorize(&state, &request, &params) {
        Ok(q) => q,
        Err(e) => return error_response(&request_id, &e),
    };
    let limit = query.limit;
    let after = query.after;
    let page = match state.store.events(query).await {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(%request_id, error = %e, "cannot read the event log");
            return error_response(&request_id, &ApiError::from(e));
        }
    };
    let raw: Vec<(i64, Box<RawValue>)> = page
        .events
        .iter()
        .filter_map(|e| RawValue::from_string(e.body.clone()).ok().map(|r| (e.seq, r)))
        .collect();
    // A full page resumes after its last event; a short one after everything committed so far,
    // which skips what the filters left out.
    let last_seq = match raw.last() {
        Some((seq, _)) if raw.len() == limit => *seq,
        _ => page.last_seq.max(after),
    };
    let body = Page {
        events: raw.iter().map(|(seq, event)| Entry { seq: *seq, event }).collect(),
        last_seq,
    };
    axum::Json(body).into_response()
}

fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers.get("last-event-id")?.to_str().ok()?.trim().parse().ok()
}

/// `GET /events/stream`: every event after `Last-Event-ID` (or `after`), then each new one as it
/// is committed, until the client or the server goes away.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Query(params): Query<EventsParams>,
    request: Request,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut query = match authorize(&state, &request, &params) {
        Ok(q) => q,
        Err(e) => return error_response(&request_id, &e),
    };
    if let Some(seq) = last_event_id(request.headers()) {
        query.after = seq;
    }
    query.limit = STREAM_BATCH;
    Sse::new(events(state, query))
        .keep_alive(KeepAlive::new().interval(STREAM_POLL))
        .into_response()
}

struct Cursor {
    state: Arc<AppState>,
    query: EventQuery,
    buffered: VecDeque<StoredEvent>,
    commits: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

fn events(state: Arc<AppState>, query: EventQuery) -> impl Stream<Item = Result<Event, Infallible>> {
    let cursor = Cursor {
        commits: state.store.commits(),
        shutdown: state.shutdown.clone(),
        state,
        query,
        buffered: VecDeque::new(),
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if *c.shutdown.borrow() {
                return None;
            }
            if let Some(event) = c.buffered.pop_front() {
                c.query.after = event.seq;
                let sse = Event::default().id(event.seq.to_string()).data(event.body);
                return Some((Ok(sse), c));
            }
            // Mark what is seen before reading, so a commit between the read and the wait is
            // not missed.
            c.commits.borrow_and_update();
            match c.state.store.events(c.query.clone()).await {
                Ok(page) if !page.events.is_empty() => c.buffered.extend(page.events),
                Ok(_) => {
                    tokio::select! {
                        _ = c.commits.changed() => {}
                        _ = c.shutdown.changed() => {}
                        _ = tokio::time::sleep(STREAM_POLL) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}
