//! The sending path of the driver: one bounded outbound queue and one
//! sending task per peer, not one task per message (issue #9 item 4).
//!
//! The driver pushes every [`Transmit`](crate::Transmit) into its peer's
//! queue without waiting. The peer's task takes whatever has queued up since
//! its last send (a gossip round, a probe with its piggyback, deltas in
//! pieces) and hands it to [`Transport::send_batch`] in one call, so a
//! transport can carry it in one frame or one write. A slow or unreachable
//! peer fills only its own queue: further messages to it are dropped and
//! counted
//! ([`StatsSnapshot::send_dropped`](crate::StatsSnapshot::send_dropped)),
//! and sends to every other peer go on.
//! A task with nothing to send for [`PEER_IDLE`] ends; the next message to
//! that peer starts a new one, so the number of tasks follows the peers
//! recently talked to, not the cluster size.
//!
//! A batch the transport refuses because nothing listens at the peer
//! ([`TransportError::Refused`](crate::TransportError::Refused)) is reported
//! to the driver's loop through [`Sender::refusals`], which passes it to
//! [`Machine::handle_send_error`](crate::Machine::handle_send_error): a
//! refused connection is evidence for the failure detector (issue #10). The
//! success path is unchanged: no allocation or lock beyond the counters.
//!
//! A member that encrypts seals each envelope here, in its peer's task,
//! just before the batch goes to the transport (issue #12, `seal.rs`): the
//! one place every transport's envelopes pass. Counters count each
//! message under its own kind and with its size on the wire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gossip_proto::v1::Envelope;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, trace};

use crate::id::NodeAddr;
use crate::seal::Sealer;
use crate::stats::{MessageKind, Stats};
use crate::transport::Transport;

/// Messages one peer's queue holds before further ones are dropped.
pub(crate) const PEER_QUEUE: usize = 256;
/// Most messages handed to the transport in one [`Transport::send_batch`].
pub(crate) const MAX_BATCH: usize = 64;
/// A peer's task ends after this long with nothing to send.
pub(crate) const PEER_IDLE: Duration = Duration::from_secs(10);

/// What the sending tasks share with the driver.
pub(crate) struct Sender<T> {
    pub(crate) transport: Arc<T>,
    pub(crate) stats: Arc<Stats>,
    /// Longest time one batch may take.
    pub(crate) send_timeout: Duration,
    /// Where refused batches are reported: the peer's address, read by the
    /// driver's loop. Bounded; when full, a refusal is dropped (the next
    /// send to that peer is refused again).
    pub(crate) refusals: mpsc::Sender<NodeAddr>,
    /// Seals every envelope when the member encrypts.
    pub(crate) sealer: Option<Sealer>,
}

/// Refusals waiting for the driver's loop before further ones are dropped.
pub(crate) const REFUSALS_QUEUE: usize = 256;

/// The per-peer queues and their tasks.
pub(crate) struct Outbox<T: Transport> {
    sender: Arc<Sender<T>>,
    peers: HashMap<NodeAddr, mpsc::Sender<Envelope>>,
    tasks: JoinSet<()>,
}

impl<T: Transport> Outbox<T> {
    pub(crate) fn new(sender: Sender<T>) -> Self {
        Self {
            sender: Arc::new(sender),
            peers: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Queues `msg` for `to` without waiting; a full queue drops it (counted).
    pub(crate) fn push(&mut self, to: NodeAddr, msg: Envelope) {
        while self.tasks.try_join_next().is_some() {}
        let msg = match self.peers.get(&to) {
            Some(tx) => match tx.try_send(msg) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.sender.stats.record_send_dropped();
                    trace!(%to, "outbound queue full; message dropped");
                    return;
                }
                // The peer's task ended after being idle: start another.
                Err(mpsc::error::TrySendError::Closed(msg)) => msg,
            },
            None => msg,
        };
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        // A new channel has room.
        let _ = tx.try_send(msg);
        self.tasks
            .spawn(drain(self.sender.clone(), to.clone(), rx, PEER_IDLE));
        self.peers.insert(to, tx);
    }

    /// Lets every queue drain, for at most `grace`, then stops every task.
    pub(crate) async fn close(mut self, grace: Duration) {
        // Dropping the senders ends each task once its queue is empty.
        self.peers.clear();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            debug!("messages still queued at shutdown; dropping them");
        }
        self.tasks.shutdown().await;
    }

    /// Stops every task at once; queued messages are lost (a crash).
    pub(crate) async fn abort(mut self) {
        self.peers.clear();
        self.tasks.shutdown().await;
    }
}

/// The task of one peer: sends what has queued up, one batch at a time,
/// until the queue is closed or idle for `idle`.
async fn drain<T: Transport>(
    sender: Arc<Sender<T>>,
    to: NodeAddr,
    mut rx: mpsc::Receiver<Envelope>,
    idle: Duration,
) {
    let mut batch = Vec::new();
    loop {
        match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some(msg)) => batch.push(msg),
            Ok(None) => return,
            Err(_) => {
                // Refuse new messages, then send what raced in and end.
                rx.close();
                while let Ok(msg) = rx.try_recv() {
                    batch.push(msg);
                }
                if !batch.is_empty() {
                    send(&sender, &to, std::mem::take(&mut batch)).await;
                }
                return;
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        send(&sender, &to, std::mem::take(&mut batch)).await;
    }
}

