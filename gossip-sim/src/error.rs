//! Errors of the simulator. None of them changes a running simulation: a
//! refused configuration or action leaves everything as it was.

use std::time::Duration;

/// A configuration or an action the simulator refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// A simulation needs at least one member.
    #[error("a simulation needs at least one member")]
    NoMembers,
    /// More members than [`MAX_NODES`](crate::MAX_NODES).
    #[error("{0} members is more than the simulator supports ({max})", max = crate::MAX_NODES)]
    TooManyMembers(usize),
    /// A loss rate outside `[0, 1]`.
    #[error("loss rate {0} is not in [0, 1]")]
    InvalidLoss(f64),
    /// A latency model with unordered bounds or a bad shape.
    #[error("invalid latency model: {0}")]
    InvalidLatency(&'static str),
    /// A bootstrap whose settings contradict each other.
    #[error("invalid bootstrap: {0}")]
    InvalidBootstrap(&'static str),
    /// An action names a member index past the end of the cluster.
    #[error("member {member} does not exist (the simulation has {nodes})")]
    NoSuchMember {
        /// The index given.
        member: usize,
        /// The number of members.
        nodes: usize,
    },
    /// Partition groups that overlap, are reversed or run past the end.
    #[error("invalid partition: {0}")]
    InvalidPartition(String),
    /// The protocol configuration fails `Config::validate`.
    #[error(transparent)]
    Protocol(#[from] gossip_core::ConfigError),
    /// An action scheduled before the current virtual time.
    #[error("cannot schedule at {at:?}: the simulation is at {now:?}")]
    InThePast {
        /// The time asked for.
        at: Duration,
        /// The current virtual time.
        now: Duration,
    },
}
