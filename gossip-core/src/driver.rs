//! The tokio driver: a thin shell that runs the sans-IO [`Machine`] over a
//! [`Transport`]. One loop: wait for a frame, a timer or a command; call the
//! matching `handle_*`; drain `poll_transmit` and `poll_event`; send; re-arm
//! the timer from `poll_timeout`.
//!
//! Two inputs besides frames and timers (issue #10):
//! - a batch the transport refused because nothing listens at the peer
//!   comes back from the peer's sending task (`outbox.rs`) and is handed to
//!   [`Machine::handle_send_error`], like an inbound message;
//! - a timer that fires late (the process or its runtime was stalled) is
//!   judged only after the transport's tasks have run and every frame
//!   already received has been handled, so a member that was not running
//!   does not take the acks waiting for it as missing.
//!
//! A member that encrypts (a [`Sealer`] in [`MemberOptions`]) seals what
//! it sends in its peers' sending tasks and opens what it receives in the
//! [`Inbound`](crate::Inbound) gate; keyring requests and answers from
//! peers are handled here, beside the machine (`keyops.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gossip_proto::v1::Envelope;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, debug, info_span, trace, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::error::{GossipError, TransportError};
use crate::event::{Event, KeyEntry, MemberInfo};
use crate::id::{NodeAddr, NodeId};
use crate::keyops::{self, KeyService, KeyringReport};
use crate::keyring::KeyringOp;
use crate::machine::{Machine, Transmit};
use crate::membership::{BoxFuture, Membership};
use crate::outbox::{Outbox, REFUSALS_QUEUE, Sender};
use crate::seal::Sealer;
use crate::stats::{Stats, StatsSnapshot};
use crate::transport::Transport;

/// Capacity of the event channel per subscriber.
const EVENT_CAPACITY: usize = 4096;
/// Longest time leave announcements get to go out at shutdown, so that a
/// member stops promptly whatever its peers do (issue #9 item 6).
const LEAVE_GRACE: Duration = Duration::from_millis(500);
/// Frames handled per lock of the machine.
const BATCH: usize = 64;
/// A timer wake-up later than its deadline by more than this (or by more
/// than a quarter of the probe timeout, if that is less) is a late one: the
/// member was not running.
const LATE: Duration = Duration::from_millis(5);
/// Times the driver yields to the transport's tasks after a late wake-up,
/// so that frames they hold reach the inbound queue before the timeout is
/// judged.
const LATE_YIELDS: usize = 4;

/// Listener checks ([`Transport::check_refused`]) running at once, at most.
const MAX_CHECKS: usize = 16;

/// A listener check that has not answered by then counts as "not refused".
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Options of one member's life, beside the protocol [`Config`].
#[derive(Clone, Debug, Default)]
pub struct MemberOptions {
    /// Generation of this life; default: wall clock in ms since the Unix epoch.
    pub generation: Option<u64>,
    /// Seed of the protocol's RNG; default: derived from the address and the
    /// generation.
    pub rng_seed: Option<u64>,
    /// Initial metadata.
    pub meta: BTreeMap<String, String>,
    /// The keyring to seal and open every envelope with (issue #12),
    /// e.g. `Sealer::new(Keyring::new(key))`; keep a clone to read or
    /// persist the keyring as it changes. `None`: the member does not
    /// encrypt, and refuses sealed envelopes. Members of one cluster either
    /// all encrypt or none do.
    pub keyring: Option<Sealer>,
}

struct Shared<T> {
    machine: Mutex<Machine>,
    transport: Arc<T>,
    config: Config,
    wake: Notify,
    events: broadcast::Sender<Event>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    /// Leave gracefully when stopping (false: crash without a word).
    announce: std::sync::atomic::AtomicBool,
    /// The keyring, if the member encrypts, and keyring changes.
    keys: KeyService,
}

/// A member of a gossip cluster over transport `T`: the [`Machine`] plus the
/// tasks that drive it.
///
/// Constructing a member starts no task; [`Member::start`] spawns the
/// transport's server and the driver loop; [`Membership::shutdown`] leaves
/// gracefully and returns once every task has ended (requirement 11).
pub struct Member<T: Transport> {
    shared: Arc<Shared<T>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl<T: Transport> Member<T> {
    /// Builds a member whose identity is the transport's local address.
    ///
    /// # Errors
    /// [`GossipError::Config`] if `config` fails [`Config::validate`];
    /// [`GossipError::TooLarge`] / [`GossipError::TooManyMetaEntries`] if the
    /// initial metadata breaks the limits.
    pub fn new(config: Config, transport: T, options: MemberOptions) -> Result<Self, GossipError> {
        let generation = options.generation.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(1)
        });
        let id = NodeId::new(transport.local_addr(), generation);
        let seed = options.rng_seed.unwrap_or_else(|| {
            xxhash_rust::xxh3::xxh3_64_with_seed(id.addr.as_str().as_bytes(), generation)
        });
        let now = tokio::time::Instant::now().into_std();
        let mut machine = Machine::new(id, config.clone(), seed, now)?;
        if !options.meta.is_empty() {
            machine.set_meta(now, options.meta)?;
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (stop, _) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        Ok(Self {
            shared: Arc::new(Shared {
                machine: Mutex::new(machine),
                transport: Arc::new(transport),
                config,
                wake: Notify::new(),
                events,
                stats,
                stop,
                announce: std::sync::atomic::AtomicBool::new(true),
                keys: KeyService::new(options.keyring),
            }),
            task: tokio::sync::Mutex::new(None),
        })
    }

