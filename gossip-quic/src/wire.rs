//! The two wire versions, told apart by ALPN.
//!
//! # `gossip/2` ([`ALPN_V2`])
//!
//! Hello, once per connection, on the first bidirectional stream: the client
//! writes its cluster id (UTF-8), optionally followed by the byte
//! [`HELLO_SEPARATOR`] (`0xFF`, which UTF-8 never contains) and its own
//! advertised address (UTF-8, `host:port`), at most [`MAX_HELLO`] bytes in
//! all, and finishes; the server answers with a verdict (below) and
//! finishes. A hello without the separator (the first `gossip/2` format)
//! names no address; bytes after a second separator are ignored (room for
//! later fields). Nothing else is read from a connection before its hello is
//! accepted; a refused client gets the reason in the verdict and the
//! connection is closed with [`CLOSE_FOREIGN_CLUSTER`].
//!
//! An address in the hello says: "I read this connection too; send me what
//! you have for this address on it". The server may then use the connection
//! for its own messages to that address, in the same framing (datagrams and
//! one-way streams, now server to client), instead of dialling a connection
//! of its own. It is only a hint for choosing a connection, never an
//! identity: envelopes are checked as always. (Endpoints of the first
//! `gossip/2` format, never released, compare the whole hello with their
//! cluster id and so refuse one with an address.)
//!
//! Then, one way per direction, without verdicts:
//!
//! ```text
//! DATAGRAM (RFC 9221)    an encoded gossip.v1.Batch of one or more envelopes
//! unidirectional stream  frames until FIN, each
//!                        u32 big-endian length N | N bytes: an encoded
//!                        gossip.v1.Batch (one envelope per frame)
//! ```
//!
//! An envelope goes in a datagram if it fits ([`pack`]); one that does not
//! fit alone goes on a stream. A stream frame's length is checked against
//! the maximum message size plus [`BATCH_FRAMING`] before any buffer is
//! allocated.
//!
//! # `gossip/1` ([`ALPN_V1`]), the previous version
//!
//! One bidirectional stream per message. Request (sender to receiver), then
//! the sender finishes its side:
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

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use gossip_core::pb::Envelope;
use gossip_core::{NodeAddr, TransportError};
use prost::Message;
use prost::encoding::{WireType, encode_key, encoded_len_varint};

/// ALPN of the previous wire: one stream and one verdict per message.
pub(crate) const ALPN_V1: &[u8] = gossip_proto::PROTOCOL.as_bytes();
/// ALPN of the current wire: hello once, then datagrams and one-way streams.
pub const ALPN_V2: &[u8] = b"gossip/2";

/// Longest hello (a cluster id and an address) read, in bytes.
pub(crate) const MAX_HELLO: usize = 1024;
/// Ends the cluster id of a hello, before the client's address; never part
/// of UTF-8 text.
pub(crate) const HELLO_SEPARATOR: u8 = 0xFF;
/// Bytes a `Batch` of one envelope adds to the envelope: the field key and
/// the length varint (at most 10 bytes), rounded up.
pub(crate) const BATCH_FRAMING: usize = 16;

/// Application close code: this member shuts down.
pub(crate) const CLOSE_SHUTDOWN: u32 = 0;
/// Application close code: the peer did not answer (silent connection).
pub(crate) const CLOSE_NO_ANSWER: u32 = 1;
/// Application close code: the server refused the client's cluster id.
pub(crate) const CLOSE_FOREIGN_CLUSTER: u32 = 2;
/// Application close code: the connection was the least recently used one
/// beyond `max_connections`.
pub(crate) const CLOSE_EVICTED: u32 = 3;
/// Application close code: the hello did not follow the framing, or took
/// longer than the connect timeout.
pub(crate) const CLOSE_PROTOCOL: u32 = 4;
/// Application close code: the client gives up a connection the server
/// refused.
pub(crate) const CLOSE_REFUSED: u32 = 5;
/// Stream stop code: the announced frame is larger than the limit.
pub(crate) const STOP_OVERSIZED: u32 = 1;
/// Stream stop code: a stream this wire does not use (a bidirectional
/// stream after the hello of a `gossip/2` connection).
pub(crate) const STOP_UNEXPECTED: u32 = 2;

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
/// [`TransportError::TooLarge`] if the payload is longer than `u32::MAX` bytes.
pub(crate) fn frame(payload: &[u8]) -> Result<Bytes, TransportError> {
    let len = u32::try_from(payload.len()).map_err(|_| TransportError::TooLarge {
        size: payload.len(),
        max: u32::MAX as usize,
    })?;
    let mut buf = BytesMut::with_capacity(LEN_PREFIX + payload.len());
    buf.put_u32(len);
    buf.put_slice(payload);
    Ok(buf.freeze())
}

