//! Counters a member keeps about its traffic, read by operators and benches:
//! messages and bytes by [`MessageKind`], rejections by reason, send
//! failures, the dissemination queue depth and a histogram of probe
//! round-trip times. Plain atomics, so that the core needs no metrics
//! library; the admin endpoint turns a [`StatsSnapshot`] into Prometheus
//! metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gossip_proto::v1::Envelope;
use gossip_proto::v1::envelope::Body;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct};

use crate::error::Rejection;

/// The kind of a message, decided by the envelope's `body`. Membership
/// updates and broadcasts piggyback on every kind; an envelope that carries
/// only them has a `gossip` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    /// A direct or relayed probe (SWIM 4.1).
    Ping,
    /// The answer to a ping.
    Ack,
    /// A request to probe a member indirectly (SWIM 4.1).
    PingReq,
    /// Opens a push-pull anti-entropy exchange.
    SyncRequest,
    /// A digest of owner versions in an anti-entropy exchange.
    SyncDigest,
    /// Key/value and metadata changes the peer lacks.
    Delta,
    /// Piggybacked membership updates and broadcasts only.
    Gossip,
    /// Bucket fingerprints that locate differences before digests.
    SyncBuckets,
    /// An indirect probe's negative answer (Lifeguard IV-A).
    Nack,
    /// A keyring request or its answer (issue #12).
    Keyring,
}

impl MessageKind {
    /// Every kind, in the order of the wire schema.
    pub const ALL: [MessageKind; 10] = [
        MessageKind::Ping,
        MessageKind::Ack,
        MessageKind::PingReq,
        MessageKind::SyncRequest,
        MessageKind::SyncDigest,
        MessageKind::Delta,
        MessageKind::Gossip,
        MessageKind::SyncBuckets,
        MessageKind::Nack,
        MessageKind::Keyring,
    ];

    /// The kind of `env`; an envelope without a body counts as `gossip`.
    pub fn of(env: &Envelope) -> Self {
        match &env.body {
            Some(Body::Ping(_)) => MessageKind::Ping,
            Some(Body::Ack(_)) => MessageKind::Ack,
            Some(Body::PingReq(_)) => MessageKind::PingReq,
            Some(Body::SyncRequest(_)) => MessageKind::SyncRequest,
            Some(Body::SyncDigest(_)) => MessageKind::SyncDigest,
            Some(Body::Delta(_)) => MessageKind::Delta,
            Some(Body::Gossip(_)) | None => MessageKind::Gossip,
            Some(Body::SyncBuckets(_)) => MessageKind::SyncBuckets,
            Some(Body::Nack(_)) => MessageKind::Nack,
            Some(Body::KeyringRequest(_) | Body::KeyringAnswer(_)) => MessageKind::Keyring,
        }
    }

    /// Snake-case name, as in `GET /stats` and the metric labels
    /// (`"ping"`, `"ping_req"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Ping => "ping",
            MessageKind::Ack => "ack",
            MessageKind::PingReq => "ping_req",
            MessageKind::SyncRequest => "sync_request",
            MessageKind::SyncDigest => "sync_digest",
            MessageKind::Delta => "delta",
            MessageKind::Gossip => "gossip",
            MessageKind::SyncBuckets => "sync_buckets",
            MessageKind::Nack => "nack",
            MessageKind::Keyring => "keyring",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Number of [`MessageKind`]s.
const KINDS: usize = MessageKind::ALL.len();

/// Upper bounds of the probe round-trip-time histogram's buckets, in
/// microseconds (0.5 ms to 5 s); a last bucket holds every longer sample.
pub const RTT_BUCKETS_US: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// Messages and bytes of one direction, per [`MessageKind`].
#[derive(Debug, Default)]
struct KindCounters {
    messages: [AtomicU64; KINDS],
    bytes: [AtomicU64; KINDS],
}

impl KindCounters {
    fn add(&self, kind: MessageKind, bytes: usize) {
        self.messages[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.bytes[kind.index()].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> KindCounts {
        KindCounts {
            messages: self.messages.each_ref().map(|c| c.load(Ordering::Relaxed)),
            bytes: self.bytes.each_ref().map(|c| c.load(Ordering::Relaxed)),
        }
    }
}

/// Messages and bytes of one direction, per [`MessageKind`], at one moment
/// (in [`StatsSnapshot`]). Serializes as `{"ping": {"messages": n,
/// "bytes": n}, ...}` with every kind present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    messages: [u64; KINDS],
    bytes: [u64; KINDS],
}

impl KindCounts {
    /// Counts one message of `kind` and `bytes` bytes.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn add(&mut self, kind: MessageKind, bytes: usize) {
        self.messages[kind.index()] += 1;
        self.bytes[kind.index()] += bytes as u64;
    }

