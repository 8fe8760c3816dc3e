//! Protocol configuration. Defaults suit a LAN, like memberlist's LAN profile.

use std::time::Duration;

use thiserror::Error;

/// Maximum length of a key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Maximum number of metadata entries of one member.
pub const MAX_META_ENTRIES: usize = 64;
/// Maximum total size of one member's metadata (keys plus values), in bytes.
pub const MAX_META_BYTES: usize = 4096;

/// Whether `key` is one a member may write: 1 to [`MAX_KEY_LEN`] bytes.
/// The one rule for a local writer (`Machine::set_key`) and for what a
/// peer sends (`codec.rs`).
pub(crate) fn key_len_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN
}

/// The size of metadata `entries` counted against [`MAX_META_BYTES`]: keys
/// plus values, in bytes. The one measure for a local writer
/// (`Machine::set_meta`) and for what a peer sends (`codec.rs`).
pub(crate) fn meta_bytes<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    entries.into_iter().map(|(k, v)| k.len() + v.len()).sum()
}
/// Smallest `max_message_size` a member accepts, in bytes: room for the
/// envelope (`ENVELOPE_OVERHEAD`), the piggybacked updates
/// (`UPDATE_BUDGET`, 1 KiB) and 512 bytes of body. Below it a member could
/// not build its own digest entries and deltas within the limit.
pub const MIN_MESSAGE_SIZE: usize = 2048;
/// Longest cluster id, in bytes: it rides on every message, inside the
/// envelope's reserved overhead.
pub const MAX_CLUSTER_ID_LEN: usize = 128;
/// Bytes of every message reserved for the envelope (cluster id, sender,
/// framing) when packing piggybacked data.
pub(crate) const ENVELOPE_OVERHEAD: usize = 512;

