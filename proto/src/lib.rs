//! The gossip wire schema, package `gossip.v1`.
//!
//! Every transport carries the same protobuf messages, so the schema can grow
//! (new optional fields, new `oneof` arms) without breaking a rolling upgrade:
//! an old member skips fields it does not know. The schema is
//! `proto/gossip.proto`; its comments document every field.
//!
//! With the `grpc` feature the module also holds the tonic client and server of
//! the `Gossip` service (`v1::gossip_service_client`, `v1::gossip_service_server`).

/// Generated types of package `gossip.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/gossip.v1.rs"));
}

impl std::fmt::Debug for v1::KeyringRequest {
    /// Shows the key's length only: a key must never reach a log line
    /// (issue #12).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringRequest")
            .field("id", &self.id)
            .field("op", &self.op())
            .field("key", &format_args!("<{} bytes hidden>", self.key.len()))
            .finish()
    }
}

/// The ALPN / protocol name and version spoken on the wire, e.g. by QUIC.
pub const PROTOCOL: &str = "gossip/1";
