//! The QUIC transport between real endpoints on loopback (port 0 each, so
//! tests run in parallel). No bare sleeps: every wait is for a condition,
//! with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::pb::{self, Envelope};
use gossip_core::{
    Config, Member, MemberOptions, MemberState, Membership, NodeAddr, Stats, Transport,
    TransportError, inbound_channel,
};
use gossip_quic::{QuicConfig, QuicTransport, RawClient, Wire, send_raw_frame};
use gossip_tls::TlsConfig;
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
        Self::start_with_max(cluster, config, MAX).await
    }

    async fn start_with_max(cluster: &str, config: QuicConfig, max: usize) -> Self {
        let transport = QuicTransport::bind(config).await.unwrap();
        let stats = Arc::new(Stats::default());
        let (inbound, rx) = inbound_channel(cluster, max, 64, stats.clone());
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
            ..Default::default()
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

    // Replies travel over A's connection too: A's hello named its address,
    // so B took the connection as its own to A (one handshake per pair).
    b.transport
        .send(&a.addr(), envelope("c", &b.addr(), 3))
        .await
        .unwrap();
    assert_eq!(seq_of(&a.recv().await), 3);
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 4))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 4);

    let (sa, sb) = (a.transport.stats(), b.transport.stats());
    assert_eq!(
        (sa.connections_opened, sa.connections_accepted),
        (1, 0),
        "A opened one connection for every message, both ways"
    );
    assert_eq!(
        (
            sb.connections_opened,
            sb.connections_accepted,
            sb.connections_adopted
        ),
        (0, 1, 1),
        "B answered over A's connection"
    );
    assert_eq!((sa.datagrams_received, sb.datagrams_sent), (1, 1));
    assert_eq!(
        sa.batches_with_hello, 1,
        "A's first message left right behind its hello, and only once"
    );
    assert_eq!(sb.cached_connections, 1);
    assert_eq!(b.stats.snapshot().messages_received, 3);
    assert_eq!(a.stats.snapshot().messages_received, 1);
    assert_eq!(
        (
            a.transport.open_connections(),
            b.transport.open_connections()
        ),
        (1, 1)
    );

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
    // gossip/2 refuses the connection, once, not message by message.
    assert!(reason.contains("refused at connection set-up"), "{reason}");
    // The message left right behind the hello, and died with the refused
    // connection: B reads nothing before the hello's cluster check.
    assert_eq!(a.transport.stats().batches_with_hello, 1);
    b.assert_nothing_delivered();
    assert_eq!(b.stats.snapshot().rejected_foreign_cluster, 1);

    // The next sends fail at once with the same reason, without dialling
    // again (no handshake loop against a peer that refuses us).
    for seq in 2..5 {
        let reason = rejected_reason(
            a.transport
                .send_batch(&b.addr(), vec![envelope("blue", &a.addr(), seq)])
                .await,
        );
        assert!(reason.contains("foreign cluster id \"blue\""), "{reason}");
    }
    assert_eq!(a.transport.stats().connections_opened, 1);
    assert_eq!(b.transport.stats().connections_accepted, 1);
    assert_eq!(b.stats.snapshot().rejected_foreign_cluster, 1);
    wait_for("the refused connection to close", || {
        a.transport.open_connections() == 0 && b.transport.stats().cached_connections == 0
    })
    .await;

    // Any gossip/2 client of another cluster is refused in its hello.
    let reason = rejected_reason(RawClient::connect(listen(&b), "green").await.map(|_| ()));
    assert!(reason.contains("foreign cluster id \"green\""), "{reason}");
    assert_eq!(b.stats.snapshot().rejected_foreign_cluster, 2);
    b.assert_nothing_delivered();
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

fn mtls(files: gossip_tls::MtlsFiles) -> QuicConfig {
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
    let intruder_files = gossip_tls::MtlsFiles {
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
    // B answered over A's connection (A's certificate is valid for the
    // address its hello named): A accepted none of the members' connections.
    assert_eq!(a.transport.stats().connections_accepted, 0);
    assert_eq!(b.transport.stats().connections_opened, 0);
    assert_eq!(b.transport.stats().connections_adopted, 1);
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

    // Messages queued behind that attempt fail at once for a second, without
    // dialling again (not a connect timeout each).
    let start = Instant::now();
    let err = a
        .transport
        .send(&to, envelope("c", &a.addr(), 3))
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("not dialled again")),
        "{err}"
    );
    assert_eq!(a.transport.stats().connections_opened, 0);

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
    crashable_member_greeting(config, None)
}

