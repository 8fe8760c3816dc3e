//! Building rustls server and client configurations from a
//! [`TlsConfig`].

use std::fmt;
use std::sync::Arc;

use gossip_core::NodeAddr;

use crate::config::{MtlsFiles, TlsConfig};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tracing::debug;

use crate::error::TlsError;
use crate::pem::{load_certs, load_key, load_roots};
use crate::verify::AcceptAnyServerCert;

/// The crypto provider every configuration of this crate uses: rustls'
/// *ring* provider, passed explicitly (no process-wide default provider is
/// read or installed).
///
/// TLS 1.3 with AES-128-GCM and SHA-256 is offered first (the provider's
/// default puts AES-256-GCM with SHA-384 first): it is the suite every TLS 1.3
/// and QUIC stack must implement, and its key schedule hashes with SHA-256,
/// which this hardware computes several times faster than SHA-384. A QUIC
/// handshake derives a dozen keys, so this is a few percent of the CPU of a
/// cluster opening thousands of connections at once (measured in the 100-member
/// join, issue #10). The other suites stay offered, in the provider's order.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let preferred = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256.suite();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != preferred);
    Arc::new(provider)
}

/// The host part of a member address, without the brackets of an IPv6
/// literal: `"node-1:7000"` gives `"node-1"`, `"[::1]:7000"` gives `"::1"`.
/// This is the name a client sends as SNI and checks the server certificate
/// against.
///
/// ```
/// use gossip_core::NodeAddr;
/// let addr = |s: &str| s.parse::<NodeAddr>().unwrap();
/// assert_eq!(gossip_tls::server_name(&addr("node-1:7000")), "node-1");
/// assert_eq!(gossip_tls::server_name(&addr("10.0.0.5:7000")), "10.0.0.5");
/// assert_eq!(gossip_tls::server_name(&addr("[::1]:7000")), "::1");
/// ```
pub fn server_name(addr: &NodeAddr) -> &str {
    let s = addr.as_str();
    let host = s.rsplit_once(':').map_or(s, |(host, _port)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Which kind of security a [`TlsSetup`] provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// A certificate generated at start; clients accept any server
    /// certificate. Encrypted, **not** authenticated.
    SelfSigned,
    /// Mutual TLS against a cluster CA: encrypted and authenticated both
    /// ways.
    Mtls,
}

/// The rustls configurations of one member: what it serves with and what it
/// connects with. Built once at start; both sides share the same identity.
///
/// # Security of each mode
/// * [`TlsConfig::SelfSigned`]: the server presents a certificate generated
///   at start (SANs: the advertised host, `localhost`, and the host's IP if it
///   is one) and asks for no client certificate; the client accepts **any**
///   server certificate, only checking that the server holds its key. Traffic
///   is encrypted, but peers are **not** authenticated: anyone who can reach
///   the port can join, and a man in the middle can read and alter traffic.
///   For local use and tests.
/// * [`TlsConfig::Mtls`]: the server requires a client certificate issued by
///   the cluster CA; the client requires a server certificate issued by the
///   CA **and valid for the host it dials** (the host part of the member
///   address, see [`server_name`]). Node certificates must therefore carry
///   every host peers use to reach the node as a SAN (DNS name or IP);
///   [`generate_dev_certs`](crate::generate_dev_certs) issues `localhost`,
///   `127.0.0.1`, `::1`, the node name and any extra hosts.
#[derive(Clone)]
pub struct TlsSetup {
    /// Configuration for accepting connections (ALPN set).
    pub server: Arc<ServerConfig>,
    /// Configuration for opening connections (ALPN set).
    pub client: Arc<ClientConfig>,
    /// The kind of security provided.
    pub mode: TlsMode,
}

impl fmt::Debug for TlsSetup {
    // Keys and certificates are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("mode", &self.mode)
            .field("alpn", &alpn_text(&self.server.alpn_protocols))
            .finish_non_exhaustive()
    }
}

fn alpn_text(alpn: &[Vec<u8>]) -> Vec<String> {
    alpn.iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.to_vec()).collect()
}

fn config_err(e: rustls::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

impl TlsSetup {
    /// Builds the configurations for `tls`, offering and accepting the ALPN
    /// protocols `alpn` (e.g. `[gossip_proto::PROTOCOL.as_bytes()]`).
    /// `host` is the advertised host (see [`server_name`]); it is only used
    /// for the SANs of a self-signed certificate.
    ///
    /// Returns `None` for [`TlsConfig::None`] (plaintext).
    ///
    /// # Errors
    /// See [`TlsSetup::self_signed`] and [`TlsSetup::mtls`].
    pub fn new(tls: &TlsConfig, host: &str, alpn: &[&[u8]]) -> Result<Option<Self>, TlsError> {
        match tls {
            TlsConfig::None => Ok(None),
            TlsConfig::SelfSigned => Self::self_signed(host, alpn).map(Some),
            TlsConfig::Mtls(files) => Self::mtls(files, alpn).map(Some),
        }
    }

    /// Generates a self-signed certificate for `host`, `localhost` and the
    /// host's IP (if it is one) and builds the [`TlsMode::SelfSigned`]
    /// configurations: encrypted, **not** authenticated.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if the key or certificate cannot be generated,
    /// [`TlsError::Config`] if rustls refuses the result.
    pub fn self_signed(host: &str, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let mut names = Vec::new();
        for name in [host, "localhost"] {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            if !name.is_empty() && !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        // `CertificateParams::new` makes IP literals IP SANs, the rest DNS SANs.
        let mut params = rcgen::CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("gossip member {host}"));
        crate::dev::set_validity(&mut params);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));

        let mut server = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .map_err(config_err)?;
        server.alpn_protocols = alpn_list(alpn);

        let client = unverified_client_config(alpn)?;

        debug!(%host, "generated a self-signed TLS certificate (encrypted, not authenticated)");
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            mode: TlsMode::SelfSigned,
        })
    }

    /// Loads the cluster CA, this member's certificate chain and its key
    /// from PEM files and builds the [`TlsMode::Mtls`] configurations.
    ///
    /// # Errors
    /// [`TlsError::Read`] if a file cannot be read, [`TlsError::Invalid`] if
    /// it holds no usable certificate or key (both name the file),
    /// [`TlsError::Config`] if rustls refuses them (e.g. the key does not
    /// match the certificate).
    pub fn mtls(files: &MtlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let roots = Arc::new(load_roots(&files.ca_cert)?);
        let chain = load_certs("certificate", &files.cert)?;
        let key = load_key(&files.key)?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Invalid {
                    what: "CA certificate",
                    path: files.ca_cert.clone(),
                    reason: e.to_string(),
                })?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_err)?;
        server.alpn_protocols = alpn_list(alpn);

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_err)?;
        client.alpn_protocols = alpn_list(alpn);

        debug!(
            ca = %files.ca_cert.display(),
            cert = %files.cert.display(),
            "loaded mutual TLS files"
        );
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            mode: TlsMode::Mtls,
        })
    }
}

/// A client configuration that presents no certificate and accepts any
/// server certificate (checking only the handshake signatures), offering the
/// ALPN protocols `alpn`. It is the client side of [`TlsMode::SelfSigned`]:
/// encrypted, **not** authenticated. Used by conformance tools that must
/// reach a member without credentials.
///
/// # Errors
/// [`TlsError::Config`] if rustls refuses the configuration (does not happen
/// with the *ring* provider).
pub fn unverified_client_config(alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(provider)))
        .with_no_client_auth();
    client.alpn_protocols = alpn_list(alpn);
    Ok(client)
}
