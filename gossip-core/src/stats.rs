//! Counters a member keeps about its traffic, read by operators and benches.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::Rejection;

/// Message counters of one member. Cheap atomic counters, shared between the
/// driver and every transport.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages handed to the transport.
    pub messages_sent: AtomicU64,
    /// Encoded bytes handed to the transport.
    pub bytes_sent: AtomicU64,
    /// Messages accepted from the transport.
    pub messages_received: AtomicU64,
    /// Encoded bytes accepted from the transport.
    pub bytes_received: AtomicU64,
    /// Sends the transport reported as failed.
    pub send_failures: AtomicU64,
    /// Frames rejected as oversized.
    pub rejected_oversized: AtomicU64,
    /// Frames rejected as malformed.
    pub rejected_malformed: AtomicU64,
    /// Frames rejected for a foreign cluster id.
    pub rejected_foreign_cluster: AtomicU64,
    /// Frames dropped because the inbound queue was full or closing.
    pub rejected_overloaded: AtomicU64,
}

/// A plain copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Messages handed to the transport.
    pub messages_sent: u64,
    /// Encoded bytes handed to the transport.
    pub bytes_sent: u64,
    /// Messages accepted from the transport.
    pub messages_received: u64,
    /// Encoded bytes accepted from the transport.
    pub bytes_received: u64,
    /// Sends the transport reported as failed.
    pub send_failures: u64,
    /// Frames rejected as oversized.
    pub rejected_oversized: u64,
    /// Frames rejected as malformed.
    pub rejected_malformed: u64,
    /// Frames rejected for a foreign cluster id.
    pub rejected_foreign_cluster: u64,
    /// Frames dropped because the inbound queue was full or closing.
    pub rejected_overloaded: u64,
}

impl Stats {
    /// Counts one rejected frame under its reason.
    pub fn count_rejection(&self, r: &Rejection) {
        let c = match r {
            Rejection::Oversized { .. } => &self.rejected_oversized,
            Rejection::Malformed(_) => &self.rejected_malformed,
            Rejection::ForeignCluster { .. } => &self.rejected_foreign_cluster,
            Rejection::Overloaded | Rejection::ShuttingDown => &self.rejected_overloaded,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one sent message of `bytes` encoded bytes.
    pub fn count_sent(&self, bytes: usize) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            messages_sent: r(&self.messages_sent),
            bytes_sent: r(&self.bytes_sent),
            messages_received: r(&self.messages_received),
            bytes_received: r(&self.bytes_received),
            send_failures: r(&self.send_failures),
            rejected_oversized: r(&self.rejected_oversized),
            rejected_malformed: r(&self.rejected_malformed),
            rejected_foreign_cluster: r(&self.rejected_foreign_cluster),
            rejected_overloaded: r(&self.rejected_overloaded),
        }
    }
}
