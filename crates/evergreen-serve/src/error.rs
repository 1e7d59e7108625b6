//! Errors: what a request can fail with (always answered as JSON `{"error": ...}`) and why a
//! version can fail to load.

use axum::http::StatusCode;
use evergreen_registry::RegistryError;
use std::path::PathBuf;

/// A request that cannot be answered; the message is what the client reads.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Malformed JSON, bad shape, bad value, transform error: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown model, version, label or route: 404.
    #[error("{0}")]
    NotFound(String),
    /// Known route, wrong method: 405 with `Allow`.
    #[error("{message}")]
    MethodNotAllowed {
        /// Message.
        message: String,
        /// Value of the `Allow` header.
        allow: &'static str,
    },
    /// Body over the limit: 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The model has no version yet: 503.
    #[error("{0}")]
    Unavailable(String),
    /// The request's deadline passed before its work was done: 408.
    #[error("{0}")]
    Timeout(String),
}

impl ApiError {
    /// HTTP status of the error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Why a version could not be loaded for serving. The message names the file involved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The registry refused the version (IO, manifest, checksum, spec fingerprint).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The model was built for another number of buckets than the spec produces.
    #[error("{path}: model has {model_dim} buckets but its feature spec produces {spec_dim}")]
    Dimension {
        /// The model file.
        path: PathBuf,
        /// Buckets of the model.
        model_dim: usize,
        /// Buckets of the spec.
        spec_dim: usize,
    },
    /// The version's batching parameters file could not be read or parsed.
    #[error("{path}: batching parameters: {message}")]
    Batching {
        /// The batching parameters file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Warm-up failed: a warm-up request was refused, or a prediction was not a probability.
    #[error("{path}: warm-up failed: {message}")]
    Warmup {
        /// The warm-up file, or the version directory for the built-in warm-up.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}
