//! The errors of the commands of `gossip-node` ([`crate::cli`]): one type
//! per command, each with a variant per way it can fail.

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

use crate::error::ConfigError;

/// Failure of `gossip-node members`, `kv` and `broadcast`, which talk to a
/// running member's admin API ([`crate::cli::client`]).
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
/// ([`crate::cli::procs`]). Every process started has been stopped, or will be
/// when the cluster is dropped.
#[derive(Debug, Error)]
pub enum ProcsError {
    /// No free loopback ports could be found.
    #[error("cannot find free loopback ports")]
    Ports(#[source] std::io::Error),
    /// The cluster was given hosts, but not one per node.
    #[error("{hosts} hosts given for {nodes} nodes (give one per node, or none)")]
    Hosts {
        /// Hosts given.
        hosts: usize,
        /// Nodes to start.
        nodes: usize,
    },
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