/// [`crashable_member`] that first sends one envelope (seq 100) to `greet`.
fn crashable_member_greeting(
    config: QuicConfig,
    greet: Option<NodeAddr>,
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
            if let Some(to) = greet {
                node.transport
                    .send(&to, envelope("c", &node.addr(), 100))
                    .await
                    .unwrap();
            }
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
    // The cached connection is silently dead. Datagrams get no verdict, so
    // what A sends on it is lost, as over UDP, until the peer has been
    // silent (not even an acknowledgement) for a connect timeout after a
    // send; the next send then reconnects and delivers.
    let start = Instant::now();
    let mut seq = 2;
    let delivered = loop {
        assert!(
            start.elapsed() < DEADLINE,
            "never delivered to the restarted peer"
        );
        a.transport
            .send(&b2.addr(), envelope("c", &a.addr(), seq))
            .await
            .unwrap();
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(50), b2.rx.recv()).await {
            break got;
        }
        seq += 1;
    };
    let took = start.elapsed();
    assert!(took >= connect_timeout, "{took:?}");
    assert!(took < connect_timeout * 3, "{took:?}");
    assert_eq!(
        seq_of(&delivered),
        seq,
        "the first send on the new connection"
    );
    assert_eq!(a.transport.stats().connections_opened, 2);
    a.transport.shutdown().await;
    b2.transport.shutdown().await;
}

