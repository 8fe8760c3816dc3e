//! The framing on one bidirectional stream.
//!
//! Request (sender to receiver), then the sender finishes its side:
//!
//! ```text
//! u32 big-endian length N | N bytes: an encoded gossip.v1.Envelope
//! ```
//!
//! Reply (receiver to sender), then the receiver finishes its side:
//!
//! ```text
//! 0x00                      accepted
//! 0x01 | UTF-8 text         rejected; the text explains why (at most
//!                           MAX_REASON bytes)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use gossip_core::TransportError;

/// Reply status: the frame was accepted.
pub(crate) const STATUS_ACCEPTED: u8 = 0;
/// Reply status: the frame was rejected; a UTF-8 reason follows.
pub(crate) const STATUS_REJECTED: u8 = 1;
/// Longest rejection text sent, in bytes.
pub(crate) const MAX_REASON: usize = 1024;
/// Longest reply read, in bytes.
pub(crate) const MAX_REPLY: usize = 1 + MAX_REASON;
/// Size of the length prefix, in bytes.
pub(crate) const LEN_PREFIX: usize = 4;

/// Prefixes `payload` with its length.
///
/// # Errors
/// [`TransportError::Other`] if the payload is longer than `u32::MAX` bytes.
pub(crate) fn frame(payload: &[u8]) -> Result<Bytes, TransportError> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        TransportError::Other(format!(
            "frame of {} bytes is too long for a u32 length prefix",
            payload.len()
        ))
    })?;
    let mut buf = BytesMut::with_capacity(LEN_PREFIX + payload.len());
    buf.put_u32(len);
    buf.put_slice(payload);
    Ok(buf.freeze())
}

/// Encodes a receiver's verdict.
pub(crate) fn reply(verdict: Result<(), String>) -> Vec<u8> {
    match verdict {
        Ok(()) => vec![STATUS_ACCEPTED],
        Err(reason) => {
            let mut end = reason.len().min(MAX_REASON);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            let mut out = Vec::with_capacity(1 + end);
            out.push(STATUS_REJECTED);
            out.extend_from_slice(&reason.as_bytes()[..end]);
            out
        }
    }
}

/// Decodes a receiver's reply into the sender's result.
///
/// # Errors
/// [`TransportError::Rejected`] with the peer's reason, or for a reply that
/// does not follow the framing.
pub(crate) fn verdict(addr: &str, reply: &[u8]) -> Result<(), TransportError> {
    let rejected = |reason: String| TransportError::Rejected {
        addr: addr.to_owned(),
        reason,
    };
    match reply.split_first() {
        Some((&STATUS_ACCEPTED, [])) => Ok(()),
        Some((&STATUS_REJECTED, text)) => Err(rejected(String::from_utf8_lossy(text).into_owned())),
        Some((status, _)) => Err(rejected(format!(
            "protocol error: unknown reply status {status} (is the peer a gossip/1 QUIC member?)"
        ))),
        None => Err(rejected(
            "protocol error: the peer closed the stream without a verdict".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(verdict_in: Result<(), &str>, expected: Result<(), &str>) {
        let bytes = reply(verdict_in.map_err(str::to_owned));
        let got = verdict("peer:1", &bytes).map_err(|e| match e {
            TransportError::Rejected { reason, .. } => reason,
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn replies_round_trip() {
        check(Ok(()), Ok(()));
        check(Err("foreign cluster"), Err("foreign cluster"));
        check(Err(""), Err(""));
        let long = "é".repeat(MAX_REASON);
        let cut = "é".repeat(MAX_REASON / 2);
        check(Err(&long), Err(&cut));
    }

    #[test]
    fn bad_replies_are_protocol_errors() {
        for bytes in [&[][..], &[7u8][..], &[0u8, 1][..]] {
            let err = verdict("peer:1", bytes).unwrap_err().to_string();
            assert!(err.contains("protocol error"), "{err}");
        }
    }

    #[test]
    fn frames_carry_their_length() {
        let f = frame(b"abc").unwrap();
        assert_eq!(&f[..], &[0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
