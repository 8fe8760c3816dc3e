//! The QUIC transport between real endpoints on loopback (port 0 each, so
//! tests run in parallel). No bare sleeps: every wait is for a condition,
//! with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::pb::{self, Envelope};
use gossip_core::{
    Config, Member, MemberOptions, MemberState, Membership, NodeAddr, Stats, TlsConfig, Transport,
    TransportError, inbound_channel,
};
use gossip_quic::{QuicConfig, QuicTransport, send_raw_frame};
use prost::Message;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);
const MAX: usize = 1024;

struct Node {
    transport: QuicTransport,
    rx: mpsc::Receiver<Envelope>,
    stats: Arc<Stats>,
}

impl Node {
    async fn start(cluster: &str, config: QuicConfig) -> Self {
        let transport = QuicTransport::bind(config).await.unwrap();
        let stats = Arc::new(Stats::default());
        let (inbound, rx) = inbound_channel(cluster, MAX, 64, stats.clone());
        transport.start(inbound).await.unwrap();
        Self {
            transport,
            rx,
            stats,
        }
    }

    fn addr(&self) -> NodeAddr {
        self.transport.local_addr()
    }

    /// The next delivered envelope, within the deadline.
    async fn recv(&mut self) -> Envelope {
        tokio::time::timeout(DEADLINE, self.rx.recv())
            .await
            .expect("no envelope delivered within the deadline")
            .expect("inbound channel closed")
    }

    fn assert_nothing_delivered(&mut self) {
        assert!(self.rx.try_recv().is_err(), "a frame was delivered");
    }
}

fn envelope(cluster: &str, from: &NodeAddr, seq: u64) -> Envelope {
    Envelope {
        cluster_id: cluster.into(),
        from: Some(pb::NodeId {
            addr: from.to_string(),
            generation: 1,
        }),
        body: Some(pb::envelope::Body::Ping(pb::Ping {
            seq,
            on_behalf_of: None,
        })),
        ..Default::default()
    }
}

fn seq_of(env: &Envelope) -> u64 {
    match &env.body {
        Some(pb::envelope::Body::Ping(p)) => p.seq,
        other => panic!("unexpected body {other:?}"),
    }
}

