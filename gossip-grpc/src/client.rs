//! The client side: one cached channel per peer, one long-lived `Gossip`
//! stream per channel, and the mapping of failed calls to
//! [`TransportError`]s.
//!
//! Sending a batch puts it on the peer's stream: no call, no task and no
//! wait for an answer per message. The stream's one task (started with the
//! stream) reads the peer's answers: a [`StreamReply`] for a batch with
//! rejected envelopes (counted with [`Inbound::count_peer_rejection`] and
//! logged), or the status that ended the stream. A stream that ends or
//! fails is dropped and the next send opens another; a peer that answers
//! `UNIMPLEMENTED` (a member of the first wire version) is sent unary
//! `Send` calls from then on. At most `max_connections` channels are kept:
//! the least recently used is dropped first, and a channel unused for
//! `idle_timeout` is dropped.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use gossip_core::{Inbound, NodeAddr, TransportError};
use gossip_proto::v1::gossip_service_client::GossipServiceClient;
use gossip_proto::v1::{Batch, Envelope, StreamReply};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::{debug, trace, warn};

use crate::tls::{ClientTls, FailureSlot, rustls_error, tls_failure};

type Client = GossipServiceClient<Channel>;

/// Batches waiting to be written on one stream before a send waits.
const STREAM_QUEUE: usize = 64;
/// Largest encoded batch before the transport is started (and knows the
/// member's maximum message size).
const DEFAULT_BATCH_LIMIT: usize = 64 * 1024;

/// A cached channel: its number, its client, under TLS where its
/// connections record their TLS failures, its open stream and when it was
/// last used.
#[derive(Clone)]
struct Cached {
    id: u64,
    client: Client,
    tls_failure: Option<FailureSlot>,
    /// The `Gossip` stream's queue; `None` until the first send.
    stream: Option<mpsc::Sender<Batch>>,
    /// The peer does not serve `Gossip` streams: send unary calls.
    unary: bool,
    last_used: Instant,
}

#[derive(Default)]
struct Cache {
    /// Per peer: the channel and the number it was created with, so that a
    /// failed call only evicts the channel it used, not a newer one.
    clients: HashMap<NodeAddr, Cached>,
    next: u64,
    /// Set by [`Clients::close`]: no channel is created any more.
    closed: bool,
    /// When idle channels were last looked for.
    last_sweep: Option<Instant>,
}

/// Limits and options of the client side.
#[derive(Clone, Debug)]
pub(crate) struct ClientOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
    /// Open `Gossip` streams (false: unary `Send` calls only, the first
    /// wire version).
    pub(crate) streams: bool,
}

/// Counters of the client side.
#[derive(Debug, Default)]
pub(crate) struct ClientCounters {
    pub(crate) streams_opened: AtomicU64,
    pub(crate) evicted_lru: AtomicU64,
    pub(crate) evicted_idle: AtomicU64,
}

/// The channels of one transport, created lazily and dropped when a call
/// over them fails at the transport level (so the next send reconnects).
pub(crate) struct Clients {
    options: ClientOptions,
    /// `None`: plaintext HTTP/2 (h2c).
    tls: Option<Arc<ClientTls>>,
    cache: Mutex<Cache>,
    /// The member's gate, once the transport is started: its maximum
    /// message size bounds batches, and it counts the peers' rejections.
    inbound: OnceLock<Inbound>,
    /// The tasks reading the streams' answers.
    tasks: Mutex<JoinSet<()>>,
    pub(crate) counters: ClientCounters,
}

