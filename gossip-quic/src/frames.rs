//! Reading what a peer sends on a stream or in a datagram, apart from
//! quinn: the frame loops of both wires over any [`FrameSource`], so that
//! the bytes a peer controls go through one code path whether they come
//! from a QUIC stream or, in tests and fuzzing (issue #12), from a slice.

use gossip_core::pb::Batch;
use gossip_core::{Inbound, Rejection};
use prost::Message;
use quinn::{ReadExactError, RecvStream, VarInt};
use tracing::{debug, trace};

use crate::wire;

/// How a read of an exact number of bytes ended short.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer finished the stream after this many of the wanted bytes.
    Finished(usize),
    /// The stream failed (reset, connection lost); the reason.
    Failed(String),
}

/// What the frame readers need of a stream: quinn's [`RecvStream`], or a
/// byte slice (the whole stream, finished at its end).
pub(crate) trait FrameSource {
    /// Fills `buf` entirely, or says why not.
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadEnd>;
    /// Tells the peer to stop sending, with an application code.
    fn stop(&mut self, code: u32);
}

impl FrameSource for RecvStream {
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadEnd> {
        match RecvStream::read_exact(self, buf).await {
            Ok(()) => Ok(()),
            Err(ReadExactError::FinishedEarly(got)) => Err(ReadEnd::Finished(got)),
            Err(ReadExactError::ReadError(e)) => Err(ReadEnd::Failed(e.to_string())),
        }
    }

    fn stop(&mut self, code: u32) {
        let _ = RecvStream::stop(self, VarInt::from_u32(code));
    }
}

impl FrameSource for &[u8] {
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadEnd> {
        if self.len() < buf.len() {
            let got = self.len();
            buf[..got].copy_from_slice(self);
            *self = &[];
            return Err(ReadEnd::Finished(got));
        }
        let (head, rest) = self.split_at(buf.len());
        buf.copy_from_slice(head);
        *self = rest;
        Ok(())
    }

    fn stop(&mut self, _code: u32) {
        *self = &[];
    }
}

/// Hands every envelope of an encoded `Batch` to `inbound`; a batch that
/// does not decode, or holds nothing, is counted as malformed. `what` names
/// the carrier in the log (`datagram`, `stream frame`).
pub(crate) fn accept_batch(inbound: &Inbound, bytes: &[u8], what: &str) {
    match Batch::decode(bytes) {
        Ok(batch) if batch.envelopes.is_empty() => {
            let r = inbound.reject(Rejection::Malformed(format!("a {what} without envelopes")));
            debug!(reason = %r, "rejected a {what}");
        }
        Ok(batch) => {
            for env in batch.envelopes {
                if let Err(r) = inbound.accept(env) {
                    debug!(reason = %r, "rejected an envelope");
                }
            }
            trace!(bytes = bytes.len(), "accepted a {what}");
        }
        Err(e) => {
            let r = inbound.reject(Rejection::Malformed(format!("undecodable {what}: {e}")));
            debug!(reason = %r, "rejected a {what}");
        }
    }
}