/// Waits until `cond` holds, failing the test after the deadline.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[track_caller]
fn rejected_reason(result: Result<(), TransportError>) -> String {
    match result {
        Err(TransportError::Rejected { reason, .. }) => reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn listen(node: &Node) -> SocketAddr {
    node.transport.listen_addr()
}

#[tokio::test]
async fn delivers_and_reuses_one_connection() {
    let mut a = Node::start("c", QuicConfig::default()).await;
    let mut b = Node::start("c", QuicConfig::default()).await;
    assert_eq!(
        a.addr(),
        NodeAddr::from(listen(&a)),
        "identity is the bound address"
    );

    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    let got = b.recv().await;
    assert_eq!(seq_of(&got), 1);
    assert_eq!(got.from.unwrap().addr, a.addr().to_string());

    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 2))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 2);

    // Replies travel over B's own connection to A.
    b.transport
        .send(&a.addr(), envelope("c", &b.addr(), 3))
        .await
        .unwrap();
    assert_eq!(seq_of(&a.recv().await), 3);

    let (sa, sb) = (a.transport.stats(), b.transport.stats());
    assert_eq!(
        (sa.connections_opened, sa.connections_accepted),
        (1, 1),
        "A opened one connection for both messages"
    );
    assert_eq!((sb.connections_opened, sb.connections_accepted), (1, 1));
    assert_eq!(b.stats.snapshot().messages_received, 2);

    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn concurrent_sends_share_one_connection() {
    let a = Node::start("c", QuicConfig::default()).await;
    let mut b = Node::start("c", QuicConfig::default()).await;
    let to = b.addr();
    let sends = (0..20).map(|i| a.transport.send(&to, envelope("c", &a.addr(), i)));
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let mut seqs: Vec<u64> = Vec::new();
    for _ in 0..20 {
        seqs.push(seq_of(&b.recv().await));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
    assert_eq!(a.transport.stats().connections_opened, 1);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn foreign_cluster_is_rejected_with_its_name() {
    let a = Node::start("blue", QuicConfig::default()).await;
    let mut b = Node::start("red", QuicConfig::default()).await;
    let reason = rejected_reason(
        a.transport
            .send(&b.addr(), envelope("blue", &a.addr(), 1))
            .await,
    );
    assert!(reason.contains("foreign cluster id \"blue\""), "{reason}");
    assert!(reason.contains("\"red\""), "{reason}");
    b.assert_nothing_delivered();
    assert_eq!(b.stats.snapshot().rejected_foreign_cluster, 1);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn garbage_and_oversized_frames_are_rejected() {
    let mut b = Node::start("c", QuicConfig::default()).await;
    let to = listen(&b);

    let garbage = Bytes::from_static(&[0xff; 16]);
    let reason = rejected_reason(send_raw_frame(to, garbage, None).await);
    assert!(reason.starts_with("malformed message"), "{reason}");

    let oversized = Bytes::from(vec![0u8; 4 * MAX]);
    let reason = rejected_reason(send_raw_frame(to, oversized, None).await);
    assert_eq!(
        reason,
        format!(
            "frame of {} bytes exceeds the maximum message size of {MAX} bytes",
            4 * MAX
        )
    );

    // A valid envelope through the same path is accepted.
    let from: NodeAddr = "127.0.0.1:9".parse().unwrap();
    let valid = Bytes::from(envelope("c", &from, 7).encode_to_vec());
    send_raw_frame(to, valid, None).await.unwrap();
    assert_eq!(seq_of(&b.recv().await), 7);
    b.assert_nothing_delivered();
    assert_eq!(b.stats.snapshot().rejected_malformed, 1);
    assert_eq!(
        b.stats.snapshot().rejected_oversized,
        1,
        "refused from its length prefix, and counted"
    );
    b.transport.shutdown().await;
}

#[tokio::test]
async fn wrong_alpn_is_refused_in_the_handshake() {
    let mut b = Node::start("c", QuicConfig::default()).await;
    let from: NodeAddr = "127.0.0.1:9".parse().unwrap();
    let valid = Bytes::from(envelope("c", &from, 1).encode_to_vec());
    let reason = rejected_reason(send_raw_frame(listen(&b), valid, Some(b"other/9")).await);
    assert!(reason.contains("NoApplicationProtocol"), "{reason}");
    assert!(reason.contains("does not speak gossip/1"), "{reason}");
    b.assert_nothing_delivered();
    wait_for("the refusal to be counted", || {
        b.transport.tls_refused() == 1
    })
    .await;
    assert_eq!(b.transport.stats().connections_accepted, 0);
    b.transport.shutdown().await;
}

fn mtls(files: gossip_core::MtlsFiles) -> QuicConfig {
    QuicConfig {
        tls: TlsConfig::Mtls(files),
        ..QuicConfig::default()
    }
}

#[tokio::test]
async fn mtls_members_talk_and_strangers_are_refused() {
    let cluster = tempfile::tempdir().unwrap();
    let foreign = tempfile::tempdir().unwrap();
    gossip_tls::generate_dev_certs(cluster.path(), 2, &[]).unwrap();
    gossip_tls::generate_dev_certs(foreign.path(), 1, &[]).unwrap();
    let node = |i| gossip_tls::dev_node_files(cluster.path(), i);

    let mut a = Node::start("c", mtls(node(1))).await;
    let mut b = Node::start("c", mtls(node(2))).await;
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 1);
    b.transport
        .send(&a.addr(), envelope("c", &b.addr(), 2))
        .await
        .unwrap();
    assert_eq!(seq_of(&a.recv().await), 2);

    // An intruder that trusts the cluster CA but holds a certificate from
    // another CA: A refuses it and counts it.
    let intruder_files = gossip_core::MtlsFiles {
        ca_cert: cluster.path().join("ca.pem"),
        ..gossip_tls::dev_node_files(foreign.path(), 1)
    };
    let intruder = Node::start("c", mtls(intruder_files)).await;
    let reason = rejected_reason(
        intruder
            .transport
            .send(&a.addr(), envelope("c", &intruder.addr(), 3))
            .await,
    );
    assert!(
        reason.contains("does not accept our certificate"),
        "{reason}"
    );
    wait_for("A to count the intruder", || a.transport.tls_refused() == 1).await;

    // A member of another cluster CA altogether refuses A's certificate.
    let stranger = Node::start("c", mtls(gossip_tls::dev_node_files(foreign.path(), 1))).await;
    let err = stranger
        .transport
        .send(&a.addr(), envelope("c", &stranger.addr(), 4))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Unreachable { reason, .. }
            if reason.contains("TLS handshake failed on our side")
                && reason.contains("UnknownIssuer")),
        "{err}"
    );
    assert_eq!(stranger.transport.tls_refused(), 1);

    // A self-signed client without a certificate is refused too.
    let valid = Bytes::from(envelope("c", &b.addr(), 5).encode_to_vec());
    let reason = rejected_reason(send_raw_frame(listen(&a), valid, None).await);
    assert!(reason.contains("CertificateRequired"), "{reason}");

    a.assert_nothing_delivered();
    wait_for("A to count every refusal", || {
        a.transport.tls_refused() == 3
    })
    .await;
    assert_eq!(a.transport.stats().connections_accepted, 1);
    for n in [&a, &b, &intruder, &stranger] {
        n.transport.shutdown().await;
    }
}

