//! The server side: the `GossipService` implementation and its task.

use std::net::SocketAddr;
use std::time::Duration;

use gossip_core::{Inbound, Rejection};
use gossip_proto::v1::gossip_service_server::{GossipService, GossipServiceServer};
use gossip_proto::v1::{Envelope, SendReply};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span, trace, warn};

use crate::conn::KillableIo;
use crate::tls::{ServerTls, TlsIncoming};

/// Interval of the HTTP/2 keepalive pings the server sends, so connections
/// of vanished peers are detected and closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long the server waits for a keepalive ping's answer.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The status a rejected frame is answered with; the one place where
/// [`Rejection`]s become gRPC codes (see the crate documentation).
pub(crate) fn rejection_status(rejection: &Rejection) -> Status {
    let message = rejection.to_string();
    match rejection {
        Rejection::Malformed(_) | Rejection::Oversized { .. } => Status::invalid_argument(message),
        Rejection::ForeignCluster { .. } => Status::permission_denied(message),
        Rejection::Overloaded => Status::resource_exhausted(message),
        Rejection::ShuttingDown => Status::unavailable(message),
    }
}

/// `gossip.v1.GossipService`: hands each envelope to the [`Inbound`] gate.
struct GossipServer {
    inbound: Inbound,
}

#[tonic::async_trait]
impl GossipService for GossipServer {
    async fn send(&self, request: Request<Envelope>) -> Result<Response<SendReply>, Status> {
        let peer = request.remote_addr();
        match self.inbound.accept(request.into_inner()) {
            Ok(()) => {
                trace!(?peer, "frame accepted");
                Ok(Response::new(SendReply {}))
            }
            Err(rejection) => {
                debug!(?peer, reason = rejection.label(), %rejection, "frame rejected");
                Err(rejection_status(&rejection))
            }
        }
    }
}

/// Spawns the server on `listener`, over TLS if `tls` is set (plaintext
/// HTTP/2 otherwise). It stops accepting when `stop` fires or its sender is
/// dropped (closing the listening socket at once and abandoning unfinished
/// TLS handshakes), asks every open connection to close gracefully (HTTP/2
/// GOAWAY), and ends when they all closed; cancelling `kill` closes the
/// remaining ones by force.
pub(crate) fn spawn(
    listener: TcpListener,
    listen_addr: SocketAddr,
    inbound: Inbound,
    request_timeout: Duration,
    tls: Option<ServerTls>,
    stop: oneshot::Receiver<()>,
    kill: &CancellationToken,
) -> JoinHandle<()> {
    let max = inbound.max_message_size();
    let service = GossipServiceServer::new(GossipServer { inbound })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let server = Server::builder()
        .timeout(request_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    let signal = async {
        // An error means the transport was dropped: stop as well.
        let _ = stop.await;
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
        ];
        for (rejection, code) in cases {
            let status = rejection_status(&rejection);
            assert_eq!(status.code(), code, "{rejection:?}");
            assert_eq!(status.message(), rejection.to_string());
        }
    }
}
