//! The benchmark's errors.

use std::time::Duration;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// A member could not be bound or started.
    #[error("starting member {index} of {system}: {reason}")]
    Start {
        /// The system (`ours-grpc`, `chitchat`, ...).
        system: String,
        /// The member's index.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// Setting a key failed.
    #[error("setting a key on member {index}: {reason}")]
    SetKey {
        /// The member's index.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// A scenario did not finish in time.
    #[error("{what}: not reached within {limit:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        limit: Duration,
    },
    /// Bad command-line values.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// Writing the JSON report failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding the JSON report failed.
    #[error("encoding the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}
