//! Reading the event log over HTTP, signed with SigV4 like every API call:
//! `GET /events?after=SEQ&limit=N` answers a JSON page, and `GET /events/stream` the same events
//! as Server-Sent Events (`id:` the sequence number, `data:` the envelope), resumable with
//! `Last-Event-ID`, or from the newest event on with `from=now` (as `tail -f` starts). Both see only the caller's account and region, optionally one cluster
//! (`cluster=`), one kind of event (`detail-type=`) and one resource (`resource=ARN`); a principal limited to some clusters
//! sees the events of those clusters only.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::auth::Caller;
use crate::auth::Principal;
use crate::domain::now;
use crate::error::ApiError;
use crate::gate::{self, Admitted, Signed};
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
    /// `now`: a stream starts after the newest event committed.
    from: Option<String>,
    /// Only the events about this resource (an ARN of `resources`).
    resource: Option<String>,
}

/// The parameters of an event read; a query string that does not parse is the API's
/// `InvalidParameterException` naming what is wrong.
pub struct Params(pub EventsParams);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<EventsParams>::from_request_parts(parts, state).await {
            Ok(Query(params)) => Ok(Params(params)),
            Err(rejection) => {
                let refusal = ApiError::invalid_parameter(format!("Invalid query: {}", rejection.body_text()));
                Err(error_response(&uuid::Uuid::new_v4().to_string(), &refusal))
            }
        }
    }
}

/// A query of the event log, and which clusters' events the caller may see of what it reads.
struct Read {
    query: EventQuery,
    /// Set for a principal limited to some clusters that named none.
    principal: Option<Arc<Principal>>,
    /// When the caller's authority ends (a console session's expiry): a stream ends then.
    until: Option<f64>,
}

impl Read {
    fn visible(&self, event: &StoredEvent) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|p| p.may_use_cluster(&event.cluster))
    }
}

/// Lets a read of the event log through the gate and turns its parameters into a query.
fn authorize(state: &AppState, request: &Request, params: &EventsParams) -> Result<Read, ApiError> {
    let signed = Signed {
        method: request.method().as_str(),
        path_and_query: request.uri().path_and_query().map_or("/", |p| p.as_str()),
        headers: request.headers(),
        body: b"",
    };
    let admitted = gate::admit(state, &signed, Family::Read, READ_EVENTS)?;
    read_for(&admitted, params)
}