/// Encodes a client's hello: `cluster` (cut at [`MAX_HELLO`] bytes, on a
/// character boundary), then `addr` if given and if it fits.
pub(crate) fn hello(cluster: &str, addr: Option<&NodeAddr>) -> Vec<u8> {
    let mut end = cluster.len().min(MAX_HELLO);
    while !cluster.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(end + 1 + addr.map_or(0, |a| a.as_str().len()));
    out.extend_from_slice(&cluster.as_bytes()[..end]);
    if let Some(addr) = addr
        && out.len() + 1 + addr.as_str().len() <= MAX_HELLO
    {
        out.push(HELLO_SEPARATOR);
        out.extend_from_slice(addr.as_str().as_bytes());
    }
    out
}

/// A hello as the server reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientHello {
    /// The client's cluster id (invalid UTF-8 replaced, for the comparison
    /// and the error message).
    pub(crate) cluster: String,
    /// The address the client says it is reachable at, if it said one:
    /// `Ok` if it is a valid member address, `Err` with the text otherwise.
    pub(crate) addr: Option<Result<NodeAddr, String>>,
}

/// Decodes a client's hello (either format).
pub(crate) fn parse_hello(bytes: &[u8]) -> ClientHello {
    let mut fields = bytes.split(|&b| b == HELLO_SEPARATOR);
    let cluster = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let addr = fields.next().map(|field| {
        let text = String::from_utf8_lossy(field);
        text.parse::<NodeAddr>().map_err(|_| text.into_owned())
    });
    ClientHello { cluster, addr }
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

/// Bytes `env` takes inside an encoded `Batch`.
fn batch_entry_len(env: &Envelope) -> usize {
    let len = env.encoded_len();
    1 + encoded_len_varint(len as u64) + len
}

/// Appends `env` to an encoded `Batch` (field 1, length-delimited).
fn put_entry(buf: &mut BytesMut, env: &Envelope) {
    encode_key(1, WireType::LengthDelimited, buf);
    // A BytesMut grows as needed, so encoding cannot fail.
    let _ = env.encode_length_delimited(buf);
}

/// A batch laid out for the wire by [`pack`].
#[derive(Debug, Default)]
pub(crate) struct Packed {
    /// Encoded `Batch`es, each at most the datagram size, in order, with the
    /// range of the batch's envelopes each holds.
    pub(crate) datagrams: Vec<(Bytes, Range<usize>)>,
    /// Indices of envelopes too large for a datagram of their own.
    pub(crate) streamed: Vec<usize>,
}

/// Packs `batch` into as few datagrams of at most `max_datagram` bytes as
/// the order allows (consecutive envelopes share a datagram); envelopes that
/// do not fit in one alone are left for a stream. `None`: the connection
/// carries no datagrams, everything goes on a stream.
pub(crate) fn pack(batch: &[Envelope], max_datagram: Option<usize>) -> Packed {
    let mut packed = Packed::default();
    let Some(max) = max_datagram else {
        packed.streamed = (0..batch.len()).collect();
        return packed;
    };
    let mut cur = BytesMut::new();
    let mut start = 0;
    for (i, env) in batch.iter().enumerate() {
        let entry = batch_entry_len(env);
        if entry > max {
            packed.streamed.push(i);
            continue;
        }
        if !cur.is_empty() && cur.len() + entry > max {
            packed.datagrams.push((cur.split().freeze(), start..i));
        }
        if cur.is_empty() {
            start = i;
            cur.reserve(max);
        }
        put_entry(&mut cur, env);
    }
    if !cur.is_empty() {
        packed.datagrams.push((cur.freeze(), start..batch.len()));
    }
    packed
}

/// The stream frames of `envelopes` (one envelope per frame), back to back.
///
/// # Errors
/// [`TransportError::TooLarge`] for an envelope longer than `u32::MAX` bytes.
pub(crate) fn stream_frames<'a>(
    envelopes: impl Iterator<Item = &'a Envelope>,
) -> Result<Bytes, TransportError> {
    let mut buf = BytesMut::new();
    for env in envelopes {
        let len = batch_entry_len(env);
        let prefix = u32::try_from(len).map_err(|_| TransportError::TooLarge {
            size: len,
            max: u32::MAX as usize,
        })?;
        buf.reserve(LEN_PREFIX + len);
        buf.put_u32(prefix);
        put_entry(&mut buf, env);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip_core::pb;
    use gossip_core::pb::Batch;

    fn env(seq: u64, pad: usize) -> Envelope {
        Envelope {
            cluster_id: "x".repeat(pad),
            body: Some(pb::envelope::Body::Ping(pb::Ping {
                seq,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn seqs(batch: &[Envelope]) -> Vec<u64> {
        batch
            .iter()
            .map(|e| match &e.body {
                Some(pb::envelope::Body::Ping(p)) => p.seq,
                _ => panic!("not a ping"),
            })
            .collect()
    }

    #[test]
    fn small_envelopes_share_datagrams_in_order() {
        let batch: Vec<Envelope> = (0..40).map(|i| env(i, 180)).collect();
        let packed = pack(&batch, Some(1200));
        assert!(packed.streamed.is_empty());
        // About 190 bytes each: six per datagram of 1200.
        assert_eq!(packed.datagrams.len(), 7);
        let mut got = Vec::new();
        let mut next = 0;
        for (bytes, range) in &packed.datagrams {
            assert!(bytes.len() <= 1200, "{}", bytes.len());
            assert_eq!(range.start, next);
            next = range.end;
            let decoded = Batch::decode(bytes.clone()).unwrap();
            assert_eq!(decoded.envelopes, batch[range.clone()]);
            got.extend(seqs(&decoded.envelopes));
        }
        assert_eq!(got, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn large_envelopes_are_left_for_a_stream() {
        let batch = vec![env(0, 10), env(1, 8000), env(2, 10)];
        let packed = pack(&batch, Some(1200));
        assert_eq!(packed.streamed, vec![1]);
        assert_eq!(packed.datagrams.len(), 1);
        assert_eq!(packed.datagrams[0].1, 0..3);
        let decoded = Batch::decode(packed.datagrams[0].0.clone()).unwrap();
        assert_eq!(seqs(&decoded.envelopes), vec![0, 2]);

        let frames = stream_frames(packed.streamed.iter().map(|&i| &batch[i])).unwrap();
        let len = u32::from_be_bytes(frames[..4].try_into().unwrap()) as usize;
        assert_eq!(frames.len(), LEN_PREFIX + len);
        assert!(len <= batch[1].encoded_len() + BATCH_FRAMING);
        let decoded = Batch::decode(&frames[4..]).unwrap();
        assert_eq!(decoded.envelopes, vec![batch[1].clone()]);
    }

    #[test]
    fn without_datagrams_everything_is_streamed() {
        let batch = vec![env(0, 10), env(1, 10)];
        let packed = pack(&batch, None);
        assert!(packed.datagrams.is_empty());
        assert_eq!(packed.streamed, vec![0, 1]);
        assert!(pack(&[], Some(1200)).datagrams.is_empty());
    }

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
    fn hellos_round_trip_with_and_without_an_address() {
        let addr: NodeAddr = "10.0.0.7:7946".parse().unwrap();
        let with = hello("blue", Some(&addr));
        assert_eq!(with, b"blue\xff10.0.0.7:7946");
        assert_eq!(
            parse_hello(&with),
            ClientHello {
                cluster: "blue".into(),
                addr: Some(Ok(addr.clone())),
            }
        );
        // The first format: the cluster id alone, no address.
        assert_eq!(hello("blue", None), b"blue");
        assert_eq!(
            parse_hello(b"blue"),
            ClientHello {
                cluster: "blue".into(),
                addr: None,
            }
        );
        // Later fields are ignored; an unusable address is reported as such.
        let more = parse_hello(b"blue\xff10.0.0.7:7946\xffsomething new");
        assert_eq!(more.addr, Some(Ok(addr.clone())));
        assert_eq!(
            parse_hello(b"blue\xffnot an address").addr,
            Some(Err("not an address".into()))
        );
        // A cluster id that fills the hello leaves no room for the address.
        let long = "é".repeat(MAX_HELLO);
        let bytes = hello(&long, Some(&addr));
        assert_eq!(bytes.len(), MAX_HELLO);
        assert_eq!(parse_hello(&bytes).addr, None);
    }

    #[test]
    fn frames_carry_their_length() {
        let f = frame(b"abc").unwrap();
        assert_eq!(&f[..], &[0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
