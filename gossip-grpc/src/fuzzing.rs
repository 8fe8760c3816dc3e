//! Entry points for fuzzing and for replaying fuzz corpora (issue #12),
//! behind the `fuzzing` feature.
//!
//! What reaches our code from a gRPC peer: hyper and h2 take the HTTP/2
//! frames apart; tonic reads the gRPC framing of the request body (a flag
//! byte and a `u32` length before each message), enforces the maximum
//! decoding size, and prost decodes each message; only then does our code
//! run, on a decoded `Batch` (`Gossip` stream) or `Envelope` (unary
//! `Send`). These entry points take the request body's bytes (the payload
//! of the HTTP/2 DATA frames) and run tonic's decoding, set up as the
//! server sets it up, and then exactly the code the server runs on what it
//! yields. The other direction too: the answers a peer's server sends on
//! a `Gossip` stream we opened, as our client reads them. HTTP/2 itself
//! (h2) is not ours and not fuzzed here.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use gossip_core::Inbound;
use gossip_proto::v1::{Batch, Envelope, StreamReply};
use http_body::Frame;
use tonic::{Status, Streaming};
use tonic_prost::ProstDecoder;

use crate::client::count_reply;
use crate::server::{accept_unary, count_refused, next_reply};

/// A request body that holds all its bytes at once.
struct SliceBody(Option<Bytes>);

impl http_body::Body for SliceBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

/// Runs a future that never waits (decoding a body already in memory).
///
/// # Panics
/// If the future is pending, which decoding a [`SliceBody`] never is.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("decoding a body in memory never waits"),
    }
}

fn streaming<T: prost::Message + Default + Send + 'static>(
    inbound: &Inbound,
    body: &[u8],
) -> Streaming<T> {
    Streaming::new_request(
        ProstDecoder::<T>::default(),
        SliceBody(Some(Bytes::copy_from_slice(body))),
        None,
        Some(inbound.max_message_size()),
    )
}

/// The body of a `Gossip` stream: every batch it holds goes through the
/// server's handling (each envelope to `inbound`), to the end of the body
/// or the first error. Returns the number of answers the server would send
/// (one per batch with rejected envelopes, or the final error).
pub fn gossip_stream(inbound: &Inbound, body: &[u8]) -> usize {
    let mut incoming = streaming::<Batch>(inbound, body);
    let mut answers = 0;
    while let Some(reply) = run(next_reply(&mut incoming, inbound)) {
        answers += 1;
        if reply.is_err() {
            break;
        }
    }
    answers
}

/// The body of a unary `Send`: decoded as tonic decodes a unary request,
/// then handed to `inbound` as the service does; a status tonic answers
/// itself is counted as the server's layer counts it.
///
/// # Errors
/// The status the caller would get.
pub fn unary_send(inbound: &Inbound, body: &[u8]) -> Result<(), Status> {
    let mut incoming = streaming::<Envelope>(inbound, body);
    let decoded = run(async {
        let env = incoming
            .message()
            .await?
            .ok_or_else(|| Status::internal("Missing request message."))?;
        incoming.trailers().await?;
        Ok::<_, Status>(env)
    });
    match decoded {
        Ok(env) => accept_unary(inbound, env, None),
        Err(status) => {
            count_refused(inbound, &status);
            Err(status)
        }
    }
}

/// The body of the answer stream of a `Gossip` call we opened: each
/// `StreamReply` is counted as the client counts it, to the end of the
/// body or the first error (which ends the client's stream). The client
/// keeps tonic's default decoding limit. Returns the answers read.
pub fn gossip_answers(inbound: &Inbound, body: &[u8]) -> usize {
    let mut replies = Streaming::<StreamReply>::new_response(
        ProstDecoder::<StreamReply>::default(),
        SliceBody(Some(Bytes::copy_from_slice(body))),
        tonic::codegen::http::StatusCode::OK,
        None,
        None,
    );
    let mut answers = 0;
    while let Ok(Some(reply)) = run(replies.message()) {
        count_reply(inbound, &reply);
        answers += 1;
    }
    answers
}
