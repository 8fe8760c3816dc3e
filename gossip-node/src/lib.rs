//! A gossip member as a library and a binary.
//!
//! The library is the node: what an application needs to run a member of a
//! gossip cluster with its operator surface.
//!
//! - [`config`]: the settings of a member, [`NodeConfig`], from the command
//!   line and the TOML file merged (the flag wins) and validated.
//! - [`transport`]: the choice of transport, [`TransportKind`], one variant
//!   per transport whether or not its cargo feature is compiled in, and the
//!   construction of a started member over it.
//! - [`node`]: starts a member and its admin endpoint from a [`NodeConfig`]
//!   and returns a [`NodeHandle`].
//! - [`admin`]: the JSON-over-HTTP admin API and its Prometheus metrics, an
//!   axum router over any `Arc<dyn Membership>`.
//! - [`handlers`]: event handlers, shell commands run on the member's
//!   events.
//! - [`keyring`]: the shared keys that seal every message (`encrypt_key`,
//!   `keyring_file`), and the keyring file kept up to date.
//! - [`seeds`]: seeds given by name (`name:port`), resolved through a
//!   [`seeds::Resolve`] hook and again at each retry.
//! - [`snapshot`]: what a member persists in its `data_dir` to rejoin
//!   after a restart.
//! - [`dashboard`]: the live web page the admin endpoint serves at `GET /`.
//! - [`error`]: the typed errors of the above.
//!
//! The `gossip-node` binary's commands (`run`, `demo`, `certs`, `members`,
//! `kv`, `broadcast`, `keygen`, `keys`, `simulate`, `bench`) live apart in [`cli`], one module
//! per command; the node modules never import them.
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
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod handlers;
pub mod keyring;
pub mod node;
pub mod seeds;
pub mod snapshot;
pub mod transport;

pub use config::{LogFormat, NodeConfig, RunArgs, TlsKind};
pub use error::{ConfigError, NodeError};
pub use node::NodeHandle;
pub use transport::TransportKind;
