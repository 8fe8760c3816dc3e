//! The sending side: the bounded cache of connections to peers (dialled, or
//! accepted from a peer that named its address in its hello: one connection
//! per pair serves both directions), connection set-up (handshake and
//! `gossip/2` hello), and both wires' send paths.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::pb::Envelope;
use gossip_core::{NodeAddr, TransportError};
use gossip_tls::TlsMode;
use prost::Message;
use quinn::{Connection, ConnectionError, Endpoint, SendDatagramError, VarInt};
use tracing::{debug, warn};

use crate::failure::connection_failed;
use crate::transport::{Inner, lock};
use crate::wire;

/// How long a peer that refused this member at connection set-up (another
/// cluster, or our certificate) is not dialled again; sends to it meanwhile
/// fail at once with the same reason.
pub(crate) const REFUSED_BACKOFF: Duration = Duration::from_secs(5);
/// How long a peer that could not be reached (no handshake within the
/// connect timeout, no address) is not dialled again; sends to it meanwhile
/// fail at once, so that the messages queued behind one failed attempt do
/// not each wait a connect timeout.
pub(crate) const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(1);

/// One peer's entry in the connection cache.
#[derive(Default)]
pub(crate) struct Peer {
    /// The cached connection. The async mutex serializes (re)connecting, so
    /// that concurrent sends share one connection; it is held only to
    /// connect or to take a copy.
    link: tokio::sync::Mutex<Option<Link>>,
    /// When this peer was last sent to, in ticks of [`Inner::tick`].
    last_used: AtomicU64,
    /// Since when and why the peer refused us at connection set-up.
    refused: Mutex<Option<(Instant, String)>>,
    /// Since when and why the peer could not be reached.
    unreachable: Mutex<Option<(Instant, String)>>,
}

impl Peer {
    /// Whether the cache entry holds an open connection, or is busy (being
    /// connected), which counts as one.
    fn holds_connection(&self) -> bool {
        match self.link.try_lock() {
            Ok(link) => link
                .as_ref()
                .is_some_and(|l| l.conn.close_reason().is_none()),
            Err(_) => true,
        }
    }

    /// The cached connection, if open and not being replaced right now.
    pub(crate) fn connection(&self) -> Option<Connection> {
        let link = self.link.try_lock().ok()?;
        link.as_ref()
            .map(|l| l.conn.clone())
            .filter(|c| c.close_reason().is_none())
    }

    /// Whether a refusal or failure is in force, which the entry remembers.
    fn backoff_active(&self, now: Instant) -> bool {
        lock(&self.refused)
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < REFUSED_BACKOFF)
            || lock(&self.unreachable)
                .as_ref()
                .is_some_and(|(at, _)| now.duration_since(*at) < UNREACHABLE_BACKOFF)
    }

    /// The refusal or failure still in force, as the error a send returns.
    fn check_backoff(&self, to: &NodeAddr) -> Result<(), TransportError> {
        if let Some((at, reason)) = lock(&self.refused).as_ref()
            && at.elapsed() < REFUSED_BACKOFF
        {
            return Err(TransportError::Rejected {
                addr: to.to_string(),
                reason: format!(
                    "{reason} (refused {:.1} s ago; not dialled again for {REFUSED_BACKOFF:?})",
                    at.elapsed().as_secs_f64()
                ),
            });
        }
        if let Some((at, reason)) = lock(&self.unreachable).as_ref()
            && at.elapsed() < UNREACHABLE_BACKOFF
        {
            return Err(TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!(
                    "{reason} (failed {:.1} s ago; not dialled again for {UNREACHABLE_BACKOFF:?})",
                    at.elapsed().as_secs_f64()
                ),
            });
        }
        Ok(())
    }
}

/// An established connection and what it speaks.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) conn: Connection,
    /// `gossip/2` (datagrams); otherwise `gossip/1` (stream and verdict).
    v2: bool,
    /// Dialled by the peer, not by us: accepted, and adopted as the
    /// connection to the address its hello named ([`Inner::adopt`]). Dropping
    /// it from the cache leaves it open for the peer's own use.
    adopted: bool,
    /// When a send found the peer's packet count at this value; see
    /// [`Link::silent`].
    watch: Arc<Mutex<Option<(Instant, u64)>>>,
}

impl Link {
    fn new(conn: Connection, v2: bool) -> Self {
        Self {
            conn,
            v2,
            adopted: false,
            watch: Arc::default(),
        }
    }

