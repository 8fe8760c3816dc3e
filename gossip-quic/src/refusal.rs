//! Does anything still listen at a peer's UDP port? quinn sends on one
//! unconnected UDP socket, and Linux reports an ICMP port unreachable only
//! to a *connected* socket (or through `IP_RECVERR`, which quinn does not
//! read), so a send to a member whose process died succeeds and says
//! nothing. This check asks the question on a socket of its own: one empty
//! datagram from a connected socket, then a wait for the kernel's answer.
//!
//! Serves [`Transport::check_refused`](gossip_core::Transport::check_refused)
//! (issue #10, item 4: the refusal fast path over QUIC). Only on the failure
//! path: the failure detector asks after a probe went unanswered.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::debug;

/// How long to wait for the ICMP answer. On a LAN it comes within a round
/// trip; a host that does not answer (powered off, firewalled, across a
/// partition) is not a refusal, and the slow path decides.
pub(crate) const REFUSAL_WAIT: Duration = Duration::from_millis(500);

/// True if the host of `peer` answered an empty datagram to its port with
/// ICMP port unreachable (nothing listens there any more); false if
/// anything else happened within `wait`: no answer, a datagram back, or a
/// local error (no route, no socket).
///
/// A live QUIC endpoint drops the empty datagram (it is no QUIC packet), so
/// a member that restarted on the same address is never "refused".
pub(crate) async fn check(peer: SocketAddr, wait: Duration) -> bool {
    let local: SocketAddr = if peer.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, error = %e, "refusal check: no socket");
            return false;
        }
    };
    if let Err(e) = socket.connect(peer).await {
        debug!(%peer, error = %e, "refusal check: cannot connect the socket");
        return false;
    }
    if let Err(e) = socket.send(&[]).await {
        // An earlier ICMP answer may already be reported here.
        return e.kind() == ErrorKind::ConnectionRefused;
    }
    let mut buf = [0u8; 1];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Err(e)) => e.kind() == ErrorKind::ConnectionRefused,
        // A datagram back (something answers) or no answer in time.
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_refuses_an_open_one_does_not() {
        // A port that was bound and released: nothing listens there.
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.local_addr().expect("addr")
        };
        assert!(check(closed, Duration::from_secs(5)).await, "closed port");
        // A socket that listens (and never answers) is not refused.
        let open = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = open.local_addr().expect("addr");
        assert!(!check(addr, Duration::from_millis(200)).await, "open port");
        // The listener got the empty datagram and nothing else.
        let mut buf = [0u8; 16];
        let n = open.recv(&mut buf).await.expect("recv");
        assert_eq!(n, 0);
    }
}
