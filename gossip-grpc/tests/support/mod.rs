//! What the gRPC transport's test binaries share: a test envelope, a
//! started transport with its receiving end, and waiting on a condition.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;
use std::time::{Duration, Instant};

use gossip_core::{Stats, Transport, inbound_channel, pb};
use gossip_grpc::{GrpcConfig, GrpcTransport};
use tokio::sync::mpsc;

/// Largest frame the test members accept, bytes.
pub(crate) const MAX: usize = 4096;

/// A ping numbered `seq` from a fixed sender, in `cluster`.
pub(crate) fn envelope(cluster: &str, seq: u64) -> pb::Envelope {
    pb::Envelope {
        cluster_id: cluster.into(),
        from: Some(pb::NodeId {
            addr: "127.0.0.1:1".into(),
            generation: 7,
        }),
        body: Some(pb::envelope::Body::Ping(pb::Ping {
            seq,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A started transport, what it received, and its member's counters.
pub(crate) struct Node {
    pub(crate) transport: GrpcTransport,
    pub(crate) rx: mpsc::Receiver<pb::Envelope>,
    pub(crate) stats: Arc<Stats>,
}

/// Binds `config` and starts it in `cluster`, with an inbound queue of
/// `capacity` frames of at most [`MAX`] bytes.
pub(crate) async fn start(cluster: &str, config: GrpcConfig, capacity: usize) -> Node {
    let transport = GrpcTransport::bind(config).await.unwrap();
    let stats = Arc::new(Stats::default());
    let (inbound, rx) = inbound_channel(cluster, MAX, capacity, stats.clone());
    transport.start(inbound).await.unwrap();
    Node {
        transport,
        rx,
        stats,
    }
}

/// Polls `cond` every 10 ms until it holds, or fails after `deadline`.
pub(crate) async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
