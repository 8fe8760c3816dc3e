//! chitchat (crates.io) instances over its own UDP transport on loopback,
//! with a wrapper around its `Transport`/`Socket` that counts what it sends.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{
    ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ListenerHandle, ProtocolVersion, spawn_chitchat,
};
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Settings, Sightings, Traffic};
use crate::error::BenchError;

/// The chitchat version this crate pins in its Cargo.toml.
pub(crate) const CHITCHAT_VERSION: &str = "0.13.0";

/// chitchat's gossip count: the peers each round contacts. A constant of the
/// crate (`GOSSIP_COUNT` in its `server.rs`), not configurable.
pub(crate) const CHITCHAT_FANOUT: usize = 3;

/// Prefix of the keys the spread scenario sets.
const KEY_PREFIX: &str = "spread-";

/// Counts the UDP payload bytes and datagrams one chitchat instance sends.
#[derive(Debug, Default)]
struct Counter {
    bytes: AtomicU64,
    messages: AtomicU64,
}

/// chitchat's `UdpTransport`, with every socket it opens counted.
struct CountingTransport {
    counter: Arc<Counter>,
}

#[async_trait]
impl Transport for CountingTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = UdpTransport.open(listen_addr).await?;
        Ok(Box::new(CountingSocket {
            inner,
            counter: self.counter.clone(),
        }))
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    counter: Arc<Counter>,
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let outcome = self.inner.send(to, envelope).await?;
        self.counter
            .bytes
            .fetch_add(outcome.num_bytes_sent as u64, Ordering::Relaxed);
        self.counter.messages.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}

struct Node {
    handle: Option<ChitchatHandle>,
    id: ChitchatId,
    counter: Arc<Counter>,
    _keys: ListenerHandle,
    watcher: JoinHandle<()>,
}

/// A cluster of chitchat instances.
pub(crate) struct Chitchat {
    name: String,
    nodes: Vec<Node>,
}

/// A loopback UDP port free a moment ago (chitchat binds the socket itself
/// and needs the port up front for its advertised address).
fn free_port() -> std::io::Result<u16> {
    let s = StdUdpSocket::bind(("127.0.0.1", 0))?;
    Ok(s.local_addr()?.port())
}

fn chitchat_config(
    id: ChitchatId,
    seed: Option<SocketAddr>,
    settings: &Settings,
    protocol: ProtocolVersion,
) -> ChitchatConfig {
    let interval = settings.gossip_interval;
    ChitchatConfig {
        listen_addr: id.gossip_advertise_addr,
        chitchat_id: id,
        cluster_id: "bench".to_owned(),
        gossip_interval: interval,
        seed_nodes: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: settings.phi_threshold,
            // As chitchat's own tests do: the prior heartbeat interval is
            // the gossip interval.
            initial_interval: interval,
            // Dead nodes stay listed as dead for the whole run.
            dead_node_grace_period: Duration::from_secs(3600),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: protocol,
    }
}

impl Chitchat {
    /// Starts `n` instances, each seeded with instance 0, speaking
    /// `protocol` (V0: plain digest; V1: compressed digest).
    pub(crate) async fn start(
        name: &str,
        n: usize,
        settings: &Settings,
        protocol: ProtocolVersion,
        sightings: Arc<Sightings>,
    ) -> Result<Self, BenchError> {
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for index in 0..n {
            let seed = nodes.first().map(|n| n.id.gossip_advertise_addr);
            let node = spawn_node(name, index, seed, settings, protocol, &sightings).await?;
            nodes.push(node);
        }
        Ok(Self {
            name: name.to_owned(),
            nodes,
        })
    }
}