    /// Starts the transport's server and the driver loop. Calling it again
    /// while running is a no-op; a member that has shut down stays down.
    ///
    /// # Errors
    /// The transport's error if it cannot start serving;
    /// [`TransportError::ShutDown`] if the member has already shut down.
    pub async fn start(&self) -> Result<(), TransportError> {
        let mut task = self.task.lock().await;
        if task.is_some() {
            return Ok(());
        }
        if *self.shared.stop.borrow() {
            return Err(TransportError::ShutDown);
        }
        let (inbound, rx) = crate::codec::inbound_channel(
            &self.shared.config.cluster_id,
            self.shared.config.max_message_size,
            self.shared.config.inbound_queue,
            self.shared.stats.clone(),
        );
        let inbound = match &self.shared.keys.sealer {
            Some(sealer) => inbound.with_sealer(sealer.clone()),
            None => inbound,
        };
        self.shared.transport.start(inbound).await?;
        // Subscribe before spawning, so a shutdown right after start is seen.
        let stop = self.shared.stop.subscribe();
        let shared = self.shared.clone();
        let span = info_span!("member", addr = %self.local_id().addr);
        *task = Some(tokio::spawn(run(shared, rx, stop).instrument(span)));
        Ok(())
    }

    /// The transport this member runs over.
    pub fn transport(&self) -> &T {
        &self.shared.transport
    }

    /// The configuration this member runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The member's keyring while it runs, if it encrypts: to read its key
    /// ids, or to persist it after each change ([`Sealer::subscribe`]).
    pub fn sealer(&self) -> Option<&Sealer> {
        self.shared.keys.sealer.as_ref()
    }

    /// Applies `op` to this member's keyring and to every live member's
    /// (issue #12); see [`Membership::change_keyring`].
    ///
    /// # Errors
    /// [`GossipError::Keyring`] if this member does not encrypt;
    /// [`GossipError::ShutDown`] if it is not running.
    pub async fn change_keyring(
        &self,
        op: KeyringOp,
        timeout: Duration,
    ) -> Result<KeyringReport, GossipError> {
        if !self.is_running().await {
            return Err(GossipError::ShutDown);
        }
        let (local, peers) = {
            let m = self.machine();
            let local = m.local_id().clone();
            let peers = m
                .members(now())
                .into_iter()
                .map(|i| i.addr)
                .filter(|a| *a != local.addr)
                .collect();
            (local, peers)
        };
        // Resend about every probe interval: often enough to ride over a
        // lost datagram, rarely enough to cost nothing.
        let resend = self
            .shared
            .config
            .probe_interval
            .max(Duration::from_millis(200));
        let ask = keyops::Ask {
            peers,
            resend,
            timeout,
        };
        let cluster_id = &self.shared.config.cluster_id;
        let report = self
            .shared
            .keys
            .change(op, &local, cluster_id, ask, &self.shared.wake)
            .await?;
        Ok(report)
    }

    /// True once [`Member::start`] has run and until shutdown has finished.
    pub async fn is_running(&self) -> bool {
        self.task
            .lock()
            .await
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Stops every task at once **without** announcing a leave, as if the
    /// process had died: peers must detect it by probing. For tests and
    /// fault drills. Returns when every task has ended; the member stays down.
    pub async fn crash(&self) {
        self.shared
            .announce
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.shutdown().await;
    }

    fn machine(&self) -> MutexGuard<'_, Machine> {
        lock(&self.shared.machine)
    }

