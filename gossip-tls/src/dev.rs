//! Development certificates: a cluster CA and node certificates it signs.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::MtlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tracing::info;

use crate::error::TlsError;

/// Years a generated certificate stays valid.
const VALID_YEARS: i32 = 10;

/// Sets a validity from January 1st of last year (so that clock skew between
/// members does not matter) to [`VALID_YEARS`] years ahead.
pub(crate) fn set_validity(params: &mut CertificateParams) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Approximate calendar year; an error of one near New Year is harmless
    // given the margins below.
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
}

/// The files [`generate_dev_certs`] writes for node `node` (1-based) in
/// `dir`, as an [`MtlsFiles`] ready for [`TlsConfig::Mtls`].
///
/// [`TlsConfig::Mtls`]: crate::TlsConfig::Mtls
pub fn dev_node_files(dir: &Path, node: usize) -> MtlsFiles {
    MtlsFiles {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("node-{node}.pem")),
        key: dir.join(format!("node-{node}-key.pem")),
    }
}

/// Writes a development cluster CA and `nodes` node certificates signed by
/// it into `out_dir` (created if missing; existing files are overwritten):
///
/// * `ca.pem`, `ca-key.pem`: the CA certificate and its private key;
/// * `node-{i}.pem`, `node-{i}-key.pem` for `i` in `1..=nodes`: a node
///   certificate (usable as TLS server **and** client) and its key.
///
/// Node certificates carry the SANs `localhost`, `127.0.0.1`, `::1`,
/// `node-{i}` and every entry of `hosts` (DNS names or IP literals, without
/// port), so that a client dialing a member at `host:port` can verify the
/// member's certificate against `host`. Keys are ECDSA P-256 (PKCS#8), written
/// with mode `0600` on Unix; certificates are valid from January 1st of last
/// year for ten years.
///
/// Returns the paths written, in the order above (CA first, then each node's
/// certificate and key). For development and tests: keep `ca-key.pem` away
/// from the members in production.
///
/// # Errors
/// [`TlsError::Write`] naming the file or directory that could not be
/// written, [`TlsError::Generate`] if a host is not a valid SAN or key
/// generation fails.
pub fn generate_dev_certs(
    out_dir: &Path,
    nodes: usize,
    hosts: &[String],
) -> Result<Vec<PathBuf>, TlsError> {
    std::fs::create_dir_all(out_dir).map_err(|source| TlsError::Write {
        path: out_dir.to_owned(),
        source,
    })?;
    let mut written = Vec::with_capacity(2 + 2 * nodes);

    let ca_key = KeyPair::generate()?;
    // A name unique to this CA (from its public key), so that certificates of
    // two development CAs are told apart by name ("unknown issuer") rather
    // than by a failing signature.
    let ca_id: String = ca_key
        .public_key_raw()
        .iter()
        .rev()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("gossip development CA {ca_id}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    written.push(write_file(out_dir, "ca.pem", &ca_cert.pem(), false)?);
    written.push(write_file(
        out_dir,
        "ca-key.pem",
        &ca_key.serialize_pem(),
        true,
    )?);

    for i in 1..=nodes {
        let node_name = format!("node-{i}");
        let mut sans: Vec<String> = Vec::new();
        let defaults = ["localhost", "127.0.0.1", "::1", node_name.as_str()];
        for host in defaults.into_iter().chain(hosts.iter().map(String::as_str)) {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !host.is_empty() && !sans.iter().any(|s| s == host) {
                sans.push(host.to_owned());
            }
        }
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("gossip {node_name}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        written.push(write_file(
            out_dir,
            &format!("{node_name}.pem"),
            &cert.pem(),
            false,
        )?);
        written.push(write_file(
            out_dir,
            &format!("{node_name}-key.pem"),
            &key.serialize_pem(),
            true,
        )?);
    }
    info!(dir = %out_dir.display(), nodes, "wrote development CA and node certificates");
    Ok(written)
}

/// Writes `contents` to `dir/name`, readable by the owner only if `secret`.
fn write_file(dir: &Path, name: &str, contents: &str, secret: bool) -> Result<PathBuf, TlsError> {
    let path = dir.join(name);
    let err = |source| TlsError::Write {
        path: path.clone(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&path).map_err(err)?;
    // `mode` applies to new files only; tighten an existing key file too.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    Ok(path)
}