impl Clients {
    pub(crate) fn new(options: ClientOptions, tls: Option<Arc<ClientTls>>) -> Self {
        Self {
            options,
            tls,
            cache: Mutex::new(Cache::default()),
            inbound: OnceLock::new(),
            tasks: Mutex::new(JoinSet::new()),
            counters: ClientCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tasks(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the member's gate to the client side (at start).
    pub(crate) fn set_inbound(&self, inbound: Inbound) {
        let _ = self.inbound.set(inbound);
    }

    /// The cached client for `to`, or a new lazily connecting one. Does not
    /// touch the network.
    fn client(&self, to: &NodeAddr) -> Result<Cached, TransportError> {
        let mut cache = self.lock();
        if cache.closed {
            return Err(TransportError::ShutDown);
        }
        let now = Instant::now();
        self.sweep(&mut cache, now);
        if let Some(cached) = cache.clients.get_mut(to) {
            cached.last_used = now;
            return Ok(cached.clone());
        }
        // Under TLS too the scheme is `http`: tonic then speaks HTTP/2 over
        // whatever connection the connector returns, here a TLS one.
        let endpoint = Endpoint::from_shared(format!("http://{to}"))
            .map_err(|e| TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!("not a valid gRPC endpoint address: {e}"),
            })?
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.request_timeout)
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
        if cache.clients.len() >= self.options.max_connections.max(1) {
            // Least recently used first; O(n) on a new connection only.
            let oldest = cache
                .clients
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(addr, _)| addr.clone());
            if let Some(oldest) = oldest {
                cache.clients.remove(&oldest);
                self.counters.evicted_lru.fetch_add(1, Ordering::Relaxed);
                if let Some(inbound) = self.inbound.get() {
                    inbound.count_connections_evicted(1);
                }
                debug!(peer = %oldest, "closed the least recently used gRPC channel");
            }
        }
        cache.next += 1;
        let cached = Cached {
            id: cache.next,
            client: GossipServiceClient::new(channel),
            tls_failure,
            stream: None,
            unary: !self.options.streams,
            last_used: now,
        };
        cache.clients.insert(to.clone(), cached.clone());
        self.gauge(&cache);
        trace!(%to, "new gRPC channel");
        Ok(cached)
    }

    /// Drops the channels unused for the idle timeout, at most twice per
    /// idle timeout.
    fn sweep(&self, cache: &mut Cache, now: Instant) {
        let idle = self.options.idle_timeout;
        if idle.is_zero() || cache.last_sweep.is_some_and(|t| now - t < idle / 2) {
            return;
        }
        cache.last_sweep = Some(now);
        let before = cache.clients.len();
        cache.clients.retain(|_, c| now - c.last_used < idle);
        let dropped = (before - cache.clients.len()) as u64;
        if dropped > 0 {
            self.counters
                .evicted_idle
                .fetch_add(dropped, Ordering::Relaxed);
            if let Some(inbound) = self.inbound.get() {
                inbound.count_connections_evicted(dropped);
            }
            self.gauge(cache);
            debug!(dropped, "closed idle gRPC channels");
        }
    }

    /// Drops the channel numbered `id` to `to`, if it is still cached.
    fn evict(&self, to: &NodeAddr, id: u64) {
        let mut cache = self.lock();
        if cache.clients.get(to).is_some_and(|cached| cached.id == id) {
            cache.clients.remove(to);
            self.gauge(&cache);
            trace!(%to, "dropped gRPC channel");
        }
    }

    /// Reports the number of cached channels to the member's [`Stats`](gossip_core::Stats).
    fn gauge(&self, cache: &Cache) {
        if let Some(inbound) = self.inbound.get() {
            inbound.set_connections(cache.clients.len());
        }
    }

    /// Forgets the stream of channel `id` to `to` (the channel stays); with
    /// `unary`, the peer is sent unary calls from now on.
    fn end_stream(&self, to: &NodeAddr, id: u64, unary: bool) {
        let mut cache = self.lock();
        if let Some(cached) = cache.clients.get_mut(to)
            && cached.id == id
        {
            cached.stream = None;
            cached.unary |= unary;
        }
    }