    /// A `gossip/2` connection the peer dialled.
    fn adopted(conn: Connection) -> Self {
        Self {
            adopted: true,
            ..Self::new(conn, true)
        }
    }

    /// Called before each send: true if the peer has sent not one packet
    /// (not even an acknowledgement, which a live QUIC stack returns within
    /// milliseconds) for `limit` since an earlier send. On `gossip/2` nothing
    /// else tells a crashed peer: datagrams get no verdict.
    fn silent(&self, now: Instant, limit: Duration) -> bool {
        let rx = received(&self.conn);
        let mut watch = lock(&self.watch);
        match *watch {
            Some((since, seen)) if seen == rx => now.duration_since(since) >= limit,
            _ => {
                *watch = Some((now, rx));
                false
            }
        }
    }
}

/// UDP datagrams received on `conn` so far: a peer whose count moves is
/// alive, however slow its answers.
fn received(conn: &Connection) -> u64 {
    conn.stats().udp_rx.datagrams
}

/// The ALPN protocol a connection settled on.
pub(crate) fn negotiated(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Resolves `to` to one socket address our socket can reach.
pub(crate) async fn resolve(
    to: &NodeAddr,
    ipv6_socket: bool,
) -> Result<SocketAddr, TransportError> {
    let unreachable = |reason: String| TransportError::Unreachable {
        addr: to.to_string(),
        reason,
    };
    let addrs = tokio::net::lookup_host(to.as_str())
        .await
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?;
    let mut fallback = None;
    for addr in addrs {
        if addr.is_ipv6() == ipv6_socket {
            return Ok(addr);
        }
        fallback.get_or_insert(addr);
    }
    match fallback {
        // An IPv6 socket is dual-stack where the OS allows it.
        Some(addr) if ipv6_socket => Ok(addr),
        Some(addr) => Err(unreachable(format!(
            "resolves to {addr} only, which an IPv4 endpoint cannot reach"
        ))),
        None => Err(unreachable("resolves to no address".to_owned())),
    }
}

/// The name sent as SNI and checked against the peer's certificate: the
/// host part of `to`. A host rustls cannot use as a name is replaced by
/// `localhost` in self-signed mode, where names are not checked.
pub(crate) fn sni(to: &NodeAddr, mode: TlsMode) -> Result<&str, TransportError> {
    let host = gossip_tls::server_name(to);
    match rustls::pki_types::ServerName::try_from(host) {
        Ok(_) => Ok(host),
        Err(_) if mode == TlsMode::SelfSigned => Ok("localhost"),
        Err(e) => Err(TransportError::Unreachable {
            addr: to.to_string(),
            reason: format!("host {host:?} cannot be checked against a certificate: {e}"),
        }),
    }
}

/// Why a `gossip/2` send failed.
enum V2Error {
    /// The connection is gone: worth one retry on a new one.
    Lost(ConnectionError),
    /// Anything else.
    Failed(TransportError),
}

/// The outcome of [`Inner::attempt_v1`].
enum Attempt {
    /// A verdict, or a failure that another attempt would not cure.
    Done(Result<(), TransportError>),
    /// The connection failed or stopped answering; worth one retry on a new
    /// connection if this one was `fresh == false` (cached, maybe stale).
    ConnectionFailed { error: TransportError, fresh: bool },
}

/// A `gossip/2` hello that went wrong on the peer's side of the protocol.
fn hello_error(to: &NodeAddr, what: String) -> TransportError {
    TransportError::Rejected {
        addr: to.to_string(),
        reason: format!("protocol error in the gossip/2 hello: {what}"),
    }
}

/// How [`Inner::link`] came by the connection it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opened {
    /// Cached from an earlier send (or adopted), maybe stale.
    Cached,
    /// Just opened; the batch is still to be sent.
    New,
    /// Just opened, and the batch left with the hello
    /// ([`Inner::connect`]): it must not be sent again.
    NewWithBatch,
}

impl Inner {
    /// The cache entry of `to`, created if needed, marked as just used.
    fn peer(&self, to: &NodeAddr) -> Arc<Peer> {
        let peer = lock(&self.peers).entry(to.clone()).or_default().clone();
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        peer.last_used.store(tick, Ordering::Relaxed);
        peer
    }

