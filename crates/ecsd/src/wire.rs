//! The AWS JSON 1.1 protocol: `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Op>`.
//!
//! Turns bytes into a verified, authorised, checked request for an [`Operation`] and its result
//! back into bytes: body limits, SigV4, routing, throttling, permissions, the model check, the
//! error envelope (`{"__type", "message"}` with `x-amzn-ErrorType`) and the `x-amzn-RequestId`
//! header on every answer. Knows HTTP, not SQL.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::auth::{Caller, Principal};
use crate::error::{ApiError, ErrorCode};
use crate::gate::{self, Signed};
use crate::model::Model;
use crate::monitoring;
use crate::ops::{Ctx, Operation};
use crate::state::{AppState, Limits};

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// How much of an oversized body is read and discarded before the connection is dropped.
pub const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Why a request names no operation this server answers; each has its own answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("Not found: ECS API calls are POST / with an X-Amz-Target header.")]
    NotTheApi,
    #[error("Missing X-Amz-Target header: the operation to call is not named.")]
    MissingTarget,
    #[error("The X-Amz-Target header is not valid text.")]
    UnreadableTarget,
    #[error("X-Amz-Target '{0}' does not name an operation of this service ({TARGET_PREFIX}<Operation>).")]
    ForeignTarget(String),
    #[error("Operation '{0}' is not supported by this server.")]
    UnknownOperation(String),
    #[error("Unsupported Content-Type '{0}': send {CONTENT_TYPE}.")]
    UnsupportedContentType(String),
}

impl From<RouteError> for ApiError {
    fn from(err: RouteError) -> Self {
        match err {
            RouteError::UnsupportedContentType(_) => ApiError::serialization(err.to_string()),
            _ => ApiError::unknown_operation(err.to_string()),
        }
    }
}

/// Finds the operation a request asks for.
pub fn route(headers: &HeaderMap) -> Result<Operation, RouteError> {
    let target = headers
        .get("x-amz-target")
        .ok_or(RouteError::MissingTarget)?
        .to_str()
        .map_err(|_| RouteError::UnreadableTarget)?;
    let name = target
        .strip_prefix(TARGET_PREFIX)
        .ok_or_else(|| RouteError::ForeignTarget(target.to_owned()))?;
    let operation = Operation::from_name(name).ok_or_else(|| RouteError::UnknownOperation(name.to_owned()))?;
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let content_type = content_type.to_str().unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case(CONTENT_TYPE) && !media.eq_ignore_ascii_case("application/json") {
            return Err(RouteError::UnsupportedContentType(content_type.to_owned()));
        }
    }
    Ok(operation)
}

/// Reads a request body within the size and time limits. An oversized body is still read to
/// its end (up to [`DRAIN_LIMIT`]) and thrown away, so that the client, which is still sending,
/// gets to read the 413 instead of a reset connection.
pub async fn read_body(mut body: Body, limits: &Limits) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || body_too_large(limits);
    let read = async {
        let mut kept = Vec::new();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::serialization("The request body could not be read."))?;
            let Ok(data) = frame.into_data() else { continue };
            total += data.len();
            if total <= limits.max_body_bytes {
                kept.extend_from_slice(&data);
            } else if total > DRAIN_LIMIT {
                break;
            }
        }
        if total > limits.max_body_bytes {
            Err(too_large())
        } else {
            Ok(axum::body::Bytes::from(kept))
        }
    };
    tokio::time::timeout(limits.body_timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::RequestTimeoutException,
                "The request body was not received in time.",
            ))
        })
}

pub fn body_too_large(limits: &Limits) -> ApiError {
    ApiError::new(
        ErrorCode::RequestEntityTooLargeException,
        format!("The request body is larger than {} bytes.", limits.max_body_bytes),
    )
}

/// Reads and drops the body of a refused request, up to [`DRAIN_LIMIT`] and within the body
/// timeout, so that a client still sending gets to read the refusal.
pub async fn discard_body(mut body: hyper::body::Incoming, limits: Limits) {
    let drain = async {
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            total += frame.data_ref().map_or(0, |d| d.len());
            if total > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limits.body_timeout, drain).await;
}

/// The target of the one line logged per API call (`ecsd::requests=off` silences it).
pub const REQUEST_LOG: &str = "ecsd::requests";

