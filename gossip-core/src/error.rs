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
    /// A keyring command this member cannot carry out (it does not encrypt,
    /// or the key is invalid); issue #12.
    #[error(transparent)]
    Keyring(#[from] crate::KeyringError),
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
    /// The member encrypts and the envelope opens with none of its keys, or
    /// is not sealed; or the envelope is sealed and the member does not
    /// encrypt (issue #12). The text says which, never a key.
    #[error("cannot decrypt: {0}")]
    Decrypt(&'static str),
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
            Rejection::Decrypt(_) => "decrypt",
        }
    }
}

/// Errors a [`Transport`](crate::Transport) (or [`Member::start`](crate::Member::start))
/// reports. Sending fails with [`Refused`](Self::Refused),
/// [`Unreachable`](Self::Unreachable), [`Rejected`](Self::Rejected),
/// [`TooLarge`](Self::TooLarge) or [`ShutDown`](Self::ShutDown); setting up
/// and starting with [`Io`](Self::Io), [`Tls`](Self::Tls),
/// [`InvalidConfig`](Self::InvalidConfig), [`AlreadyStarted`](Self::AlreadyStarted)
/// or [`ShutDown`](Self::ShutDown).
#[derive(Debug, Error)]
pub enum TransportError {
    /// Nothing listens at the peer's address: TCP connection refused, ICMP
    /// port unreachable, a QUIC connection refused. A definitive signal,
    /// unlike a timeout ([`Unreachable`](Self::Unreachable)). Transports
    /// report it only when they can tell: gRPC (a refused TCP connection)
    /// and the in-memory transport do; QUIC cannot (quinn 0.11 surfaces no
    /// ICMP error on its unconnected UDP socket, so a peer with nothing
    /// listening is a handshake timeout there).
    #[error("connection to {addr} refused: nothing listens there")]
    Refused {
        /// The peer's address.
        addr: String,
    },
    /// The peer could not be reached or the connection failed (a timeout, a
    /// name that does not resolve, a connection lost, a TLS handshake this
    /// side gave up).
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
    /// A message too large for the transport's framing, refused before
    /// anything was sent.
    #[error("frame of {size} bytes exceeds the transport's limit of {max} bytes")]
    TooLarge {
        /// Size of the frame, bytes.
        size: usize,
        /// The transport's limit, bytes.
        max: usize,
    },
    /// Binding or serving the local endpoint failed.
    #[error("transport I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration cannot be built or used: a PEM file missing or
    /// invalid (the message names the file, never its contents), a mode the
    /// transport does not support, a rustls setup the transport cannot use.
    #[error("{0}")]
    Tls(String),
    /// The transport's configuration is unusable (e.g. an unspecified listen
    /// address with no advertised address, a timeout the protocol cannot
    /// express). The message says which setting.
    #[error("{0}")]
    InvalidConfig(String),
    /// [`Transport::start`](crate::Transport::start) was called on a
    /// transport that is already running.
    #[error("the transport is already started")]
    AlreadyStarted,
    /// The transport (or the member) has shut down: it cannot start or send
    /// again.
    #[error("the transport has shut down")]
    ShutDown,
}

impl TransportError {
    /// Whether nothing listens at the peer's address
    /// ([`TransportError::Refused`]): the peer is down for sure, not merely
    /// slow.
    pub fn is_refused(&self) -> bool {
        matches!(self, TransportError::Refused { .. })
    }
}