    /// Outgoing connections currently open in the cache.
    pub(crate) fn cached_connections(&self) -> usize {
        lock(&self.peers)
            .values()
            .filter(|p| p.holds_connection())
            .count()
    }

    /// Forgets and closes the cached connection of `peer` if it is still
    /// `conn`. Synchronous, so that a dropped send can call it.
    fn evict(&self, peer: &Peer, conn: &Connection, why: &'static str) {
        conn.close(VarInt::from_u32(wire::CLOSE_NO_ANSWER), why.as_bytes());
        if let Ok(mut cached) = peer.link.try_lock()
            && cached
                .as_ref()
                .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
        {
            *cached = None;
            debug!(why, "dropped cached connection");
        }
    }

    /// Keeps the cache within `max_connections` open connections, closing the
    /// least recently used ones (never `keep`'s, just opened), and forgets
    /// entries that hold nothing worth keeping.
    fn bound_connections(&self, keep: &NodeAddr) {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        peers.retain(|_, p| {
            Arc::strong_count(p) > 1 || p.backoff_active(now) || p.holds_connection()
        });
        let open = peers.values().filter(|p| p.holds_connection()).count();
        let inbound = self.inbound.get();
        let Some(excess) = open.checked_sub(self.max_connections.max(1)) else {
            if let Some(inbound) = inbound {
                inbound.set_connections(open);
            }
            return;
        };
        if excess == 0 {
            if let Some(inbound) = inbound {
                inbound.set_connections(open);
            }
            return;
        }
        let mut candidates: Vec<(u64, NodeAddr)> = peers
            .iter()
            .filter(|(addr, p)| *addr != keep && p.holds_connection())
            .map(|(addr, p)| (p.last_used.load(Ordering::Relaxed), addr.clone()))
            .collect();
        candidates.sort_unstable();
        let mut evicted = 0;
        for (_, addr) in candidates {
            if evicted == excess {
                break;
            }
            let Some(peer) = peers.get(&addr) else {
                continue;
            };
            // A connection being set up right now is not the least recently
            // used one; skip it.
            let Ok(mut link) = peer.link.try_lock() else {
                continue;
            };
            if let Some(l) = link.take() {
                if l.adopted {
                    // The peer's own connection, which it may still use:
                    // only our replies stop going over it.
                    debug!(peer = %addr, "forgot the least recently used connection (the peer's; left open)");
                } else {
                    l.conn.close(
                        VarInt::from_u32(wire::CLOSE_EVICTED),
                        b"closed: least recently used beyond max_connections",
                    );
                    debug!(peer = %addr, "closed the least recently used connection");
                }
                evicted += 1;
                self.counters.lru_evictions.fetch_add(1, Ordering::Relaxed);
                if let Some(inbound) = inbound {
                    inbound.count_connections_evicted(1);
                }
            }
            drop(link);
            if Arc::strong_count(peer) == 1 && !peer.backoff_active(now) {
                peers.remove(&addr);
            }
        }
        if let Some(inbound) = inbound {
            inbound.set_connections(open - evicted);
        }
    }

    /// Takes `conn`, a `gossip/2` connection `from` dialled and whose hello
    /// named `from` as its address (checked by the caller), as the cached
    /// connection to `from`: our sends to `from` then go over it. Not if a
    /// connection to `from` is being dialled right now, or one we dialled is
    /// open (both ends dialled at once: each keeps sending on its own, and
    /// reads both); an earlier adopted one is replaced (its peer dialled
    /// again, so it no longer uses it), not closed. Counts in the
    /// `max_connections` bound. True if adopted.
    pub(crate) fn adopt(&self, from: &NodeAddr, conn: &Connection) -> bool {
        let peer = lock(&self.peers).entry(from.clone()).or_default().clone();
        {
            let Ok(mut cached) = peer.link.try_lock() else {
                debug!(peer = %from, "not adopted: a connection to it is being set up");
                return false;
            };
            if let Some(link) = cached.as_ref()
                && !link.adopted
                && link.conn.close_reason().is_none()
            {
                debug!(peer = %from, "not adopted: our own connection to it is open");
                return false;
            }
            *cached = Some(Link::adopted(conn.clone()));
        }
        // A working connection: sends need not wait for an earlier
        // failure's backoff.
        *lock(&peer.refused) = None;
        *lock(&peer.unreachable) = None;
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        peer.last_used.store(tick, Ordering::Relaxed);
        drop(peer);
        self.counters
            .connections_adopted
            .fetch_add(1, Ordering::Relaxed);
        debug!(peer = %from, "adopted the peer's connection for our sends to it");
        self.bound_connections(from);
        true
    }