/// `POST /`: one ECS API call.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // Named for the log even when the call is refused before it is routed.
    let op_name = route(&parts.headers).map_or("-", Operation::name);
    let mut principal = None;
    let result = async {
        let body = read_body(body, &state.limits).await?;
        let signed = Signed {
            method: parts.method.as_str(),
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &parts.headers,
            body: &body,
        };
        let caller = gate::authenticate(&state, &signed)?;
        principal = Some(caller.principal.clone());
        let operation = route(&parts.headers)?;
        call(&state, caller, operation, &body).await
    }
    .await;
    finish(&request_id, started, op_name, principal.as_deref(), result)
}

/// The answer to an API call, whichever door it came in by, counted and logged as one.
pub(crate) fn finish(
    request_id: &str,
    started: Instant,
    op_name: &'static str,
    principal: Option<&Principal>,
    result: Result<String, ApiError>,
) -> Response {
    let (response, code) = match result {
        Ok(body) => (answer(StatusCode::OK, request_id, None, body), None),
        Err(err) => {
            if err.code.http_status() >= 500 {
                tracing::error!(%request_id, operation = op_name, error = %err, "request failed");
            }
            (error_response(request_id, &err), Some(err.code))
        }
    };
    let elapsed = started.elapsed();
    let code_name = code.map_or("OK", ErrorCode::as_str);
    metrics::counter!(monitoring::REQUESTS, "operation" => op_name, "code" => code_name).increment(1);
    metrics::histogram!(monitoring::REQUEST_SECONDS, "operation" => op_name).record(elapsed.as_secs_f64());
    tracing::info!(
        target: REQUEST_LOG,
        %request_id,
        operation = op_name,
        status = response.status().as_u16(),
        code = code.map_or("-", ErrorCode::as_str),
        micros = elapsed.as_micros() as u64,
        principal = principal.map_or("-", Principal::name),
        "request"
    );
    response
}

/// Performs a call for a verified caller: the permission for its action, the model check of its
/// input, the cluster scope of everything it names, then the operation; its answer as JSON text.
pub(crate) async fn call(
    state: &AppState,
    caller: Caller,
    operation: Operation,
    body: &[u8],
) -> Result<String, ApiError> {
    let admitted = gate::authorize(state, caller, operation.family(), &operation.action())?;
    let model = Model::get();
    let input = model.check_input(operation.name(), body)?;
    for cluster in named_clusters(operation, &input) {
        admitted.check_cluster(&cluster)?;
    }
    // A resource named by ARN is in the cluster its ARN names, whichever cluster the request
    // names besides (or none, as with the tagging operations).
    let mut arns = Vec::new();
    referenced_arns(&input, &mut arns);
    for arn in arns {
        admitted.check_arn(arn)?;
    }
    let ctx = Ctx {
        store: state.store.clone(),
        scope: admitted.scope,
        advertise_url: state.advertise_url.clone(),
        principal: admitted.caller.principal,
    };
    let output = operation.call(&ctx, input).await?;
    if cfg!(debug_assertions) {
        let value: Value =
            serde_json::from_str(&output).map_err(|e| ApiError::server(format!("the response is not JSON: {e}")))?;
        model.check_output(operation.name(), &value)?;
    }
    Ok(output)
}

/// The clusters a request names, `default` where it names none but takes one.
fn named_clusters(operation: Operation, input: &Value) -> Vec<String> {
    let model = Model::get();
    let mut out = Vec::new();
    for member in ["cluster", "clusterName"] {
        if model.input_has_member(operation.name(), member) {
            out.push(input[member].as_str().unwrap_or("default").to_owned());
        }
    }
    if model.input_has_member(operation.name(), "clusters") {
        match input["clusters"].as_array() {
            Some(list) => out.extend(list.iter().filter_map(Value::as_str).map(str::to_owned)),
            None => out.push("default".into()),
        }
    }
    out
}

/// The members, at any depth of a request, that name resources (by ARN or otherwise).
const REFERENCE_MEMBERS: [&str; 14] = [
    "resourceArn",
    "service",
    "services",
    "serviceDeploymentArn",
    "serviceDeploymentArns",
    "serviceRevisionArns",
    "task",
    "tasks",
    "taskArn",
    "containerInstance",
    "containerInstances",
    "containerInstanceArn",
    "targetId",
    "attachmentArn",
];

