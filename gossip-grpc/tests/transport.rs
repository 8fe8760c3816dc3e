//! End-to-end tests of the gRPC transport over loopback TCP, using
//! `inbound_channel` directly (no member, no protocol machine).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::{Inbound, NodeAddr, Stats, Transport, TransportError, inbound_channel, pb};
use gossip_grpc::{GrpcConfig, GrpcTransport, send_raw_frame};
use gossip_tls::{MtlsFiles, TlsConfig};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tonic::Code;

mod support;

use support::{MAX, Node};

const CLUSTER: &str = "test-cluster";
/// Upper bound for anything that should happen "promptly".
const DEADLINE: Duration = Duration::from_secs(5);

fn envelope(cluster: &str) -> pb::Envelope {
    support::envelope(cluster, 42)
}

fn inbound(capacity: usize) -> (Inbound, mpsc::Receiver<pb::Envelope>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let (inbound, rx) = inbound_channel(CLUSTER, MAX, capacity, stats.clone());
    (inbound, rx, stats)
}

async fn node_with_capacity(capacity: usize) -> Node {
    support::start(CLUSTER, GrpcConfig::default(), capacity).await
}

async fn node() -> Node {
    node_with_capacity(64).await
}

/// Polls `cond` until it holds or `DEADLINE` passes.
async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    support::wait_until(what, DEADLINE, cond).await;
}

/// A loopback address nobody listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn assert_nothing_delivered(node: &mut Node) {
    assert!(
        matches!(node.rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "a rejected frame reached the receiver"
    );
}