/// The old wire keeps its mechanism: a `gossip/1` send waits for a verdict,
/// and one abandoned by its caller drops the connection if the peer was
/// silent meanwhile.
#[tokio::test]
async fn abandoned_send_drops_the_cached_connection() {
    // Long, so that the check below tells the two paths apart on a busy
    // machine too: with the stale connection still cached, the send to the
    // restarted peer would wait this long before retrying on a new one; a
    // new connection is set up in milliseconds (issue #13: this test once
    // failed with 2 s under load).
    let connect_timeout = Duration::from_secs(10);
    let old = |config: QuicConfig| QuicConfig {
        wire: Wire::V1Only,
        ..config
    };
    let a = Node::start(
        "c",
        old(QuicConfig {
            connect_timeout,
            ..QuicConfig::default()
        }),
    )
    .await;
    let (b, kill, thread) = crashable_member(old(QuicConfig::default()));
    a.transport
        .send(&b, envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    kill.send(()).unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    // The caller gives up long before the connect timeout (as the member's
    // driver does): the silent connection is dropped from the cache. On a
    // busy machine the dead peer's endpoint may already have been noticed
    // (a close or an ICMP error), so the send may also fail at once: either
    // way it is not delivered, and the cached connection must go.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        a.transport.send(&b, envelope("c", &a.addr(), 2)),
    )
    .await;
    assert!(
        !matches!(abandoned, Ok(Ok(()))),
        "the peer is gone: {abandoned:?}"
    );

    let mut b2 = Node::start(
        "c",
        old(QuicConfig {
            listen: b.as_str().parse().unwrap(),
            ..QuicConfig::default()
        }),
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
    // The reconnect resumed the TLS session: no full handshake.
    assert_eq!(b.transport.stats().tls_resumed, 1);
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
    let err = QuicTransport::bind(mtls(gossip_tls::MtlsFiles {
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

/// A ping padded with `n` member updates (about 30 bytes each).
fn padded(cluster: &str, from: &NodeAddr, seq: u64, n: u64) -> Envelope {
    let mut env = envelope(cluster, from, seq);
    env.updates = (0..n)
        .map(|i| pb::MemberUpdate {
            id: Some(pb::NodeId {
                addr: format!("10.1.{}.{}:7000", i / 250, i % 250),
                generation: 1_000 + i,
            }),
            incarnation: i,
            state: pb::MemberState::Alive as i32,
            ..Default::default()
        })
        .collect();
    env
}

#[tokio::test]
async fn a_batch_of_small_envelopes_arrives_in_datagrams_in_order() {
    let a = Node::start("c", QuicConfig::default()).await;
    let mut b = Node::start("c", QuicConfig::default()).await;
    let batch: Vec<Envelope> = (0..30).map(|i| padded("c", &a.addr(), i, 2)).collect();
    let size: usize = batch.iter().map(Message::encoded_len).sum();
    a.transport.send_batch(&b.addr(), batch).await.unwrap();
    for i in 0..30 {
        assert_eq!(seq_of(&b.recv().await), i, "in order");
    }
    let (sa, sb) = (a.transport.stats(), b.transport.stats());
    // About 130 bytes each: several per datagram, not one each.
    assert!(
        sa.datagrams_sent >= 2 && sa.datagrams_sent as usize <= size / 1000 + 1,
        "{size} bytes in {} datagrams",
        sa.datagrams_sent
    );
    assert_eq!(sb.datagrams_received, sa.datagrams_sent);
    assert_eq!((sa.streams_sent, sb.streams_received), (0, 0));
    assert_eq!(b.stats.snapshot().messages_received, 30);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn a_large_envelope_arrives_over_a_stream() {
    let max = 64 * 1024;
    let a = Node::start_with_max("c", QuicConfig::default(), max).await;
    let mut b = Node::start_with_max("c", QuicConfig::default(), max).await;
    // An 8 KB message (a delta's size) between two small ones.
    let large = padded("c", &a.addr(), 2, 300);
    assert!(large.encoded_len() > 8000, "{}", large.encoded_len());
    let batch = vec![
        envelope("c", &a.addr(), 1),
        large.clone(),
        envelope("c", &a.addr(), 3),
    ];
    a.transport.send_batch(&b.addr(), batch).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(b.recv().await);
    }
    got.sort_by_key(seq_of);
    assert_eq!(got[1], large);
    assert_eq!(seq_of(&got[0]), 1);
    assert_eq!(seq_of(&got[2]), 3);
    let (sa, sb) = (a.transport.stats(), b.transport.stats());
    assert_eq!((sa.streams_sent, sa.datagrams_sent), (1, 1));
    wait_for("the stream to be counted", || {
        b.transport.stats().streams_received == 1
    })
    .await;
    assert_eq!(sb.datagrams_received, 1);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn garbage_datagrams_and_oversized_stream_frames_are_counted_and_change_nothing() {
    let mut b = Node::start("c", QuicConfig::default()).await;
    let from: NodeAddr = "127.0.0.1:9".parse().unwrap();
    let raw = RawClient::connect(listen(&b), "c").await.unwrap();

    // Bytes that are no Batch.
    raw.send_datagram(Bytes::from_static(&[0xff; 16])).unwrap();
    wait_for("the garbage datagram to be counted", || {
        b.stats.snapshot().rejected_malformed == 1
    })
    .await;
    // A Batch holding an envelope of another cluster: the envelope is
    // checked on its own.
    let foreign = pb::Batch {
        envelopes: vec![envelope("other", &from, 1)],
    };
    raw.send_datagram(Bytes::from(foreign.encode_to_vec()))
        .unwrap();
    wait_for("the foreign envelope to be counted", || {
        b.stats.snapshot().rejected_foreign_cluster == 1
    })
    .await;

    // A stream frame announcing far more than the limit is refused from its
    // length alone (nothing allocated, the stream stopped), and counted.
    let stopped = raw
        .send_stream_frame(u32::MAX, Bytes::from_static(b"xx"))
        .await
        .unwrap();
    assert_eq!(stopped, Some(1), "stopped: oversized");
    wait_for("the oversized frame to be counted", || {
        b.stats.snapshot().rejected_oversized == 1
    })
    .await;
    // A complete frame of garbage on a stream is malformed.
    let acked = raw
        .send_stream_frame(4, Bytes::from_static(&[0xff; 4]))
        .await
        .unwrap();
    assert_eq!(acked, None);
    wait_for("the garbage frame to be counted", || {
        b.stats.snapshot().rejected_malformed == 2
    })
    .await;
    b.assert_nothing_delivered();

    // The connection still works: a valid batch is delivered.
    let valid = pb::Batch {
        envelopes: vec![envelope("c", &from, 7)],
    };
    raw.send_datagram(Bytes::from(valid.encode_to_vec()))
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 7);
    raw.close().await;
    let s = b.stats.snapshot();
    assert_eq!(
        (
            s.rejected_malformed,
            s.rejected_oversized,
            s.rejected_foreign_cluster,
            s.messages_received
        ),
        (2, 1, 1, 1)
    );
    b.transport.shutdown().await;
}

#[tokio::test]
async fn old_and_new_members_talk_both_ways() {
    let old = QuicConfig {
        wire: Wire::V1Only,
        ..QuicConfig::default()
    };
    let mut new = Node::start("c", QuicConfig::default()).await;
    let mut previous = Node::start("c", old).await;

    // An old client (gossip/1 only) delivers to a new server, one verdict
    // per message, rejections included.
    previous
        .transport
        .send(&new.addr(), envelope("c", &previous.addr(), 1))
        .await
        .unwrap();
    assert_eq!(seq_of(&new.recv().await), 1);
    let reason = rejected_reason(
        previous
            .transport
            .send(&new.addr(), envelope("other", &previous.addr(), 2))
            .await,
    );
    assert!(reason.contains("foreign cluster id \"other\""), "{reason}");
    // The previous version's one-shot client too.
    let from: NodeAddr = "127.0.0.1:9".parse().unwrap();
    send_raw_frame(
        listen(&new),
        Bytes::from(envelope("c", &from, 3).encode_to_vec()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(seq_of(&new.recv().await), 3);

    // A new client falls back to gossip/1 with an old server.
    new.transport
        .send_batch(
            &previous.addr(),
            (4..8).map(|i| envelope("c", &new.addr(), i)).collect(),
        )
        .await
        .unwrap();
    for i in 4..8 {
        assert_eq!(seq_of(&previous.recv().await), i);
    }
    assert_eq!(new.transport.stats().datagrams_sent, 0);
    assert_eq!(new.transport.stats().datagrams_received, 0);
    new.transport.shutdown().await;
    previous.transport.shutdown().await;
}

#[tokio::test]
async fn at_most_max_connections_are_cached_least_recently_used_closed_first() {
    let a = Node::start(
        "c",
        QuicConfig {
            max_connections: 2,
            ..QuicConfig::default()
        },
    )
    .await;
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(Node::start("c", QuicConfig::default()).await);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        a.transport
            .send(&p.addr(), envelope("c", &a.addr(), i as u64))
            .await
            .unwrap();
        assert_eq!(seq_of(&p.recv().await), i as u64);
    }
    let s = a.transport.stats();
    assert_eq!((s.cached_connections, s.lru_evictions), (2, 1));
    // The first peer's connection, the least recently used, was closed.
    wait_for("the evicted connection to close at the peer", || {
        peers[0].transport.open_connections() == 0
    })
    .await;
    assert_eq!(peers[1].transport.open_connections(), 1);
    assert_eq!(peers[2].transport.open_connections(), 1);

    // Sending to it again reconnects (resuming the TLS session) and evicts
    // the next least recently used, the second peer.
    a.transport
        .send(&peers[0].addr(), envelope("c", &a.addr(), 9))
        .await
        .unwrap();
    assert_eq!(seq_of(&peers[0].recv().await), 9);
    let s = a.transport.stats();
    assert_eq!(
        (s.cached_connections, s.lru_evictions, s.connections_opened),
        (2, 2, 4)
    );
    // The member's own counters (and so /metrics) show the same.
    let m = a.stats.snapshot();
    assert_eq!((m.connections, m.connections_evicted), (2, 2));
    assert_eq!(peers[0].transport.stats().tls_resumed, 1);
    wait_for("the second peer's connection to close", || {
        peers[1].transport.open_connections() == 0
    })
    .await;
    a.transport.shutdown().await;
    for p in &peers {
        p.transport.shutdown().await;
    }
}

/// A `gossip/2` server that accepts connections and their hellos, then
/// reads nothing more: no datagram, no stream (so a sender's streams hit
/// the stream limit and flow control and stay blocked).
async fn stuck_peer() -> (NodeAddr, tokio::task::JoinHandle<()>) {
    let tls = gossip_tls::TlsSetup::self_signed("127.0.0.1", &[gossip_quic::ALPN_V2]).unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.server).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(4u32.into())
        .datagram_receive_buffer_size(Some(4096));
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = NodeAddr::from(endpoint.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let _ = recv.read_to_end(1024).await;
                let _ = send.write_all(&[0]).await;
                let _ = send.finish();
            }
            held.push(conn);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_keep_up_does_not_stall_sends_to_others() {
    let a = Arc::new(Node::start_with_max("c", QuicConfig::default(), 64 * 1024).await);
    let mut b = Node::start("c", QuicConfig::default()).await;
    let (stuck, stuck_task) = stuck_peer().await;
    // A silent address too: a handshake that never completes.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = NodeAddr::from(silent.local_addr().unwrap());

    // Large messages (streams) and small ones to the stuck and silent peers,
    // continuously, from tasks of their own (as the driver's per-peer tasks).
    let flood = |to: NodeAddr| {
        let a = a.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..6 {
                let batch = vec![padded("c", &a.addr(), i, 300), envelope("c", &a.addr(), i)];
                outcomes.push(a.transport.send_batch(&to, batch).await.is_ok());
            }
            outcomes
        })
    };
    let (to_stuck, to_silent) = (flood(stuck.clone()), flood(silent));
    // Meanwhile every send to B is delivered promptly.
    for i in 0..50 {
        let start = Instant::now();
        a.transport
            .send(&b.addr(), envelope("c", &a.addr(), i))
            .await
            .unwrap();
        assert_eq!(seq_of(&b.recv().await), i);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "a send to a healthy peer took {:?}",
            start.elapsed()
        );
    }
    // The stuck peer took the first streams, then sends to it timed out.
    let to_stuck = to_stuck.await.unwrap();
    assert!(to_stuck[0], "{to_stuck:?}");
    assert!(to_stuck.iter().any(|ok| !ok), "{to_stuck:?}");
    to_silent.abort();
    stuck_task.abort();
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_whatever_the_peers_do() {
    let a = Arc::new(
        Node::start_with_max(
            "c",
            QuicConfig {
                connect_timeout: Duration::from_secs(5),
                ..QuicConfig::default()
            },
            64 * 1024,
        )
        .await,
    );
    let mut b = Node::start("c", QuicConfig::default()).await;
    let (stuck, stuck_task) = stuck_peer().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = NodeAddr::from(silent.local_addr().unwrap());
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    b.recv().await;
    // Sends in flight: a handshake that never completes, and streams that a
    // peer never reads (blocked on its stream limit).
    let pending: Vec<_> = [silent, stuck]
        .into_iter()
        .map(|to| {
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let large = padded("c", &a.addr(), i, 300);
                    let _ = a.transport.send_batch(&to, vec![large]).await;
                }
            })
        })
        .collect();
    wait_for("the stuck peer's streams to fill", || {
        a.transport.stats().streams_sent >= 4
    })
    .await;

    let start = Instant::now();
    a.transport.shutdown().await;
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    // Sends in flight fail promptly too.
    for p in pending {
        tokio::time::timeout(Duration::from_secs(2), p)
            .await
            .expect("sends end after shutdown")
            .unwrap();
    }
    stuck_task.abort();
    b.transport.shutdown().await;
}

#[tokio::test]
async fn a_hello_without_an_address_is_served_one_way_and_dialled_back() {
    let mut b = Node::start("c", QuicConfig::default()).await;
    // A member that is not serving yet says no address in its hello (the
    // first gossip/2 format): B must not answer over its connection.
    let a = QuicTransport::bind(QuicConfig::default()).await.unwrap();
    let stats = Arc::new(Stats::default());
    let (inbound, rx) = inbound_channel("c", MAX, 64, stats.clone());
    a.send(&b.addr(), envelope("c", &a.local_addr(), 1))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 1);
    let sb = b.transport.stats();
    assert_eq!(
        (
            sb.connections_accepted,
            sb.connections_adopted,
            sb.cached_connections
        ),
        (1, 0, 0)
    );
    a.start(inbound).await.unwrap();
    let mut a = Node {
        transport: a,
        rx,
        stats,
    };

    // B answers over a connection of its own.
    b.transport
        .send(&a.addr(), envelope("c", &b.addr(), 2))
        .await
        .unwrap();
    assert_eq!(seq_of(&a.recv().await), 2);
    // A keeps sending over the connection it dialled (B's, which named B's
    // address, is not adopted while A's own is open).
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 3))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 3);
    let (sa, sb) = (a.transport.stats(), b.transport.stats());
    assert_eq!((sa.connections_opened, sa.connections_accepted), (1, 1));
    assert_eq!((sb.connections_opened, sb.connections_accepted), (1, 1));
    assert_eq!((sa.connections_adopted, sb.connections_adopted), (0, 0));

    // The conformance client's hello has no address either.
    let raw = RawClient::connect(listen(&b), "c").await.unwrap();
    let from: NodeAddr = "127.0.0.1:9".parse().unwrap();
    let valid = pb::Batch {
        envelopes: vec![envelope("c", &from, 4)],
    };
    raw.send_datagram(Bytes::from(valid.encode_to_vec()))
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 4);
    assert_eq!(b.transport.stats().connections_adopted, 0);
    raw.close().await;
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_dialling_each_other_at_once_lose_nothing() {
    for round in 0..5 {
        let mut a = Node::start("c", QuicConfig::default()).await;
        let mut b = Node::start("c", QuicConfig::default()).await;
        let (to_b, to_a) = (b.addr(), a.addr());
        let (ra, rb) = tokio::join!(
            a.transport.send(&to_b, envelope("c", &to_a, 0)),
            b.transport.send(&to_a, envelope("c", &to_b, 0)),
        );
        ra.unwrap();
        rb.unwrap();
        // Then traffic both ways, interleaved: every message arrives,
        // whichever connection each side ended up with.
        for i in 1..20 {
            let (ra, rb) = tokio::join!(
                a.transport.send(&to_b, envelope("c", &to_a, i)),
                b.transport.send(&to_a, envelope("c", &to_b, i)),
            );
            ra.unwrap();
            rb.unwrap();
        }
        let mut got_a: Vec<u64> = Vec::new();
        let mut got_b: Vec<u64> = Vec::new();
        for _ in 0..20 {
            got_a.push(seq_of(&a.recv().await));
            got_b.push(seq_of(&b.recv().await));
        }
        got_a.sort_unstable();
        got_b.sort_unstable();
        assert_eq!(got_a, (0..20).collect::<Vec<_>>(), "round {round}");
        assert_eq!(got_b, (0..20).collect::<Vec<_>>(), "round {round}");
        let (sa, sb) = (a.transport.stats(), b.transport.stats());
        let opened = sa.connections_opened + sb.connections_opened;
        assert!((1..=2).contains(&opened), "round {round}: {sa:?} {sb:?}");
        assert_eq!(
            sa.connections_accepted + sb.connections_accepted,
            opened,
            "round {round}"
        );
        a.transport.shutdown().await;
        b.transport.shutdown().await;
    }
}

