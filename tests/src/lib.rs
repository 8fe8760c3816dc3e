//! The conformance suite: one list of whole-cluster scenarios, each an
//! `async fn` generic over a transport [`Kind`]. `tests/conformance.rs`
//! instantiates every scenario for every transport with one line per
//! transport.
//!
//! Every member runs behind a [`FaultyTransport`] sharing one
//! [`FaultController`], so loss, delay and partitions apply to any transport.
#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]

pub mod keyring;
pub mod kinds;
pub mod scenarios;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use gossip_core::{
    Config, FaultController, FaultyTransport, Keyring, Member, MemberOptions, Membership, NodeAddr,
    Sealer, Transport,
};

/// A transport under test: how to bind one, and how to push raw bytes at a
/// member listening on it.
pub trait Kind: Send + Sync + 'static {
    /// The transport type.
    type T: Transport;
    /// Binds a transport on a fresh loopback address, or on `at` (to restart
    /// a member on its old address).
    fn bind(&self, at: Option<&NodeAddr>) -> impl Future<Output = Self::T> + Send;
    /// Sends `frame` verbatim to the member at `to`; `Err` carries the
    /// receiver's explanation.
    fn send_raw(
        &self,
        to: &NodeAddr,
        frame: Bytes,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Under mutual TLS: a transport whose certificate the cluster CA did
    /// not sign (it trusts the cluster CA itself). `None` for other kinds.
    fn bind_intruder(&self) -> impl Future<Output = Option<Self::T>> + Send {
        async { None }
    }
}

/// Protocol timing for tests: fast but not hair-trigger.
pub fn test_config() -> Config {
    Config {
        gossip_interval: Duration::from_millis(100),
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        suspicion_mult: 2,
        tombstone_ttl: Duration::from_secs(30),
        seed_retry_initial: Duration::from_millis(100),
        seed_retry_max: Duration::from_millis(500),
        ..Config::default()
    }
}

pub type TestMember<K> = Member<FaultyTransport<<K as Kind>::T>>;

/// A cluster of members over one transport kind.
pub struct Cluster<K: Kind> {
    pub kind: K,
    pub config: Config,
    pub faults: FaultController,
    pub members: Vec<TestMember<K>>,
    generation: u64,
}

impl<K: Kind> Cluster<K> {
    pub fn new(kind: K) -> Self {
        Self::with_config(kind, test_config())
    }

    pub fn with_config(kind: K, config: Config) -> Self {
        // `GOSSIP_TEST_LOG=gossip_core=debug cargo test ...` shows the protocol.
        if let Ok(filter) = std::env::var("GOSSIP_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        Self {
            kind,
            config,
            faults: FaultController::new(42),
            members: Vec::new(),
            generation: 1000,
        }
    }

    /// Starts a member (at `at` if given) seeded with member `seed`;
    /// returns its index.
    pub async fn spawn_with(
        &mut self,
        at: Option<&NodeAddr>,
        seed: Option<usize>,
        config: Config,
    ) -> usize {
        let t = self.kind.bind(at).await;
        self.spawn_transport(t, seed, config).await
    }

    /// Starts a member over a given transport, seeded with member `seed`.
    pub async fn spawn_transport(&mut self, t: K::T, seed: Option<usize>, config: Config) -> usize {
        self.spawn_keyed(t, seed, config, None).await
    }

    /// Starts a member that encrypts with `keyring` (none: it does not)
    /// over a given transport, seeded with member `seed`.
    pub async fn spawn_keyed(
        &mut self,
        t: K::T,
        seed: Option<usize>,
        config: Config,
        keyring: Option<Keyring>,
    ) -> usize {
        let t = self.faults.wrap(t);
        self.generation += 1000;
        let opts = MemberOptions {
            generation: Some(self.generation),
            keyring: keyring.map(Sealer::new),
            ..MemberOptions::default()
        };
        let m = Member::new(config, t, opts).unwrap();
        m.start().await.unwrap();
        if let Some(s) = seed {
            m.add_seed(self.addr(s));
        }
        self.members.push(m);
        self.members.len() - 1
    }

    pub async fn spawn(&mut self, seed: Option<usize>) -> usize {
        let c = self.config.clone();
        self.spawn_with(None, seed, c).await
    }

    /// `n` members, each seeded with the one before.
    pub async fn chain(&mut self, n: usize) {
        for i in 0..n {
            self.spawn(i.checked_sub(1)).await;
        }
    }

    pub fn addr(&self, i: usize) -> NodeAddr {
        self.members[i].local_id().addr
    }

    /// Indices of members still running, i.e. not in `gone`.
    pub fn running(&self, gone: &[usize]) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| !gone.contains(i))
            .collect()
    }

    /// Every member in `who` lists exactly the members in `who`.
    pub fn agree(&self, who: &[usize]) -> bool {
        let want: Vec<NodeAddr> = who.iter().map(|i| self.addr(*i)).collect();
        who.iter().all(|i| {
            let seen: Vec<NodeAddr> = self.members[*i]
                .members()
                .into_iter()
                .map(|m| m.addr)
                .collect();
            seen.len() == want.len() && want.iter().all(|a| seen.contains(a))
        })
    }

    /// Every member's view, for failure messages.
    pub fn views(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let seen: Vec<String> = m
                .all_members()
                .into_iter()
                .map(|x| format!("{}:{}#{}", x.addr, x.state.as_str(), x.incarnation))
                .collect();
            let s = m.stats();
            out.push_str(&format!(
                "\n  member {i} ({}): sent {} failed {} recv {} sees [{}]",
                self.addr(i),
                s.messages_sent,
                s.send_failures,
                s.messages_received,
                seen.join(", ")
            ));
        }
        out
    }

    /// Waits until the members in `who` agree; on timeout the panic shows
    /// every view.
    pub async fn wait_agree(&self, limit: Duration, what: &str, who: &[usize]) -> Duration {
        let start = tokio::time::Instant::now();
        loop {
            if self.agree(who) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() <= limit,
                "{what}: not reached within {limit:?}; views:{}",
                self.views()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn shutdown(&self) {
        for m in &self.members {
            m.shutdown().await;
        }
    }
}

/// Polls `cond` until it holds; panics after `limit`. Returns the time it
/// took.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() <= limit,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
