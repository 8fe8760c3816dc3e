//! Typed errors of the library. The binary wraps them in `anyhow` and prints
//! them with their causes.

use std::net::SocketAddr;
use std::path::PathBuf;

use gossip_core::{GossipError, TransportError};
use thiserror::Error;

/// A configuration that cannot be used. Reported before anything starts.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of
    /// the wrong type.
    #[error("invalid config file {}: {message}", path.display())]
    Parse {
        /// The file (`<inline>` for text parsed from memory).
        path: PathBuf,
        /// The TOML parser's explanation, with line and column.
        message: String,
    },
    /// A transport name that no build knows.
    #[error("unknown transport '{0}' (expected one of: {names})", names = crate::transport::TransportKind::names())]
    UnknownTransport(String),
    /// A known transport whose cargo feature is not compiled in.
    #[error("transport '{name}' is not available in this build (enable the `{feature}` feature)")]
    TransportUnavailable {
        /// The transport's name.
        name: &'static str,
        /// The cargo feature of `gossip-node` that compiles it in.
        feature: &'static str,
    },
    /// An address that does not parse.
    #[error("invalid {what} address {value:?}: {reason}")]
    BadAddress {
        /// Which setting: `listen`, `advertise`, `seed` or `admin`.
        what: &'static str,
        /// The offending text (truncated to 64 characters).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither `--listen` nor `listen` in the config file was given.
    #[error("no listen address: pass --listen ADDR or set `listen` in the config file")]
    MissingListen,
    /// A `--meta` argument that is not `name=value`, or metadata over the
    /// limits.
    #[error("invalid metadata: {0}")]
    BadMeta(String),
    /// `tls = "mtls"` without one of its PEM files.
    #[error("tls = \"mtls\" needs `{key}` (or {flag} FILE): the PEM file of {what}")]
    MissingTlsFile {
        /// The missing TOML key: `tls_ca`, `tls_cert` or `tls_key`.
        key: &'static str,
        /// Its flag.
        flag: &'static str,
        /// What the file holds.
        what: &'static str,
    },
    /// A setting out of its range.
    #[error("invalid setting `{key}`: {reason}")]
    Invalid {
        /// The TOML key (the flag has the same name with dashes).
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Failure to start or run a member.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport could not bind or start serving.
    #[error("cannot start the {transport} transport on {listen}")]
    Transport {
        /// The transport's name.
        transport: &'static str,
        /// The address it was to listen on.
        listen: SocketAddr,
        /// What failed.
        #[source]
        source: TransportError,
    },
    /// The admin endpoint could not bind.
    #[error("cannot bind the admin endpoint on {addr}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The member refused its initial settings (e.g. metadata too large).
    #[error("cannot create the member")]
    Member(#[from] GossipError),
    /// The signal handlers could not be installed.
    #[error("cannot install the signal handlers")]
    Signal(#[source] std::io::Error),
}

/// Failure of `gossip-node members`, `kv` and `broadcast`, which talk to a
/// running member's admin API ([`crate::client`]).
#[derive(Debug, Error)]
pub enum ClientError {
    /// The `--admin` value is not an http URL or HOST:PORT.
    #[error("invalid admin URL {url:?}: {reason}")]
    BadUrl {
        /// The offending text.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Invalid arguments (e.g. a payload or key that cannot be sent).
    #[error("{0}")]
    BadInput(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// Nothing answered at the admin URL: no node, a wrong port, or no
    /// `--admin` on the node.
    #[error(
        "cannot reach the node's admin API at {url} (is `gossip-node run --admin ...` running there?)"
    )]
    Unreachable {
        /// The URL requested.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The node answered with an error status; `error` is its JSON `error`
    /// text, or the start of its body.
    #[error("the node refused {method} {url}: {status}: {error}")]
    Refused {
        /// The request's method.
        method: &'static str,
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The node's explanation.
        error: String,
    },
    /// The answer was not what the admin API sends (not JSON, wrong shape).
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer {
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not exist (or is deleted or expired) at that owner.
    #[error("no key {key:?} owned by {owner}")]
    NotFound {
        /// The key.
        key: String,
        /// The owner asked about.
        owner: String,
    },
    /// Standard output could not be written.
    #[error("cannot write the output")]
    Io(#[from] std::io::Error),
}

/// Failure of `gossip-node demo`. Every process the demo started has been
/// stopped by the time it is returned.
#[derive(Debug, Error)]
pub enum DemoError {
    /// Invalid demo arguments.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The path of the running executable, needed to start the nodes, is
    /// unknown.
    #[error("cannot find the gossip-node executable")]
    CurrentExe(#[source] std::io::Error),
    /// No free loopback port could be found, or the log directory could not
    /// be created.
    #[error("cannot prepare the demo: {what}")]
    Setup {
        /// What was being prepared.
        what: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A node process could not be started or did not come up.
    #[error(transparent)]
    Procs(#[from] ProcsError),
    /// An admin API call failed.
    #[error("admin request to node {index} failed: {reason}")]
    Admin {
        /// The node's index, from 1.
        index: usize,
        /// What failed.
        reason: String,
    },
    /// The signal handlers could not be installed, or the terminal could not
    /// be written.
    #[error("demo I/O error")]
    Io(#[from] std::io::Error),
}

/// Failure to start or reach a local cluster of `gossip-node run` processes
/// ([`crate::procs`]). Every process started has been stopped, or will be
/// when the cluster is dropped.
#[derive(Debug, Error)]
pub enum ProcsError {
    /// No free loopback ports could be found.
    #[error("cannot find free loopback ports")]
    Ports(#[source] std::io::Error),
    /// The log directory could not be created.
    #[error("cannot create the log directory {}", path.display())]
    LogDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A node process could not be started.
    #[error("cannot start node {index}")]
    Spawn {
        /// The node's index, from 1.
        index: usize,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A node exited or did not answer on its admin endpoint in time.
    #[error("node {index} ({addr}) failed to come up: {reason}")]
    NodeDown {
        /// The node's index, from 1.
        index: usize,
        /// The node's gossip address.
        addr: String,
        /// What happened, with the tail of its log when there is one.
        reason: String,
    },
    /// The HTTP client of the admin APIs could not be built.
    #[error("cannot build the admin HTTP client")]
    Client(#[source] reqwest::Error),
    /// An admin API request failed, was refused or answered something
    /// unexpected.
    #[error("admin request http://{admin}{path} failed")]
    Admin {
        /// The node's admin endpoint.
        admin: SocketAddr,
        /// The request path.
        path: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The thread stopping the processes panicked.
    #[error("stopping the processes failed: {0}")]
    Join(String),
}

/// Failure of `gossip-node simulate`.
#[derive(Debug, Error)]
pub enum SimulateError {
    /// The simulator refused the configuration; nothing ran.
    #[error("invalid simulation")]
    Sim(#[from] gossip_sim::SimError),
    /// The plot could not be written.
    #[error("cannot write the plot {}", path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Standard output could not be written.
    #[error("cannot write the report")]
    Io(#[from] std::io::Error),
}

/// Failure of `gossip-node bench`. Every process the benchmark started has
/// been stopped by the time it is returned.
#[derive(Debug, Error)]
pub enum BenchError {
    /// An unknown or unavailable transport, or a TLS mode it refuses.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Flags that do not fit together (e.g. more nodes killed than can be
    /// spared).
    #[error("invalid bench flags: {0}")]
    BadArgs(String),
    /// The path of the running executable, needed to start the nodes, is
    /// unknown.
    #[error("cannot find the gossip-node executable")]
    CurrentExe(#[source] std::io::Error),
    /// A node could not be started, did not come up, or refused a request.
    #[error(transparent)]
    Procs(#[from] ProcsError),
    /// A measurement could not be made at all.
    #[error("cannot measure: {0}")]
    Measure(String),
    /// Ctrl-C or SIGTERM: the benchmark stopped early.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    /// The signal handlers could not be installed, or standard output could
    /// not be written.
    #[error("bench I/O error")]
    Io(#[from] std::io::Error),
}
