//! Transport security settings shared by every transport: plain data, which
//! [`TlsSetup`](crate::TlsSetup) turns into rustls configurations. They live
//! here, with the TLS code, so that `gossip-core` depends on no TLS library
//! and names no TLS setting.

use std::path::PathBuf;

/// How a transport secures its connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsConfig {
    /// No TLS (plaintext). Only transports that allow it (gRPC) accept it;
    /// for tests and trusted networks.
    #[default]
    None,
    /// Each member makes its own certificate at start: traffic is encrypted,
    /// but peers are **not** authenticated. For local use.
    SelfSigned,
    /// Mutual TLS: every peer must present a certificate signed by the cluster
    /// CA; others are refused and counted.
    Mtls(MtlsFiles),
}

/// PEM files for [`TlsConfig::Mtls`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This member's certificate chain (PEM), signed by the cluster CA.
    pub cert: PathBuf,
    /// This member's private key (PEM). Never logged.
    pub key: PathBuf,
}
