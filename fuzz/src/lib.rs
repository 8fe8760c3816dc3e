//! The fuzz targets of issue #12, as plain functions: everything that
//! parses outside input, and the protocol machine fed arbitrary messages.
//!
//! Each target takes arbitrary bytes and must not panic, hang or allocate
//! without bound on any of them. The AFL binaries (`fuzz/afl`, built with
//! `cargo afl`, see FUZZING.md) call [`run`] in a loop; the corpus replay
//! test (`tests/corpora.rs`, part of `cargo test --workspace`) calls it on
//! every file of `corpus/<target>/`, so a regression fails CI.
#![deny(missing_docs)]

mod admin;
mod config;
mod envelope;
mod grpc;
mod machine;
mod quic;
mod snapshot;

pub use envelope::{test_keyring, test_sealer};

use std::path::PathBuf;
use std::str::FromStr;

/// One fuzz target. Its name (`Target::name`) is also its corpus
/// directory, `fuzz/corpus/<name>/`, and the AFL binary's argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `Inbound::accept_bytes`: an encoded `gossip.v1.Envelope` as every
    /// transport hands it to the gate (gossip-core/src/codec.rs); the first
    /// byte picks the clear gate, the gate with a test keyring, or the
    /// keyed gate given the rest sealed with a test key (issue #12).
    Envelope,
    /// The protocol itself: a script of decoded messages from a few peers,
    /// timer expiries, send failures and local commands, fed to one
    /// `Machine`, whose every output is checked against its documented
    /// limits (see `machine` for the script's format).
    Machine,
    /// The QUIC transport's readers (gossip-quic/src/frames.rs, wire.rs):
    /// the first byte picks the `gossip/2` hello, a datagram, a one-way
    /// stream of frames, a `gossip/1` request stream, or a reply as the
    /// client reads it; the rest is what the peer sent.
    Quic,
    /// The gRPC bodies: tonic's gRPC framing and prost decoding, then our
    /// handling of a `Gossip` stream's batches, a unary `Send`, or the
    /// answers to a `Gossip` stream we opened (first byte picks which).
    Grpc,
    /// The TOML config file of `gossip-node run`: parsed, merged, validated;
    /// a configuration that passes must start a `Machine` that runs.
    Config,
    /// The admin HTTP API: a request (method, target, body) through the
    /// axum router of a running member; every refusal must be a JSON
    /// error body.
    Admin,
    /// The snapshot file a member with a data directory reads at start:
    /// parsed as `SnapshotStore::load` parses it, then used as
    /// `node::start` uses it (metadata, generation, seeds, keys
    /// republished on a running member).
    Snapshot,
}

impl Target {
    /// Every target, in the order FUZZING.md lists them.
    pub const ALL: [Target; 7] = [
        Target::Envelope,
        Target::Machine,
        Target::Quic,
        Target::Grpc,
        Target::Config,
        Target::Admin,
        Target::Snapshot,
    ];

    /// The target's name: its corpus directory and AFL argument.
    pub fn name(self) -> &'static str {
        match self {
            Target::Envelope => "envelope",
            Target::Machine => "machine",
            Target::Quic => "quic",
            Target::Grpc => "grpc",
            Target::Config => "config",
            Target::Admin => "admin",
            Target::Snapshot => "snapshot",
        }
    }

    /// The directory of the target's seed corpus in this repository.
    pub fn corpus_dir(self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
                format!("unknown target {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Runs `target` on `data`.
///
/// # Panics
/// On a defect the target found: a panic of the code under test, or a
/// broken property the target checks.
pub fn run(target: Target, data: &[u8]) {
    match target {
        Target::Envelope => envelope::run(data),
        Target::Machine => machine::run(data),
        Target::Quic => quic::run(data),
        Target::Grpc => grpc::run(data),
        Target::Config => config::run(data),
        Target::Admin => admin::run(data),
        Target::Snapshot => snapshot::run(data),
    }
}

/// The gate of a member of cluster [`CLUSTER`] with the default maximum
/// message size, and its queue (read by the caller, or dropped: then
/// accepted envelopes are refused as `ShuttingDown`, after every check).
pub(crate) fn gate() -> (
    gossip_core::Inbound,
    tokio::sync::mpsc::Receiver<gossip_core::pb::Envelope>,
) {
    let stats = std::sync::Arc::new(gossip_core::Stats::default());
    gossip_core::inbound_channel(
        CLUSTER,
        gossip_core::Config::default().max_message_size,
        64,
        stats,
    )
}

/// The cluster id of every target's member (and of the seed corpora).
pub const CLUSTER: &str = "fuzz";