    /// The queue of the stream to `to`, opening the stream if there is
    /// none; `None` if the peer takes unary calls only.
    fn stream(self: &Arc<Self>, to: &NodeAddr) -> Result<(Cached, Route), TransportError> {
        let cached = self.client(to)?;
        if cached.unary {
            return Ok((cached, Route::Unary));
        }
        if let Some(tx) = &cached.stream
            && !tx.is_closed()
        {
            let tx = tx.clone();
            return Ok((cached, Route::Open(tx)));
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let (ready, opened) = oneshot::channel();
        {
            let mut cache = self.lock();
            match cache.clients.get_mut(to) {
                Some(c) if c.id == cached.id => c.stream = Some(tx.clone()),
                // Evicted meanwhile: send on this stream anyway, once.
                _ => {}
            }
        }
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
        let mut tasks = self.tasks();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run_stream(
            Arc::downgrade(self),
            to.clone(),
            cached.clone(),
            rx,
            ready,
        ));
        Ok((cached, Route::Opening(tx, opened)))
    }

    /// Largest encoded batch: the peer's maximum message size (the same
    /// configuration as ours) plus the batch framing.
    fn batch_limit(&self) -> usize {
        self.inbound
            .get()
            .map_or(DEFAULT_BATCH_LIMIT, Inbound::max_message_size)
    }

    /// Sends `batch` to `to`: on the peer's stream, in frames of at most
    /// the maximum message size, or as unary calls to a peer of the first
    /// wire version. An envelope too large to fit in a frame alone (within
    /// a few bytes of the limit) goes as a unary call, whose limit is the
    /// envelope's own size.
    pub(crate) async fn send_batch(
        self: &Arc<Self>,
        to: &NodeAddr,
        batch: Vec<Envelope>,
    ) -> Result<(), TransportError> {
        match self.send_batch_once(to, batch).await {
            Err(e @ TransportError::Unreachable { .. }) => Err(confirm_refusal(to, e).await),
            r => r,
        }
    }

    async fn send_batch_once(
        self: &Arc<Self>,
        to: &NodeAddr,
        batch: Vec<Envelope>,
    ) -> Result<(), TransportError> {
        let (cached, route) = self.stream(to)?;
        let (tx, opened) = match route {
            Route::Unary => {
                for msg in batch {
                    self.send_unary(to, cached.clone(), msg).await?;
                }
                return Ok(());
            }
            Route::Open(tx) => (tx, None),
            Route::Opening(tx, opened) => (tx, Some(opened)),
        };
        // A new stream's first batch is only sent once the peer has
        // answered the call: a refused connection or handshake is this
        // send's error, and a first-version peer gets the batch by unary
        // calls instead (kept for that case).
        let first = opened.as_ref().map(|_| batch.clone());
        let (frames, alone) = split(batch, self.batch_limit());
        let closed = || TransportError::Unreachable {
            addr: to.to_string(),
            reason: "the gossip stream to the peer closed".into(),
        };
        for frame in frames {
            tx.send(frame).await.map_err(|_| closed())?;
        }
        if let Some(opened) = opened {
            match opened.await.unwrap_or_else(|_| Opened::Failed(closed())) {
                Opened::Streaming => {}
                Opened::Unary => {
                    for msg in first.into_iter().flatten() {
                        self.send_unary(to, cached.clone(), msg).await?;
                    }
                    return Ok(());
                }
                Opened::Failed(e) => return Err(e),
            }
        }
        for msg in alone {
            self.send_unary(to, cached.clone(), msg).await?;
        }
        Ok(())
    }

    /// Drops every cached channel and stream (their tasks end once the
    /// peers close the streams) and refuses further sends.
    pub(crate) fn close(&self) {
        let mut cache = self.lock();
        cache.closed = true;
        cache.clients.clear();
    }

    /// Waits at most `grace` for the streams' tasks to end, then stops them.
    pub(crate) async fn join(&self, grace: Duration) {
        let mut tasks = std::mem::take(&mut *self.tasks());
        let ended =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if ended.is_err() {
            debug!("gossip streams still open at shutdown; aborting them");
        }
        tasks.shutdown().await;
    }

    /// Number of cached channels.
    pub(crate) fn len(&self) -> usize {
        self.lock().clients.len()
    }

