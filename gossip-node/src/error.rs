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
    /// An event handler that cannot be used: an unknown event, no event, an
    /// empty command, a `--handler` value that is not `EVENTS=COMMAND`, or
    /// a zero timeout or queue.
    #[error("invalid event handler: {0}")]
    BadHandler(String),
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
    /// `encrypt_key` or `keyring_file` unusable (issue #12); the message
    /// names the setting or file, never a key.
    #[error(transparent)]
    Keyring(#[from] crate::keyring::KeyringFileError),
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
    /// The data directory (`data_dir`) cannot be created.
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the signal handlers")]
    Signal(#[source] std::io::Error),
}
