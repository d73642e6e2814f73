//! The errors ecsd answers with: the small set of exception shapes that clients understand.
//!
//! Every layer's own errors are turned into an `ApiError` where they meet the API (the store's in
//! `ops`, routing failures in `wire`); an `ApiError` knows its wire name (the `__type`) and
//! whether it is the caller's fault (HTTP 400) or ours (`ServerException`, HTTP 500), and for
//! our faults keeps the internal detail that the edge logs with the request id but never sends.

use std::fmt;

/// An exception shape from the ECS model, or one of the protocol-level errors that AWS JSON
/// services share (`UnknownOperationException`, `SerializationException`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    AccessDeniedException,
    AttributeLimitExceededException,
    ClientException,
    ClusterContainsContainerInstancesException,
    ClusterContainsTasksException,
    ClusterNotFoundException,
    ConflictException,
    IncompleteSignatureException,
    InvalidParameterException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    RequestEntityTooLargeException,
    RequestHeaderFieldsTooLargeException,
    RequestTimeoutException,
    ResourceNotFoundException,
    ServerException,
    SerializationException,
    ServiceUnavailableException,
    TargetNotFoundException,
    ThrottlingException,
    UnknownOperationException,
    UnrecognizedClientException,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AccessDeniedException => "AccessDeniedException",
            ErrorCode::AttributeLimitExceededException => "AttributeLimitExceededException",
            ErrorCode::ClientException => "ClientException",
            ErrorCode::ClusterContainsContainerInstancesException => "ClusterContainsContainerInstancesException",
            ErrorCode::ClusterContainsTasksException => "ClusterContainsTasksException",
            ErrorCode::ClusterNotFoundException => "ClusterNotFoundException",
            ErrorCode::ConflictException => "ConflictException",
            ErrorCode::IncompleteSignatureException => "IncompleteSignatureException",
            ErrorCode::InvalidParameterException => "InvalidParameterException",
            ErrorCode::InvalidSignatureException => "InvalidSignatureException",
            ErrorCode::MissingAuthenticationTokenException => "MissingAuthenticationTokenException",
            ErrorCode::RequestEntityTooLargeException => "RequestEntityTooLargeException",
            ErrorCode::RequestHeaderFieldsTooLargeException => "RequestHeaderFieldsTooLargeException",
            ErrorCode::RequestTimeoutException => "RequestTimeoutException",
            ErrorCode::ResourceNotFoundException => "ResourceNotFoundException",
            ErrorCode::ServerException => "ServerException",
            ErrorCode::SerializationException => "SerializationException",
            ErrorCode::ServiceUnavailableException => "ServiceUnavailableException",
            ErrorCode::TargetNotFoundException => "TargetNotFoundException",
            ErrorCode::ThrottlingException => "ThrottlingException",
            ErrorCode::UnknownOperationException => "UnknownOperationException",
            ErrorCode::UnrecognizedClientException => "UnrecognizedClientException",
        }
    }

    /// The HTTP status AWS answers this error with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ServerException => 500,
            ErrorCode::MissingAuthenticationTokenException => 403,
            ErrorCode::RequestTimeoutException => 408,
            ErrorCode::RequestEntityTooLargeException => 413,
            ErrorCode::RequestHeaderFieldsTooLargeException => 431,
            ErrorCode::ServiceUnavailableException => 503,
            _ => 400,
        }
    }
}

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