#[tokio::test]
async fn adopted_connections_count_in_the_bound_and_are_left_open_when_dropped() {
    let mut b = Node::start(
        "c",
        QuicConfig {
            max_connections: 2,
            ..QuicConfig::default()
        },
    )
    .await;
    let mut peers = Vec::new();
    for i in 0..3 {
        let p = Node::start("c", QuicConfig::default()).await;
        p.transport
            .send(&b.addr(), envelope("c", &p.addr(), i))
            .await
            .unwrap();
        assert_eq!(seq_of(&b.recv().await), i);
        peers.push(p);
    }
    let s = b.transport.stats();
    assert_eq!(
        (s.connections_adopted, s.cached_connections, s.lru_evictions),
        (3, 2, 1)
    );
    // The first peer's connection left B's cache but stays open: it is the
    // peer's, which still sends over it.
    assert_eq!(peers[0].transport.open_connections(), 1);
    peers[0]
        .transport
        .send(&b.addr(), envelope("c", &peers[0].addr(), 10))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 10);
    assert_eq!(peers[0].transport.stats().connections_opened, 1);

    // B answers the last peer over its connection, and dials the first one
    // (whose connection it forgot), evicting the second peer's.
    b.transport
        .send(&peers[2].addr(), envelope("c", &b.addr(), 11))
        .await
        .unwrap();
    assert_eq!(seq_of(&peers[2].recv().await), 11);
    assert_eq!(b.transport.stats().connections_opened, 0);
    b.transport
        .send(&peers[0].addr(), envelope("c", &b.addr(), 12))
        .await
        .unwrap();
    assert_eq!(seq_of(&peers[0].recv().await), 12);
    let s = b.transport.stats();
    assert_eq!(
        (s.connections_opened, s.cached_connections, s.lru_evictions),
        (1, 2, 2)
    );
    let m = b.stats.snapshot();
    assert_eq!((m.connections, m.connections_evicted), (2, 2));
    b.transport.shutdown().await;
    for p in &peers {
        p.transport.shutdown().await;
    }
}

