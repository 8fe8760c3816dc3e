//! Loading certificates and keys from PEM files.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TlsError;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Describes a PEM error. For secret files only the kind of error is kept:
/// some variants quote lines or bytes of the file.
fn describe(e: &pem::Error, secret: bool) -> String {
    match e {
        pem::Error::NoItemsFound => "no PEM item of the expected kind".to_owned(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "malformed PEM BEGIN line".to_owned(),
        pem::Error::Base64Decode(detail) if !secret => format!("bad base64: {detail}"),
        pem::Error::Base64Decode(_) => "bad base64 in a PEM section".to_owned(),
        pem::Error::SectionTooLarge => "PEM section too large".to_owned(),
        other if !secret => other.to_string(),
        _ => "unreadable PEM".to_owned(),
    }
}

/// Reads every certificate of a PEM file, in order.
pub(crate) fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let invalid = |reason: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(describe(&e, false)))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE section found".to_owned()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "private key";
    let bytes = read(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        what: WHAT,
        path: path.to_owned(),
        reason: describe(&e, true),
    })
}

/// Reads the CA certificate(s) of a PEM file into a root store.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    const WHAT: &str = "CA certificate";
    let mut roots = RootCertStore::empty();
    for cert in load_certs(WHAT, path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            what: WHAT,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
