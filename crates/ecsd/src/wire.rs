//! The AWS JSON 1.1 protocol: `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Op>`.
//!
//! Turns bytes into a checked request for an [`Operation`] and its result back into bytes:
//! routing, the model check, the error envelope (`{"__type", "message"}` with
//! `x-amzn-ErrorType`) and the `x-amzn-RequestId` header on every answer. Knows HTTP, not SQL.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::domain::Scope;
use crate::error::ApiError;
use crate::model::Model;
use crate::ops::{Ctx, Operation};
use crate::store::Store;

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// What every request is served with.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub scope: Scope,
}

/// Finds the operation a request asks for. Each way of getting this wrong has its own answer.
pub fn route(headers: &HeaderMap) -> Result<Operation, ApiError> {
    let target = headers
        .get("x-amz-target")
        .ok_or_else(|| {
            ApiError::unknown_operation(
                "Missing X-Amz-Target header: the operation to call is not named.",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::unknown_operation("The X-Amz-Target header is not valid text."))?;
    let name = target.strip_prefix(TARGET_PREFIX).ok_or_else(|| {
        ApiError::unknown_operation(format!(
            "X-Amz-Target '{target}' does not name an operation of this service ({TARGET_PREFIX}<Operation>)."
        ))
    })?;
    let operation = Operation::from_name(name).ok_or_else(|| {
        ApiError::unknown_operation(format!(
            "Operation '{name}' is not supported by this server."
        ))
    })?;
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let content_type = content_type.to_str().unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case(CONTENT_TYPE)
            && !media.eq_ignore_ascii_case("application/json")
        {
            return Err(ApiError::serialization(format!(
                "Unsupported Content-Type '{content_type}': send {CONTENT_TYPE}."
            )));
        }
    }
    Ok(operation)
}

/// `POST /`: one ECS API call.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let operation = route(&headers);
    let op_name = operation.as_ref().map(|o| o.name()).unwrap_or("-");
    let result = match operation {
        Ok(operation) => call(&state, operation, &body).await,
        Err(e) => Err(e),
    };
    let response = match result {
        Ok(value) => answer(StatusCode::OK, &request_id, None, &value),
        Err(err) => {
            if err.code.http_status() >= 500 {
                tracing::error!(%request_id, operation = op_name, error = %err, "request failed");
            } else {
                tracing::debug!(%request_id, operation = op_name, error = %err, "request refused");
            }
            error_response(&request_id, &err)
        }
    };
    tracing::info!(
        %request_id,
        operation = op_name,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "handled"
    );
    response
}

async fn call(state: &AppState, operation: Operation, body: &[u8]) -> Result<Value, ApiError> {
    let model = Model::get();
    let input = model.check_input(operation.name(), body)?;
    let ctx = Ctx {
        store: state.store.clone(),
        scope: state.scope.clone(),
    };
    let output = operation.call(&ctx, input).await?;
    if cfg!(debug_assertions) {
        model.check_output(operation.name(), &output)?;
    }
    Ok(output)
}

/// The error envelope AWS JSON clients parse.
pub fn error_response(request_id: &str, err: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"__type": err.code.as_str(), "message": err.message});
    answer(status, request_id, Some(err.code.as_str()), &body)
}

fn answer(
    status: StatusCode,
    request_id: &str,
    error_type: Option<&str>,
    body: &Value,
) -> Response {
    let mut response = (status, body.to_string()).into_response();
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
    use crate::error::ErrorCode;

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
            (
                "x-amz-target",
                "AmazonEC2ContainerServiceV20141113.ListClusters",
            ),
            ("content-type", "application/x-amz-json-1.1"),
        ]);
        assert_eq!(route(&h).unwrap(), Operation::ListClusters);
    }

    #[test]
    fn each_routing_failure_has_its_own_answer() {
        let missing = route(&headers(&[])).unwrap_err();
        assert_eq!(missing.code, ErrorCode::UnknownOperationException);
        assert!(missing.message.contains("Missing X-Amz-Target"));

        let foreign = route(&headers(&[(
            "x-amz-target",
            "DynamoDB_20120810.ListTables",
        )]))
        .unwrap_err();
        assert_eq!(foreign.code, ErrorCode::UnknownOperationException);
        assert!(foreign
            .message
            .contains("does not name an operation of this service"));

        let unknown = route(&headers(&[(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.FlyToMoon",
        )]))
        .unwrap_err();
        assert_eq!(unknown.code, ErrorCode::UnknownOperationException);
        assert!(unknown.message.contains("FlyToMoon"));

        let media = route(&headers(&[
            (
                "x-amz-target",
                "AmazonEC2ContainerServiceV20141113.ListClusters",
            ),
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
}