/// Every value of a [`REFERENCE_MEMBERS`] member of `input` (strings, or lists of them).
fn referenced_arns<'a>(input: &'a Value, out: &mut Vec<&'a str>) {
    match input {
        Value::Object(members) => {
            for (name, value) in members {
                if REFERENCE_MEMBERS.contains(&name.as_str()) {
                    match value {
                        Value::String(s) => out.push(s),
                        Value::Array(items) => out.extend(items.iter().filter_map(Value::as_str)),
                        _ => {}
                    }
                }
                referenced_arns(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| referenced_arns(item, out)),
        _ => {}
    }
}

/// The error envelope AWS JSON clients parse.
pub fn error_response(request_id: &str, err: &ApiError) -> Response {
    let status = StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({"__type": err.code.as_str(), "message": err.message});
    for (member, value) in &err.members {
        body[member] = value.clone();
    }
    answer(status, request_id, Some(err.code.as_str()), body.to_string())
}

fn answer(status: StatusCode, request_id: &str, error_type: Option<&str>, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    if let Some(kind) = error_type.and_then(|k| HeaderValue::from_str(k).ok()) {
        headers.insert("x-amzn-errortype", kind);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn routes_a_known_target() {
        let h = headers(&[
            ("x-amz-target", "AmazonEC2ContainerServiceV20141113.ListClusters"),
            ("content-type", "application/x-amz-json-1.1"),
        ]);
        assert_eq!(route(&h).unwrap(), Operation::ListClusters);
    }

    #[test]
    fn each_routing_failure_has_its_own_answer() {
        let route = |h: &HeaderMap| route(h).map_err(ApiError::from);
        let missing = route(&headers(&[])).unwrap_err();
        assert_eq!(missing.code, ErrorCode::UnknownOperationException);
        assert!(missing.message.contains("Missing X-Amz-Target"));

        let foreign = route(&headers(&[("x-amz-target", "DynamoDB_20120810.ListTables")])).unwrap_err();
        assert_eq!(foreign.code, ErrorCode::UnknownOperationException);
        assert!(foreign.message.contains("does not name an operation of this service"));

        let unknown = route(&headers(&[(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.FlyToMoon",
        )]))
        .unwrap_err();
        assert_eq!(unknown.code, ErrorCode::UnknownOperationException);
        assert!(unknown.message.contains("FlyToMoon"));

        let media = route(&headers(&[
            ("x-amz-target", "AmazonEC2ContainerServiceV20141113.ListClusters"),
            ("content-type", "text/plain"),
        ]))
        .unwrap_err();
        assert_eq!(media.code, ErrorCode::SerializationException);
    }

    #[test]
    fn errors_carry_the_envelope_and_headers() {
        let r = error_response("rid", &ApiError::cluster_not_found());
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()["x-amzn-errortype"], "ClusterNotFoundException");
        assert_eq!(r.headers()["x-amzn-requestid"], "rid");
        assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
        let r = error_response("rid", &ApiError::server("boom"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn resources_named_anywhere_in_a_request() {
        let input = json!({
            "resourceArn": "arn:r",
            "tasks": ["arn:t1", "arn:t2"],
            "attributes": [{"name": "a", "targetId": "arn:i"}],
            "attachments": [{"attachmentArn": "arn:a", "status": "ATTACHED"}],
            "overrides": {"containerOverrides": [{"name": "not-a-reference"}]}
        });
        let mut found = Vec::new();
        referenced_arns(&input, &mut found);
        found.sort_unstable();
        assert_eq!(found, ["arn:a", "arn:i", "arn:r", "arn:t1", "arn:t2"]);
    }

    #[test]
    fn the_clusters_a_request_names() {
        let named = |op, v: Value| named_clusters(op, &v);
        assert_eq!(named(Operation::RunTask, json!({"cluster": "prod"})), vec!["prod"]);
        assert_eq!(named(Operation::RunTask, json!({})), vec!["default"]);
        assert_eq!(named(Operation::CreateCluster, json!({"clusterName": "x"})), vec!["x"]);
        assert_eq!(
            named(Operation::DescribeClusters, json!({"clusters": ["a", "b"]})),
            vec!["a", "b"]
        );
        assert_eq!(named(Operation::DescribeClusters, json!({})), vec!["default"]);
        assert!(named(Operation::ListClusters, json!({})).is_empty());
        assert!(named(Operation::RegisterTaskDefinition, json!({})).is_empty());
    }
}
