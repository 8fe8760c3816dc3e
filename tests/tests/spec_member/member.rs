//! A minimal member written from `PROTOCOL.md` alone (its section 15):
//! it serves `gossip.v1.GossipService` with tonic, checks every envelope
//! (section 4.1), handles it in the order of section 4.2, answers pings,
//! ping requests, sync requests and digests, applies deltas, and refutes
//! what is said against it. It does not probe, run gossip rounds,
//! piggyback or forward pushes and broadcasts (section 15 allows that).
//!
//! It runs on a tokio runtime of its own, so that [`SpecMember::stop`]
//! ends it as a killed process ends: its listening socket and every
//! connection close at once, and connecting to its address is refused.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use gossip_proto::v1::gossip_service_client::GossipServiceClient;
use gossip_proto::v1::gossip_service_server::{GossipService, GossipServiceServer};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::view::{Applied, Fact, State, View, valid_addr};

/// The settings a member of the cluster must share (PROTOCOL.md 12.2).
#[derive(Clone, Debug)]
pub(crate) struct SpecConfig {
    pub(crate) cluster_id: String,
    pub(crate) generation: u64,
    pub(crate) meta: BTreeMap<String, String>,
    /// The cluster's probe timeout: how long a relay waits for the
    /// target's ack before it sends a nack (section 6.2).
    pub(crate) probe_timeout: Duration,
    /// How often the join is retried until the seed answers (section 9.1).
    pub(crate) seed_retry: Duration,
}

