//! The gate every received frame passes: size, shape and cluster id checks,
//! the opening of sealed envelopes when the member encrypts (issue #12),
//! the limits on keys and metadata that local writers are held to, and the
//! hand-over to the driver. One place, so that every transport
//! rejects bad input the same way (requirement 9 and "bad input").

use std::sync::Arc;

use gossip_proto::v1::Envelope;
use prost::Message;
use tokio::sync::mpsc;

use crate::config::{MAX_KEY_LEN, MAX_META_BYTES, MAX_META_ENTRIES, key_len_ok, meta_bytes};
use crate::error::Rejection;
use crate::id::NodeId;
use crate::seal::{SEAL_OVERHEAD, Sealer};
use crate::stats::{MessageKind, Stats};

/// The receiving end a transport hands frames to. Cloneable and cheap; each
/// call validates synchronously and returns the verdict the transport should
/// report to the peer.
#[derive(Clone, Debug)]
pub struct Inbound {
    cluster_id: Arc<str>,
    max_message_size: usize,
    tx: mpsc::Sender<Envelope>,
    stats: Arc<Stats>,
    /// Set when the member encrypts: every envelope must open with one of
    /// its keys.
    sealer: Option<Sealer>,
}

impl Inbound {
    /// Builds the gate; `tx` feeds the driver.
    pub(crate) fn new(
        cluster_id: &str,
        max_message_size: usize,
        tx: mpsc::Sender<Envelope>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            max_message_size,
            tx,
            stats,
            sealer: None,
        }
    }

    /// The same gate for a member that encrypts: every envelope must be
    /// sealed and open with one of `sealer`'s keys (issue #12); frames may
    /// be [`SEAL_OVERHEAD`] bytes longer than the configured maximum.
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Largest frame accepted, in bytes: the configured maximum message
    /// size, plus [`SEAL_OVERHEAD`] when the member encrypts. Transports
    /// must check a frame's announced length against it before allocating
    /// a buffer for it.
    pub fn max_message_size(&self) -> usize {
        match self.sealer {
            Some(_) => self.max_message_size + SEAL_OVERHEAD,
            None => self.max_message_size,
        }
    }

    /// The cluster id this member belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Decodes an encoded `gossip.v1.Envelope` and accepts it.
    ///
    /// # Errors
    /// [`Rejection::Oversized`] (checked before decoding),
    /// [`Rejection::Malformed`], or any error of [`Inbound::accept`].
    pub fn accept_bytes(&self, frame: &[u8]) -> Result<(), Rejection> {
        let result = self
            .check_size(frame.len())
            .and_then(|()| Envelope::decode(frame).map_err(|e| Rejection::Malformed(e.to_string())))
            .and_then(|env| self.admit(env, frame.len()));
        if let Err(r) = &result {
            self.stats.record_rejection(r);
        }
        result
    }

    /// Accepts a decoded envelope (transports such as gRPC decode
    /// themselves).
    ///
    /// # Errors
    /// [`Rejection::Oversized`], [`Rejection::Malformed`] if the sender is
    /// missing or invalid, [`Rejection::ForeignCluster`],
    /// [`Rejection::Decrypt`], [`Rejection::Overloaded`] or
    /// [`Rejection::ShuttingDown`].
    pub fn accept(&self, env: Envelope) -> Result<(), Rejection> {
        let size = env.encoded_len();
        let result = self.check_size(size).and_then(|()| self.admit(env, size));
        if let Err(r) = &result {
            self.stats.record_rejection(r);
        }
        result
    }

    /// Counts a rejection the transport made itself, before handing the
    /// frame over (e.g. a length prefix over the limit, a truncated frame),
    /// and returns it, so that every refusal shows in [`Stats`].
    pub fn reject(&self, r: Rejection) -> Rejection {
        self.stats.record_rejection(&r);
        r
    }

    /// Counts a rejection a peer reported for a frame this member sent (the
    /// sending side of a rejection that travels back asynchronously, e.g. on
    /// a gRPC stream), so that a refusal shows on both sides.
    pub fn count_peer_rejection(&self) {
        self.count_peer_rejections(1);
    }

    /// Counts `n` rejections a peer reported at once (a gRPC stream's
    /// answer about the envelopes of one batch): one addition, whatever `n`
    /// the peer claims.
    pub fn count_peer_rejections(&self, n: u64) {
        self.stats.record_rejected_by_peer(n);
    }

    /// Records how many outgoing connections the transport holds now, for
    /// [`StatsSnapshot::connections`](crate::StatsSnapshot::connections).
    pub fn set_connections(&self, open: usize) {
        self.stats.set_connections(open);
    }

    /// Counts outgoing connections the transport closed to stay within its
    /// bound or because they were idle
    /// ([`StatsSnapshot::connections_evicted`](crate::StatsSnapshot::connections_evicted)).
    pub fn count_connections_evicted(&self, n: u64) {
        self.stats.record_connections_evicted(n);
    }

    /// Checks a frame length announced by the peer against the limit, before
    /// any buffer is allocated; an oversized length is counted.
    ///
    /// # Errors
    /// [`Rejection::Oversized`].
    pub fn check_len(&self, len: usize) -> Result<(), Rejection> {
        self.check_size(len).map_err(|r| self.reject(r))
    }

    fn check_size(&self, size: usize) -> Result<(), Rejection> {
        let max = self.max_message_size();
        if size > max {
            return Err(Rejection::Oversized { size, max });
        }
        Ok(())
    }

    fn admit(&self, env: Envelope, size: usize) -> Result<(), Rejection> {
        // The cluster id is checked first, in the clear (a member of
        // another cluster is told so, whatever its keys); sealing
        // authenticates it.
        if env.cluster_id != *self.cluster_id {
            return Err(Rejection::ForeignCluster {
                expected: self.cluster_id.to_string(),
                got: env.cluster_id.chars().take(128).collect(),
            });
        }
        let env = match &self.sealer {
            Some(sealer) => sealer.open(env)?,
            None if !env.sealed.is_empty() => {
                return Err(Rejection::Decrypt(
                    "a sealed envelope: this member does not encrypt",
                ));
            }
            None => env,
        };
        let from = env
            .from
            .as_ref()
            .ok_or_else(|| Rejection::Malformed("missing sender".into()))?;
        NodeId::from_pb(from).map_err(|e| Rejection::Malformed(e.to_string()))?;
        if env.body.is_none() {
            return Err(Rejection::Malformed("missing message body".into()));
        }
        check_owner_limits(&env)?;
        let kind = MessageKind::of(&env);
        match self.tx.try_send(env) {
            Ok(()) => {
                self.stats.record_received(kind, size);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Rejection::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Rejection::ShuttingDown),
        }
    }
}