/// Configuration of one member. All durations are [`Duration`]s.
///
/// Defaults (see [`Config::default`]) follow memberlist's LAN profile: gossip
/// every 200 ms, probe every 1 s with a 500 ms probe timeout, fanout 3.
#[derive(Clone, Debug)]
pub struct Config {
    /// Cluster id carried by every message; messages from another cluster
    /// are rejected. Default `"default"`.
    pub cluster_id: String,
    /// Period of anti-entropy push-pull rounds (scuttlebutt) while the member
    /// is active (see [`Config::active_rounds`]). Default 200 ms.
    pub gossip_interval: Duration,
    /// Silence at rest (issue #9, item 7): gossip rounds run only while the
    /// member is *active*, that is for this many gossip rounds after the last
    /// change it made or learned (a write, a membership change, a delta that
    /// changed something, a digest fingerprint that differed on a
    /// `SyncRequest`, an `Ack` or an answer to its own request, a seed
    /// added or answering) and while its piggyback queues are not empty. The
    /// count used is at least `ceil(log2 n)` for `n` live members (see
    /// [`Config::active_rounds_for`]), as an epidemic needs O(log n) rounds
    /// to reach everyone. A member that makes or learns a change also runs
    /// one round at once. At rest a member sends only its probes (which
    /// carry the fingerprint, so a divergence is still found within a probe
    /// interval or two) and one round per [`Config::push_pull_interval`],
    /// and its driver is not woken for the gossip ticks in between (see
    /// [`Machine::poll_timeout`](crate::Machine::poll_timeout)). `u32::MAX`
    /// keeps the rounds running for good once started (the behaviour before
    /// silence at rest). Unit: gossip rounds. Default 10 (2 s at the default
    /// interval).
    pub active_rounds: u32,
    /// Longest time between two anti-entropy rounds of a quiet member: a
    /// background round to one random live peer, so that a divergence
    /// nobody noticed is eventually repaired (memberlist's `PushPullInterval`,
    /// 30 s in its LAN profile; issue #9, item 7). Any round resets it; each
    /// wait is drawn in `[0.75, 1]` times this so members do not fire in step.
    /// Default 30 s.
    pub push_pull_interval: Duration,
    /// Number of live peers contacted per gossip round, and the floor of
    /// [`Config::eager_push_fanout`]. One of them is chosen uniformly at
    /// random, the others from the [`Config::active_view`]. Default 3.
    pub fanout: usize,
    /// Size of the active view: the peers this member exchanged messages
    /// with most recently. An anti-entropy round sends to one uniformly
    /// random live peer and to `fanout - 1` live peers of this view, whose
    /// connections are already open (HyParView, Leitão et al. 2007, §4;
    /// issue #10: a new QUIC or TLS connection costs a handshake). 0 makes
    /// every peer of a round uniformly random. Default 8.
    pub active_view: usize,
    /// Warm-up: how many peers, in all, this member contacts ahead of need.
    /// Each probe period, a quiet member (no rounds running) sends its
    /// digest fingerprint (a `SyncRequest`) to `fanout` alive peers it has
    /// sent no message to yet, until it has done so this many times.
    /// Over QUIC or gRPC this opens, at a quiet moment, the connection a
    /// later write's eager push would otherwise wait for; peers whose
    /// views differ answer as to any round (issue #10: 3 s after 100
    /// members joined, a quarter of the pairs had no connection, and a
    /// write's last members waited for handshakes). The default, 128, is
    /// half the transports' default connection cap (256), so warming never
    /// evicts a connection in use; in a cluster of `n` members every pair
    /// is warm after about `n / fanout` probe periods (a third of the probe
    /// cycle that would open them otherwise). 0 turns warm-up off.
    pub warm_up_peers: usize,
    /// Period of failure-detector probes (SWIM 4.1). Default 1 s.
    pub probe_interval: Duration,
    /// Time to wait for a direct ack before probing indirectly. Default 500 ms.
    pub probe_timeout: Duration,
    /// Number of members asked to probe indirectly (SWIM's k). Default 3.
    pub indirect_probes: usize,
    /// Suspicion timeout multiplier: the minimum suspicion timeout is
    /// `suspicion_mult * max(1, log10(n)) * probe_interval` (memberlist).
    /// Default 4.
    pub suspicion_mult: u32,
    /// The maximum suspicion timeout is this multiple of the minimum; the
    /// timeout shrinks from the maximum toward the minimum as independent
    /// suspicions arrive (Lifeguard section 4.2). Default 6.
    pub suspicion_max_mult: u32,
    /// Independent suspicions that bring the suspicion timeout down to its
    /// minimum (Lifeguard's K, section 4.2); capped at `n - 2`. Default 3.
    pub suspicion_confirmations: u32,
    /// Upper bound of the local health multiplier: a member that misses its
    /// own probes or has to refute suspicions of itself is probably slow
    /// itself, and stretches its probe interval and timeout by up to this
    /// factor plus one instead of accusing healthy peers (Lifeguard section
    /// 4.3). 0 disables it. Default 8.
    pub max_local_health: u32,
    /// Each piggybacked update is sent `retransmit_mult * ceil(log10(n + 1))`
    /// times (SWIM 4.4, memberlist). Default 4.
    pub retransmit_mult: u32,
    /// How long dead and left members, and deleted keys, are kept as
    /// tombstones so that stale gossip cannot bring them back. Default 60 s.
    pub tombstone_ttl: Duration,
    /// Largest encoded message, in bytes, sent or accepted. Larger states go
    /// as several bounded messages. Default 64 KiB.
    pub max_message_size: usize,
    /// First delay before retrying a seed that has not answered; doubles up
    /// to [`Config::seed_retry_max`]. Default 500 ms.
    pub seed_retry_initial: Duration,
    /// Longest delay between seed retries. Default 10 s.
    pub seed_retry_max: Duration,
    /// Broadcast deduplication cache: at most this many ids. Default 10 000.
    pub dedup_capacity: usize,
    /// Broadcast deduplication cache: ids older than this are forgotten.
    /// Default 10 min.
    pub dedup_max_age: Duration,
    /// Default hop limit of a broadcast. Default 8.
    pub broadcast_ttl: u32,
    /// Push fresh updates at once to [`Config::eager_push_fanout`] peers,
    /// which forward on first receipt (rumor mongering). Default true.
    /// Disable to measure plain anti-entropy.
    pub eager_push: bool,
    /// Size of the inbound queue between transports and the driver, in
    /// messages; beyond it frames are dropped and counted. Default 4096.
    pub inbound_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_id: "default".to_owned(),
            gossip_interval: Duration::from_millis(200),
            active_rounds: 10,
            push_pull_interval: Duration::from_secs(30),
            fanout: 3,
            active_view: 8,
            warm_up_peers: 128,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            suspicion_confirmations: 3,
            max_local_health: 8,
            retransmit_mult: 4,
            tombstone_ttl: Duration::from_secs(60),
            max_message_size: 64 * 1024,
            seed_retry_initial: Duration::from_millis(500),
            seed_retry_max: Duration::from_secs(10),
            dedup_capacity: 10_000,
            dedup_max_age: Duration::from_secs(600),
            broadcast_ttl: 8,
            eager_push: true,
            inbound_queue: 4096,
        }
    }
}