/// Largest envelope sent or accepted (section 12.1, the default).
const MAX_MESSAGE_SIZE: usize = 65_536;
/// The text of the status an oversized envelope is rejected with.
const OVERSIZED: &str = "oversized";
/// How long one `Send` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The member's state, shared by the server, the senders and the test.
struct Inner {
    cfg: SpecConfig,
    me: pb::NodeId,
    view: Mutex<View>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Relays run for others (section 6.2): our ping's seq -> (requester,
    /// their seq).
    relays: Mutex<HashMap<u64, (String, u64)>>,
    seq: AtomicU64,
    /// Addresses heard from, for the join (section 9.1).
    heard: Mutex<HashMap<String, u64>>,
    /// The last `Ping.digest_hash` received from each member, for the
    /// test's check of the fingerprint.
    ping_hashes: Mutex<HashMap<String, u64>>,
    /// Hung: envelopes are accepted and then ignored, nothing is answered
    /// (a process that stopped working while its port stays open).
    silent: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running spec member.
pub(crate) struct SpecMember {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SpecMember {
    /// Binds `127.0.0.1:0`, whose address becomes the member's identity,
    /// and serves the gossip service on a runtime of its own.
    pub(crate) fn start(cfg: SpecConfig) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr: SocketAddr = listener.local_addr().expect("bound address");
        let me = pb::NodeId {
            addr: addr.to_string(),
            generation: cfg.generation,
        };
        let own = Fact {
            addr: me.addr.clone(),
            generation: me.generation,
            incarnation: 0,
            state: State::Alive,
        };
        let inner = Arc::new(Inner {
            view: Mutex::new(View::new(own, cfg.meta.clone())),
            cfg,
            me,
            channels: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            heard: Mutex::new(HashMap::new()),
            ping_hashes: Mutex::new(HashMap::new()),
            silent: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let service = GossipServiceServer::new(Service {
            inner: inner.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let incoming = TcpListenerStream::new(listener);
            let _ = Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        });
        Self {
            inner,
            runtime: Some(runtime),
        }
    }

    /// The member's identity.
    pub(crate) fn id(&self) -> pb::NodeId {
        self.inner.me.clone()
    }

    /// Joins through `seed` (section 9.1): a `SyncRequest` now and again
    /// every `seed_retry` until a message from the seed arrives.
    pub(crate) fn join(&self, seed: &str) {
        let inner = self.inner.clone();
        let seed = seed.to_owned();
        if let Some(rt) = &self.runtime {
            rt.spawn(async move {
                while !lock(&inner.heard).contains_key(&seed) {
                    let (hash, members) = {
                        let view = lock(&inner.view);
                        (view.fingerprint(), view.live_count())
                    };
                    inner.send(
                        &seed,
                        Body::SyncRequest(pb::SyncRequest {
                            digest_hash: hash,
                            members,
                        }),
                        Vec::new(),
                    );
                    tokio::time::sleep(inner.cfg.seed_retry).await;
                }
            });
        }
    }

    /// Reads the member's view.
    pub(crate) fn view<R>(&self, f: impl FnOnce(&View) -> R) -> R {
        f(&lock(&self.inner.view))
    }

    /// The last fingerprint a ping from `addr` carried.
    pub(crate) fn ping_hash(&self, addr: &str) -> Option<u64> {
        lock(&self.inner.ping_hashes).get(addr).copied()
    }

    /// Hangs (`true`): every envelope is accepted and ignored, as by a
    /// process that stopped working but whose port stays open; or works
    /// again (`false`).
    pub(crate) fn set_silent(&self, silent: bool) {
        self.inner.silent.store(silent, Ordering::Relaxed);
    }

    /// Stops at once, as a killed process: no leave, every socket closed.
    pub(crate) fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for SpecMember {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    /// Sends one envelope to `to` as a unary `Send` call (section 2.1), on
    /// a task of its own. Errors are dropped, as a lost message would be.
    fn send(self: &Arc<Self>, to: &str, body: Body, updates: Vec<pb::MemberUpdate>) {
        let env = pb::Envelope {
            cluster_id: self.cfg.cluster_id.clone(),
            from: Some(self.me.clone()),
            updates,
            broadcasts: Vec::new(),
            incarnation: lock(&self.view).me().fact.incarnation,
            body: Some(body),
            // This member does not encrypt (issue #12 is not in the spec).
            sealed: Default::default(),
        };
        assert!(
            env.encoded_len() <= MAX_MESSAGE_SIZE,
            "an oversized envelope"
        );
        let Some(channel) = self.channel(to) else {
            return;
        };
        tokio::spawn(async move {
            let _ = GossipServiceClient::new(channel).send(env).await;
        });
    }

    /// The cached channel to `to`, or a new one that connects lazily.
    fn channel(&self, to: &str) -> Option<Channel> {
        let mut channels = lock(&self.channels);
        if let Some(channel) = channels.get(to) {
            return Some(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{to}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        channels.insert(to.to_owned(), channel.clone());
        Some(channel)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Section 4.1: the checks of every received envelope.
    fn check(&self, env: &pb::Envelope) -> Result<(), Status> {
        if env.encoded_len() > MAX_MESSAGE_SIZE {
            return Err(Status::invalid_argument(OVERSIZED));
        }
        if env.cluster_id != self.cfg.cluster_id {
            return Err(Status::permission_denied("foreign cluster id"));
        }
        if !env.from.as_ref().is_some_and(|f| valid_addr(&f.addr)) {
            return Err(Status::invalid_argument("missing or invalid sender"));
        }
        if env.body.is_none() {
            return Err(Status::invalid_argument("missing message body"));
        }
        Ok(())
    }

    /// Checks and handles one envelope (sections 4.1 and 4.2).
    fn receive(self: &Arc<Self>, env: pb::Envelope) -> Result<(), Status> {
        self.check(&env)?;
        if self.silent.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (Some(from), Some(body)) = (env.from, env.body) else {
            return Ok(());
        };
        if from.addr == self.me.addr {
            return Ok(());
        }
        // 1. A seed has answered.
        *lock(&self.heard).entry(from.addr.clone()).or_default() += 1;
        // 2. The sender vouches for itself; 4. the piggybacked updates.
        let sender = Fact {
            addr: from.addr.clone(),
            generation: from.generation,
            incarnation: env.incarnation,
            state: State::Alive,
        };
        let mut refuted = lock(&self.view).apply(sender) == Applied::Refuted;
        for u in &env.updates {
            if let Some(fact) = Fact::from_pb(u) {
                refuted |= lock(&self.view).apply(fact) == Applied::Refuted;
            }
        }
        // 5. Broadcasts are not delivered by this member. 6. The body.
        match body {
            Body::Ping(p) => {
                lock(&self.ping_hashes).insert(from.addr.clone(), p.digest_hash);
                self.ack(&from.addr, p.seq, self.me.clone());
            }
            Body::Ack(a) => {
                let relay = lock(&self.relays).remove(&a.seq);
                if let (Some((requester, their_seq)), Some(target)) = (relay, a.target) {
                    self.ack(&requester, their_seq, target);
                }
            }
            Body::PingReq(r) => self.relay(&from, r),
            Body::SyncRequest(r) => {
                if r.digest_hash != lock(&self.view).fingerprint() {
                    self.send_complete_digest(&from.addr);
                }
            }
            // Answered with the digest of the whole ring (section 9.4
            // allows a superset of the differing buckets' ranges).
            Body::SyncBuckets(_) => self.send_complete_digest(&from.addr),
            Body::SyncDigest(d) => {
                let (request, owners, r) = lock(&self.view).answer_digest(&d);
                refuted |= r;
                if let Some(request) = request {
                    self.send(&from.addr, Body::SyncDigest(request), Vec::new());
                }
                if !owners.is_empty() {
                    let delta = pb::Delta {
                        owners,
                        push: false,
                    };
                    self.send(&from.addr, Body::Delta(delta), Vec::new());
                }
            }
            Body::Delta(d) => {
                for od in &d.owners {
                    refuted |= lock(&self.view).apply_delta(od) == Applied::Refuted;
                }
            }
            // Keyring bodies (issue #12) only concern members that encrypt.
            Body::Gossip(_) | Body::Nack(_) | Body::KeyringRequest(_) | Body::KeyringAnswer(_) => {}
        }
        if refuted {
            self.announce_refutation(&from.addr);
        }
        Ok(())
    }

    fn ack(self: &Arc<Self>, to: &str, seq: u64, target: pb::NodeId) {
        let (digest_hash, members) = {
            let view = lock(&self.view);
            (view.fingerprint(), view.live_count())
        };
        let ack = pb::Ack {
            seq,
            target: Some(target),
            digest_hash,
            members,
        };
        self.send(to, Body::Ack(ack), Vec::new());
    }

    /// Section 6.2: ping the target for the requester; nack if no ack
    /// came within the probe timeout.
    fn relay(self: &Arc<Self>, from: &pb::NodeId, r: pb::PingReq) {
        let Some(target) = r.target.filter(|t| valid_addr(&t.addr)) else {
            return;
        };
        if target.addr == self.me.addr {
            self.ack(&from.addr, r.seq, self.me.clone());
            return;
        }
        let seq = self.next_seq();
        lock(&self.relays).insert(seq, (from.addr.clone(), r.seq));
        let (digest_hash, members) = {
            let view = lock(&self.view);
            (view.fingerprint(), view.live_count())
        };
        let ping = pb::Ping {
            seq,
            on_behalf_of: Some(from.clone()),
            digest_hash,
            members,
        };
        self.send(&target.addr, Body::Ping(ping), Vec::new());
        let inner = self.clone();
        let wait = self.cfg.probe_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let unanswered = lock(&inner.relays).remove(&seq);
            if let Some((requester, their_seq)) = unanswered {
                let nack = pb::Nack {
                    seq: their_seq,
                    refused: false,
                };
                inner.send(&requester, Body::Nack(nack), Vec::new());
            }
        });
    }

    fn send_complete_digest(self: &Arc<Self>, to: &str) {
        let digest = lock(&self.view).complete_digest();
        self.send(to, Body::SyncDigest(digest), Vec::new());
    }

    /// Section 5.3: the raised incarnation goes to the member the
    /// accusation came from and to every live member, in `updates` of a
    /// `Gossip` message.
    fn announce_refutation(self: &Arc<Self>, via: &str) {
        let (fact, mut peers) = {
            let view = lock(&self.view);
            (view.me().fact.to_pb(), view.live_peers())
        };
        if !peers.iter().any(|p| p == via) {
            peers.push(via.to_owned());
        }
        for p in peers {
            self.send(&p, Body::Gossip(pb::Gossip {}), vec![fact.clone()]);
        }
    }
}

/// The gRPC service (section 2.1).
struct Service {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl GossipService for Service {
    type GossipStream = ReceiverStream<Result<pb::StreamReply, Status>>;

    async fn send(
        &self,
        request: Request<pb::Envelope>,
    ) -> Result<Response<pb::SendReply>, Status> {
        self.inner.receive(request.into_inner())?;
        Ok(Response::new(pb::SendReply {}))
    }

    /// Reads the peer's batches; answers a `StreamReply` per batch with
    /// rejections, and ends the stream on a foreign cluster id.
    async fn gossip(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<Self::GossipStream>, Status> {
        let mut incoming = request.into_inner();
        let inner = self.inner.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(batch)) = incoming.message().await {
                let mut rejected = 0;
                let mut first: Option<Status> = None;
                for env in batch.envelopes {
                    if let Err(status) = inner.receive(env) {
                        rejected += 1;
                        first.get_or_insert(status);
                    }
                }
                let Some(status) = first else { continue };
                if status.code() == Code::PermissionDenied {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let reason = if status.message() == OVERSIZED {
                    "oversized"
                } else {
                    "malformed"
                };
                let reply = pb::StreamReply {
                    reason: reason.to_owned(),
                    message: status.message().to_owned(),
                    rejected,
                };
                let _ = tx.send(Ok(reply)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