#[tokio::test]
async fn delivers_an_envelope_intact() {
    let a = node().await;
    let mut b = node().await;
    assert_eq!(
        b.transport.local_addr(),
        NodeAddr::from(b.transport.listen_addr())
    );
    assert_ne!(b.transport.listen_addr().port(), 0);

    let mut sent = envelope(CLUSTER);
    sent.from = Some(pb::NodeId {
        addr: a.transport.local_addr().to_string(),
        generation: 3,
    });
    a.transport
        .send(&b.transport.local_addr(), sent.clone())
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, b.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, sent);
    // A second message reuses the cached channel.
    a.transport
        .send(&b.transport.local_addr(), sent.clone())
        .await
        .unwrap();
    assert_eq!(b.rx.recv().await.unwrap(), sent);
    assert_eq!(b.stats.snapshot().messages_received, 2);

    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn foreign_cluster_is_rejected_and_counted() {
    let a = node().await;
    let mut b = node().await;
    let err = a
        .transport
        .send(&b.transport.local_addr(), envelope("intruders"))
        .await
        .unwrap_err();
    match &err {
        TransportError::Rejected { addr, reason } => {
            assert_eq!(addr, b.transport.local_addr().as_str());
            assert!(reason.contains("intruders"), "{reason}");
            assert!(reason.contains(CLUSTER), "{reason}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(err.to_string().contains("foreign cluster"), "{err}");
    assert_nothing_delivered(&mut b);
    let s = b.stats.snapshot();
    assert_eq!((s.rejected_foreign_cluster, s.messages_received), (1, 0));

    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn bad_raw_frames_are_refused_with_clear_errors() {
    let mut b = node().await;
    let addr = b.transport.listen_addr();

    // Bytes that are not a protobuf Envelope.
    let status = send_raw_frame(addr, Bytes::from_static(&[0xff; 16]))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert!(status.message().contains("decode"), "{status:?}");
    assert_nothing_delivered(&mut b);

    // A frame over the maximum message size, refused before decoding.
    let status = send_raw_frame(addr, Bytes::from(vec![0u8; MAX * 4]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    assert_nothing_delivered(&mut b);

    // A well-formed protobuf that is not a valid message: the gate refuses it.
    let mut no_sender = envelope(CLUSTER);
    no_sender.from = None;
    let status = send_raw_frame(addr, no_sender.encode_to_vec().into())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("missing sender"), "{status:?}");
    assert_nothing_delivered(&mut b);
    // Every refusal is counted, also the two tonic made before the gate
    // (the garbage bytes and the oversized frame; issue #9 item 8).
    let s = b.stats.snapshot();
    assert_eq!((s.rejected_malformed, s.rejected_oversized), (2, 1));

    // The raw path itself works: a valid frame is delivered.
    let valid = envelope(CLUSTER);
    send_raw_frame(addr, valid.encode_to_vec().into())
        .await
        .unwrap();
    assert_eq!(b.rx.recv().await.unwrap(), valid);

    b.transport.shutdown().await;
}

#[tokio::test]
async fn oversized_envelope_from_a_transport_is_rejected() {
    let a = node().await;
    let mut b = node().await;
    let mut big = envelope(CLUSTER);
    big.updates = vec![
        pb::MemberUpdate {
            id: Some(pb::NodeId {
                addr: "x".repeat(200),
                generation: 1,
            }),
            ..Default::default()
        };
        64
    ];
    assert!(big.encoded_len() > MAX);
    let err = a
        .transport
        .send(&b.transport.local_addr(), big)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Rejected { reason, .. } if reason.contains("too large")),
        "{err:?}"
    );
    assert_nothing_delivered(&mut b);

    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn nothing_listening_is_refused_within_the_connect_timeout() {
    let a = node().await;
    let to = NodeAddr::from(closed_port());
    let start = Instant::now();
    let err = a.transport.send(&to, envelope(CLUSTER)).await.unwrap_err();
    let elapsed = start.elapsed();
    // The TCP connection is refused: a definitive answer, not a timeout.
    assert!(
        matches!(&err, TransportError::Refused { addr } if *addr == to.to_string()),
        "{err:?}"
    );
    assert!(err.is_refused());
    assert!(
        elapsed < GrpcConfig::default().connect_timeout + Duration::from_millis(500),
        "took {elapsed:?}"
    );
    a.transport.shutdown().await;
}

#[tokio::test]
async fn silent_peer_fails_within_the_request_timeout() {
    // Accepts TCP (the kernel completes the handshake) but never speaks.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = NodeAddr::from(black_hole.local_addr().unwrap());
    let config = GrpcConfig {
        request_timeout: Duration::from_millis(300),
        ..GrpcConfig::default()
    };
    let a = GrpcTransport::bind(config.clone()).await.unwrap();
    let start = Instant::now();
    let err = a.send(&to, envelope(CLUSTER)).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
    assert!(
        elapsed < config.request_timeout + Duration::from_millis(700),
        "took {elapsed:?}"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn overloaded_and_shutting_down_receivers() {
    let a = node().await;
    let b = node_with_capacity(1).await;
    let to = b.transport.local_addr();
    a.transport.send(&to, envelope(CLUSTER)).await.unwrap();
    // The queue (capacity 1) is full: dropped and reported.
    let err = a.transport.send(&to, envelope(CLUSTER)).await.unwrap_err();
    assert!(
        matches!(&err, TransportError::Rejected { reason, .. } if reason.contains("overloaded")),
        "{err:?}"
    );
    assert_eq!(b.stats.snapshot().rejected_overloaded, 1);

    // The receiving side is gone: the member is shutting down.
    drop(b.rx);
    let err = a.transport.send(&to, envelope(CLUSTER)).await.unwrap_err();
    assert!(
        matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("shutting down")),
        "{err:?}"
    );

    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_the_port_refuses_and_sends_fail() {
    let a = node().await;
    let mut b = node().await;
    let b_addr = b.transport.local_addr();
    a.transport.send(&b_addr, envelope(CLUSTER)).await.unwrap();
    b.rx.recv().await.unwrap();

    // A holds an open HTTP/2 connection to B; shutdown still completes.
    tokio::time::timeout(DEADLINE, b.transport.shutdown())
        .await
        .expect("shutdown did not return");

    assert!(
        tokio::net::TcpStream::connect(b.transport.listen_addr())
            .await
            .is_err(),
        "the port still accepts connections after shutdown"
    );
    let err = a
        .transport
        .send(&b_addr, envelope(CLUSTER))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err:?}");
    // B itself no longer sends or starts.
    let err = b
        .transport
        .send(&a.transport.local_addr(), envelope(CLUSTER))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::ShutDown), "{err:?}");
    let (inbound, _rx, _) = inbound(8);
    assert!(matches!(
        b.transport.start(inbound).await,
        Err(TransportError::ShutDown)
    ));
    // Shutting down again is a no-op.
    b.transport.shutdown().await;

    a.transport.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn lifecycle_spawns_only_between_start_and_shutdown() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    let a = GrpcTransport::bind(GrpcConfig::default()).await.unwrap();
    let b = GrpcTransport::bind(GrpcConfig::default()).await.unwrap();
    assert_eq!(metrics.num_alive_tasks(), baseline, "bind spawned a task");

    let (inbound_a, _rx_a, _) = inbound(8);
    let (inbound_b, mut rx_b, _) = inbound(8);
    a.start(inbound_a).await.unwrap();
    b.start(inbound_b).await.unwrap();
    assert!(metrics.num_alive_tasks() >= baseline + 2);
    let (again, _rx, _) = inbound(8);
    assert!(
        matches!(a.start(again).await, Err(TransportError::AlreadyStarted)),
        "second start must fail"
    );

    // Open client channels and server connections both ways.
    a.send(&b.local_addr(), envelope(CLUSTER)).await.unwrap();
    b.send(&a.local_addr(), envelope(CLUSTER)).await.unwrap();
    rx_b.recv().await.unwrap();
    assert!(metrics.num_alive_tasks() > baseline + 2);

    // Concurrent shutdowns both return once the servers ended.
    tokio::time::timeout(DEADLINE, async {
        tokio::join!(a.shutdown(), b.shutdown(), a.shutdown());
    })
    .await
    .expect("shutdown did not return");
    for t in [&a, &b] {
        assert!(
            tokio::net::TcpStream::connect(t.listen_addr())
                .await
                .is_err()
        );
    }
    // Connection and channel tasks wind down once both ends closed.
    wait_until("every transport task to end", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_closes_stalled_connections_by_force() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let config = GrpcConfig {
        request_timeout: Duration::from_millis(200),
        ..GrpcConfig::default()
    };
    let t = GrpcTransport::bind(config.clone()).await.unwrap();
    let (inbound, _rx, _) = inbound(8);
    t.start(inbound).await.unwrap();
    // One peer connects and says nothing; another sends only the HTTP/2
    // preface. Neither will ever close on its own.
    let _silent = tokio::net::TcpStream::connect(t.listen_addr())
        .await
        .unwrap();
    let mut half = tokio::net::TcpStream::connect(t.listen_addr())
        .await
        .unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    wait_until("both connections to be served", || {
        metrics.num_alive_tasks() >= baseline + 3
    })
    .await;

    let start = Instant::now();
    t.shutdown().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed < config.request_timeout + Duration::from_millis(900),
        "took {elapsed:?}"
    );
    wait_until("every transport task to end", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
}

#[tokio::test]
async fn shutdown_before_start_releases_the_port() {
    let t = GrpcTransport::bind(GrpcConfig::default()).await.unwrap();
    let addr = t.listen_addr();
    t.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let (inbound, _rx, _) = inbound(8);
    assert!(t.start(inbound).await.is_err());
}

#[tokio::test]
async fn advertise_and_tls_settings() {
    let advertised = NodeAddr::parse("gossip-b.example:7001").unwrap();
    let t = GrpcTransport::bind(GrpcConfig {
        advertise: Some(advertised.clone()),
        ..GrpcConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(t.local_addr(), advertised);
    assert_ne!(t.listen_addr().port(), 0);
    assert_eq!(t.tls_mode(), None);

    // Self-signed: a certificate is made at bind; nothing else is needed.
    let t = GrpcTransport::bind(GrpcConfig {
        tls: TlsConfig::SelfSigned,
        ..GrpcConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(t.tls_mode(), Some(gossip_tls::TlsMode::SelfSigned));
    assert_eq!(t.tls_refused(), 0);

    // Mutual TLS with files that do not exist: the error names the file.
    let err = GrpcTransport::bind(GrpcConfig {
        tls: TlsConfig::Mtls(MtlsFiles {
            ca_cert: "no-such-ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        }),
        ..GrpcConfig::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, TransportError::Tls(m) if m.contains("no-such-ca.pem")),
        "{err:?}"
    );
}