    fn command<R>(&self, f: impl FnOnce(&mut Machine, std::time::Instant) -> R) -> R {
        let r = f(&mut self.machine(), now());
        self.shared.wake.notify_one();
        r
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn lock<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    // A panic while holding the lock cannot leave the machine half-updated in
    // a way later calls rely on; keep serving rather than cascading panics.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn run<T: Transport>(
    shared: Arc<Shared<T>>,
    mut rx: mpsc::Receiver<Envelope>,
    mut stop: watch::Receiver<bool>,
) {
    let (refusals, mut refused) = mpsc::channel(REFUSALS_QUEUE);
    let mut checks = Checks {
        tasks: JoinSet::new(),
        refusals: refusals.clone(),
        asked: Vec::new(),
    };
    let mut outbox = Outbox::new(Sender {
        transport: shared.transport.clone(),
        stats: shared.stats.clone(),
        send_timeout: shared.config.probe_timeout.max(Duration::from_millis(500)) * 2,
        refusals,
        sealer: shared.keys.sealer.clone(),
    });
    let late_bound = LATE.min(shared.config.probe_timeout / 4);
    loop {
        flush(&shared, &mut outbox, &mut checks.asked);
        checks.start(&shared);
        let deadline = lock(&shared.machine).poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let mut m = lock(&shared.machine);
                let t = now();
                deliver(&shared, &mut m, t, msg);
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(msg) => deliver(&shared, &mut m, t, msg),
                        Err(_) => break,
                    }
                }
            }
            Some(to) = refused.recv() => {
                let mut m = lock(&shared.machine);
                let t = now();
                handle_refused(&shared, &mut m, t, &to);
                for _ in 0..BATCH {
                    match refused.try_recv() {
                        Ok(to) => handle_refused(&shared, &mut m, t, &to),
                        Err(_) => break,
                    }
                }
            }
            () = sleep => {
                let woke = now();
                let lateness = deadline.map_or(Duration::ZERO, |d| woke.saturating_duration_since(d));
                let late = lateness > late_bound;
                shared.stats.record_wakeup_lateness(lateness, late);
                if late {
                    debug!(?lateness, "timer woke late: handling what was received first");
                    catch_up(&shared, &mut rx, &mut refused, &mut outbox, &mut checks.asked).await;
                }
                lock(&shared.machine).handle_timeout(now());
            }
            () = shared.wake.notified() => {}
        }
    }
    // Graceful leave: announce, give the announcements a moment, then stop.
    if shared.announce.load(std::sync::atomic::Ordering::SeqCst) {
        lock(&shared.machine).leave(now());
        flush(&shared, &mut outbox, &mut Vec::new());
        outbox.close(LEAVE_GRACE).await;
    } else {
        // Mark the machine stopped so commands are refused, but send nothing.
        {
            let mut m = lock(&shared.machine);
            m.leave(now());
            while m.poll_transmit().is_some() {}
        }
        outbox.abort().await;
    }
    checks.tasks.shutdown().await;
    shared.transport.shutdown().await;
}

/// Hands one received envelope to the machine, or a keyring request or
/// answer to the keyring service.
fn deliver<T>(shared: &Shared<T>, m: &mut Machine, now: std::time::Instant, msg: Envelope) {
    if keyops::is_keyring(&msg) {
        shared
            .keys
            .on_message(m.local_id(), &shared.config.cluster_id, msg);
    } else {
        m.handle_message(now, msg);
    }
}

/// The listener checks the machine asked for
/// ([`Machine::poll_refusal_check`]), each a task that asks the transport
/// and reports a refusal through the same channel as a refused send.
struct Checks {
    tasks: JoinSet<()>,
    refusals: mpsc::Sender<NodeAddr>,
    /// Asked for by the machine, not started yet.
    asked: Vec<NodeAddr>,
}

impl Checks {
    /// Starts the checks the machine asked for (`asked`, filled by
    /// [`flush`]), at most [`MAX_CHECKS`] at a time (more are dropped: the
    /// failure detector's slow path still decides).
    fn start<T: Transport>(&mut self, shared: &Arc<Shared<T>>) {
        if !self.tasks.is_empty() {
            while self.tasks.try_join_next().is_some() {}
        }
        for to in self.asked.drain(..) {
            if self.tasks.len() >= MAX_CHECKS {
                trace!(%to, "too many listener checks running; skipped");
                continue;
            }
            shared.stats.record_refusal_check();
            let transport = shared.transport.clone();
            let refusals = self.refusals.clone();
            self.tasks.spawn(async move {
                let refused = tokio::time::timeout(CHECK_TIMEOUT, transport.check_refused(&to))
                    .await
                    .unwrap_or(false);
                trace!(%to, refused, "listener checked");
                if refused {
                    let _ = refusals.try_send(to);
                }
            });
        }
    }
}

/// Hands one refusal to the machine and counts it.
fn handle_refused<T>(shared: &Shared<T>, m: &mut Machine, now: std::time::Instant, to: &NodeAddr) {
    trace!(%to, "refused: reporting to the failure detector");
    shared.stats.record_send_refused();
    m.handle_send_error(now, to, true);
}

