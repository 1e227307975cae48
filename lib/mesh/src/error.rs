//! In-process halves of the error policy (see [`mosaic_api::error`]).

use mosaic_api::{ApiError, ErrorCode};

/// What a handler returns on failure: a client-facing [`ApiError`], or an unexpected failure
/// whose cause is logged (with the trace id) and answered as `internal`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An error the caller can act on.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Anything else; never shown to the caller.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Result of a handler.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl From<CallError> for ServiceError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Api(e) => ServiceError::Api(e),
            CallError::NoResponders => {
                ServiceError::Api(ApiError::new(ErrorCode::Unavailable, "a required service is not running"))
            }
            CallError::Timeout => {
                ServiceError::Api(ApiError::new(ErrorCode::Timeout, "a required service did not answer in time"))
            }
            other => ServiceError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl ServiceError {
    /// Shorthand for an [`ApiError`] with a code and detail.
    pub fn api(code: ErrorCode, detail: impl Into<String>) -> Self {
        ServiceError::Api(ApiError::new(code, detail))
    }
}

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// No instance of the service is running.
    #[error("no service instance is listening")]
    NoResponders,
    /// The deadline passed before a reply came.
    #[error("the request timed out")]
    Timeout,
    /// The request could not be sent.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The reply was not what the endpoint's type promises.
    #[error("undecodable reply: {0}")]
    Decode(#[from] serde_json::Error),
    /// The calling component did not declare the call (debug builds; see
    /// [`crate::Mesh::scoped`]).
    #[error("{0}")]
    Undeclared(String),
}

impl CallError {
    /// The client-facing form of this failure (for gateways).
    pub fn to_api_error(&self) -> ApiError {
        match self {
            CallError::Api(e) => e.clone(),
            CallError::NoResponders => ApiError::new(ErrorCode::Unavailable, "the service is not available right now"),
            CallError::Timeout => ApiError::new(ErrorCode::Timeout, "the service did not answer in time"),
            CallError::Transport(_) | CallError::Decode(_) | CallError::Undeclared(_) => ApiError::internal(),
        }
    }
}
