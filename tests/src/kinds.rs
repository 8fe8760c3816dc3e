//! The transports under test.

use std::net::SocketAddr;

use bytes::Bytes;
use gossip_core::{MemNetwork, MemTransport, NodeAddr};
use gossip_grpc::{GrpcConfig, GrpcTransport, GrpcWire};

use crate::Kind;

/// The in-memory transport.
#[derive(Clone, Default)]
pub struct Mem {
    pub net: MemNetwork,
}

impl Kind for Mem {
    type T = MemTransport;

    async fn bind(&self, at: Option<&NodeAddr>) -> MemTransport {
        match at {
            Some(a) => self.net.transport_at(a.clone()),
            None => self.net.transport(),
        }
    }

    async fn send_raw(&self, to: &NodeAddr, frame: Bytes) -> Result<(), String> {
        self.net.deliver_raw(to, &frame).map_err(|r| r.to_string())
    }
}

fn socket(at: Option<&NodeAddr>) -> SocketAddr {
    at.and_then(|a| a.as_str().parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// gRPC over loopback, plaintext.
#[derive(Clone, Default)]
pub struct Grpc;

impl Kind for Grpc {
    type T = GrpcTransport;

    async fn bind(&self, at: Option<&NodeAddr>) -> GrpcTransport {
        let cfg = GrpcConfig {
            listen: socket(at),
            ..GrpcConfig::default()
        };
        GrpcTransport::bind(cfg).await.expect("bind gRPC")
    }

    async fn send_raw(&self, to: &NodeAddr, frame: Bytes) -> Result<(), String> {
        let addr: SocketAddr = to.as_str().parse().map_err(|e| format!("{e}"))?;
        gossip_grpc::send_raw_frame(addr, frame)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}

/// gRPC over loopback, plaintext, speaking only the first wire version
/// (one unary `Send` per message, no streams served): a member of the
/// previous release.
#[derive(Clone, Default)]
pub struct GrpcUnary;

impl Kind for GrpcUnary {
    type T = GrpcTransport;

    async fn bind(&self, at: Option<&NodeAddr>) -> GrpcTransport {
        let cfg = GrpcConfig {
            listen: socket(at),
            wire: GrpcWire::Unary,
            ..GrpcConfig::default()
        };
        GrpcTransport::bind(cfg).await.expect("bind gRPC")
    }

    async fn send_raw(&self, to: &NodeAddr, frame: Bytes) -> Result<(), String> {
        Grpc.send_raw(to, frame).await
    }
}

/// QUIC over loopback with self-signed certificates.
#[derive(Clone, Default)]
pub struct Quic;

impl Kind for Quic {
    type T = gossip_quic::QuicTransport;

    async fn bind(&self, at: Option<&NodeAddr>) -> gossip_quic::QuicTransport {
        let cfg = gossip_quic::QuicConfig {
            listen: socket(at),
            ..gossip_quic::QuicConfig::default()
        };
        gossip_quic::QuicTransport::bind(cfg)
            .await
            .expect("bind QUIC")
    }

    async fn send_raw(&self, to: &NodeAddr, frame: Bytes) -> Result<(), String> {
        let addr: SocketAddr = to.as_str().parse().map_err(|e| format!("{e}"))?;
        gossip_quic::send_raw_frame(addr, frame, None)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Development certificates for mutual-TLS kinds: one cluster CA, and an
/// intruder certificate from another CA.
pub struct Certs {
    member: gossip_tls::MtlsFiles,
    intruder: gossip_tls::MtlsFiles,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Certs {
    fn new() -> Self {
        let cluster = tempfile::tempdir().expect("temp dir");
        let foreign = tempfile::tempdir().expect("temp dir");
        gossip_tls::generate_dev_certs(cluster.path(), 1, &[]).expect("cluster certs");
        gossip_tls::generate_dev_certs(foreign.path(), 1, &[]).expect("foreign certs");
        let member = gossip_tls::dev_node_files(cluster.path(), 1);
        let stranger = gossip_tls::dev_node_files(foreign.path(), 1);
        let intruder = gossip_tls::MtlsFiles {
            ca_cert: member.ca_cert.clone(),
            ..stranger
        };
        Self {
            member,
            intruder,
            _dirs: (cluster, foreign),
        }
    }
}

/// gRPC over loopback with mutual TLS against a cluster CA.
pub struct GrpcMtls(Certs);

impl Default for GrpcMtls {
    fn default() -> Self {
        Self(Certs::new())
    }
}

async fn grpc_with(at: Option<&NodeAddr>, files: &gossip_tls::MtlsFiles) -> GrpcTransport {
    let cfg = GrpcConfig {
        listen: socket(at),
        tls: gossip_tls::TlsConfig::Mtls(files.clone()),
        ..GrpcConfig::default()
    };
    GrpcTransport::bind(cfg).await.expect("bind gRPC with mTLS")
}

impl Kind for GrpcMtls {
    type T = GrpcTransport;

    async fn bind(&self, at: Option<&NodeAddr>) -> GrpcTransport {
        grpc_with(at, &self.0.member).await
    }

    async fn send_raw(&self, to: &NodeAddr, frame: Bytes) -> Result<(), String> {
        let addr: SocketAddr = to.as_str().parse().map_err(|e| format!("{e}"))?;
        let setup = gossip_tls::TlsSetup::mtls(&self.0.member, &[gossip_grpc::ALPN_H2])
            .map_err(|e| e.to_string())?;
        gossip_grpc::send_raw_frame_tls(addr, frame, setup.client)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    async fn bind_intruder(&self) -> Option<GrpcTransport> {
        Some(grpc_with(None, &self.0.intruder).await)
    }
}

/// QUIC over loopback with mutual TLS against a cluster CA.
pub struct QuicMtls(Certs);

impl Default for QuicMtls {
    fn default() -> Self {
        Self(Certs::new())
    }
}

async fn quic_with(
    at: Option<&NodeAddr>,
    files: &gossip_tls::MtlsFiles,
) -> gossip_quic::QuicTransport {
    let cfg = gossip_quic::QuicConfig {
        listen: socket(at),
        tls: gossip_tls::TlsConfig::Mtls(files.clone()),
        ..gossip_quic::QuicConfig::default()
    };
    gossip_quic::QuicTransport::bind(cfg)
        .await
        .expect("bind QUIC with mTLS")
}

impl Kind for QuicMtls {
    type T = gossip_quic::QuicTransport;

    async fn bind(&self, at: Option<&NodeAddr>) -> gossip_quic::QuicTransport {
        quic_with(at, &self.0.member).await
    }

    async fn send_raw(&self, _to: &NodeAddr, _frame: Bytes) -> Result<(), String> {
        Err("raw frames need an authenticated QUIC client; not used under mTLS".into())
    }

    async fn bind_intruder(&self) -> Option<gossip_quic::QuicTransport> {
        Some(quic_with(None, &self.0.intruder).await)
    }
}