/// After a late wake-up, before the timeout is judged: `LATE_YIELDS`
/// times, hands the machine every frame and refusal already queued (at most
/// what the queues hold, so a flood cannot hold the timeout back), sends
/// what that produced (the acks peers wait for) and lets the transport's
/// tasks and the peers' sending tasks run, so that answers on their way are
/// in the inbound queue by the last pass.
async fn catch_up<T: Transport>(
    shared: &Arc<Shared<T>>,
    rx: &mut mpsc::Receiver<Envelope>,
    refused: &mut mpsc::Receiver<NodeAddr>,
    outbox: &mut Outbox<T>,
    asked: &mut Vec<NodeAddr>,
) {
    for pass in 0..=LATE_YIELDS {
        if pass > 0 {
            tokio::task::yield_now().await;
        }
        {
            let mut m = lock(&shared.machine);
            let t = now();
            for _ in 0..shared.config.inbound_queue.max(1) {
                match rx.try_recv() {
                    Ok(msg) => deliver(shared, &mut m, t, msg),
                    Err(_) => break,
                }
            }
            for _ in 0..REFUSALS_QUEUE {
                match refused.try_recv() {
                    Ok(to) => handle_refused(shared, &mut m, t, &to),
                    Err(_) => break,
                }
            }
        }
        flush(shared, outbox, asked);
    }
}

/// Drains the machine's outputs: events to subscribers, transmits to their
/// peers' outbound queues; the listener checks it asked for
/// ([`Machine::poll_refusal_check`], usually none) to `asked`.
fn flush<T: Transport>(shared: &Arc<Shared<T>>, outbox: &mut Outbox<T>, asked: &mut Vec<NodeAddr>) {
    let (transmits, events) = {
        let mut m = lock(&shared.machine);
        let mut t = Vec::new();
        while let Some(x) = m.poll_transmit() {
            t.push(x);
        }
        let mut e = Vec::new();
        while let Some(x) = m.poll_event() {
            e.push(x);
        }
        for rtt in m.take_probe_rtts() {
            shared.stats.record_probe_rtt(rtt);
        }
        shared.stats.set_queue_depth(m.queue_depth());
        asked.extend(std::iter::from_fn(|| m.poll_refusal_check()));
        (t, e)
    };
    for e in events {
        trace!(?e, "event");
        // No subscriber is fine.
        let _ = shared.events.send(e);
    }
    for Transmit { to, msg } in transmits.into_iter().chain(shared.keys.take_outgoing()) {
        outbox.push(to, msg);
    }
}

impl<T: Transport> Membership for Member<T> {
    fn local_id(&self) -> NodeId {
        self.machine().local_id().clone()
    }

    fn members(&self) -> Vec<MemberInfo> {
        self.machine().members(now())
    }

    fn all_members(&self) -> Vec<MemberInfo> {
        self.machine().all_members(now())
    }

    fn add_seed(&self, addr: NodeAddr) {
        self.command(|m, t| m.add_seed(t, addr));
    }

    fn set_meta(&self, meta: BTreeMap<String, String>) -> Result<(), GossipError> {
        self.command(|m, t| m.set_meta(t, meta))
    }

    fn set_key(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, GossipError> {
        self.command(|m, t| m.set_key(t, key, value, ttl))
    }

    fn delete_key(&self, key: &str) -> Result<Option<u64>, GossipError> {
        self.command(|m, t| m.delete_key(t, key))
    }

    fn get_key(&self, owner: &NodeAddr, key: &str) -> Option<KeyEntry> {
        self.machine().get_key(now(), owner, key)
    }

    fn kv(&self) -> BTreeMap<NodeAddr, BTreeMap<String, KeyEntry>> {
        self.machine().kv(now())
    }

    fn broadcast(&self, payload: Bytes, ttl_hops: Option<u32>) -> Result<Uuid, GossipError> {
        self.command(|m, t| m.broadcast(t, payload, ttl_hops))
    }

    fn broadcast_with_id(
        &self,
        uuid: Uuid,
        payload: Bytes,
        ttl_hops: Option<u32>,
    ) -> Result<bool, GossipError> {
        self.command(|m, t| m.broadcast_with_id(t, uuid, payload, ttl_hops))
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    fn key_ids(&self) -> Option<Vec<crate::KeyId>> {
        self.sealer().map(Sealer::ids)
    }

    fn change_keyring(
        &self,
        op: KeyringOp,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<KeyringReport, GossipError>> {
        Box::pin(Member::change_keyring(self, op, timeout))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut task = self.task.lock().await;
            // `send_replace` stores the value even with no receiver yet.
            self.shared.stop.send_replace(true);
            if let Some(t) = task.take()
                && let Err(e) = t.await
            {
                warn!(error = %e, "driver task ended abnormally");
            }
        })
    }
}
