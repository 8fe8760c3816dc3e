//! The server side: the `GossipService` implementation and its task.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use gossip_core::{Inbound, Rejection};
use gossip_proto::v1::gossip_service_server::{GossipService, GossipServiceServer};
use gossip_proto::v1::{Batch, Envelope, SendReply, StreamReply};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info_span, trace, warn};

use crate::conn::KillableIo;
use crate::tls::{ServerTls, TlsIncoming};

/// Interval of the HTTP/2 keepalive pings the server sends, so connections
/// of vanished hosts are detected and closed. Long: every member holds a
/// connection from most of its peers, and a ping on each of them every few
/// seconds would be most of a quiet cluster's traffic (issue #9 item 7). A
/// crashed process is noticed at once anyway (its kernel resets the
/// connection).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(120);
/// How long the server waits for a keepalive ping's answer.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The status a rejected frame is answered with; the one place where
/// [`Rejection`]s become gRPC codes (see the crate documentation).
pub(crate) fn rejection_status(rejection: &Rejection) -> Status {
    let message = rejection.to_string();
    match rejection {
        Rejection::Malformed(_) | Rejection::Oversized { .. } => Status::invalid_argument(message),
        Rejection::ForeignCluster { .. } => Status::permission_denied(message),
        Rejection::Overloaded => Status::resource_exhausted(message),
        Rejection::ShuttingDown => Status::unavailable(message),
        Rejection::Decrypt(_) => Status::unauthenticated(message),
    }
}

/// Counts a frame tonic refused before it reached the gate: a length over
/// the decoding limit (`OUT_OF_RANGE`) as oversized, bytes that are not the
/// expected protobuf message (`INTERNAL`) as malformed (issue #9 item 8).
/// Statuses of the gate's own rejections use other codes and are not
/// counted twice.
pub(crate) fn count_refused(inbound: &Inbound, status: &Status) {
    match status.code() {
        Code::OutOfRange => {
            inbound.reject(Rejection::Oversized {
                // The exact size is only in tonic's text.
                size: inbound.max_message_size() + 1,
                max: inbound.max_message_size(),
            });
        }
        Code::Internal => {
            inbound.reject(Rejection::Malformed(status.message().to_owned()));
        }
        _ => {}
    }
}

/// `gossip.v1.GossipService`: hands each envelope to the [`Inbound`] gate.
struct GossipServer {
    inbound: Inbound,
    /// Serve `Gossip` streams (false: answer `UNIMPLEMENTED`, as a member of
    /// the first wire version).
    streams: bool,
    /// Cancelled when the transport shuts down: open streams end at once.
    stopping: CancellationToken,
}

/// The answer stream of one `Gossip` call.
type ReplyStream = Pin<Box<dyn Stream<Item = Result<StreamReply, Status>> + Send>>;

/// Reads the next batch of `incoming` and accepts its envelopes; `Some`
/// with a reply when some were rejected, `None` when the stream ended.
/// Accepted batches produce no answer.
pub(crate) async fn next_reply(
    incoming: &mut Streaming<Batch>,
    inbound: &Inbound,
) -> Option<Result<StreamReply, Status>> {
    loop {
        let batch = match incoming.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return None,
            Err(status) => {
                count_refused(inbound, &status);
                debug!(code = ?status.code(), message = status.message(), "gossip stream failed");
                return Some(Err(status));
            }
        };
        let mut first: Option<Rejection> = None;
        let mut rejected = 0u32;
        for env in batch.envelopes {
            if let Err(r) = inbound.accept(env) {
                rejected += 1;
                first.get_or_insert(r);
            }
        }
        if let Some(r) = first {
            debug!(reason = r.label(), %r, rejected, "rejected envelopes of a batch");
            if matches!(
                r,
                Rejection::ForeignCluster { .. } | Rejection::ShuttingDown
            ) {
                // Nothing more from this stream can be accepted.
                return Some(Err(rejection_status(&r)));
            }
            return Some(Ok(StreamReply {
                reason: r.label().to_owned(),
                message: r.to_string(),
                rejected,
            }));
        }
    }
}

#[tonic::async_trait]
impl GossipService for GossipServer {
    type GossipStream = ReplyStream;