    /// The cached live connection to `to`, or a new one, which carries
    /// `early` right behind its hello when it speaks `gossip/2` (see
    /// [`Inner::connect`]). A refusal at set-up is remembered for
    /// [`REFUSED_BACKOFF`], a failure to connect for
    /// [`UNREACHABLE_BACKOFF`].
    async fn link(
        &self,
        endpoint: &Endpoint,
        peer: &Peer,
        to: &NodeAddr,
        cluster: &str,
        early: &[Envelope],
    ) -> Result<(Link, Opened), TransportError> {
        let mut cached = peer.link.lock().await;
        // Checked under the lock: sends queued behind a failed attempt fail
        // at once.
        peer.check_backoff(to)?;
        if let Some(link) = cached.as_ref() {
            match link.conn.close_reason() {
                None if link.v2 && link.silent(Instant::now(), self.connect_timeout) => {
                    link.conn
                        .close(VarInt::from_u32(wire::CLOSE_NO_ANSWER), b"no answer");
                    debug!(%to, "cached connection silent since a send; reconnecting");
                }
                None => return Ok((link.clone(), Opened::Cached)),
                Some(why) => debug!(%to, %why, "cached connection is closed; reconnecting"),
            }
        }
        *cached = None;
        let (link, sent_early) = match self.connect(endpoint, to, cluster, early).await {
            Ok(opened) => opened,
            Err(e) => {
                match &e {
                    TransportError::Rejected { reason, .. } => {
                        warn!(%to, %reason, "peer refused this member at connection set-up");
                        *lock(&peer.refused) = Some((Instant::now(), reason.clone()));
                        if let Some(inbound) = self.inbound.get() {
                            inbound.count_peer_rejection();
                        }
                    }
                    TransportError::Unreachable { reason, .. } => {
                        *lock(&peer.unreachable) = Some((Instant::now(), reason.clone()));
                    }
                    // The peer's endpoint refused the connection (it is
                    // closing or not serving): no backoff, a dial costs one
                    // round trip and tells the failure detector again.
                    TransportError::Refused { .. }
                    | TransportError::TooLarge { .. }
                    | TransportError::Io(_)
                    | TransportError::Tls(_)
                    | TransportError::InvalidConfig(_)
                    | TransportError::AlreadyStarted
                    | TransportError::ShutDown => {}
                }
                return Err(e);
            }
        };
        *lock(&peer.refused) = None;
        *lock(&peer.unreachable) = None;
        *cached = Some(link.clone());
        drop(cached);
        self.bound_connections(to);
        let opened = if sent_early {
            Opened::NewWithBatch
        } else {
            Opened::New
        };
        Ok((link, opened))
    }

