//! The client side: one cached channel per peer and the mapping of failed
//! calls to [`TransportError`]s.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use gossip_core::{NodeAddr, TransportError};
use gossip_proto::v1::Envelope;
use gossip_proto::v1::gossip_service_client::GossipServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::{debug, trace};

type Client = GossipServiceClient<Channel>;

#[derive(Default)]
struct Cache {
    /// Per peer: the channel and the number it was created with, so that a
    /// failed call only evicts the channel it used, not a newer one.
    clients: HashMap<NodeAddr, (u64, Client)>,
    next: u64,
    /// Set by [`Clients::close`]: no channel is created any more.
    closed: bool,
}

/// The channels of one transport, created lazily and dropped when a call
/// over them fails at the transport level (so the next send reconnects).
pub(crate) struct Clients {
    connect_timeout: Duration,
    request_timeout: Duration,
    cache: Mutex<Cache>,
}

impl Clients {
    pub(crate) fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            request_timeout,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached client for `to`, or a new lazily connecting one. Does not
    /// touch the network.
    fn client(&self, to: &NodeAddr) -> Result<(u64, Client), TransportError> {
        let mut cache = self.lock();
        if cache.closed {
            return Err(TransportError::Other("gRPC transport has shut down".into()));
        }
        if let Some((id, client)) = cache.clients.get(to) {
            return Ok((*id, client.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{to}"))
            .map_err(|e| TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!("not a valid gRPC endpoint address: {e}"),
            })?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .tcp_nodelay(true);
        let client = GossipServiceClient::new(endpoint.connect_lazy());
        cache.next += 1;
        let id = cache.next;
        cache.clients.insert(to.clone(), (id, client.clone()));
        trace!(%to, "new gRPC channel");
        Ok((id, client))
    }

    /// Drops the channel numbered `id` to `to`, if it is still cached.
    fn evict(&self, to: &NodeAddr, id: u64) {
        let mut cache = self.lock();
        if cache
            .clients
            .get(to)
            .is_some_and(|(cached, _)| *cached == id)
        {
            cache.clients.remove(to);
            trace!(%to, "dropped gRPC channel");
        }
    }

    /// Drops every cached channel (their background tasks end once no call
    /// uses them any more) and refuses further sends.
    pub(crate) fn close(&self) {
        let mut cache = self.lock();
        cache.closed = true;
        cache.clients.clear();
    }

    /// Number of cached channels.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().clients.len()
    }

    /// Sends `msg` to `to` with one unary `Send` call.
    pub(crate) async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        let (id, mut client) = self.client(to)?;
        match client.send(Request::new(msg)).await {
            Ok(_) => Ok(()),
            Err(status) => {
                let error = status_to_error(to, &status);
                if matches!(error, TransportError::Unreachable { .. }) {
                    self.evict(to, id);
                }
                debug!(%to, code = ?status.code(), error = %error, "gRPC send failed");
                Err(error)
            }
        }
    }
}

/// Classifies a failed call (see the crate documentation): a status raised
/// locally from a transport error (it carries a source error), or an answer
/// meaning "not reachable now", is [`TransportError::Unreachable`]; any other
/// answer of the peer is [`TransportError::Rejected`].
pub(crate) fn status_to_error(to: &NodeAddr, status: &Status) -> TransportError {
    let addr = to.to_string();
    let local_failure = status.source().is_some();
    let unreachable = matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    );
    if local_failure || unreachable {
        TransportError::Unreachable {
            addr,
            reason: describe(status),
        }
    } else {
        TransportError::Rejected {
            addr,
            reason: describe(status),
        }
    }
}

/// The status's message, or its code's description when the message is
/// empty, followed by the chain of source errors when there is one (e.g.
/// "tcp connect error: transport error: Connection refused (os error 111)").
fn describe(status: &Status) -> String {
    let mut text = if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    };
    let mut source = status.source();
    while let Some(error) = source {
        let part = error.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> NodeAddr {
        NodeAddr::parse("127.0.0.1:7001").unwrap()
    }

    #[test]
    fn peer_answers_are_rejections_or_unreachable() {
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::OutOfRange,
            Code::Internal,
            Code::Unimplemented,
        ] {
            let err = status_to_error(&addr(), &Status::new(code, "no thanks"));
            assert!(
                matches!(&err, TransportError::Rejected { addr, reason }
                    if addr == "127.0.0.1:7001" && reason == "no thanks"),
                "{code:?}: {err:?}"
            );
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
        ] {
            let err = status_to_error(&addr(), &Status::new(code, ""));
            assert!(
                matches!(&err, TransportError::Unreachable { reason, .. }
                    if reason == code.description()),
                "{code:?}: {err:?}"
            );
        }
    }

    #[test]
    fn local_transport_failures_are_unreachable() {
        // A status raised from a local error carries it as its source, even
        // when its code would otherwise read as a rejection.
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied locally");
        let status = Status::from_error(Box::new(io));
        assert!(status.source().is_some());
        let err = status_to_error(&addr(), &status);
        assert!(
            matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("denied locally")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_connection_drops_the_cached_channel() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let clients = Clients::new(Duration::from_secs(1), Duration::from_secs(2));
        let to = NodeAddr::from(port);
        let err = clients.send(&to, Envelope::default()).await.unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
        assert_eq!(clients.len(), 0);
        // A newer channel is not evicted by an older failure.
        let (old, _) = clients.client(&to).unwrap();
        clients.evict(&to, old);
        let (new, _) = clients.client(&to).unwrap();
        clients.evict(&to, old);
        assert_eq!(clients.len(), 1);
        assert_ne!(old, new);
    }
}
