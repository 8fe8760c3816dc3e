//! Shared rustls setup for gossip transports.
//!
//! From a [`TlsConfig`] (plain data: the mode, and for mutual TLS the PEM
//! files of [`MtlsFiles`]) this crate builds the rustls
//! [`ServerConfig`](rustls::ServerConfig) and
//! [`ClientConfig`](rustls::ClientConfig) of a member ([`TlsSetup`]):
//!
//! * [`TlsConfig::SelfSigned`] makes a certificate at start; clients accept
//!   any server certificate. **Encrypted, not authenticated.**
//! * [`TlsConfig::Mtls`] loads certificates and key from PEM files; servers
//!   require client certificates issued by the cluster CA and clients verify
//!   servers against the same CA, including the dialed host name. **Encrypted and authenticated both ways.**
//!
//! [`generate_dev_certs`] writes a development CA and node certificates.
//!
//! ```
//! use gossip_tls::{TlsConfig, TlsMode, TlsSetup, dev_node_files, generate_dev_certs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let alpn: &[&[u8]] = &[b"gossip/1"];
//!
//! // Self-signed: encrypted, not authenticated.
//! let setup = TlsSetup::new(&TlsConfig::SelfSigned, "127.0.0.1", alpn)?
//!     .expect("TlsConfig::None is the only mode without a setup");
//! assert_eq!(setup.mode, TlsMode::SelfSigned);
//!
//! // Mutual TLS with development certificates.
//! let dir = tempfile::tempdir()?;
//! generate_dev_certs(dir.path(), 2, &["gossip-1.internal".to_owned()])?;
//! let config = TlsConfig::Mtls(dev_node_files(dir.path(), 1));
//! let setup = TlsSetup::new(&config, "gossip-1.internal", alpn)?;
//! assert_eq!(setup.map(|s| s.mode), Some(TlsMode::Mtls));
//! # Ok(())
//! # }
//! ```
//!
//! Every configuration uses rustls' *ring* provider explicitly
//! ([`crypto_provider`]); no process-wide default provider is needed.
//! Certificates and keys are never logged, and errors name files without
//! quoting their contents.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod alert;
mod config;
mod dev;
mod error;
mod pem;
mod setup;
mod verify;

pub use alert::alert_hint;
pub use config::{MtlsFiles, TlsConfig};
pub use dev::{dev_node_files, generate_dev_certs};
pub use error::TlsError;
pub use setup::{TlsMode, TlsSetup, crypto_provider, server_name, unverified_client_config};

/// Re-exported so that users of [`TlsSetup`] name the same rustls version.
pub use rustls;