/// Reads the frames of one `gossip/2` one-way stream until its end. A
/// length over `max_frame` is refused before anything is allocated, and the
/// stream stopped with [`wire::STOP_OVERSIZED`].
pub(crate) async fn read_uni_frames(
    recv: &mut impl FrameSource,
    inbound: &Inbound,
    max_frame: usize,
) {
    loop {
        let mut len = [0u8; wire::LEN_PREFIX];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(ReadEnd::Finished(0)) => return,
            Err(ReadEnd::Finished(_)) => {
                inbound.reject(Rejection::Malformed(
                    "stream ended inside a frame length".to_owned(),
                ));
                return;
            }
            Err(ReadEnd::Failed(e)) => {
                debug!(error = %e, "stream failed");
                return;
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > max_frame {
            // Counted as oversized (the frame is larger than any message).
            let r = inbound.check_len(len).err();
            recv.stop(wire::STOP_OVERSIZED);
            debug!(reason = ?r, "refused a stream frame from its length");
            return;
        }
        let mut buf = vec![0u8; len];
        match recv.read_exact(&mut buf).await {
            Ok(()) => accept_batch(inbound, &buf, "stream frame"),
            Err(ReadEnd::Finished(got)) => {
                inbound.reject(Rejection::Malformed(format!(
                    "stream frame truncated, {got} of the announced {len} bytes arrived"
                )));
                return;
            }
            Err(ReadEnd::Failed(e)) => {
                debug!(error = %e, "stream failed while reading a frame");
                return;
            }
        }
    }
}

/// Reads the one frame of a `gossip/1` stream and hands it to `inbound`:
/// the verdict to send back, or `None` when the stream failed and no
/// verdict can be sent. A length over the limit is refused before anything
/// is allocated, and the stream stopped with [`wire::STOP_OVERSIZED`].
pub(crate) async fn read_v1_frame(
    recv: &mut impl FrameSource,
    inbound: &Inbound,
) -> Option<Result<(), String>> {
    let mut len = [0u8; wire::LEN_PREFIX];
    if let Err(e) = recv.read_exact(&mut len).await {
        debug!(error = ?e, "stream ended before a frame length");
        return None;
    }
    let len = u32::from_be_bytes(len) as usize;
    if let Err(r) = inbound.check_len(len) {
        // Refuse before allocating or reading the body.
        recv.stop(wire::STOP_OVERSIZED);
        return Some(Err(r.to_string()));
    }
    let mut buf = vec![0u8; len];
    match recv.read_exact(&mut buf).await {
        Ok(()) => Some(inbound.accept_bytes(&buf).map_err(|r| r.to_string())),
        Err(ReadEnd::Finished(got)) => Some(Err(inbound
            .reject(Rejection::Malformed(format!(
                "frame truncated, {got} of the announced {len} bytes arrived"
            )))
            .to_string())),
        Err(ReadEnd::Failed(e)) => {
            debug!(error = %e, "stream failed while reading a frame");
            None
        }
    }
}

/// The server's verdict on a client's hello (`bytes`, as read): accepted if
/// it names this member's cluster, otherwise the counted rejection's text.
/// Also returns the parsed hello, whose address the caller may adopt.
pub(crate) fn hello_verdict(
    inbound: &Inbound,
    bytes: &[u8],
) -> (wire::ClientHello, Result<(), String>) {
    let hello = wire::parse_hello(bytes);
    let verdict = if hello.cluster == inbound.cluster_id() {
        Ok(())
    } else {
        Err(inbound
            .reject(Rejection::ForeignCluster {
                expected: inbound.cluster_id().to_owned(),
                got: hello.cluster.chars().take(128).collect(),
            })
            .to_string())
    };
    (hello, verdict)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gossip_core::pb::{self, Envelope};
    use gossip_core::{Stats, inbound_channel};

    use super::*;

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

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_slice_stream_yields_its_frames_and_counts_a_truncated_one() {
        let stats = Arc::new(Stats::default());
        let (inbound, mut rx) = inbound_channel("c", 1024, 8, stats.clone());
        let batch = Batch {
            envelopes: vec![env("c")],
        };
        let mut bytes = wire::frame(&batch.encode_to_vec()).unwrap().to_vec();
        bytes.extend_from_slice(&wire::frame(&batch.encode_to_vec()).unwrap());
        // A third frame announces 100 bytes and brings 2.
        bytes.extend_from_slice(&[0, 0, 0, 100, 1, 2]);
        let mut source = &bytes[..];
        block_on(read_uni_frames(&mut source, &inbound, 1024));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        let s = stats.snapshot();
        assert_eq!((s.messages_received, s.rejected_malformed), (2, 1));
    }

    #[test]
    fn an_oversized_length_stops_the_stream_before_reading_it() {
        let stats = Arc::new(Stats::default());
        let (inbound, _rx) = inbound_channel("c", 1024, 8, stats.clone());
        let bytes = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let mut source = &bytes[..];
        block_on(read_uni_frames(&mut source, &inbound, 1040));
        assert!(source.is_empty(), "stopped");
        assert_eq!(stats.snapshot().rejected_oversized, 1);

        let mut source = &bytes[..];
        let verdict = block_on(read_v1_frame(&mut source, &inbound)).unwrap();
        assert!(verdict.unwrap_err().contains("1024"));
        assert_eq!(stats.snapshot().rejected_oversized, 2);
    }

    #[test]
    fn a_v1_frame_gets_its_verdict() {
        let stats = Arc::new(Stats::default());
        let (inbound, mut rx) = inbound_channel("c", 1024, 8, stats);
        let bytes = wire::frame(&env("c").encode_to_vec()).unwrap();
        assert_eq!(
            block_on(read_v1_frame(&mut &bytes[..], &inbound)),
            Some(Ok(()))
        );
        assert!(rx.try_recv().is_ok());
        let bytes = wire::frame(&env("d").encode_to_vec()).unwrap();
        let verdict = block_on(read_v1_frame(&mut &bytes[..], &inbound)).unwrap();
        assert!(verdict.unwrap_err().contains("cluster"));
        // No length at all: no verdict.
        assert_eq!(block_on(read_v1_frame(&mut &[0u8, 0][..], &inbound)), None);
    }
}