async fn spawn_node(
    name: &str,
    index: usize,
    seed: Option<SocketAddr>,
    settings: &Settings,
    protocol: ProtocolVersion,
    sightings: &Arc<Sightings>,
) -> Result<Node, BenchError> {
    let fail = |reason: String| BenchError::Start {
        system: name.to_owned(),
        index,
        reason,
    };
    let counter = Arc::new(Counter::default());
    let transport = CountingTransport {
        counter: counter.clone(),
    };
    // The port may be taken between probing and binding: try a few.
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port().map_err(|e| fail(e.to_string()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let id = ChitchatId::new(format!("node-{index}"), 1_000 + index as u64, addr);
        let config = chitchat_config(id.clone(), seed, settings, protocol);
        match spawn_chitchat(config, Vec::new(), &transport).await {
            Ok(handle) => {
                let (keys, watcher) = watch(&handle, index, sightings.clone()).await;
                return Ok(Node {
                    handle: Some(handle),
                    id,
                    counter,
                    _keys: keys,
                    watcher,
                });
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(fail(last_error))
}

/// Records, as they happen, the keys instance `index` learns (chitchat's
/// key-change listener, called while it applies a delta) and the instances
/// it stops listing as live (its live-nodes watch, updated every round).
async fn watch(
    handle: &ChitchatHandle,
    index: usize,
    book: Arc<Sightings>,
) -> (ListenerHandle, JoinHandle<()>) {
    let chitchat = handle.chitchat();
    let guard = chitchat.lock().await;
    let keys_book = book.clone();
    let keys = guard.subscribe_event(KEY_PREFIX, move |event| {
        keys_book.record(
            format!("key:{KEY_PREFIX}{}", event.key),
            index,
            Instant::now(),
        );
    });
    let mut live = guard.live_nodes_watcher();
    drop(guard);
    let watcher = tokio::spawn(async move {
        let mut before: Vec<SocketAddr> = Vec::new();
        while live.changed().await.is_ok() {
            let now: Vec<SocketAddr> = live
                .borrow_and_update()
                .keys()
                .map(|id| id.gossip_advertise_addr)
                .collect();
            for gone in before.iter().filter(|a| !now.contains(a)) {
                book.record(format!("dead:{gone}"), index, Instant::now());
            }
            before = now;
        }
    });
    (keys, watcher)
}

impl Cluster for Chitchat {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }

    async fn live_count(&self, i: usize) -> usize {
        match &self.nodes[i].handle {
            Some(h) => h.with_chitchat(|c| c.live_nodes().count()).await,
            None => 0,
        }
    }

    fn traffic(&self) -> Traffic {
        self.nodes.iter().fold(Traffic::default(), |t, n| Traffic {
            bytes: t.bytes + n.counter.bytes.load(Ordering::Relaxed),
            messages: t.messages + n.counter.messages.load(Ordering::Relaxed),
        })
    }

    async fn set_key(&self, i: usize, key: &str, value: &str) -> Result<(), BenchError> {
        let handle = self.nodes[i].handle.as_ref().ok_or(BenchError::SetKey {
            index: i,
            reason: "instance was stopped".into(),
        })?;
        handle
            .with_chitchat(|c| c.self_node_state().set(key, value))
            .await;
        Ok(())
    }

    fn death_tag(&self, i: usize) -> String {
        format!("dead:{}", self.nodes[i].id.gossip_advertise_addr)
    }

    async fn crash(&mut self, i: usize) {
        if let Some(handle) = self.nodes[i].handle.take() {
            // Aborting the server task drops its socket: no more datagrams,
            // no goodbye (chitchat has no leave message anyway).
            handle.abort();
            self.nodes[i].watcher.abort();
        }
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.watcher.abort();
            if let Some(handle) = node.handle {
                let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_uses_the_runs_interval_for_gossip_and_the_detector_prior() {
        let s = Settings {
            gossip_interval: Duration::from_millis(100),
            fanout: 3,
            probe_factor: 2,
            suspicion_mult: 2,
            active_view: 8,
            warm_up_peers: 128,
            phi_threshold: 8.0,
        };
        let id = ChitchatId::new("n", 1, SocketAddr::from(([127, 0, 0, 1], 7000)));
        let seed = SocketAddr::from(([127, 0, 0, 1], 7001));
        let c = chitchat_config(id, Some(seed), &s, ProtocolVersion::V1);
        assert_eq!(c.gossip_interval, Duration::from_millis(100));
        assert_eq!(
            c.failure_detector_config.initial_interval,
            Duration::from_millis(100)
        );
        assert_eq!(c.seed_nodes, vec!["127.0.0.1:7001".to_owned()]);
        assert_eq!(c.listen_addr.port(), 7000);
    }
}
