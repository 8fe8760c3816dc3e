//! Typed errors of the core crate.

use thiserror::Error;

/// A text that is not a valid `host:port` member address.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid member address {addr:?}: {why}")]
pub struct AddrError {
    /// The offending text (truncated to 64 characters).
    pub addr: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Errors of the [`Membership`](crate::Membership) commands. None of them
/// changes the member's state.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum GossipError {
    /// A key is empty or longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A value, key or broadcast payload that could not fit in one message of
    /// the configured maximum size.
    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What was too large ("value", "payload", "metadata").
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Metadata with more than [`MAX_META_ENTRIES`](crate::MAX_META_ENTRIES)
    /// entries.
    #[error("metadata has {0} entries, more than the limit of {max}", max = crate::MAX_META_ENTRIES)]
    TooManyMetaEntries(usize),
    /// The member has left or is shutting down.
    #[error("the member has shut down")]
    ShutDown,
    /// The protocol configuration fails [`Config::validate`](crate::Config::validate).
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
}

/// Why an incoming frame was rejected by [`Inbound`](crate::Inbound). A
/// rejected frame changes nothing; each reason is counted in
/// [`Stats`](crate::Stats).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Rejection {
    /// The frame is larger than the configured maximum message size; it was
    /// refused before being decoded.
    #[error("frame of {size} bytes exceeds the maximum message size of {max} bytes")]
    Oversized {
        /// Size of the frame in bytes.
        size: usize,
        /// The configured maximum in bytes.
        max: usize,
    },
    /// The frame is not a valid `gossip.v1.Envelope`.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The frame belongs to another cluster (requirement 9).
    #[error("foreign cluster id {got:?}, this member belongs to cluster {expected:?}")]
    ForeignCluster {
        /// This member's cluster id.
        expected: String,
        /// The cluster id the frame carried.
        got: String,
    },
    /// The member's inbound queue is full; the frame was dropped (gossip
    /// tolerates loss, anti-entropy repairs it).
    #[error("member overloaded, message dropped")]
    Overloaded,
    /// The member is shutting down.
    #[error("member is shutting down")]
    ShuttingDown,
}

impl Rejection {
    /// A short stable label for metrics, e.g. `"foreign_cluster"`.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Oversized { .. } => "oversized",
            Rejection::Malformed(_) => "malformed",
            Rejection::ForeignCluster { .. } => "foreign_cluster",
            Rejection::Overloaded => "overloaded",
            Rejection::ShuttingDown => "shutting_down",
        }
    }
}

/// Errors a [`Transport`](crate::Transport) reports.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The peer could not be reached or the connection failed.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The peer answered with a rejection (foreign cluster, malformed, ...).
    #[error("rejected by {addr}: {reason}")]
    Rejected {
        /// The peer's address.
        addr: String,
        /// The peer's explanation.
        reason: String,
    },
    /// Binding or serving the local endpoint failed.
    #[error("transport I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other transport failure.
    #[error("{0}")]
    Other(String),
}