    /// Sends `msg` to `to` with one unary `Send` call.
    pub(crate) async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        let cached = self.client(to)?;
        self.send_unary(to, cached, msg).await
    }

    async fn send_unary(
        &self,
        to: &NodeAddr,
        cached: Cached,
        msg: Envelope,
    ) -> Result<(), TransportError> {
        let Cached {
            id,
            mut client,
            tls_failure: slot,
            ..
        } = cached;
        match client.send(Request::new(msg)).await {
            Ok(_) => Ok(()),
            Err(status) => {
                let error = classify(to, &status, slot.as_ref());
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

/// The error of a failed call: a TLS failure recorded by the connection is
/// the real cause when the call failed locally.
fn classify(to: &NodeAddr, status: &Status, slot: Option<&FailureSlot>) -> TransportError {
    let recorded = slot
        .filter(|_| status.source().is_some())
        .and_then(FailureSlot::get);
    match recorded {
        Some(tls) => tls_failure(to.as_str(), &tls),
        None => status_to_error(to, status),
    }
}

/// How a batch reaches a peer.
enum Route {
    /// The peer takes unary calls only.
    Unary,
    /// On its open stream.
    Open(mpsc::Sender<Batch>),
    /// On a stream just opened, whose answer is awaited.
    Opening(mpsc::Sender<Batch>, oneshot::Receiver<Opened>),
}

/// How the opening of a stream ended.
enum Opened {
    /// The peer answered the call: the stream carries batches.
    Streaming,
    /// The peer serves no streams (a first-version member): send unary
    /// calls.
    Unary,
    /// The connection or the call failed.
    Failed(TransportError),
}

/// Packs `batch` into frames of at most `limit` encoded bytes each, in
/// order; an envelope that does not fit in a frame alone is returned apart.
fn split(batch: Vec<Envelope>, limit: usize) -> (Vec<Batch>, Vec<Envelope>) {
    let mut frames = Vec::new();
    let mut alone = Vec::new();
    let mut current = Batch::default();
    let mut size = 0;
    for env in batch {
        let len = env.encoded_len();
        let framed = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if framed > limit {
            alone.push(env);
            continue;
        }
        if size + framed > limit {
            frames.push(std::mem::take(&mut current));
            size = 0;
        }
        size += framed;
        current.envelopes.push(env);
    }
    if !current.envelopes.is_empty() {
        frames.push(current);
    }
    (frames, alone)
}

/// The task of one `Gossip` stream: opens it with the batches of `rx` as
/// its request and reads the peer's answers until the stream ends.
async fn run_stream(
    clients: std::sync::Weak<Clients>,
    to: NodeAddr,
    cached: Cached,
    rx: mpsc::Receiver<Batch>,
    ready: oneshot::Sender<Opened>,
) {
    let Cached {
        id,
        mut client,
        tls_failure: slot,
        ..
    } = cached;
    let opened = client.gossip(ReceiverStream::new(rx)).await;
    let Some(this) = clients.upgrade() else {
        return;
    };
    let mut replies = match opened {
        Ok(response) => {
            let _ = ready.send(Opened::Streaming);
            response.into_inner()
        }
        Err(status) => {
            if status.code() == Code::Unimplemented && status.source().is_none() {
                debug!(%to, "peer serves no gossip streams; sending unary calls");
                this.end_stream(&to, id, true);
                let _ = ready.send(Opened::Unary);
            } else {
                let error = this.stream_failed(&to, id, &status, slot.as_ref());
                let _ = ready.send(Opened::Failed(error));
            }
            return;
        }
    };
    drop(this);
    trace!(%to, "gossip stream open");
    loop {
        let reply = replies.message().await;
        let Some(this) = clients.upgrade() else {
            return;
        };
        match reply {
            Ok(Some(reply)) => this.peer_rejected(&to, &reply),
            Ok(None) => {
                trace!(%to, "gossip stream ended by the peer");
                this.end_stream(&to, id, false);
                return;
            }
            Err(status) => {
                // Batches already handed over are lost; the peer's gate
                // counted what it refused.
                let _ = this.stream_failed(&to, id, &status, slot.as_ref());
                return;
            }
        }
    }
}

impl Clients {
    /// A peer's answer about a batch it partly rejected.
    fn peer_rejected(&self, to: &NodeAddr, reply: &StreamReply) {
        if let Some(inbound) = self.inbound.get() {
            for _ in 0..reply.rejected.max(1) {
                inbound.count_peer_rejection();
            }
        }
        debug!(%to, reason = %reply.reason, message = %reply.message, rejected = reply.rejected,
            "peer rejected envelopes");
    }

    /// A stream that failed: a rejection from the peer is counted and
    /// logged; a failed connection drops the channel too. Returns the error.
    fn stream_failed(
        &self,
        to: &NodeAddr,
        id: u64,
        status: &Status,
        slot: Option<&FailureSlot>,
    ) -> TransportError {
        let error = classify(to, status, slot);
        match &error {
            TransportError::Rejected { .. } => {
                if let Some(inbound) = self.inbound.get() {
                    inbound.count_peer_rejection();
                }
                warn!(%to, %error, "peer refused the gossip stream");
                self.end_stream(to, id, false);
            }
            _ => {
                debug!(%to, %error, "gossip stream failed");
                self.evict(to, id);
            }
        }
        error
    }
}

/// How long a fresh TCP connect may take to tell a refusal (see
/// [`confirm_refusal`]).
const REFUSAL_CHECK: Duration = Duration::from_millis(500);

/// A broken connection (a stream the peer closed, a reset) does not say
/// whether the peer's process is gone; a fresh TCP connect does. If it is
/// refused, nothing listens at `to` any more and the error becomes
/// [`TransportError::Refused`] (the failure detector's fast path, issue
/// #10 item 4); otherwise `error` stands. Only on the failure path: the
/// batch is lost either way, and a successful send costs nothing more.
async fn confirm_refusal(to: &NodeAddr, error: TransportError) -> TransportError {
    if connect_refused(to).await {
        debug!(%to, %error, "a fresh connect is refused: nothing listens there");
        TransportError::Refused {
            addr: to.to_string(),
        }
    } else {
        error
    }
}

/// True if a fresh TCP connect to `to` is refused within [`REFUSAL_CHECK`]
/// (nothing listens there); false if it connects, fails otherwise, or
/// takes longer.
pub(crate) async fn connect_refused(to: &NodeAddr) -> bool {
    let connect = tokio::net::TcpStream::connect(to.as_str());
    matches!(
        tokio::time::timeout(REFUSAL_CHECK, connect).await,
        Ok(Err(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Classifies a failed call (see the crate documentation): a TCP connection
/// refused (nothing listens at the peer's address) is
/// [`TransportError::Refused`]; a TLS handshake
/// the peer refused is [`TransportError::Rejected`], any other TLS failure
/// [`TransportError::Unreachable`]; a status raised locally from a transport
/// error (it carries a source error), or an answer meaning "not reachable
/// now", is [`TransportError::Unreachable`]; any other answer of the peer is
/// [`TransportError::Rejected`].
pub(crate) fn status_to_error(to: &NodeAddr, status: &Status) -> TransportError {
    let addr = to.to_string();
    if status.source().is_some_and(connection_refused) {
        return TransportError::Refused { addr };
    }
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

/// Whether `error` or one of its sources is an I/O error of kind
/// [`std::io::ErrorKind::ConnectionRefused`] (hyper's "tcp connect error", or our
/// TLS connector's TCP connect), looking inside I/O errors that wrap
/// another error too.
fn connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::ConnectionRefused {
            return true;
        }
        if io.get_ref().is_some_and(|inner| connection_refused(inner)) {
            return true;
        }
    }
    error.source().is_some_and(connection_refused)
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
        let clients = Clients::new(
            ClientOptions {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(2),
                max_connections: 8,
                idle_timeout: Duration::from_secs(60),
                streams: true,
            },
            None,
        );
        let to = NodeAddr::from(port);
        let err = clients.send(&to, Envelope::default()).await.unwrap_err();
        // Nothing listens there: refused, and the channel is dropped too.
        assert!(matches!(err, TransportError::Refused { .. }), "{err:?}");
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