    async fn gossip(
        &self,
        request: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::GossipStream>, Status> {
        if !self.streams {
            return Err(Status::unimplemented("Gossip streams are not served"));
        }
        trace!(peer = ?request.remote_addr(), "gossip stream opened");
        let state = (
            request.into_inner(),
            self.inbound.clone(),
            self.stopping.clone(),
            false,
        );
        // The answer stream does the work: polling it reads and accepts the
        // peer's batches, so no task is spawned per stream or per message.
        let replies = futures_util::stream::unfold(
            state,
            |(mut incoming, inbound, stopping, done)| async move {
                if done {
                    return None;
                }
                let reply = tokio::select! {
                    () = stopping.cancelled() => None,
                    reply = next_reply(&mut incoming, &inbound) => reply,
                }?;
                let done = reply.is_err();
                Some((reply, (incoming, inbound, stopping, done)))
            },
        );
        Ok(Response::new(Box::pin(replies)))
    }

    async fn send(&self, request: Request<Envelope>) -> Result<Response<SendReply>, Status> {
        let peer = request.remote_addr();
        accept_unary(&self.inbound, request.into_inner(), peer)
            .map(|()| Response::new(SendReply {}))
    }
}

/// Hands the envelope of a unary `Send` from `peer` to `inbound`; a
/// rejection becomes the caller's status.
pub(crate) fn accept_unary(
    inbound: &Inbound,
    env: Envelope,
    peer: Option<SocketAddr>,
) -> Result<(), Status> {
    match inbound.accept(env) {
        Ok(()) => {
            trace!(?peer, "frame accepted");
            Ok(())
        }
        Err(rejection) => {
            debug!(?peer, reason = rejection.label(), %rejection, "frame rejected");
            Err(rejection_status(&rejection))
        }
    }
}

/// Spawns the server on `listener`, over TLS if `tls` is set (plaintext
/// HTTP/2 otherwise). It stops accepting when `stop` fires or its sender is
/// dropped (closing the listening socket at once and abandoning unfinished
/// TLS handshakes), asks every open connection to close gracefully (HTTP/2
/// GOAWAY), and ends when they all closed; cancelling `kill` closes the
/// remaining ones by force.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    listener: TcpListener,
    listen_addr: SocketAddr,
    inbound: Inbound,
    request_timeout: Duration,
    streams: bool,
    tls: Option<ServerTls>,
    stop: oneshot::Receiver<()>,
    kill: &CancellationToken,
) -> JoinHandle<()> {
    let max = inbound.max_message_size();
    let stopping = CancellationToken::new();
    let refused = inbound.clone();
    let service = GossipServiceServer::new(GossipServer {
        inbound,
        streams,
        stopping: stopping.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    // A unary `Send` whose body tonic cannot decode never reaches the
    // service: count it from the status tonic answers with.
    let count_layer = tower::util::MapResponseLayer::new(
        move |response: tonic::codegen::http::Response<tonic::body::Body>| {
            if let Some(status) = response.extensions().get::<Status>() {
                count_refused(&refused, status);
            }
            response
        },
    );
    let server = Server::builder()
        .timeout(request_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(count_layer);
    let signal = async move {
        // An error means the transport was dropped: stop as well.
        let _ = stop.await;
        // Open streams end now, so the graceful stop need not wait for them.
        stopping.cancel();
        debug!("gRPC server stopping");
    };
    let kill = kill.clone();
    let task = async move {
        let served = match tls {
            Some(tls) => {
                let incoming = TlsIncoming::new(listener, tls, &kill);
                server
                    .serve_with_incoming_shutdown(service, incoming, signal)
                    .await
            }
            None => {
                let incoming = TcpListenerStream::new(listener).map(move |conn| {
                    conn.map(|stream| {
                        // Gossip messages are small; do not let Nagle delay them.
                        if let Err(e) = stream.set_nodelay(true) {
                            trace!(error = %e, "cannot set TCP_NODELAY");
                        }
                        KillableIo::new(stream, &kill)
                    })
                });
                server
                    .serve_with_incoming_shutdown(service, incoming, signal)
                    .await
            }
        };
        match served {
            Ok(()) => debug!("gRPC server stopped"),
            Err(e) => warn!(error = %e, "gRPC server failed"),
        }
    };
    tokio::spawn(task.instrument(info_span!("grpc_server", %listen_addr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_rejection_has_its_code_and_its_text() {
        let cases = [
            (
                Rejection::Malformed("missing sender".into()),
                Code::InvalidArgument,
            ),
            (
                Rejection::Oversized { size: 9, max: 8 },
                Code::InvalidArgument,
            ),
            (
                Rejection::ForeignCluster {
                    expected: "a".into(),
                    got: "b".into(),
                },
                Code::PermissionDenied,
            ),
            (Rejection::Overloaded, Code::ResourceExhausted),
            (Rejection::ShuttingDown, Code::Unavailable),
            (Rejection::Decrypt("no key opens it"), Code::Unauthenticated),
        ];
        for (rejection, code) in cases {
            let status = rejection_status(&rejection);
            assert_eq!(status.code(), code, "{rejection:?}");
            assert_eq!(status.message(), rejection.to_string());
        }
    }
}
