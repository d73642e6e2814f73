//! The errors ecsd answers with: the small set of exception shapes that clients understand.
//!
//! Every layer's own errors are turned into an `ApiError` where they meet the API (the store's in
//! `ops`, routing failures in `wire`); an `ApiError` knows its wire name (the `__type`) and
//! whether it is the caller's fault (HTTP 400) or ours (`ServerException`, HTTP 500), and for
//! our faults keeps the internal detail that the edge logs with the request id but never sends.

use std::fmt;

/// The error codes are generated from the model's exception shapes, with the protocol errors
/// that AWS JSON services share (`UnknownOperationException`, `SerializationException`, ...).
pub use crate::shapes::ErrorCode;

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the client will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Members of the exception shape beyond its message (ConflictException's `resourceIds`).
    pub members: serde_json::Map<String, serde_json::Value>,
    /// What went wrong inside, for the logs only (a store failure, say).
    pub detail: Option<String>,
}

/// As logs show it: what the client sees, then the internal detail.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        match &self.detail {
            Some(detail) => write!(f, " ({detail})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            members: serde_json::Map::new(),
            detail: None,
        }
    }

    /// Our fault, whose `detail` stays in our logs: the client learns only that it may retry.
    pub fn internal(detail: impl fmt::Display) -> Self {
        let mut err = Self::server("The server could not complete the request; it is safe to retry.");
        err.detail = Some(detail.to_string());
        err
    }

    /// The request repeats an idempotency token of an earlier, different request that made
    /// the resources `resource_ids`.
    pub fn conflict(message: impl Into<String>, resource_ids: Vec<String>) -> Self {
        let mut err = Self::new(ErrorCode::ConflictException, message);
        err.members.insert("resourceIds".into(), resource_ids.into());
        err
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterException, message)
    }

    pub fn client(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ClientException, message)
    }

    pub fn cluster_not_found() -> Self {
        Self::new(ErrorCode::ClusterNotFoundException, "Cluster not found.")
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::SerializationException, message)
    }

    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnknownOperationException, message)
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerException, message)
    }
}