    /// Opens a connection to `to`: handshake, then on `gossip/2` the hello,
    /// all within the connect timeout. True if `early` (possibly empty) left
    /// right behind the hello.
    ///
    /// `early` is sent after the hello without waiting for the peer's
    /// verdict: a round trip sooner, which matters when a cluster opens
    /// thousands of connections at once and each round trip waits behind
    /// the others' handshakes (issue #10: QUIC's join). The peer reads the
    /// hello before any datagram or stream of the connection (it buffers
    /// them meanwhile), so nothing is read before its cluster check; a
    /// refusal still fails this call, and the batch dies with the refused
    /// connection. If sending `early` fails, the caller sends it again on
    /// the returned link, as it would have without it.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        to: &NodeAddr,
        cluster: &str,
        early: &[Envelope],
    ) -> Result<(Link, bool), TransportError> {
        let attempt = async {
            let started = Instant::now();
            let ipv6 = self.listen.is_ipv6();
            let addr = resolve(to, ipv6).await?;
            let connecting = endpoint
                .connect_with(self.client_config(to)?, addr, sni(to, self.mode)?)
                .map_err(|e| TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: format!("cannot start a connection: {e}"),
                })?;
            let conn = connecting.await.map_err(|e| {
                self.count_failure(&e);
                connection_failed(to.as_str(), self.protocols, &e)
            })?;
            let handshake = started.elapsed();
            self.counters
                .connections_opened
                .fetch_add(1, Ordering::Relaxed);
            let v2 = negotiated(&conn).as_deref() == Some(wire::ALPN_V2);
            let link = Link::new(conn, v2);
            let mut sent_early = false;
            if link.v2 {
                let (verdict, reads) = self.send_hello(&link.conn, to, cluster).await?;
                if !early.is_empty() {
                    match self.send_v2(&link, to, early).await {
                        Ok(()) => {
                            sent_early = true;
                            self.counters
                                .batches_with_hello
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Err(V2Error::Lost(e)) => {
                            debug!(%to, error = %e, "the batch behind the hello was lost");
                        }
                        Err(V2Error::Failed(e)) => {
                            debug!(%to, error = %e, "the batch behind the hello failed");
                        }
                    }
                }
                self.read_verdict(&link.conn, to, verdict).await?;
                if reads {
                    // The peer may send on it: read it as an accepted one.
                    self.receive_dialled(link.conn.clone());
                }
            }
            debug!(
                %to,
                remote = %link.conn.remote_address(),
                v2 = link.v2,
                handshake_ms = handshake.as_secs_f64() * 1e3,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                sent_early,
                "connection opened"
            );
            Ok((link, sent_early))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!(
                    "no QUIC handshake within the connect timeout of {:?}",
                    self.connect_timeout
                ),
            }),
        }
    }

    /// The first half of the `gossip/2` hello: our cluster id out, and our
    /// address if we serve (then the connection is read, and the peer may
    /// send on it rather than dial us: the `bool`). Returns the stream the
    /// peer's verdict comes back on ([`Inner::read_verdict`]).
    async fn send_hello(
        &self,
        conn: &Connection,
        to: &NodeAddr,
        cluster: &str,
    ) -> Result<(quinn::RecvStream, bool), TransportError> {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| self.hello_lost(to, e))?;
        let reads = self.reads_dialled();
        let hello = wire::hello(cluster, reads.then_some(&self.local));
        match send.write_all(&hello).await {
            Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
            Err(quinn::WriteError::ConnectionLost(e)) => return Err(self.hello_lost(to, e)),
            Err(e) => return Err(hello_error(to, format!("cannot send it: {e}"))),
        }
        let _ = send.finish();
        Ok((recv, reads))
    }

    /// The second half of the `gossip/2` hello: the peer's verdict on it.
    /// A refusal closes the connection.
    async fn read_verdict(
        &self,
        conn: &Connection,
        to: &NodeAddr,
        mut recv: quinn::RecvStream,
    ) -> Result<(), TransportError> {
        let reply = match recv.read_to_end(wire::MAX_REPLY).await {
            Ok(reply) => reply,
            Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
                return Err(self.hello_lost(to, e));
            }
            Err(e) => return Err(hello_error(to, format!("no verdict: {e}"))),
        };
        match wire::verdict(to.as_str(), &reply) {
            Ok(()) => Ok(()),
            Err(TransportError::Rejected { addr, reason }) => {
                conn.close(VarInt::from_u32(wire::CLOSE_REFUSED), b"refused");
                Err(TransportError::Rejected {
                    addr,
                    reason: format!("refused at connection set-up: {reason}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The error of a hello whose connection was lost.
    fn hello_lost(&self, to: &NodeAddr, e: ConnectionError) -> TransportError {
        connection_failed(to.as_str(), self.protocols, &e)
    }

    /// Delivers `batch` to `to` (the [`Transport::send_batch`] of
    /// [`QuicTransport`](crate::QuicTransport)).
    ///
    /// [`Transport::send_batch`]: gossip_core::Transport::send_batch
    pub(crate) async fn send_batch(
        &self,
        endpoint: &Endpoint,
        to: &NodeAddr,
        batch: Vec<Envelope>,
    ) -> Result<(), TransportError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        // The hello names our cluster; a transport used before `start` (no
        // gate yet) names the cluster of what it sends.
        let cluster = match self.inbound.get() {
            Some(inbound) => inbound.cluster_id().to_owned(),
            None => first.cluster_id.clone(),
        };
        let peer = self.peer(to);
        let (link, opened) = self.link(endpoint, &peer, to, &cluster, &batch).await?;
        if opened == Opened::NewWithBatch {
            return Ok(());
        }
        if !link.v2 {
            for env in &batch {
                self.deliver_v1(endpoint, &peer, to, &cluster, env).await?;
            }
            return Ok(());
        }
        match self.send_v2(&link, to, &batch).await {
            Ok(()) => Ok(()),
            Err(V2Error::Failed(e)) => Err(e),
            Err(V2Error::Lost(e)) => {
                self.count_failure(&e);
                self.evict(&peer, &link.conn, "connection lost");
                let error = connection_failed(to.as_str(), self.protocols, &e);
                if opened != Opened::Cached {
                    return Err(error);
                }
                debug!(%to, %error, "cached connection failed; retrying on a new one");
                let (link, opened) = self.link(endpoint, &peer, to, &cluster, &batch).await?;
                if opened == Opened::NewWithBatch {
                    return Ok(());
                }
                if !link.v2 {
                    for env in &batch {
                        self.deliver_v1(endpoint, &peer, to, &cluster, env).await?;
                    }
                    return Ok(());
                }
                self.send_v2(&link, to, &batch).await.map_err(|e| match e {
                    V2Error::Failed(e) => e,
                    V2Error::Lost(e) => connection_failed(to.as_str(), self.protocols, &e),
                })
            }
        }
    }

    /// `gossip/2`: the batch in as few datagrams as fit, envelopes too large
    /// for one on a one-way stream; no verdict. Bounded by the connect
    /// timeout (a peer whose QUIC stack takes nothing for that long).
    async fn send_v2(&self, link: &Link, to: &NodeAddr, batch: &[Envelope]) -> Result<(), V2Error> {
        let send = async {
            let conn = &link.conn;
            let packed = wire::pack(batch, conn.max_datagram_size());
            let mut streamed = packed.streamed.clone();
            for (bytes, range) in packed.datagrams {
                match conn.send_datagram_wait(bytes).await {
                    Ok(()) => {
                        self.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(SendDatagramError::ConnectionLost(e)) => return Err(V2Error::Lost(e)),
                    // The path shrank or the peer takes no datagrams: the
                    // stream carries these too.
                    Err(e) => {
                        debug!(%to, error = %e, "datagram refused locally; using a stream");
                        streamed.extend(range.filter(|i| !packed.streamed.contains(i)));
                    }
                }
            }
            if streamed.is_empty() {
                return Ok(());
            }
            streamed.sort_unstable();
            let frames = wire::stream_frames(streamed.iter().map(|&i| &batch[i]))
                .map_err(V2Error::Failed)?;
            let mut stream = conn.open_uni().await.map_err(V2Error::Lost)?;
            match stream.write_chunk(frames).await {
                Ok(()) => {}
                Err(quinn::WriteError::ConnectionLost(e)) => return Err(V2Error::Lost(e)),
                Err(e) => {
                    return Err(V2Error::Failed(TransportError::Rejected {
                        addr: to.to_string(),
                        reason: format!("the stream of a large message failed: {e}"),
                    }));
                }
            }
            let _ = stream.finish();
            self.counters.streams_sent.fetch_add(1, Ordering::Relaxed);
            // Shutdown lets the stream's data be acknowledged before it
            // closes the connection.
            let acknowledged = stream.stopped();
            let mut flushing = lock(&self.flushing);
            while flushing.try_join_next().is_some() {}
            flushing.spawn(async move {
                let _ = acknowledged.await;
            });
            Ok(())
        };
        match tokio::time::timeout(self.connect_timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(V2Error::Failed(TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!(
                    "the connection took nothing within the connect timeout of {:?} \
                     (the peer does not keep up; the connection is kept)",
                    self.connect_timeout
                ),
            })),
        }
    }

    /// `gossip/1`: one message on its own stream, waiting for its verdict;
    /// if the connection turns out dead, once more over a new one.
    async fn deliver_v1(
        &self,
        endpoint: &Endpoint,
        peer: &Peer,
        to: &NodeAddr,
        cluster: &str,
        env: &Envelope,
    ) -> Result<(), TransportError> {
        let frame = wire::frame(&env.encode_to_vec())?;
        match self
            .attempt_v1(endpoint, peer, to, cluster, env, frame.clone())
            .await
        {
            Attempt::Done(result) => result,
            Attempt::ConnectionFailed { error, fresh: true } => Err(error),
            Attempt::ConnectionFailed {
                error,
                fresh: false,
            } => {
                debug!(%to, %error, "cached connection failed; retrying on a new one");
                match self
                    .attempt_v1(endpoint, peer, to, cluster, env, frame)
                    .await
                {
                    Attempt::Done(result) => result,
                    Attempt::ConnectionFailed { error, .. } => Err(error),
                }
            }
        }
    }

    /// One `gossip/1` exchange over the cached or a new connection.
    async fn attempt_v1(
        &self,
        endpoint: &Endpoint,
        peer: &Peer,
        to: &NodeAddr,
        cluster: &str,
        env: &Envelope,
        frame: Bytes,
    ) -> Attempt {
        let (link, fresh) = match self.link(endpoint, peer, to, cluster, &[]).await {
            Ok((link, opened)) => (link, opened != Opened::Cached),
            Err(e) => return Attempt::Done(Err(e)),
        };
        if link.v2 {
            // The peer was upgraded in the meantime.
            return Attempt::Done(
                self.send_v2(&link, to, std::slice::from_ref(env))
                    .await
                    .map_err(|e| match e {
                        V2Error::Failed(e) => e,
                        V2Error::Lost(e) => connection_failed(to.as_str(), self.protocols, &e),
                    }),
            );
        }
        let conn = &link.conn;
        // If this future is dropped mid-exchange (the caller timed out), the
        // connection is presumed dead unless the peer sent anything since
        // the exchange began: the next send then reconnects.
        let mut guard = EvictOnDrop {
            inner: self,
            peer,
            conn: Some(conn),
            rx_before: received(conn),
        };
        let outcome = tokio::time::timeout(self.connect_timeout, exchange(conn, frame)).await;
        guard.conn = None;
        let rx_before = guard.rx_before;
        let error = match outcome {
            Ok(Ok(reply)) => return Attempt::Done(wire::verdict(to.as_str(), &reply)),
            Ok(Err(Exchange::Stream(reason))) => {
                return Attempt::Done(Err(TransportError::Rejected {
                    addr: to.to_string(),
                    reason,
                }));
            }
            Ok(Err(Exchange::Lost(e))) => {
                self.count_failure(&e);
                self.evict(peer, conn, "connection lost");
                connection_failed(to.as_str(), self.protocols, &e)
            }
            Err(_) if received(conn) > rx_before => {
                // The peer answered something (QUIC acknowledgements, other
                // streams) while this exchange waited: it is slow, not gone.
                // Closing the connection would fail every other message in
                // flight on it and cost a new handshake, which under load
                // makes a slow cluster collapse; fail this message only.
                return Attempt::Done(Err(TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: format!(
                        "no answer within the connect timeout of {:?} (the connection is alive; kept)",
                        self.connect_timeout
                    ),
                }));
            }
            Err(_) => {
                self.evict(peer, conn, "no answer");
                TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: format!(
                        "no answer within the connect timeout of {:?}",
                        self.connect_timeout
                    ),
                }
            }
        };
        Attempt::ConnectionFailed { error, fresh }
    }
}

struct EvictOnDrop<'a> {
    inner: &'a Inner,
    peer: &'a Peer,
    conn: Option<&'a Connection>,
    /// [`received`] when the exchange began.
    rx_before: u64,
}

