//! The one trait a transport adapter implements.

use std::future::Future;

use gossip_proto::v1::Envelope;

use crate::codec::Inbound;
use crate::error::TransportError;
use crate::id::NodeAddr;

/// A way to deliver [`Envelope`]s between members: one-way, unordered and
/// lossy is enough (the protocol tolerates loss, duplication and reordering,
/// like SWIM over UDP). Replies are ordinary messages sent back to the
/// sender's advertised address (`Envelope.from.addr`).
///
/// Lifecycle: constructing a transport may bind its socket but must not spawn
/// tasks; [`Transport::start`] spawns the accept loop and hands every
/// received frame to the given [`Inbound`], which validates it (size, cluster
/// id, shape) and returns the [`Rejection`](crate::Rejection) the transport
/// reports back to the peer. [`Transport::shutdown`] stops every task the
/// transport spawned and returns once they ended.
pub trait Transport: Send + Sync + 'static {
    /// The address peers reach this member at; it becomes the member's
    /// identity. Known after binding (so binding port 0 works).
    fn local_addr(&self) -> NodeAddr;

    /// Starts accepting frames and handing them to `inbound`.
    ///
    /// # Errors
    /// [`TransportError::Io`] if serving cannot start,
    /// [`TransportError::AlreadyStarted`] if it already runs,
    /// [`TransportError::ShutDown`] after [`Transport::shutdown`].
    fn start(&self, inbound: Inbound) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Delivers one message to `to`. `Ok` means the peer accepted the frame;
    /// the caller does not retry (gossip repairs loss).
    ///
    /// # Errors
    /// [`TransportError::Refused`] if nothing listens at `to` (when the
    /// transport can tell), [`TransportError::Unreachable`] if the peer
    /// cannot be reached otherwise, [`TransportError::Rejected`] if it
    /// refused the frame, [`TransportError::TooLarge`] if the frame does not
    /// fit the transport's framing, [`TransportError::ShutDown`] after
    /// [`Transport::shutdown`].
    fn send(
        &self,
        to: &NodeAddr,
        msg: Envelope,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Delivers several messages to `to`, in order: the messages a member
    /// produced for one peer at once (a gossip round, a probe with its
    /// piggyback, deltas in pieces). A transport that can should carry them
    /// in one frame or one write, as memberlist's compound messages do
    /// (issue #9 item 3); the default sends them one by one with
    /// [`Transport::send`] and stops at the first error.
    ///
    /// The driver calls this from one task per peer, so a slow peer delays
    /// only its own messages. `Ok` means the transport took the whole batch;
    /// a transport whose peer answers asynchronously (a stream) may report a
    /// later rejection through [`Inbound::count_peer_rejection`] instead.
    ///
    /// # Errors
    /// As [`Transport::send`].
    fn send_batch(
        &self,
        to: &NodeAddr,
        batch: Vec<Envelope>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            for msg in batch {
                self.send(to, msg).await?;
            }
            Ok(())
        }
    }

    /// Whether nothing listens at `to` any more: `true` only on a definitive
    /// answer from `to`'s host (a TCP connection refused, an ICMP port
    /// unreachable); `false` if something answers, if nothing answers in
    /// time (a partition, a host that lost power: the slow path decides
    /// those), or if the transport cannot tell (the default).
    ///
    /// The driver calls it for the addresses the machine names in
    /// [`Machine::poll_refusal_check`](crate::Machine::poll_refusal_check),
    /// only on the failure path (a probe that went unanswered, an indirect
    /// probe to relay), and gives up on it after one second. It serves
    /// transports whose sends succeed although the peer's process is gone
    /// (QUIC: datagrams on an unconnected UDP socket never see the ICMP
    /// answer), so that the refusal fast path (issue #10, item 4) removes a
    /// killed member as quickly on them as on TCP. It must cost nothing
    /// that a peer which still listens would notice beyond one small
    /// message it discards.
    fn check_refused(&self, to: &NodeAddr) -> impl Future<Output = bool> + Send {
        let _ = to;
        async { false }
    }

    /// Stops serving and closes connections; returns when every task of the
    /// transport has ended.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}