/// What a caller admitted to read events reads of what `params` ask.
fn read_for(admitted: &Admitted, params: &EventsParams) -> Result<Read, ApiError> {
    let scope = &admitted.scope;
    let cluster = params
        .cluster
        .as_deref()
        .map(|c| scope.cluster_name(c).unwrap_or(c).to_owned());
    let principal = match &cluster {
        Some(name) => {
            admitted.check_cluster(name)?;
            None
        }
        None if !admitted.sees_every_cluster() => Some(admitted.caller.principal.clone()),
        None => None,
    };
    if let Some(resource) = &params.resource {
        admitted.check_arn(resource)?;
    }
    let query = EventQuery {
        after: params.after.unwrap_or(0).max(0),
        limit: params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
        account: Some(admitted.scope.account.clone()),
        region: Some(admitted.scope.region.clone()),
        cluster,
        detail_type: params.detail_type.clone(),
        resource: params.resource.clone(),
        noticed: false,
    };
    Ok(Read {
        query,
        principal,
        until: None,
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
pub async fn page(State(state): State<Arc<AppState>>, Params(params): Params, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    match authorize(&state, &request, &params) {
        Ok(read) => answer_page(&state, read, &request_id).await,
        Err(e) => error_response(&request_id, &e),
    }
}

/// A page of events for a caller known by other means (the console's session), admitted here
/// exactly as a signed request is.
pub async fn page_for(state: &AppState, caller: Caller, params: &EventsParams) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let read =
        gate::authorize(state, caller, Family::Read, READ_EVENTS).and_then(|admitted| read_for(&admitted, params));
    match read {
        Ok(read) => answer_page(state, read, &request_id).await,
        Err(e) => error_response(&request_id, &e),
    }
}

async fn answer_page(state: &AppState, read: Read, request_id: &str) -> Response {
    let limit = read.query.limit;
    let after = read.query.after;
    let page = match state.store.events(read.query.clone()).await {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(request_id, error = %e, "cannot read the event log");
            return error_response(request_id, &ApiError::from(e));
        }
    };
    // A full page resumes after its last event; a short one after everything committed so far,
    // which skips what the filters left out.
    let last_seq = match page.events.last() {
        Some(event) if page.events.len() == limit => event.seq,
        _ => page.last_seq.max(after),
    };
    let raw: Vec<(i64, Box<RawValue>)> = page
        .events
        .iter()
        .filter(|e| read.visible(e))
        .filter_map(|e| RawValue::from_string(e.body.clone()).ok().map(|r| (e.seq, r)))
        .collect();
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
pub async fn stream(State(state): State<Arc<AppState>>, Params(params): Params, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    match authorize(&state, &request, &params) {
        Ok(read) => follow(state, read, &params, request.headers(), &request_id).await,
        Err(e) => error_response(&request_id, &e),
    }
}

/// The event stream for a caller known by other means (the console's session, which ends at
/// `until`), admitted here exactly as a signed request is.
pub async fn stream_for(
    state: Arc<AppState>,
    caller: Caller,
    until: f64,
    params: &EventsParams,
    headers: &HeaderMap,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let read =
        gate::authorize(&state, caller, Family::Read, READ_EVENTS).and_then(|admitted| read_for(&admitted, params));
    match read {
        Ok(read) => {
            let read = Read {
                until: Some(until),
                ..read
            };
            follow(state, read, params, headers, &request_id).await
        }
        Err(e) => error_response(&request_id, &e),
    }
}

async fn follow(
    state: Arc<AppState>,
    mut read: Read,
    params: &EventsParams,
    headers: &HeaderMap,
    request_id: &str,
) -> Response {
    if let Some(seq) = last_event_id(headers) {
        read.query.after = seq;
    } else if params.from.as_deref() == Some("now") {
        let head = EventQuery {
            after: i64::MAX,
            limit: 1,
            ..EventQuery::default()
        };
        match state.store.events(head).await {
            Ok(page) => read.query.after = page.last_seq,
            Err(e) => {
                tracing::error!(request_id, error = %e, "cannot read the event log");
                return error_response(request_id, &ApiError::from(e));
            }
        }
    } else if let Some(from) = &params.from {
        let refusal = ApiError::invalid_parameter(format!("Invalid 'from' '{from}': the only value is 'now'."));
        return error_response(request_id, &refusal);
    }
    read.query.limit = STREAM_BATCH;
    Sse::new(events(state, read))
        .keep_alive(KeepAlive::new().interval(STREAM_POLL))
        .into_response()
}

struct Cursor {
    state: Arc<AppState>,
    read: Read,
    buffered: VecDeque<StoredEvent>,
    commits: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

fn events(state: Arc<AppState>, read: Read) -> impl Stream<Item = Result<Event, Infallible>> {
    let cursor = Cursor {
        commits: state.store.commits(),
        shutdown: state.shutdown.clone(),
        state,
        read,
        buffered: VecDeque::new(),
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            let left = c.read.until.map(|until| until - now());
            if *c.shutdown.borrow() || left.is_some_and(|left| left <= 0.0) {
                return None;
            }
            if let Some(event) = c.buffered.pop_front() {
                c.read.query.after = event.seq;
                if !c.read.visible(&event) {
                    continue;
                }
                let sse = Event::default().id(event.seq.to_string()).data(event.body);
                return Some((Ok(sse), c));
            }
            // Mark what is seen before reading, so a commit between the read and the wait is
            // not missed.
            c.commits.borrow_and_update();
            match c.state.store.events(c.read.query.clone()).await {
                Ok(page) if !page.events.is_empty() => c.buffered.extend(page.events),
                Ok(_) => {
                    tokio::select! {
                        _ = c.commits.changed() => {}
                        _ = c.shutdown.changed() => {}
                        _ = tokio::time::sleep(left.map_or(STREAM_POLL, |left| STREAM_POLL.min(Duration::from_secs_f64(left)))) => {}
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