/// A [`Config`] value out of range, found by [`Config::validate`].
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid setting `{field}`: {reason}")]
pub struct ConfigError {
    /// The [`Config`] field at fault (its Rust name).
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl Config {
    /// Checks every limit and minimum of the protocol settings; the single
    /// owner of them (issue #14, item 3): [`Machine::new`](crate::Machine::new)
    /// and [`Member::new`](crate::Member::new) refuse a configuration this
    /// rejects, so no component silently runs with another value than the
    /// one configured. Callers with their own configuration format (the
    /// `gossip-node` binary) call it and report the field.
    ///
    /// # Errors
    /// The first field out of range, with the reason: an empty cluster id
    /// or one over [`MAX_CLUSTER_ID_LEN`] bytes; a zero interval, timeout,
    /// `fanout`, `active_rounds`, `suspicion_mult`, `suspicion_max_mult`,
    /// `retransmit_mult`, `dedup_capacity` or `inbound_queue`; a
    /// `probe_timeout` longer than `probe_interval`; a `seed_retry_initial`
    /// longer than `seed_retry_max`; a `max_message_size` under
    /// [`MIN_MESSAGE_SIZE`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        if self.cluster_id.is_empty() {
            return bad("cluster_id", "must not be empty".into());
        }
        if self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return bad(
                "cluster_id",
                format!(
                    "{} bytes, more than the limit of {MAX_CLUSTER_ID_LEN}",
                    self.cluster_id.len()
                ),
            );
        }
        for (field, d) in [
            ("gossip_interval", self.gossip_interval),
            ("push_pull_interval", self.push_pull_interval),
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("tombstone_ttl", self.tombstone_ttl),
            ("seed_retry_initial", self.seed_retry_initial),
            ("dedup_max_age", self.dedup_max_age),
        ] {
            if d.is_zero() {
                return bad(field, "must be positive".into());
            }
        }
        for (field, n) in [
            ("active_rounds", u64::from(self.active_rounds)),
            ("fanout", self.fanout as u64),
            ("suspicion_mult", u64::from(self.suspicion_mult)),
            ("suspicion_max_mult", u64::from(self.suspicion_max_mult)),
            ("retransmit_mult", u64::from(self.retransmit_mult)),
            ("dedup_capacity", self.dedup_capacity as u64),
            ("inbound_queue", self.inbound_queue as u64),
        ] {
            if n == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.probe_timeout > self.probe_interval {
            return bad(
                "probe_timeout",
                format!(
                    "{} ms is longer than the probe interval ({} ms)",
                    self.probe_timeout.as_millis(),
                    self.probe_interval.as_millis()
                ),
            );
        }
        if self.seed_retry_initial > self.seed_retry_max {
            return bad(
                "seed_retry_initial",
                format!(
                    "{} ms is longer than seed_retry_max ({} ms)",
                    self.seed_retry_initial.as_millis(),
                    self.seed_retry_max.as_millis()
                ),
            );
        }
        if self.max_message_size < MIN_MESSAGE_SIZE {
            return bad(
                "max_message_size",
                format!(
                    "{} bytes, less than the minimum of {MIN_MESSAGE_SIZE} bytes",
                    self.max_message_size
                ),
            );
        }
        Ok(())
    }

    /// The minimum suspicion timeout for a cluster of `n` members:
    /// `suspicion_mult * max(1, log10(n)) * probe_interval`.
    pub fn suspicion_min(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        self.probe_interval
            .mul_f64(f64::from(self.suspicion_mult) * scale)
    }

    /// The maximum suspicion timeout: `suspicion_max_mult` times the minimum.
    pub fn suspicion_max(&self, n: usize) -> Duration {
        self.suspicion_min(n) * self.suspicion_max_mult.max(1)
    }

    /// An upper bound on the time from a member's crash to its removal from
    /// every other member's `members()` in a healthy cluster: two probe
    /// periods to notice (the crash may land just after a probe), then the
    /// maximum suspicion timeout, then dissemination slack. A member whose
    /// local health multiplier is raised probes more slowly than this assumes.
    pub fn detection_bound(&self, n: usize) -> Duration {
        let rounds = (n.max(2) as f64).log2().ceil() as u32 + 2;
        self.probe_interval * 2 + self.suspicion_max(n) + self.gossip_interval * rounds
    }

    /// How many gossip rounds a member stays active after its last change,
    /// in a cluster of `n` live members: `max(active_rounds,
    /// ceil(log2 n))`.
    pub fn active_rounds_for(&self, n: usize) -> u64 {
        let log = (n.max(1) as f64).log2().ceil() as u64;
        u64::from(self.active_rounds).max(log)
    }

    /// How many peers an eager push (and each forward of it on first
    /// receipt) goes to in a cluster of `n` live members:
    /// `ceil(ln n) + 1`, at least `fanout` and at most `2 * fanout`.
    ///
    /// When every member that first receives a rumor forwards it to `f`
    /// random members, the share it never reaches is about `e^-f` of the
    /// cluster (the fixed point of `s = e^(-f (1 - s))`); with `f > ln n`
    /// fewer than one member is expected to be missed, and the rumor's
    /// depth, `log_f n` hops, is shorter (Demers et al. 1987 §1.4 and Karp
    /// et al. 2000 on rumor spreading). In the simulator at 100 members
    /// (1 ms per hop) a write reached everyone in 11.2 ms with 3 and 4.0
    /// ms with 6; the members it misses wait for anti-entropy. The cost is
    /// `n * f` small messages per write, only when something changes.
    pub fn eager_push_fanout(&self, n: usize) -> usize {
        let ln = (n.max(1) as f64).ln().ceil() as usize + 1;
        ln.clamp(self.fanout, self.fanout.saturating_mul(2))
    }

    /// How many times each piggybacked update is retransmitted in a cluster of
    /// `n` members.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
        self.retransmit_mult * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eager_push_fanout_grows_with_ln_n_within_one_and_two_fanouts() {
        let c = Config::default();
        let f = |n| c.eager_push_fanout(n);
        // ceil(ln n) + 1, between fanout (3) and 2 * fanout.
        assert_eq!(
            [f(0), f(1), f(10), f(20), f(100), f(10_000)],
            [3, 3, 4, 4, 6, 6]
        );
        let one = Config {
            fanout: 1,
            ..Config::default()
        };
        assert_eq!(one.eager_push_fanout(100), 2);
    }
}
