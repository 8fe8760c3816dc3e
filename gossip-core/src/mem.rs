//! An in-memory transport: members in one process exchange encoded frames
//! through a shared [`MemNetwork`], whose links can be cut and healed. Used by
//! tests and examples; frames pass through the same [`Inbound`] gate as on a
//! real network.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use gossip_proto::v1::Envelope;
use prost::Message;

use crate::codec::Inbound;
use crate::error::TransportError;
use crate::id::NodeAddr;
use crate::transport::Transport;

#[derive(Default)]
struct Net {
    nodes: HashMap<NodeAddr, Inbound>,
    cut: HashSet<(NodeAddr, NodeAddr)>,
    next: u32,
}

/// A process-local network of [`MemTransport`]s.
#[derive(Clone, Default)]
pub struct MemNetwork {
    net: Arc<Mutex<Net>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A transport with a fresh address `memN:7000`.
    pub fn transport(&self) -> MemTransport {
        let n = {
            let mut net = self.lock();
            net.next += 1;
            net.next
        };
        let addr = NodeAddr::parse(&format!("mem{n}:7000")).unwrap_or_else(|_| unreachable!());
        self.transport_at(addr)
    }

    /// A transport at a given address, e.g. to restart a member there.
    pub fn transport_at(&self, addr: NodeAddr) -> MemTransport {
        MemTransport {
            net: self.clone(),
            addr,
        }
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: &NodeAddr, b: &NodeAddr) {
        let mut net = self.lock();
        net.cut.insert((a.clone(), b.clone()));
        net.cut.insert((b.clone(), a.clone()));
    }

    /// Cuts every link between the two groups.
    pub fn partition(&self, left: &[NodeAddr], right: &[NodeAddr]) {
        for a in left {
            for b in right {
                self.cut(a, b);
            }
        }
    }

    /// Hands a raw frame to the member at `to`, as a peer's transport
    /// would: for tests of bad input.
    ///
    /// # Errors
    /// The member's [`Rejection`](crate::Rejection), or
    /// [`Rejection::ShuttingDown`](crate::Rejection::ShuttingDown) if nothing
    /// listens at `to`.
    pub fn deliver_raw(&self, to: &NodeAddr, frame: &[u8]) -> Result<(), crate::Rejection> {
        let inbound = self.lock().nodes.get(to).cloned();
        match inbound {
            Some(i) => i.accept_bytes(frame),
            None => Err(crate::Rejection::ShuttingDown),
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }
}

/// One member's endpoint on a [`MemNetwork`].
///
/// A send to an address where no transport is started (never started, or
/// shut down) fails with [`TransportError::Refused`], as a TCP connection to
/// a closed port would; across a cut link it fails with
/// [`TransportError::Unreachable`]; a frame the peer's [`Inbound`] refuses
/// is [`TransportError::Rejected`].
#[derive(Clone)]
pub struct MemTransport {
    net: MemNetwork,
    addr: NodeAddr,
}

impl Transport for MemTransport {
    fn local_addr(&self) -> NodeAddr {
        self.addr.clone()
    }

    async fn start(&self, inbound: Inbound) -> Result<(), TransportError> {
        self.net.lock().nodes.insert(self.addr.clone(), inbound);
        Ok(())
    }

    async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        let inbound = {
            let net = self.net.lock();
            if net.cut.contains(&(self.addr.clone(), to.clone())) {
                return Err(TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: "link cut on the in-memory network".into(),
                });
            }
            net.nodes.get(to).cloned()
        };
        // Nothing registered (never started, or shut down): the in-memory
        // counterpart of a refused connection.
        let inbound = inbound.ok_or_else(|| TransportError::Refused {
            addr: to.to_string(),
        })?;
        inbound
            .accept_bytes(&msg.encode_to_vec())
            .map_err(|r| TransportError::Rejected {
                addr: to.to_string(),
                reason: r.to_string(),
            })
    }

    /// True if no transport is started at `to` (what a send there would
    /// report as [`TransportError::Refused`]); false across a cut link.
    async fn check_refused(&self, to: &NodeAddr) -> bool {
        let net = self.net.lock();
        !net.cut.contains(&(self.addr.clone(), to.clone())) && !net.nodes.contains_key(to)
    }

    async fn shutdown(&self) {
        self.net.lock().nodes.remove(&self.addr);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gossip_proto::v1 as pb;

    use super::*;
    use crate::codec::inbound_channel;
    use crate::stats::Stats;

    fn envelope(from: &NodeAddr) -> Envelope {
        Envelope {
            cluster_id: "c".into(),
            from: Some(pb::NodeId {
                addr: from.to_string(),
                generation: 1,
            }),
            body: Some(pb::envelope::Body::Gossip(pb::Gossip {})),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_refused_a_cut_link_unreachable() {
        let net = MemNetwork::new();
        let (a, b) = (net.transport(), net.transport());
        let (inbound, _rx) = inbound_channel("c", 1024, 8, Arc::new(Stats::default()));
        b.start(inbound).await.unwrap();
        a.send(&b.local_addr(), envelope(&a.local_addr()))
            .await
            .unwrap();

        // An address nobody started a transport at.
        let nobody = NodeAddr::parse("mem99:7000").unwrap();
        let err = a
            .send(&nobody, envelope(&a.local_addr()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Refused { addr } if *addr == nobody.to_string()),
            "{err:?}"
        );
        assert!(err.is_refused());

        net.cut(&a.local_addr(), &b.local_addr());
        let err = a
            .send(&b.local_addr(), envelope(&a.local_addr()))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
        assert!(!err.is_refused());
        net.heal();

        // A member that shut down no longer listens.
        b.shutdown().await;
        let err = a
            .send(&b.local_addr(), envelope(&a.local_addr()))
            .await
            .unwrap_err();
        assert!(err.is_refused(), "{err:?}");
    }
}
