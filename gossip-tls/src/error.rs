//! The typed errors of this crate.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a TLS configuration could not be built or written.
///
/// Errors name the file involved but never contain key material: a problem
/// in a private key file is described by its kind only.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read (missing, unreadable, ...).
    #[error("cannot read {what} file {path}: {source}", path = .path.display())]
    Read {
        /// What the file should hold, e.g. `"CA certificate"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A PEM file could be read but holds nothing usable: bad PEM syntax, no
    /// item of the expected kind, or an item rustls refuses.
    #[error("invalid {what} file {path}: {reason}", path = .path.display())]
    Invalid {
        /// What the file should hold, e.g. `"private key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (never includes key material).
        reason: String,
    },
    /// A file of [`generate_dev_certs`](crate::generate_dev_certs) could not
    /// be written, or the output directory could not be created.
    #[error("cannot write {path}: {source}", path = .path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Generating a key pair or a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// rustls refused the configuration (e.g. a key that does not match the
    /// certificate, or no usable protocol version).
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e.to_string())
    }
}