/// Refuses an envelope carrying an owner's record that no member could have
/// written: a key outside 1 to [`MAX_KEY_LEN`] bytes, or metadata over
/// [`MAX_META_ENTRIES`] entries or [`MAX_META_BYTES`] bytes (keys plus
/// values), the limits `Machine::set_key` and `Machine::set_meta` hold a
/// local writer to. Without it a peer could plant, within
/// `max_message_size`, what every member would then store and pass on.
fn check_owner_limits(env: &Envelope) -> Result<(), Rejection> {
    let Some(gossip_proto::v1::envelope::Body::Delta(d)) = &env.body else {
        return Ok(());
    };
    for od in &d.owners {
        if let Some(kv) = od.keys.iter().find(|kv| !key_len_ok(&kv.key)) {
            return Err(Rejection::Malformed(format!(
                "a key of {} bytes; keys are 1 to {MAX_KEY_LEN} bytes",
                kv.key.len()
            )));
        }
        if let Some(meta) = &od.meta {
            let size = meta_bytes(&meta.entries);
            if meta.entries.len() > MAX_META_ENTRIES || size > MAX_META_BYTES {
                return Err(Rejection::Malformed(format!(
                    "metadata of {} entries and {size} bytes; the limits are \
                     {MAX_META_ENTRIES} entries and {MAX_META_BYTES} bytes",
                    meta.entries.len()
                )));
            }
        }
    }
    Ok(())
}

