//! A gossip member as a library and a binary.
//!
//! The `gossip-node` binary runs one member of a gossip cluster
//! (`gossip-node run`) or a local demonstration cluster of such processes
//! (`gossip-node demo`), and writes development certificates for mutual TLS
//! (`gossip-node certs`). This library holds everything the binary does, so
//! that tests and other programs can do the same in process:
//!
//! - [`config`]: the command line and the TOML file, merged (the flag wins)
//!   and validated into a [`NodeConfig`].
//! - [`transport`]: the choice of transport, [`TransportKind`], one variant
//!   per transport whether or not its cargo feature is compiled in, and the
//!   construction of a started member over it.
//! - [`admin`]: the JSON-over-HTTP admin API, an axum router over any
//!   `Arc<dyn Membership>`.
//! - [`dashboard`]: the live web page the admin endpoint serves at `GET /`.
//! - [`run`]: starts a member and its admin endpoint from a [`NodeConfig`]
//!   and returns a [`NodeHandle`]; [`run::run_until_signal`] is the body of
//!   `gossip-node run`.
//! - [`demo`]: the body of `gossip-node demo`; [`demo_books`]: its `books`
//!   case.
//! - [`procs`]: local clusters of `gossip-node run` child processes (demo,
//!   bench).
//! - `certs`: the body of `gossip-node certs` (with either transport
//!   feature).
//! - [`logging`]: the tracing subscriber of the binary.
//!
//! Every fallible function returns a typed error from [`error`].
//!
//! # Cargo features
//!
//! - `grpc` (default): the gRPC transport, `transport = "grpc"`.
//! - `quic` (default): the QUIC transport, `transport = "quic"`.
//!
//! A library user who needs one transport turns the defaults off, e.g.
//! `gossip-node = { path = "...", default-features = false, features =
//! ["quic"] }`, and builds without the other's dependencies (tonic or
//! quinn). Naming a transport that is not compiled in is a configuration
//! error that says which feature to enable.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admin;
pub mod bench;
#[cfg(any(feature = "grpc", feature = "quic"))]
pub mod certs;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod demo_books;
pub mod error;
pub mod logging;
pub mod procs;
pub mod run;
pub mod simulate;
mod term;
pub mod transport;

pub use config::{Cli, Command, LogFormat, NodeConfig, RunArgs, TlsKind};
pub use error::{BenchError, ConfigError, DemoError, NodeError, ProcsError, SimulateError};
pub use run::NodeHandle;
pub use transport::TransportKind;
