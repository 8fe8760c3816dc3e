//! The gRPC transport under TLS: self-signed and mutual TLS with development
//! certificates, refusals and their counting, a whole cluster of members, and
//! shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::{
    Config, Inbound, Member, MemberOptions, Membership, NodeAddr, Stats, Transport, TransportError,
    inbound_channel, pb,
};
use gossip_grpc::{ALPN_H2, GrpcConfig, GrpcTransport, send_raw_frame, send_raw_frame_tls};
use gossip_tls::{TlsConfig, TlsMode, TlsSetup, dev_node_files, generate_dev_certs};
use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Code;

const CLUSTER: &str = "test-cluster";
const MAX: usize = 4096;
/// Upper bound for anything that should happen "promptly".
const DEADLINE: Duration = Duration::from_secs(5);

fn envelope(from: &GrpcTransport) -> pb::Envelope {
    pb::Envelope {
        cluster_id: CLUSTER.into(),
        from: Some(pb::NodeId {
            addr: from.local_addr().to_string(),
            generation: 1,
        }),
        body: Some(pb::envelope::Body::Ping(pb::Ping {
            seq: 7,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn inbound() -> (Inbound, mpsc::Receiver<pb::Envelope>) {
    inbound_channel(CLUSTER, MAX, 64, Arc::new(Stats::default()))
}

struct Node {
    transport: GrpcTransport,
    rx: mpsc::Receiver<pb::Envelope>,
}

async fn bind(tls: TlsConfig) -> GrpcTransport {
    GrpcTransport::bind(GrpcConfig {
        tls,
        ..GrpcConfig::default()
    })
    .await
    .unwrap()
}

async fn node(tls: TlsConfig) -> Node {
    let transport = bind(tls).await;
    let (inbound, rx) = inbound();
    transport.start(inbound).await.unwrap();
    Node { transport, rx }
}

fn mtls(dir: &Path, node: usize) -> TlsConfig {
    TlsConfig::Mtls(dev_node_files(dir, node))
}

/// A development CA with `nodes` node certificates in a new directory.
fn dev_ca(nodes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate_dev_certs(dir.path(), nodes, &[]).unwrap();
    dir
}

/// Polls `cond` until it holds or `DEADLINE` passes.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `from` sends one envelope to `to`, which must receive it intact.
async fn exchange(from: &GrpcTransport, to: &mut Node) {
    let sent = envelope(from);
    tokio::time::timeout(
        DEADLINE,
        from.send(&to.transport.local_addr(), sent.clone()),
    )
    .await
    .expect("send did not return")
    .unwrap();
    let got = tokio::time::timeout(DEADLINE, to.rx.recv())
        .await
        .expect("nothing received")
        .unwrap();
    assert_eq!(got, sent);
}

/// `from`'s send to `to` fails, nothing is delivered and `to` counts one
/// more TLS refusal.
async fn refused(from: &GrpcTransport, to: &mut Node) -> TransportError {
    let before = to.transport.tls_refused();
    let err = tokio::time::timeout(
        DEADLINE,
        from.send(&to.transport.local_addr(), envelope(from)),
    )
    .await
    .expect("send did not return")
    .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Rejected { .. } | TransportError::Unreachable { .. }
        ),
        "{err:?}"
    );
    wait_until("the refusal to be counted", || {
        to.transport.tls_refused() > before
    })
    .await;
    assert!(
        to.rx.try_recv().is_err(),
        "a refused peer delivered a message"
    );
    err
}

fn unverified_client(alpn: &[u8]) -> Arc<gossip_tls::rustls::ClientConfig> {
    Arc::new(gossip_tls::unverified_client_config(&[alpn]).unwrap())
}

#[tokio::test]
async fn self_signed_members_exchange_envelopes() {
    let mut a = node(TlsConfig::SelfSigned).await;
    let mut b = node(TlsConfig::SelfSigned).await;
    assert_eq!(a.transport.tls_mode(), Some(TlsMode::SelfSigned));
    exchange(&a.transport, &mut b).await;
    exchange(&b.transport, &mut a).await;
    // Again over the cached channel.
    exchange(&a.transport, &mut b).await;
    assert_eq!(a.transport.tls_refused() + b.transport.tls_refused(), 0);

    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn tls_and_plaintext_members_do_not_talk() {
    let mut tls = node(TlsConfig::SelfSigned).await;
    let mut plain = node(TlsConfig::None).await;

    // A plaintext client against a TLS server: the server refuses it.
    let err = refused(&plain.transport, &mut tls).await;
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");

    // A TLS client against a plaintext server: not a TLS server, so the
    // handshake fails on the client, which counts it.
    let err = plain_refuses(&tls.transport, &mut plain).await;
    assert!(
        matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("TLS")),
        "{err:?}"
    );

    tls.transport.shutdown().await;
    plain.transport.shutdown().await;
}

async fn plain_refuses(from: &GrpcTransport, to: &mut Node) -> TransportError {
    let before = from.tls_refused();
    let err = from
        .send(&to.transport.local_addr(), envelope(from))
        .await
        .unwrap_err();
    assert_eq!(from.tls_refused(), before + 1);
    assert!(to.rx.try_recv().is_err());
    err
}

#[tokio::test]
async fn mutual_tls_admits_the_cluster_and_refuses_everyone_else() {
    let ca = dev_ca(3);
    let other_ca = dev_ca(1);
    let mut n1 = node(mtls(ca.path(), 1)).await;
    let mut n2 = node(mtls(ca.path(), 2)).await;
    assert_eq!(n1.transport.tls_mode(), Some(TlsMode::Mtls));

    exchange(&n1.transport, &mut n2).await;
    exchange(&n2.transport, &mut n1).await;
    assert_eq!(n1.transport.tls_refused() + n2.transport.tls_refused(), 0);

    // A member whose certificate another CA issued: it refuses n2's
    // certificate and n2 counts the failed handshake; both sides count it.
    let mut stranger = node(mtls(other_ca.path(), 1)).await;
    let err = refused(&stranger.transport, &mut n2).await;
    assert!(
        matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("TLS")),
        "{err:?}"
    );
    assert_eq!(stranger.transport.tls_refused(), 1);
    // The other way round as well.
    refused(&n1.transport, &mut stranger).await;

    // A plaintext member is refused.
    let plain = bind(TlsConfig::None).await;
    refused(&plain, &mut n2).await;
    // So is a raw plaintext call.
    let before = n2.transport.tls_refused();
    let addr = n2.transport.listen_addr();
    let status = send_raw_frame(addr, Bytes::from_static(b"\x00"))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    wait_until("the plaintext call to be counted", || {
        n2.transport.tls_refused() > before
    })
    .await;

    // The cluster still works.
    exchange(&n1.transport, &mut n2).await;
    assert!(n2.rx.try_recv().is_err());

    for t in [&n1.transport, &n2.transport, &stranger.transport, &plain] {
        t.shutdown().await;
    }
}

#[tokio::test]
async fn a_self_signed_member_is_refused_by_mutual_tls() {
    let ca = dev_ca(2);
    let mut server = node(mtls(ca.path(), 1)).await;
    let client = node(TlsConfig::SelfSigned).await;
    // The client accepts any server certificate but has none the server
    // would accept: the server refuses it in the handshake.
    let err = refused(&client.transport, &mut server).await;
    if let TransportError::Rejected { reason, .. } = &err {
        assert!(reason.contains("client certificate"), "{reason}");
    }
    // Same with a raw call.
    let before = server.transport.tls_refused();
    let valid = envelope(&client.transport).encode_to_vec();
    let status = send_raw_frame_tls(
        server.transport.listen_addr(),
        valid.into(),
        unverified_client(ALPN_H2),
    )
    .await
    .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    wait_until("the raw call to be counted", || {
        server.transport.tls_refused() > before
    })
    .await;
    assert!(server.rx.try_recv().is_err());

    client.transport.shutdown().await;
    server.transport.shutdown().await;
}

#[tokio::test]
async fn raw_frames_over_tls() {
    let ca = dev_ca(2);
    let mut server = node(mtls(ca.path(), 1)).await;
    let addr: SocketAddr = server.transport.listen_addr();
    let client = TlsSetup::new(&mtls(ca.path(), 2), "127.0.0.1", &[ALPN_H2])
        .unwrap()
        .unwrap()
        .client;

    // Garbage reaches the decoder, a valid frame the receiver.
    let status = send_raw_frame_tls(addr, Bytes::from_static(&[0xff; 16]), client.clone())
        .await
        .unwrap_err();
    assert!(status.message().contains("decode"), "{status:?}");
    let valid = envelope(&server.transport);
    send_raw_frame_tls(addr, valid.encode_to_vec().into(), client)
        .await
        .unwrap();
    assert_eq!(server.rx.recv().await.unwrap(), valid);
    assert_eq!(server.transport.tls_refused(), 0);

    // A client that does not offer h2 is refused.
    let self_signed = node(TlsConfig::SelfSigned).await;
    let status = send_raw_frame_tls(
        self_signed.transport.listen_addr(),
        valid.encode_to_vec().into(),
        unverified_client(b"gossip/1"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("NoApplicationProtocol"),
        "{status:?}"
    );
    wait_until("the ALPN refusal to be counted", || {
        self_signed.transport.tls_refused() == 1
    })
    .await;

    server.transport.shutdown().await;
    self_signed.transport.shutdown().await;
}

#[tokio::test]
async fn members_under_mutual_tls_see_each_other() {
    let ca = dev_ca(2);
    let a = Member::new(
        Config::default(),
        bind(mtls(ca.path(), 1)).await,
        MemberOptions::default(),
    )
    .unwrap();
    let b = Member::new(
        Config::default(),
        bind(mtls(ca.path(), 2)).await,
        MemberOptions::default(),
    )
    .unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    b.add_seed(a.local_id().addr);
    tokio::time::timeout(Duration::from_secs(15), async {
        while a.members().len() < 2 || b.members().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the members did not find each other");
    assert_eq!(a.transport().tls_refused() + b.transport().tls_refused(), 0);

    tokio::time::timeout(DEADLINE, async {
        tokio::join!(a.shutdown(), b.shutdown());
    })
    .await
    .expect("shutdown did not return");
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_ends_every_task_under_tls() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let ca = dev_ca(2);
    let config = |node| GrpcConfig {
        request_timeout: Duration::from_millis(300),
        tls: mtls(ca.path(), node),
        ..GrpcConfig::default()
    };
    let a = GrpcTransport::bind(config(1)).await.unwrap();
    let b = GrpcTransport::bind(config(2)).await.unwrap();
    assert_eq!(metrics.num_alive_tasks(), baseline, "bind spawned a task");
    let (inbound_a, mut rx_a) = inbound();
    let (inbound_b, mut rx_b) = inbound();
    a.start(inbound_a).await.unwrap();
    b.start(inbound_b).await.unwrap();

    // Open TLS connections both ways.
    a.send(&b.local_addr(), envelope(&a)).await.unwrap();
    b.send(&a.local_addr(), envelope(&b)).await.unwrap();
    rx_a.recv().await.unwrap();
    rx_b.recv().await.unwrap();
    // A peer that connects and never starts the handshake: a handshake task
    // waits for it.
    let _stalled = tokio::net::TcpStream::connect(a.listen_addr())
        .await
        .unwrap();
    wait_until("the handshake task to start", || {
        metrics.num_alive_tasks() > baseline + 2
    })
    .await;

    tokio::time::timeout(DEADLINE, async {
        tokio::join!(a.shutdown(), b.shutdown());
    })
    .await
    .expect("shutdown did not return");
    for t in [&a, &b] {
        assert!(
            tokio::net::TcpStream::connect(t.listen_addr())
                .await
                .is_err(),
            "the port still accepts connections after shutdown"
        );
    }
    wait_until("every transport task to end", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(200);
    let t = GrpcTransport::bind(GrpcConfig {
        request_timeout: timeout,
        tls: TlsConfig::SelfSigned,
        ..GrpcConfig::default()
    })
    .await
    .unwrap();
    let (inbound, _rx) = inbound();
    t.start(inbound).await.unwrap();

    let start = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(t.listen_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    // The server closes the connection: end of stream (or a reset).
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("the silent connection was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(start.elapsed() >= timeout, "closed too early");
    // Not a TLS refusal: nothing was said.
    assert_eq!(t.tls_refused(), 0);

    t.shutdown().await;
}

#[tokio::test]
async fn nothing_listening_is_refused_under_tls_too() {
    let a = node(TlsConfig::SelfSigned).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let to = NodeAddr::from(closed);
    let err = a
        .transport
        .send(&to, envelope(&a.transport))
        .await
        .unwrap_err();
    // The TLS connector's own TCP connect is refused: no handshake happened,
    // so nothing counts as a refused TLS handshake.
    assert!(
        matches!(&err, TransportError::Refused { addr } if *addr == to.to_string()),
        "{err:?}"
    );
    assert_eq!(a.transport.tls_refused(), 0);
    a.transport.shutdown().await;
}
