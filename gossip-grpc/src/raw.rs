//! Sending arbitrary bytes as the body of a `Send` call, for conformance and
//! bad-input tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::{BufMut, Bytes};
use gossip_proto::v1::SendReply;
use gossip_tls::{TlsMode, rustls};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_prost::ProstDecoder;

use crate::tls::ClientTls;
use crate::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

/// The HTTP/2 path of the `Send` RPC.
const SEND_PATH: &str = "/gossip.v1.GossipService/Send";

/// Encodes the request as the given bytes, verbatim; decodes the reply as a
/// `SendReply`.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = SendReply;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<SendReply>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

/// Sends `frame` verbatim as the message of one `gossip.v1.GossipService/Send`
/// call to `addr` over a fresh plaintext connection, so that garbage or
/// oversized bytes reach the server's decoder, and returns the server's
/// answer. Uses the default timeouts (connect 1 s, request 2 s). For a
/// server under TLS, see [`send_raw_frame_tls`].
///
/// # Errors
/// The server's status if it refused the frame (e.g. `OUT_OF_RANGE` for a
/// frame over its maximum message size, `INTERNAL` for bytes that are not an
/// `Envelope`, or the code of an [`Inbound`](gossip_core::Inbound)
/// rejection), or `UNAVAILABLE` if no connection could be made.
pub async fn send_raw_frame(addr: SocketAddr, frame: Bytes) -> Result<(), Status> {
    let channel = endpoint(addr)?
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
    raw_call(addr, channel, frame).await
}

/// Like [`send_raw_frame`], over a fresh TLS connection made with `client`:
/// the server certificate is checked as `client` says, against `addr`'s IP
/// address. `client` should offer the ALPN protocol [`ALPN_H2`](crate::ALPN_H2);
/// for example `gossip_tls::unverified_client_config(&[ALPN_H2])` (the client
/// side of self-signed mode) or the `client` of a
/// [`TlsSetup`](gossip_tls::TlsSetup).
///
/// # Errors
/// As [`send_raw_frame`]; a TLS handshake that fails (either side refusing)
/// is `UNAVAILABLE`, with the TLS error in the message when it is known.
pub async fn send_raw_frame_tls(
    addr: SocketAddr,
    frame: Bytes,
    client: Arc<rustls::ClientConfig>,
) -> Result<(), Status> {
    // The mode only matters for host names, and `addr` is an IP address.
    let tls = ClientTls::new(client, TlsMode::Mtls, Arc::new(AtomicU64::new(0)));
    let channel = endpoint(addr)?
        .connect_with_connector(tls.connector_to_socket(addr))
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {}", chain(&e))))?;
    raw_call(addr, channel, frame).await
}

fn endpoint(addr: SocketAddr) -> Result<Endpoint, Status> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("bad address {addr}: {e}")))?
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
        .timeout(DEFAULT_REQUEST_TIMEOUT))
}

/// `error` followed by its sources.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = e.source();
    }
    text
}

async fn raw_call(addr: SocketAddr, channel: Channel, frame: Bytes) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection to {addr} not ready: {e}")))?;
    grpc.unary(
        Request::new(frame),
        PathAndQuery::from_static(SEND_PATH),
        RawCodec,
    )
    .await
    .map(|_| ())
}