impl Drop for EvictOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn
            && received(conn) == self.rx_before
        {
            self.inner.evict(self.peer, conn, "send abandoned");
        }
    }
}

/// Why one `gossip/1` request/reply exchange failed.
pub(crate) enum Exchange {
    /// The connection is gone.
    Lost(ConnectionError),
    /// The stream failed while the connection lives (e.g. reset by the peer).
    Stream(String),
}

/// Writes one `gossip/1` frame on a new stream and reads the peer's reply.
pub(crate) async fn exchange(conn: &Connection, frame: Bytes) -> Result<Vec<u8>, Exchange> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(Exchange::Lost)?;
    match send.write_chunk(frame).await {
        // A peer that refuses the frame early (oversized) stops our side and
        // still sends its verdict.
        Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
        Err(quinn::WriteError::ConnectionLost(e)) => return Err(Exchange::Lost(e)),
        Err(e) => return Err(Exchange::Stream(format!("cannot send the frame: {e}"))),
    }
    // Fails only if the peer already stopped the stream, which is fine.
    let _ = send.finish();
    match recv.read_to_end(wire::MAX_REPLY).await {
        Ok(reply) => Ok(reply),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
            Err(Exchange::Lost(e))
        }
        Err(e) => Err(Exchange::Stream(format!(
            "protocol error: cannot read the verdict: {e}"
        ))),
    }
}