#[tokio::test]
async fn an_address_the_connection_does_not_come_from_is_not_adopted() {
    let b = Node::start("c", QuicConfig::default()).await;
    // A advertises an IP its packets do not come from.
    let a = Node::start(
        "c",
        QuicConfig {
            advertise: Some("127.0.0.2:7000".parse().unwrap()),
            ..QuicConfig::default()
        },
    )
    .await;
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    let mut b = b;
    assert_eq!(seq_of(&b.recv().await), 1);
    let s = b.transport.stats();
    assert_eq!((s.connections_adopted, s.cached_connections), (0, 0));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn under_mtls_only_an_address_the_certificate_allows_is_adopted() {
    let certs = tempfile::tempdir().unwrap();
    gossip_tls::generate_dev_certs(certs.path(), 2, &[]).unwrap();
    let node = |i| gossip_tls::dev_node_files(certs.path(), i);
    let mut b = Node::start("c", mtls(node(2))).await;
    let advertised = |host: &str| {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        QuicConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            advertise: Some(format!("{host}:{port}").parse().unwrap()),
            ..mtls(node(1))
        }
    };
    // node-1's certificate names localhost, 127.0.0.1, ::1 and node-1, not
    // node-2: a member holding it may not claim node-2's address.
    let liar = Node::start("c", advertised("node-2")).await;
    liar.transport
        .send(&b.addr(), envelope("c", &liar.addr(), 1))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 1);
    assert_eq!(b.transport.stats().connections_adopted, 0);

    let mut a = Node::start("c", advertised("localhost")).await;
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 2))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 2);
    assert_eq!(b.transport.stats().connections_adopted, 1);
    b.transport
        .send(&a.addr(), envelope("c", &b.addr(), 3))
        .await
        .unwrap();
    assert_eq!(seq_of(&a.recv().await), 3);
    assert_eq!(b.transport.stats().connections_opened, 0);
    for n in [&a, &b, &liar] {
        n.transport.shutdown().await;
    }
}

