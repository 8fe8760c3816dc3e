//! The client side: one cached channel per peer and the mapping of failed
//! calls to [`TransportError`]s.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gossip_core::{NodeAddr, TransportError};
use gossip_proto::v1::Envelope;
use gossip_proto::v1::gossip_service_client::GossipServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::{debug, trace};

use crate::tls::{ClientTls, FailureSlot, rustls_error, tls_failure};

type Client = GossipServiceClient<Channel>;

/// A cached channel: its number, its client and, under TLS, where its
/// connections record their TLS failures.
#[derive(Clone)]
struct Cached {
    id: u64,
    client: Client,
    tls_failure: Option<FailureSlot>,
}

#[derive(Default)]
struct Cache {
    /// Per peer: the channel and the number it was created with, so that a
    /// failed call only evicts the channel it used, not a newer one.
    clients: HashMap<NodeAddr, Cached>,
    next: u64,
    /// Set by [`Clients::close`]: no channel is created any more.
    closed: bool,
}

/// The channels of one transport, created lazily and dropped when a call
/// over them fails at the transport level (so the next send reconnects).
pub(crate) struct Clients {
    connect_timeout: Duration,
    request_timeout: Duration,
    /// `None`: plaintext HTTP/2 (h2c).
    tls: Option<Arc<ClientTls>>,
    cache: Mutex<Cache>,
}

impl Clients {
    pub(crate) fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        tls: Option<Arc<ClientTls>>,
    ) -> Self {
        Self {
            connect_timeout,
            request_timeout,
            tls,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached client for `to`, or a new lazily connecting one. Does not
    /// touch the network.
    fn client(&self, to: &NodeAddr) -> Result<Cached, TransportError> {
        let mut cache = self.lock();
        if cache.closed {
            return Err(TransportError::Other("gRPC transport has shut down".into()));
        }
        if let Some(cached) = cache.clients.get(to) {
            return Ok(cached.clone());
        }
        // Under TLS too the scheme is `http`: tonic then speaks HTTP/2 over
        // whatever connection the connector returns, here a TLS one.
        let endpoint = Endpoint::from_shared(format!("http://{to}"))
            .map_err(|e| TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!("not a valid gRPC endpoint address: {e}"),
            })?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .tcp_nodelay(true);
        let (channel, tls_failure) = match &self.tls {
            None => (endpoint.connect_lazy(), None),
            Some(tls) => {
                let connector = tls.connector(to)?;
                let failure = connector.failure();
                // The connect timeout bounds TCP connect and TLS handshake.
                (
                    endpoint.connect_with_connector_lazy(connector),
                    Some(failure),
                )
            }
        };
        cache.next += 1;
        let cached = Cached {
            id: cache.next,
            client: GossipServiceClient::new(channel),
            tls_failure,
        };
        cache.clients.insert(to.clone(), cached.clone());
        trace!(%to, "new gRPC channel");
        Ok(cached)
    }

    /// Drops the channel numbered `id` to `to`, if it is still cached.
    fn evict(&self, to: &NodeAddr, id: u64) {
        let mut cache = self.lock();
        if cache.clients.get(to).is_some_and(|cached| cached.id == id) {
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
        let Cached {
            id,
            mut client,
            tls_failure: slot,
        } = self.client(to)?;
        match client.send(Request::new(msg)).await {
            Ok(_) => Ok(()),
            Err(status) => {
                // A TLS failure recorded by the connection is the real cause
                // when the call failed locally.
                let recorded = slot
                    .filter(|_| status.source().is_some())
                    .and_then(|f| f.get());
                let error = match recorded {
                    Some(tls) => tls_failure(to.as_str(), &tls),
                    None => status_to_error(to, &status),
                };
                // A local failure (no connection, TLS refused, ...) or a
                // peer that cannot take messages now: reconnect next time.
                if status.source().is_some() || matches!(error, TransportError::Unreachable { .. })
                {
                    self.evict(to, id);
                }
                debug!(%to, code = ?status.code(), error = %error, "gRPC send failed");
                Err(error)
            }
        }
    }
}

/// Classifies a failed call (see the crate documentation): a TLS handshake
/// the peer refused is [`TransportError::Rejected`], any other TLS failure
/// [`TransportError::Unreachable`]; a status raised locally from a transport
/// error (it carries a source error), or an answer meaning "not reachable
/// now", is [`TransportError::Unreachable`]; any other answer of the peer is
/// [`TransportError::Rejected`].
pub(crate) fn status_to_error(to: &NodeAddr, status: &Status) -> TransportError {
    let addr = to.to_string();
    if let Some(tls) = status.source().and_then(rustls_error) {
        return tls_failure(&addr, tls);
    }
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
        let clients = Clients::new(Duration::from_secs(1), Duration::from_secs(2), None);
        let to = NodeAddr::from(port);
        let err = clients.send(&to, Envelope::default()).await.unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
        assert_eq!(clients.len(), 0);
        // A newer channel is not evicted by an older failure.
        let old = clients.client(&to).unwrap().id;
        clients.evict(&to, old);
        let new = clients.client(&to).unwrap().id;
        clients.evict(&to, old);
        assert_eq!(clients.len(), 1);
        assert_ne!(old, new);
    }
}
