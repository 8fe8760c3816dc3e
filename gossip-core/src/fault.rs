//! Fault injection around any [`Transport`]: drop a fraction of messages,
//! add delay, cut the cluster into partitions and heal it. One
//! [`FaultController`] is shared by every wrapped member of a test, so a
//! partition applies to all of them at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gossip_proto::v1::Envelope;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec::Inbound;
use crate::error::TransportError;
use crate::id::NodeAddr;
use crate::transport::Transport;

struct Faults {
    loss: f64,
    delay: Duration,
    /// Partition of each member; members not listed are in partition 0.
    side: HashMap<NodeAddr, u32>,
    rng: ChaCha8Rng,
}

/// The shared switchboard of a fault-injection test.
#[derive(Clone)]
pub struct FaultController {
    faults: Arc<Mutex<Faults>>,
}

impl FaultController {
    /// No faults yet; drops are drawn from an RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            faults: Arc::new(Mutex::new(Faults {
                loss: 0.0,
                delay: Duration::ZERO,
                side: HashMap::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wraps a transport so its sends obey this controller.
    pub fn wrap<T: Transport>(&self, inner: T) -> FaultyTransport<T> {
        FaultyTransport {
            inner,
            ctl: self.clone(),
        }
    }

    /// Drops each message with probability `loss` (0.0 to 1.0), silently,
    /// as a lossy network would.
    pub fn set_loss(&self, loss: f64) {
        self.lock().loss = loss.clamp(0.0, 1.0);
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Cuts the cluster: members of different groups cannot reach each
    /// other; members in no group form one more group.
    pub fn partition(&self, groups: &[Vec<NodeAddr>]) {
        let mut f = self.lock();
        f.side.clear();
        for (i, g) in groups.iter().enumerate() {
            for a in g {
                f.side.insert(a.clone(), i as u32 + 1);
            }
        }
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.lock().side.clear();
    }

    /// What to do with one message: `Err` if the link is cut, `Ok(None)` to
    /// drop it, `Ok(Some(delay))` to deliver it after `delay`.
    fn verdict(&self, from: &NodeAddr, to: &NodeAddr) -> Result<Option<Duration>, TransportError> {
        let mut f = self.lock();
        let side = |a: &NodeAddr| f.side.get(a).copied().unwrap_or(0);
        if side(from) != side(to) {
            return Err(TransportError::Unreachable {
                addr: to.to_string(),
                reason: "partitioned by fault injection".into(),
            });
        }
        let loss = f.loss;
        if loss > 0.0 && f.rng.random_bool(loss) {
            return Ok(None);
        }
        Ok(Some(f.delay))
    }
}

/// A [`Transport`] whose sends pass through a [`FaultController`].
pub struct FaultyTransport<T> {
    inner: T,
    ctl: FaultController,
}

impl<T> FaultyTransport<T> {
    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: Transport> Transport for FaultyTransport<T> {
    fn local_addr(&self) -> NodeAddr {
        self.inner.local_addr()
    }

    async fn start(&self, inbound: Inbound) -> Result<(), TransportError> {
        self.inner.start(inbound).await
    }

    async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        match self.ctl.verdict(&self.inner.local_addr(), to)? {
            None => Ok(()),
            Some(delay) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.inner.send(to, msg).await
            }
        }
    }

    /// Judges every message of the batch on its own (loss, delay, cut
    /// link), then hands the survivors to the inner transport's
    /// `send_batch`, so the inner transport's batching path is the one
    /// exercised.
    async fn send_batch(&self, to: &NodeAddr, batch: Vec<Envelope>) -> Result<(), TransportError> {
        let from = self.inner.local_addr();
        let mut kept = Vec::with_capacity(batch.len());
        let mut delay = std::time::Duration::ZERO;
        for msg in batch {
            if let Some(d) = self.ctl.verdict(&from, to)? {
                delay = delay.max(d);
                kept.push(msg);
            }
        }
        if kept.is_empty() {
            return Ok(());
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inner.send_batch(to, kept).await
    }

    /// False across a partition (a cut link drops, it does not refuse);
    /// otherwise the inner transport's answer.
    async fn check_refused(&self, to: &NodeAddr) -> bool {
        if self.ctl.verdict(&self.inner.local_addr(), to).is_err() {
            return false;
        }
        self.inner.check_refused(to).await
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}