#[tokio::test]
async fn unreachable_peer_fails_within_the_connect_timeout() {
    // A UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = NodeAddr::from(silent.local_addr().unwrap());
    let connect_timeout = Duration::from_millis(300);
    let a = Node::start(
        "c",
        QuicConfig {
            connect_timeout,
            ..QuicConfig::default()
        },
    )
    .await;
    let start = Instant::now();
    let err = a
        .transport
        .send(&to, envelope("c", &a.addr(), 1))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("connect timeout")),
        "{err}"
    );
    assert!(took >= connect_timeout, "{took:?}");
    assert!(
        took < connect_timeout + Duration::from_millis(500),
        "{took:?}"
    );

    // Names that do not resolve fail as unreachable too.
    let err = a
        .transport
        .send(
            &"no-such-host.invalid:7000".parse().unwrap(),
            envelope("c", &a.addr(), 2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    a.transport.shutdown().await;
}

#[tokio::test]
async fn shutdown_returns_and_the_port_stops_answering() {
    let a = Node::start("c", QuicConfig::default()).await;
    let b = Node::start("c", QuicConfig::default()).await;
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    let port = listen(&b);
    tokio::time::timeout(DEADLINE, b.transport.shutdown())
        .await
        .expect("shutdown returns");
    assert_eq!(b.transport.open_connections(), 0);
    // Shutdown is idempotent.
    b.transport.shutdown().await;

    let from: NodeAddr = "127.0.0.1:9".parse().unwrap();
    let valid = Bytes::from(envelope("c", &from, 2).encode_to_vec());
    let err = send_raw_frame(port, valid, None).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    // A shut-down transport refuses to send.
    let err = b
        .transport
        .send(&a.addr(), envelope("c", &b.addr(), 3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shut down"), "{err}");
    // The port is free again.
    std::net::UdpSocket::bind(port).expect("the port is released");
    a.transport.shutdown().await;
}

#[tokio::test]
async fn shutdown_without_start_releases_the_port() {
    let t = QuicTransport::bind(QuicConfig::default()).await.unwrap();
    let port = t.listen_addr();
    t.shutdown().await;
    std::net::UdpSocket::bind(port).expect("the port is released");
}

#[tokio::test]
async fn restarted_peer_gets_a_new_connection() {
    let a = Node::start("c", QuicConfig::default()).await;
    let b = Node::start("c", QuicConfig::default()).await;
    let port = listen(&b);
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    b.transport.shutdown().await;
    drop(b);

    let mut b2 = Node::start(
        "c",
        QuicConfig {
            listen: port,
            ..QuicConfig::default()
        },
    )
    .await;
    a.transport
        .send(&b2.addr(), envelope("c", &a.addr(), 2))
        .await
        .unwrap();
    assert_eq!(seq_of(&b2.recv().await), 2);
    assert_eq!(a.transport.stats().connections_opened, 2);
    a.transport.shutdown().await;
    b2.transport.shutdown().await;
}

/// Runs a member on a runtime of its own thread until `kill` fires, then
/// drops that runtime: every task of the member vanishes without sending a
/// CONNECTION_CLOSE, as in a crash.
fn crashable_member(
    config: QuicConfig,
) -> (
    NodeAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let node = Node::start("c", config).await;
            addr_tx.send(node.addr()).unwrap();
            // Park the member in a task, dropped with the runtime.
            tokio::spawn(async move {
                let _node = node;
                std::future::pending::<()>().await
            });
            let _ = killed.await;
        });
        drop(rt);
    });
    (addr_rx.recv().unwrap(), kill, thread)
}