/// Builds an [`Inbound`] and the receiving end of its queue, for transports'
/// own tests and for drivers outside this crate (e.g. the simulator).
pub fn inbound_channel(
    cluster_id: &str,
    max_message_size: usize,
    capacity: usize,
    stats: Arc<Stats>,
) -> (Inbound, mpsc::Receiver<Envelope>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Inbound::new(cluster_id, max_message_size, tx, stats), rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip_proto::v1 as pb;

    fn env(cluster: &str) -> Envelope {
        Envelope {
            cluster_id: cluster.into(),
            from: Some(pb::NodeId {
                addr: "127.0.0.1:1".into(),
                generation: 1,
            }),
            body: Some(pb::envelope::Body::Gossip(pb::Gossip {})),
            ..Default::default()
        }
    }

    #[test]
    fn rejects_bad_frames_and_counts_them() {
        let stats = Arc::new(Stats::default());
        let (inbound, mut rx) = inbound_channel("c1", 1024, 8, stats.clone());
        assert!(matches!(
            inbound.accept_bytes(&[0xff, 0xff, 0xff]),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            inbound.accept_bytes(&vec![0u8; 2048]),
            Err(Rejection::Oversized { size: 2048, .. })
        ));
        assert!(matches!(
            inbound.accept(env("other")),
            Err(Rejection::ForeignCluster { .. })
        ));
        let mut no_from = env("c1");
        no_from.from = None;
        assert!(matches!(
            inbound.accept(no_from),
            Err(Rejection::Malformed(_))
        ));
        assert!(
            rx.try_recv().is_err(),
            "nothing rejected reaches the driver"
        );
        inbound.accept_bytes(&env("c1").encode_to_vec()).unwrap();
        assert!(rx.try_recv().is_ok());
        let s = stats.snapshot();
        assert_eq!(
            (
                s.rejected_malformed,
                s.rejected_oversized,
                s.rejected_foreign_cluster,
                s.messages_received
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(s.received_by_kind.messages(MessageKind::Gossip), 1);
        assert_eq!(
            s.received_by_kind.bytes(MessageKind::Gossip),
            env("c1").encoded_len() as u64
        );
        assert_eq!(s.received_by_kind.messages(MessageKind::Ping), 0);
    }

    /// A peer is held to the limits a local writer is held to: a key of 1
    /// to `MAX_KEY_LEN` bytes, metadata within `MAX_META_ENTRIES` entries
    /// and `MAX_META_BYTES` bytes. At the limits a record passes; one byte
    /// or entry over, the whole envelope is refused as malformed, counted,
    /// and never reaches the driver.
    #[test]
    fn an_owner_record_over_the_writers_limits_is_refused() {
        let stats = Arc::new(Stats::default());
        let (inbound, mut rx) = inbound_channel("c1", 64 * 1024, 8, stats.clone());
        let delta = |keys: Vec<String>, meta: Vec<(String, String)>| {
            let mut e = env("c1");
            e.body = Some(pb::envelope::Body::Delta(pb::Delta {
                owners: vec![pb::OwnerDelta {
                    keys: keys
                        .into_iter()
                        .map(|key| pb::KeyValue {
                            key,
                            version: 1,
                            ..Default::default()
                        })
                        .collect(),
                    meta: Some(pb::Meta {
                        entries: meta.into_iter().collect(),
                        version: 1,
                    }),
                    ..Default::default()
                }],
                push: true,
            }));
            e
        };
        let key = |n: usize| "k".repeat(n);
        let entries = |n: usize, len: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("{i:03}"), "v".repeat(len)))
                .collect()
        };
        // At the limits: 64 entries of 3 + 61 bytes = 4,096 bytes.
        let at_limits = delta(
            vec![key(1), key(MAX_KEY_LEN)],
            entries(MAX_META_ENTRIES, 61),
        );
        inbound.accept(at_limits).expect("a record at the limits");
        assert!(rx.try_recv().is_ok());

        let refused = |e: Envelope, what: &str| match inbound.accept(e) {
            Err(Rejection::Malformed(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("accepted or refused otherwise: {other:?}"),
        };
        refused(delta(vec![key(0)], vec![]), "a key of 0 bytes");
        refused(
            delta(vec![key(MAX_KEY_LEN + 1)], vec![]),
            "a key of 257 bytes",
        );
        refused(
            delta(vec![], entries(MAX_META_ENTRIES + 1, 1)),
            "65 entries",
        );
        refused(delta(vec![], entries(MAX_META_ENTRIES, 62)), "4160 bytes");
        assert!(rx.try_recv().is_err(), "nothing refused reaches the driver");
        assert_eq!(stats.snapshot().rejected_malformed, 4);
    }

    #[test]
    fn a_member_that_encrypts_opens_sealed_frames_and_refuses_the_rest() {
        use crate::keyring::{KEY_LEN, Key, Keyring};
        let key = |b| Key::from_bytes(&[b; KEY_LEN]).unwrap();
        let ours = Sealer::new(Keyring::new(key(1)));
        let theirs = Sealer::new(Keyring::new(key(2)));
        let stats = Arc::new(Stats::default());
        let (inbound, mut rx) = inbound_channel("c1", 1024, 8, stats.clone());
        let inbound = inbound.with_sealer(ours.clone());
        assert_eq!(inbound.max_message_size(), 1024 + SEAL_OVERHEAD);
        let decrypt = |r| matches!(r, Err(Rejection::Decrypt(_)));
        assert!(decrypt(inbound.accept(env("c1"))), "unsealed");
        assert!(decrypt(inbound.accept(theirs.seal(env("c1")))), "wrong key");
        assert!(matches!(
            inbound.accept(ours.seal(env("other"))),
            Err(Rejection::ForeignCluster { .. })
        ));
        assert!(
            rx.try_recv().is_err(),
            "nothing rejected reaches the driver"
        );
        let sealed = ours.seal(env("c1"));
        let wire = sealed.encoded_len();
        inbound.accept_bytes(&sealed.encode_to_vec()).unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            env("c1"),
            "the driver gets it opened"
        );
        let s = stats.snapshot();
        assert_eq!((s.rejected_decrypt, s.rejected_foreign_cluster), (2, 1));
        assert_eq!(s.received_by_kind.bytes(MessageKind::Gossip), wire as u64);

        // A member that does not encrypt refuses sealed frames the same way.
        let stats = Arc::new(Stats::default());
        let (plain, mut rx) = inbound_channel("c1", 1024, 8, stats.clone());
        assert!(decrypt(plain.accept(ours.seal(env("c1")))));
        assert!(rx.try_recv().is_err());
        assert_eq!(stats.snapshot().rejected_decrypt, 1);
    }
}
