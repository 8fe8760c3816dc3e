//! Turning quinn's errors into [`TransportError`]s with clear reasons.

use gossip_core::TransportError;
use quinn::{ConnectionError, TransportErrorCode, VarInt};
use rustls::AlertDescription;

use crate::wire;

/// The TLS alert carried by a QUIC crypto error code (`0x100 + alert`).
fn tls_alert(code: TransportErrorCode) -> Option<AlertDescription> {
    let code = u64::from(code);
    (0x100..0x200)
        .contains(&code)
        .then(|| AlertDescription::from((code & 0xff) as u8))
}

/// True if the connection failed in the TLS handshake, whichever side
/// refused: these failures are counted as `tls_refused`.
pub(crate) fn is_tls_failure(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::TransportError(te) => tls_alert(te.code).is_some(),
        ConnectionError::ConnectionClosed(close) => tls_alert(close.error_code).is_some(),
        _ => false,
    }
}

/// Describes why a connection to `addr` failed; `protocols` names what we
/// offered in ALPN (e.g. `"gossip/2 or gossip/1"`), for the hint on a
/// refused ALPN.
///
/// A TLS handshake the peer refused, or a connection it closed because our
/// cluster id is not its own, becomes [`TransportError::Rejected`] (the peer
/// is up but will not talk to us); everything else, including a handshake
/// we refused, becomes [`TransportError::Unreachable`].
pub(crate) fn connection_failed(
    addr: &str,
    protocols: &str,
    e: &ConnectionError,
) -> TransportError {
    let unreachable = |reason: String| TransportError::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    match e {
        // quinn answers a connection attempt with CONNECTION_REFUSED when
        // its endpoint serves no connections: closed or closing (the
        // member's process is shutting down), or never started. Nothing
        // listens for us there: the failure detector's fast path (issue #10
        // item 4), as a refused TCP connection is.
        ConnectionError::ConnectionClosed(close)
            if close.error_code == TransportErrorCode::CONNECTION_REFUSED =>
        {
            TransportError::Refused {
                addr: addr.to_owned(),
            }
        }
        ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(alert) => {
                let said = String::from_utf8_lossy(&close.reason);
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!("; the peer said: {said}")
                };
                TransportError::Rejected {
                    addr: addr.to_owned(),
                    reason: format!(
                        "TLS handshake refused by the peer (alert {alert:?}): {}{said}",
                        gossip_tls::alert_hint(alert, protocols)
                    ),
                }
            }
            None => unreachable(format!("connection aborted by the peer: {close}")),
        },
        ConnectionError::TransportError(te) if tls_alert(te.code).is_some() => {
            unreachable(format!("TLS handshake failed on our side: {te}"))
        }
        ConnectionError::ApplicationClosed(close)
            if close.error_code == VarInt::from_u32(wire::CLOSE_FOREIGN_CLUSTER) =>
        {
            TransportError::Rejected {
                addr: addr.to_owned(),
                reason: format!(
                    "refused at connection set-up: {}",
                    String::from_utf8_lossy(&close.reason)
                ),
            }
        }
        ConnectionError::ApplicationClosed(close) => {
            unreachable(format!("the peer closed the connection: {close}"))
        }
        ConnectionError::TimedOut => unreachable("no answer: the connection timed out".to_owned()),
        ConnectionError::Reset => {
            unreachable("connection reset by the peer (did it restart?)".to_owned())
        }
        ConnectionError::LocallyClosed => {
            unreachable("the connection was closed locally (shutting down?)".to_owned())
        }
        other => unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quinn::ConnectionClose;

    #[test]
    fn alpn_refusal_reads_clearly() {
        let e = ConnectionError::ConnectionClosed(ConnectionClose {
            error_code: TransportErrorCode::crypto(120),
            frame_type: None,
            reason: Bytes::new(),
        });
        assert!(is_tls_failure(&e));
        let TransportError::Rejected { reason, .. } = connection_failed("x:1", "gossip/1", &e)
        else {
            panic!("expected Rejected");
        };
        assert!(reason.contains("NoApplicationProtocol"), "{reason}");
        assert!(reason.contains("gossip/1"), "{reason}");
    }

    #[test]
    fn a_foreign_cluster_close_is_a_rejection_with_the_reason() {
        let e = ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: VarInt::from_u32(wire::CLOSE_FOREIGN_CLUSTER),
            reason: Bytes::from_static(
                b"foreign cluster id \"a\", this member belongs to cluster \"b\"",
            ),
        });
        assert!(!is_tls_failure(&e));
        let TransportError::Rejected { reason, .. } = connection_failed("x:1", "gossip/2", &e)
        else {
            panic!("expected Rejected");
        };
        assert!(reason.contains("foreign cluster id \"a\""), "{reason}");
    }

    #[test]
    fn a_refused_connection_is_a_refusal() {
        let e = ConnectionError::ConnectionClosed(ConnectionClose {
            error_code: TransportErrorCode::CONNECTION_REFUSED,
            frame_type: None,
            reason: Bytes::new(),
        });
        assert!(!is_tls_failure(&e));
        assert!(matches!(
            connection_failed("x:1", "gossip/2", &e),
            TransportError::Refused { .. }
        ));
    }

    #[test]
    fn timeouts_are_unreachable_and_not_tls() {
        let e = ConnectionError::TimedOut;
        assert!(!is_tls_failure(&e));
        assert!(matches!(
            connection_failed("x:1", "gossip/1", &e),
            TransportError::Unreachable { .. }
        ));
    }
}
