//! The gRPC transport's lean path: `send_batch` over one long-lived
//! `Gossip` stream per peer, its rejections, the fallback to unary calls for
//! members of the first wire version, and the bound on cached channels.

use std::time::{Duration, Instant};

use gossip_core::{Config, Member, MemberOptions, Membership, NodeAddr, Transport, pb};
use gossip_grpc::{GrpcConfig, GrpcTransport, GrpcWire};

mod support;

use support::{MAX, Node, envelope};

const CLUSTER: &str = "stream-cluster";
const DEADLINE: Duration = Duration::from_secs(10);

async fn node_with(cluster: &str, config: GrpcConfig) -> Node {
    support::start(cluster, config, 1024).await
}

async fn node(cluster: &str) -> Node {
    node_with(cluster, GrpcConfig::default()).await
}

/// Polls `cond` until it holds or `DEADLINE` passes.
async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    support::wait_until(what, DEADLINE, cond).await;
}

async fn recv(node: &mut Node) -> pb::Envelope {
    tokio::time::timeout(DEADLINE, node.rx.recv())
        .await
        .expect("an envelope within the deadline")
        .expect("the queue is open")
}

#[tokio::test]
async fn batches_travel_in_order_on_one_stream() {
    let a = node(CLUSTER).await;
    let mut b = node(CLUSTER).await;
    let to = b.transport.local_addr();
    for round in 0..5u64 {
        let batch = (0..10).map(|i| envelope(CLUSTER, round * 10 + i)).collect();
        a.transport.send_batch(&to, batch).await.unwrap();
    }
    for seq in 0..50u64 {
        let got = recv(&mut b).await;
        assert!(
            matches!(got.body, Some(pb::envelope::Body::Ping(pb::Ping { seq: s, .. })) if s == seq),
            "envelope {seq} out of order: {got:?}"
        );
    }
    let stats = a.transport.stats();
    assert_eq!((stats.streams_opened, stats.channels), (1, 1), "{stats:?}");
    assert_eq!(b.stats.snapshot().messages_received, 50);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn a_batch_larger_than_one_message_is_split_into_frames() {
    let a = node(CLUSTER).await;
    let mut b = node(CLUSTER).await;
    let to = b.transport.local_addr();
    // Thirty envelopes of ~300 bytes: about 9 KB, over the 4 KB limit of
    // one frame, so the batch must go as several frames.
    let batch: Vec<_> = (0..30u64)
        .map(|i| {
            let mut e = envelope(CLUSTER, i);
            e.broadcasts = vec![pb::Broadcast {
                payload: vec![7u8; 280].into(),
                ..Default::default()
            }];
            e
        })
        .collect();
    a.transport.send_batch(&to, batch).await.unwrap();
    for _ in 0..30 {
        recv(&mut b).await;
    }
    let s = b.stats.snapshot();
    assert_eq!((s.messages_received, s.rejected_oversized), (30, 0));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn rejections_on_the_stream_are_counted_on_both_sides() {
    let a = node(CLUSTER).await;
    let mut b = node(CLUSTER).await;
    let to = b.transport.local_addr();
    // An envelope over the maximum message size alone in its frame: the
    // receiver refuses it (tonic's limit or the gate) and says so.
    let mut big = envelope(CLUSTER, 1);
    big.broadcasts = vec![pb::Broadcast {
        payload: vec![1u8; MAX * 2].into(),
        ..Default::default()
    }];
    // A malformed one (no sender) beside a valid one in one batch.
    let mut no_sender = envelope(CLUSTER, 2);
    no_sender.from = None;
    a.transport
        .send_batch(&to, vec![no_sender, envelope(CLUSTER, 3)])
        .await
        .unwrap();
    let got = recv(&mut b).await;
    assert!(matches!(
        got.body,
        Some(pb::envelope::Body::Ping(pb::Ping { seq: 3, .. }))
    ));
    wait_until("the malformed envelope's rejection reported back", || {
        a.stats.snapshot().rejected_by_peer == 1
    })
    .await;
    assert_eq!(b.stats.snapshot().rejected_malformed, 1);
    // Too large for a frame: sent as a unary call, whose refusal comes
    // back at once (tonic refuses it before the gate, and it is counted).
    let err = a
        .transport
        .send_batch(&to, vec![big])
        .await
        .expect_err("an oversized envelope is refused");
    assert!(err.to_string().contains("too large"), "{err}");
    assert_eq!(b.stats.snapshot().rejected_oversized, 1);
    // The stream still works.
    a.transport
        .send_batch(&to, vec![envelope(CLUSTER, 4)])
        .await
        .unwrap();
    let got = recv(&mut b).await;
    assert!(matches!(
        got.body,
        Some(pb::envelope::Body::Ping(pb::Ping { seq: 4, .. }))
    ));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn a_foreign_cluster_is_refused_and_counted_on_both_sides() {
    let a = node("another-cluster").await;
    let mut b = node(CLUSTER).await;
    let to = b.transport.local_addr();
    a.transport
        .send_batch(&to, vec![envelope("another-cluster", 1)])
        .await
        .unwrap();
    wait_until("the refusal reported back to the sender", || {
        a.stats.snapshot().rejected_by_peer >= 1
    })
    .await;
    assert_eq!(b.stats.snapshot().rejected_foreign_cluster, 1);
    assert!(b.rx.try_recv().is_err(), "nothing foreign is delivered");
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn first_wire_version_peers_are_sent_unary_calls_and_send_them() {
    let unary = GrpcConfig {
        wire: GrpcWire::Unary,
        ..GrpcConfig::default()
    };
    let mut old = node_with(CLUSTER, unary).await;
    let mut new = node(CLUSTER).await;
    // New to old: the stream is refused as unimplemented, then unary calls.
    let to_old = old.transport.local_addr();
    let mut seq = 0;
    let got = loop {
        seq += 1;
        new.transport
            .send_batch(&to_old, vec![envelope(CLUSTER, seq)])
            .await
            .unwrap();
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), old.rx.recv()).await {
            break e;
        }
        assert!(seq < 20, "no envelope reached the first-version peer");
    };
    assert!(got.body.is_some());
    // Old to new: unary calls, served as before.
    let to_new = new.transport.local_addr();
    old.transport
        .send_batch(
            &to_new,
            vec![envelope(CLUSTER, 100), envelope(CLUSTER, 101)],
        )
        .await
        .unwrap();
    for _ in 0..2 {
        recv(&mut new).await;
    }
    assert_eq!(old.transport.stats().streams_opened, 0);
    old.transport.shutdown().await;
    new.transport.shutdown().await;
}

#[tokio::test]
async fn members_of_both_wire_versions_form_one_cluster() {
    let config = Config {
        cluster_id: CLUSTER.into(),
        gossip_interval: Duration::from_millis(100),
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        seed_retry_initial: Duration::from_millis(100),
        seed_retry_max: Duration::from_millis(500),
        ..Config::default()
    };
    let mut members = Vec::new();
    for wire in [GrpcWire::Unary, GrpcWire::Stream, GrpcWire::Stream] {
        let transport = GrpcTransport::bind(GrpcConfig {
            wire,
            ..GrpcConfig::default()
        })
        .await
        .unwrap();
        let member = Member::new(config.clone(), transport, MemberOptions::default()).unwrap();
        member.start().await.unwrap();
        members.push(member);
    }
    let seed: NodeAddr = members[0].local_id().addr;
    for m in &members[1..] {
        m.add_seed(seed.clone());
    }
    members[0]
        .set_key("version", "v1".into(), None)
        .expect("a small key");
    let start = Instant::now();
    loop {
        let done = members
            .iter()
            .all(|m| m.members().len() == 3 && m.get_key(&seed, "version").is_some());
        if done {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "mixed-version cluster did not converge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in &members {
        m.shutdown().await;
    }
}

#[tokio::test]
async fn cached_channels_are_bounded_least_recently_used_first() {
    let a = node_with(
        CLUSTER,
        GrpcConfig {
            max_connections: 2,
            ..GrpcConfig::default()
        },
    )
    .await;
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(node(CLUSTER).await);
    }
    for p in &mut peers {
        let to = p.transport.local_addr();
        a.transport
            .send_batch(&to, vec![envelope(CLUSTER, 1)])
            .await
            .unwrap();
        recv(p).await;
    }
    let s = a.transport.stats();
    assert_eq!((s.channels, s.evicted_lru), (2, 1), "{s:?}");
    // The member's own counters (and so /metrics) show the same.
    let m = a.stats.snapshot();
    assert_eq!((m.connections, m.connections_evicted), (2, 1));
    a.transport.shutdown().await;
    for p in peers {
        p.transport.shutdown().await;
    }
}

#[tokio::test]
async fn a_stream_that_cannot_open_fails_the_send() {
    let a = node(CLUSTER).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Nothing listens there: the first batch of the new stream is not taken
    // as sent, the send reports why.
    let err = a
        .transport
        .send_batch(&NodeAddr::from(closed), vec![envelope(CLUSTER, 1)])
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(err, gossip_core::TransportError::Refused { .. }),
        "{err:?}"
    );
    assert_eq!(
        a.transport.stats().channels,
        0,
        "the failed channel is dropped"
    );
    a.transport.shutdown().await;
}
