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
                None
            } else {
                net.nodes.get(to).cloned()
            }
        };
        let inbound = inbound.ok_or_else(|| TransportError::Unreachable {
            addr: to.to_string(),
            reason: "no such member on the in-memory network, or link cut".into(),
        })?;
        inbound
            .accept_bytes(&msg.encode_to_vec())
            .map_err(|r| TransportError::Rejected {
                addr: to.to_string(),
                reason: r.to_string(),
            })
    }

    async fn shutdown(&self) {
        self.net.lock().nodes.remove(&self.addr);
    }
}
