//! The web console under `/console`: its page and scripts, embedded in the binary ([`assets`]);
//! signing in to a server-side session ([`session`]); and the doors the page reads and acts
//! through, each behind the same gate as the API for the session's principal:
//! `POST /console/api/{Operation}` (any ECS operation, answered exactly as `POST /` answers it)
//! and `GET /console/events[/stream]` (the event log of `/events[/stream]`).

mod assets;
pub mod session;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::events_api::{self, Params};
use crate::ops::Operation;
use crate::state::AppState;
use crate::wire::{self, RouteError};

pub use session::DEFAULT_LIFETIME;

/// The console's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(assets::index))
        .route("/console/assets/{*path}", get(assets::file))
        .route(
            "/console/session",
            get(session::show).post(session::sign_in).delete(session::sign_out),
        )
        .route("/console/api/{operation}", post(api))
        .route("/console/events", get(events_page))
        .route("/console/events/stream", get(events_stream))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /console/api/{Operation}`: the operation for the session's principal, with the
/// session's CSRF token.
async fn api(State(state): State<Arc<AppState>>, Path(name): Path<String>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let operation = Operation::from_name(&name);
    let op_name = operation.map_or("-", Operation::name);
    let (parts, body) = request.into_parts();
    let mut principal = None;
    let result = async {
        let body = wire::read_body(body, &state.limits).await?;
        let session = session::current(&state, &parts.headers).await?;
        principal = Some(session.caller.principal.clone());
        session::check_csrf(&session, &parts.headers)?;
        let operation = operation.ok_or_else(|| ApiError::from(RouteError::UnknownOperation(name.clone())))?;
        wire::call(&state, session.caller, operation, &body).await
    }
    .await;
    no_store(wire::finish(
        &request_id,
        started,
        op_name,
        principal.as_deref(),
        result,
    ))
}

async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<session::Session, Response> {
    let refuse = |e: ApiError| wire::error_response(&uuid::Uuid::new_v4().to_string(), &e);
    session::same_origin(headers).map_err(refuse)?;
    session::current(state, headers).await.map_err(refuse)
}

/// `GET /console/events`: a page of the event log, as `GET /events` answers it.
async fn events_page(State(state): State<Arc<AppState>>, Params(params): Params, headers: HeaderMap) -> Response {
    no_store(match signed_in(&state, &headers).await {
        Ok(session) => events_api::page_for(&state, session.caller, &params).await,
        Err(refusal) => refusal,
    })
}

/// `GET /console/events/stream`: the event stream, as `GET /events/stream` sends it.
async fn events_stream(State(state): State<Arc<AppState>>, Params(params): Params, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(session) => {
            let until = session.record.expires_at;
            events_api::stream_for(state, session.caller, until, &params, &headers).await
        }
        Err(refusal) => refusal,
    }
}
