//! The transports under test.

use std::net::SocketAddr;

use bytes::Bytes;
use gossip_core::{MemNetwork, MemTransport, NodeAddr};
use gossip_grpc::{GrpcConfig, GrpcTransport};

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
