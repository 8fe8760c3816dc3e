//! Entry points for fuzzing and for replaying fuzz corpora (issue #12),
//! behind the `fuzzing` feature: each runs the code a received QUIC stream
//! or datagram runs, on bytes from a slice instead of a connection. Their
//! inputs are the bytes a peer controls, after QUIC and TLS (quinn's part).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use gossip_core::{Inbound, TransportError};

use crate::{frames, wire};

/// Runs a future that never waits (a reader over a slice) to its end.
///
/// # Panics
/// If the future is pending, which a slice reader never is.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a reader over a slice never waits"),
    }
}

/// A client's `gossip/2` hello as the server reads it: whether it was
/// accepted (names `inbound`'s cluster). A named address is parsed and
/// returned, valid or not, as the server would consider adopting it.
pub fn hello(inbound: &Inbound, bytes: &[u8]) -> (bool, Option<Result<String, String>>) {
    let (hello, verdict) = frames::hello_verdict(inbound, bytes);
    let addr = hello.addr.map(|a| a.map(|a| a.to_string()));
    (verdict.is_ok(), addr)
}

/// A `gossip/2` datagram: an encoded `Batch` whose envelopes go to
/// `inbound`.
pub fn datagram(inbound: &Inbound, bytes: &[u8]) {
    frames::accept_batch(inbound, bytes, "datagram");
}

/// A whole `gossip/2` one-way stream (length-prefixed `Batch` frames until
/// the end), with the server's frame limit for `inbound`.
pub fn uni_stream(inbound: &Inbound, bytes: &[u8]) {
    let max_frame = inbound.max_message_size() + wire::BATCH_FRAMING;
    run(frames::read_uni_frames(&mut &bytes[..], inbound, max_frame));
}

/// A whole `gossip/1` request stream (one length-prefixed `Envelope`): the
/// verdict the server sends, `None` if it sends none. The verdict is also
/// encoded as the reply and decoded as the client would.
///
/// # Panics
/// If the client would read another verdict than the one sent.
pub fn v1_stream(inbound: &Inbound, bytes: &[u8]) -> Option<Result<(), String>> {
    let verdict = run(frames::read_v1_frame(&mut &bytes[..], inbound))?;
    let read = wire::verdict("peer:1", &wire::reply(verdict.clone()));
    assert_eq!(
        read.is_ok(),
        verdict.is_ok(),
        "{verdict:?} read as {read:?}"
    );
    Some(verdict)
}

/// A server's reply to a `gossip/1` request or a hello, as the client
/// reads it.
///
/// # Errors
/// The client's result: [`TransportError::Rejected`] for a refusal or a
/// reply that does not follow the framing.
pub fn reply(bytes: &[u8]) -> Result<(), TransportError> {
    wire::verdict("peer:1", bytes)
}