#[tokio::test]
async fn crashed_and_restarted_peer_gets_a_new_connection() {
    let connect_timeout = Duration::from_millis(300);
    let a = Node::start(
        "c",
        QuicConfig {
            connect_timeout,
            ..QuicConfig::default()
        },
    )
    .await;
    let (b, kill, thread) = crashable_member(QuicConfig::default());
    a.transport
        .send(&b, envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    kill.send(()).unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();

    let mut b2 = Node::start(
        "c",
        QuicConfig {
            listen: b.as_str().parse().unwrap(),
            ..QuicConfig::default()
        },
    )
    .await;
    // The cached connection is silently dead: A waits one connect timeout
    // for an answer, then reconnects and delivers.
    let start = Instant::now();
    a.transport
        .send(&b2.addr(), envelope("c", &a.addr(), 2))
        .await
        .unwrap();
    assert!(start.elapsed() >= connect_timeout, "{:?}", start.elapsed());
    assert_eq!(seq_of(&b2.recv().await), 2);
    assert_eq!(a.transport.stats().connections_opened, 2);
    a.transport.shutdown().await;
    b2.transport.shutdown().await;
}

#[tokio::test]
async fn abandoned_send_drops_the_cached_connection() {
    let connect_timeout = Duration::from_secs(2);
    let a = Node::start(
        "c",
        QuicConfig {
            connect_timeout,
            ..QuicConfig::default()
        },
    )
    .await;
    let (b, kill, thread) = crashable_member(QuicConfig::default());
    a.transport
        .send(&b, envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    kill.send(()).unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    // The caller gives up long before the connect timeout (as the member's
    // driver does): the silent connection is dropped from the cache.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        a.transport.send(&b, envelope("c", &a.addr(), 2)),
    )
    .await;
    assert!(abandoned.is_err(), "the peer is gone");

    let mut b2 = Node::start(
        "c",
        QuicConfig {
            listen: b.as_str().parse().unwrap(),
            ..QuicConfig::default()
        },
    )
    .await;
    let start = Instant::now();
    a.transport
        .send(&b2.addr(), envelope("c", &a.addr(), 3))
        .await
        .unwrap();
    assert!(start.elapsed() < connect_timeout, "{:?}", start.elapsed());
    assert_eq!(seq_of(&b2.recv().await), 3);
    assert_eq!(a.transport.stats().connections_opened, 2);
    a.transport.shutdown().await;
    b2.transport.shutdown().await;
}

#[tokio::test]
async fn idle_connections_close_and_reopen() {
    let idle = QuicConfig {
        idle_timeout: Duration::from_millis(300),
        ..QuicConfig::default()
    };
    let a = Node::start("c", idle.clone()).await;
    let mut b = Node::start("c", idle).await;
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    b.recv().await;
    assert_eq!(a.transport.open_connections(), 1);
    wait_for("the idle connection to close", || {
        a.transport.open_connections() == 0 && b.transport.open_connections() == 0
    })
    .await;
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 2))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 2);
    assert_eq!(a.transport.stats().connections_opened, 2);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn bind_refuses_plaintext_and_unusable_settings() {
    let err = QuicTransport::bind(QuicConfig {
        tls: TlsConfig::None,
        ..QuicConfig::default()
    })
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("QUIC always encrypts"), "{err}");

    let err = QuicTransport::bind(QuicConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..QuicConfig::default()
    })
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("advertise"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = QuicTransport::bind(mtls(gossip_core::MtlsFiles {
        ca_cert: missing.clone(),
        cert: missing.clone(),
        key: missing.clone(),
    }))
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    // An unspecified listen address is fine with an advertised address.
    let t = QuicTransport::bind(QuicConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        advertise: Some("node-1:7000".parse().unwrap()),
        ..QuicConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(t.local_addr().as_str(), "node-1:7000");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_see_each_other() {
    let new_member = || async {
        let transport = QuicTransport::bind(QuicConfig::default()).await.unwrap();
        let member = Member::new(Config::default(), transport, MemberOptions::default()).unwrap();
        member.start().await.unwrap();
        member
    };
    let a = new_member().await;
    let b = new_member().await;
    a.add_seed(b.local_id().addr.clone());
    let sees = |m: &Member<QuicTransport>, other: &NodeAddr| {
        m.members()
            .iter()
            .any(|i| &i.addr == other && i.state == MemberState::Alive)
    };
    let (aa, ba) = (a.local_id().addr, b.local_id().addr);
    wait_for("both members to see each other", || {
        sees(&a, &ba) && sees(&b, &aa)
    })
    .await;
    assert!(a.stats().messages_sent > 0 && b.stats().messages_received > 0);
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(a.transport().open_connections(), 0);
}