    /// Messages of `kind`.
    pub fn messages(&self, kind: MessageKind) -> u64 {
        self.messages[kind.index()]
    }

    /// Encoded bytes of messages of `kind`.
    pub fn bytes(&self, kind: MessageKind) -> u64 {
        self.bytes[kind.index()]
    }
}

impl Serialize for KindCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry {
            messages: u64,
            bytes: u64,
        }
        let mut map = s.serialize_map(Some(MessageKind::ALL.len()))?;
        for kind in MessageKind::ALL {
            let entry = Entry {
                messages: self.messages(kind),
                bytes: self.bytes(kind),
            };
            map.serialize_entry(kind.as_str(), &entry)?;
        }
        map.end()
    }
}

/// A histogram of probe round-trip times with the fixed bounds
/// [`RTT_BUCKETS_US`]: the time from a probe's ping to its first ack, direct
/// or relayed.
#[derive(Debug, Default)]
struct RttHistogram {
    counts: [AtomicU64; RTT_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl RttHistogram {
    /// Records one sample.
    fn record(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let i = RTT_BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RttSnapshot {
        RttSnapshot {
            counts: self.counts.each_ref().map(|c| c.load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// The probe round-trip-time histogram at one moment (in
/// [`StatsSnapshot`]), with the bucket bounds [`RTT_BUCKETS_US`]. Serializes as `{"bounds_us": [...],
/// "counts": [...], "sum_us": n, "count": n}`, where `counts` has one more
/// entry than `bounds_us` (samples above the last bound).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttSnapshot {
    /// Samples per bucket (not cumulative): `counts[i]` holds the samples
    /// above `RTT_BUCKETS_US[i - 1]` and at most `RTT_BUCKETS_US[i]`.
    pub counts: [u64; RTT_BUCKETS_US.len() + 1],
    /// Sum of every sample, µs.
    pub sum_us: u64,
    /// Number of samples.
    pub count: u64,
}

impl Serialize for RttSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("RttSnapshot", 4)?;
        st.serialize_field("bounds_us", &RTT_BUCKETS_US)?;
        st.serialize_field("counts", &self.counts)?;
        st.serialize_field("sum_us", &self.sum_us)?;
        st.serialize_field("count", &self.count)?;
        st.end()
    }
}

/// Message counters of one member, shared between the driver and every
/// transport. Cheap atomic counters; each is changed only through a method
/// named for what happened (`record_*`, `set_*`) and read through
/// [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    send_failures: AtomicU64,
    send_dropped: AtomicU64,
    send_refused: AtomicU64,
    refusal_checks: AtomicU64,
    late_wakeups: AtomicU64,
    max_lateness_us: AtomicU64,
    rejected_by_peer: AtomicU64,
    connections: AtomicU64,
    connections_evicted: AtomicU64,
    rejected_oversized: AtomicU64,
    rejected_malformed: AtomicU64,
    rejected_foreign_cluster: AtomicU64,
    rejected_overloaded: AtomicU64,
    rejected_decrypt: AtomicU64,
    sent_by_kind: KindCounters,
    received_by_kind: KindCounters,
    probe_rtt: RttHistogram,
    queue_depth: AtomicU64,
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
    /// Messages dropped before the transport saw them because the peer's
    /// outbound queue was full (a slow or unreachable peer; issue #9 item 4).
    pub send_dropped: u64,
    /// Refusals the driver reported to the failure detector
    /// ([`Machine::handle_send_error`](crate::Machine::handle_send_error)):
    /// batches the transport could not deliver because nothing listens at
    /// the peer ([`TransportError::Refused`](crate::TransportError::Refused);
    /// their messages also count in `send_failures`), and listener checks
    /// that found the peer's port refusing (also counted in
    /// `refusal_checks`).
    pub send_refused: u64,
    /// Listener checks the driver ran for the failure detector
    /// ([`Machine::poll_refusal_check`](crate::Machine::poll_refusal_check));
    /// those that found the port refusing also count in `send_refused`.
    pub refusal_checks: u64,
    /// Timer wake-ups of the driver that came late, later than the
    /// deadline by more than the lateness bound (the process or its runtime
    /// was stalled: a pause, an overloaded CPU, a blocking task); before
    /// judging such a timeout the driver first handles every frame already
    /// received (issue #10).
    pub late_wakeups: u64,
    /// The longest lateness of a timer wake-up seen so far, µs.
    pub max_lateness_us: u64,
    /// Frames a peer reported it rejected after they were sent (e.g. on a
    /// gRPC stream, where a rejection comes back asynchronously).
    pub rejected_by_peer: u64,
    /// Outgoing connections the transport holds now (a gauge; at most its
    /// `max_connections`; issue #9 item 5).
    pub connections: u64,
    /// Outgoing connections the transport closed to stay within
    /// `max_connections` (least recently used first) or because they were
    /// idle.
    pub connections_evicted: u64,
    /// Frames rejected as oversized.
    pub rejected_oversized: u64,
    /// Frames rejected as malformed.
    pub rejected_malformed: u64,
    /// Frames rejected for a foreign cluster id.
    pub rejected_foreign_cluster: u64,
    /// Frames dropped because the inbound queue was full or closing.
    pub rejected_overloaded: u64,
    /// Frames rejected because they could not be opened with this member's
    /// keys, were not sealed while it encrypts, or were sealed while it does
    /// not (issue #12).
    pub rejected_decrypt: u64,
    /// Messages and bytes sent, by kind.
    pub sent_by_kind: KindCounts,
    /// Messages and bytes accepted from the transport, by kind.
    pub received_by_kind: KindCounts,
    /// Probe round-trip times.
    pub probe_rtt: RttSnapshot,
    /// Messages waiting in the dissemination queues (membership updates and
    /// broadcasts), as the driver last saw them.
    pub queue_depth: u64,
}

impl Stats {
    /// A frame this member refused, counted under its reason
    /// ([`StatsSnapshot::rejected_oversized`], `rejected_malformed`,
    /// `rejected_foreign_cluster`, `rejected_decrypt`, or
    /// `rejected_overloaded` for an overloaded or shutting-down member).
    pub fn record_rejection(&self, r: &Rejection) {
        let c = match r {
            Rejection::Oversized { .. } => &self.rejected_oversized,
            Rejection::Malformed(_) => &self.rejected_malformed,
            Rejection::ForeignCluster { .. } => &self.rejected_foreign_cluster,
            Rejection::Overloaded | Rejection::ShuttingDown => &self.rejected_overloaded,
            Rejection::Decrypt(_) => &self.rejected_decrypt,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One message of `kind`, `bytes` encoded bytes long, that the transport
    /// took.
    pub fn record_sent(&self, kind: MessageKind, bytes: usize) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        self.sent_by_kind.add(kind, bytes);
    }

    /// One received message of `kind`, `bytes` encoded bytes long, accepted
    /// and handed to the driver.
    pub fn record_received(&self, kind: MessageKind, bytes: usize) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.received_by_kind.add(kind, bytes);
    }

    /// `messages` messages whose send the transport reported as failed or
    /// that timed out ([`StatsSnapshot::send_failures`]).
    pub fn record_send_failed(&self, messages: usize) {
        self.send_failures
            .fetch_add(messages as u64, Ordering::Relaxed);
    }

    /// One message dropped before the transport saw it, because the peer's
    /// outbound queue was full ([`StatsSnapshot::send_dropped`]).
    pub fn record_send_dropped(&self) {
        self.send_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// One batch refused because nothing listens at the peer, reported to
    /// the failure detector ([`StatsSnapshot::send_refused`]).
    pub fn record_send_refused(&self) {
        self.send_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// One listener check started ([`StatsSnapshot::refusal_checks`]).
    pub fn record_refusal_check(&self) {
        self.refusal_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// A timer wake-up of the driver `lateness` after its deadline: counted
    /// in [`StatsSnapshot::late_wakeups`] if `late` (beyond the lateness
    /// bound), and kept in [`StatsSnapshot::max_lateness_us`] if the
    /// longest yet.
    pub fn record_wakeup_lateness(&self, lateness: Duration, late: bool) {
        if late {
            self.late_wakeups.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(lateness.as_micros()).unwrap_or(u64::MAX);
        self.max_lateness_us.fetch_max(us, Ordering::Relaxed);
    }

    /// `n` frames a peer reported it rejected after they were sent
    /// ([`StatsSnapshot::rejected_by_peer`]).
    pub fn record_rejected_by_peer(&self, n: u64) {
        self.rejected_by_peer.fetch_add(n, Ordering::Relaxed);
    }

    /// The transport now holds `open` outgoing connections
    /// ([`StatsSnapshot::connections`], a gauge).
    pub fn set_connections(&self, open: usize) {
        self.connections.store(open as u64, Ordering::Relaxed);
    }

    /// The transport closed `n` outgoing connections to stay within its bound
    /// or because they were idle ([`StatsSnapshot::connections_evicted`]).
    pub fn record_connections_evicted(&self, n: u64) {
        self.connections_evicted.fetch_add(n, Ordering::Relaxed);
    }

    /// One probe's round-trip time, from its ping to its first ack
    /// ([`StatsSnapshot::probe_rtt`]).
    pub fn record_probe_rtt(&self, rtt: Duration) {
        self.probe_rtt.record(rtt);
    }

    /// The dissemination queues now hold `messages` messages
    /// ([`StatsSnapshot::queue_depth`], a gauge).
    pub fn set_queue_depth(&self, messages: usize) {
        self.queue_depth.store(messages as u64, Ordering::Relaxed);
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
            send_dropped: r(&self.send_dropped),
            send_refused: r(&self.send_refused),
            refusal_checks: r(&self.refusal_checks),
            late_wakeups: r(&self.late_wakeups),
            max_lateness_us: r(&self.max_lateness_us),
            rejected_by_peer: r(&self.rejected_by_peer),
            connections: r(&self.connections),
            connections_evicted: r(&self.connections_evicted),
            rejected_oversized: r(&self.rejected_oversized),
            rejected_malformed: r(&self.rejected_malformed),
            rejected_foreign_cluster: r(&self.rejected_foreign_cluster),
            rejected_overloaded: r(&self.rejected_overloaded),
            rejected_decrypt: r(&self.rejected_decrypt),
            sent_by_kind: self.sent_by_kind.snapshot(),
            received_by_kind: self.received_by_kind.snapshot(),
            probe_rtt: self.probe_rtt.snapshot(),
            queue_depth: r(&self.queue_depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip_proto::v1 as pb;

    fn env(body: Option<Body>) -> Envelope {
        Envelope {
            body,
            ..Default::default()
        }
    }

    #[test]
    fn kinds_follow_the_body() {
        for (body, want) in [
            (Some(Body::Ping(pb::Ping::default())), "ping"),
            (Some(Body::Ack(pb::Ack::default())), "ack"),
            (Some(Body::PingReq(pb::PingReq::default())), "ping_req"),
            (
                Some(Body::SyncRequest(pb::SyncRequest::default())),
                "sync_request",
            ),
            (
                Some(Body::SyncDigest(pb::SyncDigest::default())),
                "sync_digest",
            ),
            (Some(Body::Delta(pb::Delta::default())), "delta"),
            (Some(Body::Gossip(pb::Gossip {})), "gossip"),
            (
                Some(Body::SyncBuckets(pb::SyncBuckets::default())),
                "sync_buckets",
            ),
            (
                Some(Body::KeyringRequest(pb::KeyringRequest::default())),
                "keyring",
            ),
            (
                Some(Body::KeyringAnswer(pb::KeyringAnswer::default())),
                "keyring",
            ),
            (None, "gossip"),
        ] {
            assert_eq!(MessageKind::of(&env(body)).as_str(), want);
        }
        let names: Vec<&str> = MessageKind::ALL.iter().map(|k| k.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn counts_by_kind_and_totals() {
        let stats = Stats::default();
        stats.record_sent(MessageKind::Ping, 10);
        stats.record_sent(MessageKind::Ping, 12);
        stats.record_sent(MessageKind::Delta, 100);
        stats.record_received(MessageKind::Ack, 7);
        let s = stats.snapshot();
        assert_eq!((s.messages_sent, s.bytes_sent), (3, 122));
        assert_eq!((s.messages_received, s.bytes_received), (1, 7));
        assert_eq!(s.sent_by_kind.messages(MessageKind::Ping), 2);
        assert_eq!(s.sent_by_kind.bytes(MessageKind::Ping), 22);
        assert_eq!(s.sent_by_kind.messages(MessageKind::Delta), 1);
        assert_eq!(s.sent_by_kind.messages(MessageKind::Ack), 0);
        assert_eq!(s.received_by_kind.bytes(MessageKind::Ack), 7);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["sent_by_kind"]["ping"]["bytes"], 22, "{json}");
        assert_eq!(json["received_by_kind"]["ack"]["messages"], 1, "{json}");
        assert_eq!(
            json["sent_by_kind"]["sync_buckets"]["messages"], 0,
            "{json}"
        );
    }

    #[test]
    fn rtt_samples_land_in_their_bucket() {
        let h = RttHistogram::default();
        h.record(Duration::from_micros(500)); // on the first bound
        h.record(Duration::from_micros(501));
        h.record(Duration::from_millis(30));
        h.record(Duration::from_secs(60)); // past the last bound
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[RTT_BUCKETS_US.partition_point(|&b| b < 30_000)], 1);
        assert_eq!(s.counts[RTT_BUCKETS_US.len()], 1);
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 500 + 501 + 30_000 + 60_000_000);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["bounds_us"][0], 500, "{json}");
        assert_eq!(
            json["counts"].as_array().unwrap().len(),
            RTT_BUCKETS_US.len() + 1
        );
    }
}
