//! The commands of the `gossip-node` binary, one module each; nothing here
//! is needed to embed a member (that is [`crate::node`]).
//!
//! Each command module owns its arguments (a clap `Args` struct) and its
//! body; [`Command`] is the one table of commands. `gossip-node run` takes
//! [`crate::config::RunArgs`], whose flags are also config-file keys. The
//! modules import the library and each other's helpers ([`procs`],
//! `term`, `signals`); the library never imports them.
//!
//! | Command | Module |
//! |---|---|
//! | `run` | [`run`] |
//! | `demo` | [`demo`] ([`demo_books`]: its `books` case) |
//! | `certs` | `certs` (with either transport feature) |
//! | `members`, `kv`, `broadcast` | [`client`] |
//! | `join`, `meta`, `leave` | [`join`], [`meta`], [`leave`] |
//! | `keygen`, `keys` | [`keys`] |
//! | `simulate` | [`simulate`] |
//! | `bench` | [`bench`](mod@bench) |

use clap::{Parser, Subcommand};

use crate::config::RunArgs;

pub mod bench;
#[cfg(any(feature = "grpc", feature = "quic"))]
pub mod certs;
pub mod client;
pub mod demo;
pub mod demo_books;
pub mod error;
pub mod join;
pub mod keys;
pub mod leave;
pub mod logging;
pub mod meta;
pub mod netns;
pub mod procs;
pub mod run;
pub(crate) mod signals;
pub mod simulate;
pub mod soak;
mod term;

/// The command line of `gossip-node`.
#[derive(Debug, Parser)]
#[command(name = "gossip-node", version, about = "A member of a gossip cluster.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `gossip-node`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one member until SIGINT or SIGTERM, then leave gracefully.
    Run(Box<RunArgs>),
    /// Start a local cluster of `gossip-node run` processes and watch it
    /// converge.
    Demo(demo::DemoArgs),
    /// Write a development CA and node certificates for `--tls mtls`.
    #[cfg(any(feature = "grpc", feature = "quic"))]
    Certs(certs::CertsArgs),
    /// Print the members of a running node as a table (or JSON).
    Members(client::MembersArgs),
    /// Read, set or delete keys through a running node's admin API.
    Kv(client::KvArgs),
    /// Broadcast a message from a running node.
    Broadcast(client::BroadcastArgs),
    /// Make a running node join through these addresses now.
    Join(join::JoinArgs),
    /// Show or edit a running node's metadata.
    Meta(meta::MetaArgs),
    /// Make a running node leave the cluster gracefully and stop.
    Leave(leave::LeaveArgs),
    /// Print a new random key for `encrypt_key` or `keys install`.
    Keygen(keys::KeygenArgs),
    /// List or change the keyring of every live member through a running
    /// node: list, install KEY, use KEY, remove KEY.
    Keys(keys::KeysArgs),
    /// Run the deterministic simulator: N members under virtual time.
    Simulate(simulate::SimulateArgs),
    /// Start real processes on loopback and measure spread and detection.
    Bench(bench::BenchArgs),
    /// Churn real processes for a while, then check nothing was lost.
    Soak(soak::SoakArgs),
}
