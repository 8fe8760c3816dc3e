//! This project's members (`gossip_core::Member`) over a real loopback
//! transport: gRPC without TLS, or QUIC (always encrypted, self-signed).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::{Config, Event, Member, MemberOptions, Membership, Transport};
use gossip_grpc::{GrpcConfig, GrpcTransport};
use gossip_quic::{QuicConfig, QuicTransport};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Settings, Sightings, Traffic};
use crate::error::BenchError;

/// Our protocol timing for a run: the same gossip interval and fanout as
/// chitchat; probe interval `probe_factor` gossip intervals, probe timeout
/// one gossip interval, seeds retried every gossip interval at first.
pub(crate) fn config(s: &Settings) -> Config {
    let g = s.gossip_interval;
    Config {
        cluster_id: "bench".to_owned(),
        gossip_interval: g,
        fanout: s.fanout,
        probe_interval: g * s.probe_factor,
        probe_timeout: g,
        suspicion_mult: s.suspicion_mult,
        active_view: s.active_view,
        warm_up_peers: s.warm_up_peers,
        seed_retry_initial: g,
        seed_retry_max: g * 10,
        ..Config::default()
    }
}

/// A cluster of our members over transport `T`.
pub(crate) struct Ours<T: Transport> {
    name: String,
    members: Vec<Member<T>>,
    /// Which members were crashed (shutdown skips them).
    crashed: Vec<bool>,
    /// One event-watching task per member.
    watchers: Vec<JoinHandle<()>>,
    sightings: Arc<Sightings>,
}

/// Binds a gRPC transport (plaintext HTTP/2) on a fresh loopback port.
pub(crate) async fn bind_grpc() -> Result<GrpcTransport, String> {
    GrpcTransport::bind(GrpcConfig::default())
        .await
        .map_err(|e| e.to_string())
}

/// Binds a QUIC transport (self-signed TLS) on a fresh loopback port.
pub(crate) async fn bind_quic() -> Result<QuicTransport, String> {
    QuicTransport::bind(QuicConfig::default())
        .await
        .map_err(|e| e.to_string())
}

impl<T: Transport> Ours<T> {
    /// Starts `n` members, each bound by `bind` and seeded with member 0.
    pub(crate) async fn start<F, Fut>(
        name: &str,
        n: usize,
        settings: &Settings,
        sightings: Arc<Sightings>,
        bind: F,
    ) -> Result<Self, BenchError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let config = config(settings);
        let mut cluster = Self {
            name: name.to_owned(),
            members: Vec::with_capacity(n),
            crashed: vec![false; n],
            watchers: Vec::with_capacity(n),
            sightings,
        };
        for index in 0..n {
            let fail = |reason: String| BenchError::Start {
                system: name.to_owned(),
                index,
                reason,
            };
            let transport = bind().await.map_err(fail)?;
            let opts = MemberOptions {
                generation: Some(1_000 + index as u64),
                ..MemberOptions::default()
            };
            let member =
                Member::new(config.clone(), transport, opts).map_err(|e| fail(e.to_string()))?;
            member.start().await.map_err(|e| fail(e.to_string()))?;
            cluster
                .watchers
                .push(watch(&member, index, cluster.sightings.clone()));
            if let Some(seed) = cluster.members.first() {
                member.add_seed(seed.local_id().addr);
            }
            cluster.members.push(member);
        }
        Ok(cluster)
    }
}

/// Records, as they happen, the keys member `index` learns and the members
/// it declares dead.
fn watch<T: Transport>(member: &Member<T>, index: usize, book: Arc<Sightings>) -> JoinHandle<()> {
    let mut events = member.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(Event::KeyChanged {
                    key,
                    value: Some(_),
                    ..
                }) => book.record(format!("key:{key}"), index, Instant::now()),
                Ok(Event::Failed(id)) => {
                    book.record(format!("dead:{}", id.addr), index, Instant::now())
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(index, missed, "event watcher lagged");
                }
                Err(RecvError::Closed) => break,
            }
        }
    })
}

impl<T: Transport> Cluster for Ours<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.members.len()
    }

    async fn live_count(&self, i: usize) -> usize {
        self.members[i].members().len()
    }

    fn traffic(&self) -> Traffic {
        self.members.iter().fold(Traffic::default(), |t, m| {
            let s = m.stats();
            Traffic {
                bytes: t.bytes + s.bytes_sent,
                messages: t.messages + s.messages_sent,
            }
        })
    }

    fn traffic_note(&self) -> String {
        let stats: Vec<_> = self.members.iter().map(Member::stats).collect();
        let by_kind: Vec<String> = gossip_core::MessageKind::ALL
            .iter()
            .map(|&k| {
                let sent: u64 = stats.iter().map(|s| s.sent_by_kind.messages(k)).sum();
                format!("{k:?} {sent}")
            })
            .collect();
        let connections: u64 = stats.iter().map(|s| s.connections).sum();
        let sum = |f: fn(&gossip_core::StatsSnapshot) -> u64| stats.iter().map(f).sum::<u64>();
        format!(
            "messages sent: {}; outgoing connections held: {connections}; \
             sent {}, received {}, send failures {}, dropped {}, rejected overloaded {}, late wake-ups {}",
            by_kind.join(", "),
            sum(|s| s.messages_sent),
            sum(|s| s.messages_received),
            sum(|s| s.send_failures),
            sum(|s| s.send_dropped),
            sum(|s| s.rejected_overloaded),
            sum(|s| s.late_wakeups),
        )
    }

    async fn set_key(&self, i: usize, key: &str, value: &str) -> Result<(), BenchError> {
        self.members[i]
            .set_key(key, Bytes::copy_from_slice(value.as_bytes()), None)
            .map(|_| ())
            .map_err(|e| BenchError::SetKey {
                index: i,
                reason: e.to_string(),
            })
    }

    fn death_tag(&self, i: usize) -> String {
        format!("dead:{}", self.members[i].local_id().addr)
    }

    async fn crash(&mut self, i: usize) {
        self.crashed[i] = true;
        self.members[i].crash().await;
    }

    async fn shutdown(self) {
        for w in &self.watchers {
            w.abort();
        }
        let running = self
            .members
            .iter()
            .zip(&self.crashed)
            .filter(|(_, crashed)| !**crashed)
            .map(|(m, _)| async move {
                // A member that cannot finish leaving in time is abandoned;
                // the process ends after the run anyway.
                let _ = tokio::time::timeout(Duration::from_secs(10), m.shutdown()).await;
            });
        futures::future::join_all(running).await;
    }
}