// Multi-threaded: B serves the crashable member's send while this thread
// waits for its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dialler_replaces_the_connection_it_left() {
    let mut b = Node::start("c", QuicConfig::default()).await;
    let (a, kill, thread) = crashable_member_greeting(QuicConfig::default(), Some(b.addr()));
    assert_eq!(seq_of(&b.recv().await), 100);
    kill.send(()).unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    // The restarted member dials B again: B answers over the new connection
    // at once, not over the dead one it had adopted.
    let mut a2 = Node::start(
        "c",
        QuicConfig {
            listen: a.as_str().parse().unwrap(),
            ..QuicConfig::default()
        },
    )
    .await;
    a2.transport
        .send(&b.addr(), envelope("c", &a2.addr(), 1))
        .await
        .unwrap();
    assert_eq!(seq_of(&b.recv().await), 1);
    b.transport
        .send(&a2.addr(), envelope("c", &b.addr(), 2))
        .await
        .unwrap();
    assert_eq!(seq_of(&a2.recv().await), 2);
    let s = b.transport.stats();
    assert_eq!((s.connections_opened, s.connections_adopted), (0, 2));
    a2.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn a_peer_whose_port_closed_is_refused_a_live_one_is_not() {
    let a = Node::start("c", QuicConfig::default()).await;
    let b = Node::start("c", QuicConfig::default()).await;
    a.transport
        .send(&b.addr(), envelope("c", &a.addr(), 1))
        .await
        .unwrap();
    assert!(!a.transport.check_refused(&b.addr()).await, "b listens");
    // Sends to a dead peer succeed on QUIC (datagrams); the check tells.
    b.transport.shutdown().await;
    assert!(
        a.transport.check_refused(&b.addr()).await,
        "b's port closed"
    );
    // A member that restarted there listens again: not refused.
    let (addr, kill, thread) = crashable_member(QuicConfig {
        listen: listen(&b),
        ..QuicConfig::default()
    });
    assert_eq!(addr, b.addr());
    assert!(!a.transport.check_refused(&addr).await, "restarted");
    let _ = kill.send(());
    thread.join().unwrap();
    a.transport.shutdown().await;
}
