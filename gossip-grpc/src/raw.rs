//! Sending arbitrary bytes as the body of a `Send` call, for conformance and
//! bad-input tests.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes};
use gossip_proto::v1::SendReply;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;
use tonic::{Request, Status};
use tonic_prost::ProstDecoder;

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
/// answer. Uses the default timeouts (connect 1 s, request 2 s).
///
/// # Errors
/// The server's status if it refused the frame (e.g. `OUT_OF_RANGE` for a
/// frame over its maximum message size, `INTERNAL` for bytes that are not an
/// `Envelope`, or the code of an [`Inbound`](gossip_core::Inbound)
/// rejection), or `UNAVAILABLE` if no connection could be made.
pub async fn send_raw_frame(addr: SocketAddr, frame: Bytes) -> Result<(), Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("bad address {addr}: {e}")))?
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
        .timeout(DEFAULT_REQUEST_TIMEOUT)
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
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