/// Hands one batch to the transport and counts the outcome per message.
async fn send<T: Transport>(sender: &Sender<T>, to: &NodeAddr, batch: Vec<Envelope>) {
    let (counts, batch): (Vec<(MessageKind, usize)>, Vec<Envelope>) = match &sender.sealer {
        None => (
            batch
                .iter()
                .map(|m| (MessageKind::of(m), m.encoded_len()))
                .collect(),
            batch,
        ),
        Some(sealer) => batch
            .into_iter()
            .map(|m| {
                let kind = MessageKind::of(&m);
                let sealed = sealer.seal(m);
                ((kind, sealed.encoded_len()), sealed)
            })
            .unzip(),
    };
    let result = tokio::time::timeout(sender.send_timeout, sender.transport.send_batch(to, batch));
    match result.await {
        Ok(Ok(())) => {
            for (kind, size) in counts {
                sender.stats.record_sent(kind, size);
            }
        }
        Ok(Err(e)) => {
            sender.stats.record_send_failed(counts.len());
            debug!(%to, error = %e, messages = counts.len(), "send failed");
            // Only a refusal tells the failure detector something: a
            // timeout or a reset is no more than a lost message would be.
            if e.is_refused()
                && let Err(mpsc::error::TrySendError::Full(_)) =
                    sender.refusals.try_send(to.clone())
            {
                trace!(%to, "refusal queue full; refusal dropped");
            }
        }
        Err(_) => {
            sender.stats.record_send_failed(counts.len());
            debug!(%to, messages = counts.len(), "send timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use gossip_proto::v1 as pb;

    use super::*;
    use crate::codec::Inbound;
    use crate::error::TransportError;

    /// Sends to "stuck" never complete; every other batch is recorded.
    #[derive(Default)]
    struct StuckPeer {
        delivered: Mutex<Vec<(NodeAddr, usize)>>,
    }

    impl Transport for StuckPeer {
        fn local_addr(&self) -> NodeAddr {
            NodeAddr::parse("127.0.0.1:1").unwrap()
        }
        async fn start(&self, _inbound: Inbound) -> Result<(), TransportError> {
            Ok(())
        }
        async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
            self.send_batch(to, vec![msg]).await
        }
        async fn send_batch(
            &self,
            to: &NodeAddr,
            batch: Vec<Envelope>,
        ) -> Result<(), TransportError> {
            if to.as_str() == "127.0.0.1:666" {
                std::future::pending::<()>().await;
            }
            if to.as_str() == "127.0.0.1:667" {
                return Err(TransportError::Refused {
                    addr: to.to_string(),
                });
            }
            if to.as_str() == "127.0.0.1:668" {
                return Err(TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: "test".into(),
                });
            }
            self.delivered
                .lock()
                .unwrap()
                .push((to.clone(), batch.len()));
            Ok(())
        }
        async fn shutdown(&self) {}
    }

    fn msg() -> Envelope {
        Envelope {
            body: Some(pb::envelope::Body::Gossip(pb::Gossip {})),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_stuck_peer_fills_only_its_own_queue() {
        let transport = Arc::new(StuckPeer::default());
        let stats = Arc::new(Stats::default());
        let (refusals, _refused) = mpsc::channel(REFUSALS_QUEUE);
        let mut outbox = Outbox::new(Sender {
            transport: transport.clone(),
            stats: stats.clone(),
            send_timeout: Duration::from_secs(3600),
            refusals,
            sealer: None,
        });
        let stuck = NodeAddr::parse("127.0.0.1:666").unwrap();
        let good = NodeAddr::parse("127.0.0.1:2").unwrap();
        for _ in 0..PEER_QUEUE * 2 {
            outbox.push(stuck.clone(), msg());
            // Let the stuck peer's task take its first batch.
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            outbox.push(good.clone(), msg());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while transport
            .delivered
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.1)
            .sum::<usize>()
            < 10
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the good peer got nothing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delivered = transport.delivered.lock().unwrap().clone();
        assert!(delivered.iter().all(|(to, _)| *to == good), "{delivered:?}");
        // Batched: ten messages pushed at once leave in one call.
        assert_eq!(delivered.len(), 1, "{delivered:?}");
        let dropped = stats.snapshot().send_dropped;
        // The stuck task holds one batch; its queue holds PEER_QUEUE more.
        assert!(
            dropped >= (PEER_QUEUE - MAX_BATCH) as u64 && dropped < (PEER_QUEUE * 2) as u64,
            "{dropped} dropped"
        );
        outbox.abort().await;
    }

    #[tokio::test]
    async fn a_refused_batch_is_reported_other_failures_are_not() {
        let transport = Arc::new(StuckPeer::default());
        let stats = Arc::new(Stats::default());
        let (refusals, mut refused) = mpsc::channel(REFUSALS_QUEUE);
        let mut outbox = Outbox::new(Sender {
            transport: transport.clone(),
            stats: stats.clone(),
            send_timeout: Duration::from_secs(3600),
            refusals,
            sealer: None,
        });
        let closed = NodeAddr::parse("127.0.0.1:667").unwrap();
        let unreachable = NodeAddr::parse("127.0.0.1:668").unwrap();
        let good = NodeAddr::parse("127.0.0.1:2").unwrap();
        outbox.push(unreachable.clone(), msg());
        outbox.push(good.clone(), msg());
        outbox.push(closed.clone(), msg());
        let got = tokio::time::timeout(Duration::from_secs(10), refused.recv())
            .await
            .expect("no refusal reported");
        assert_eq!(got, Some(closed));
        // Every batch has been handed over by now: three failed or sent.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while {
            let s = stats.snapshot();
            s.send_failures < 2 || s.messages_sent < 1
        } {
            assert!(std::time::Instant::now() < deadline, "sends not done");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            refused.try_recv().is_err(),
            "only the refusal is reported, not the unreachable peer"
        );
        outbox.abort().await;
    }
}
