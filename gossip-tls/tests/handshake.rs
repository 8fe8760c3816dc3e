//! Handshakes between configurations of this crate over an in-memory duplex
//! pipe (no port is opened).

use std::io;
use std::path::Path;
use std::sync::Arc;

use gossip_tls::rustls::pki_types::ServerName;
use gossip_tls::rustls::{ClientConfig, ServerConfig};
use gossip_tls::{
    MtlsFiles, TlsConfig, TlsError, TlsMode, TlsSetup, dev_node_files, generate_dev_certs,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const ALPN: &[&[u8]] = &[b"gossip/1"];

/// What each side saw of one exchange: the client sends `ping`, the server
/// answers `pong`.
struct Outcome {
    /// The server's result: the ALPN protocol it negotiated and whether the
    /// client presented a certificate.
    server: io::Result<(Option<Vec<u8>>, bool)>,
    /// The client's result.
    client: io::Result<()>,
}

async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server).accept(s).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        let (_, conn) = tls.get_ref();
        Ok((
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        ))
    };
    let client_side = async move {
        let mut tls = TlsConnector::from(client).connect(name, c).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok(())
    };
    let (server, client) = tokio::join!(server_side, client_side);
    Outcome { server, client }
}

fn mtls(files: &MtlsFiles) -> TlsSetup {
    TlsSetup::mtls(files, ALPN).unwrap()
}

fn dev_dir(nodes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate_dev_certs(dir.path(), nodes, &["gossip.test".to_owned()]).unwrap();
    dir
}

#[tokio::test]
async fn self_signed_handshake_is_encrypted_but_accepts_any_server() {
    let a = TlsSetup::new(&TlsConfig::SelfSigned, "127.0.0.1", ALPN)
        .unwrap()
        .unwrap();
    let b = TlsSetup::self_signed("node-b", ALPN).unwrap();
    assert_eq!(a.mode, TlsMode::SelfSigned);
    // b's client has never seen a's certificate, and the name does not match
    // it either: a self-signed client accepts it anyway (not authenticated).
    for name in ["127.0.0.1", "localhost", "unrelated.example"] {
        let out = exchange(a.server.clone(), b.client.clone(), name).await;
        out.client.unwrap();
        let (alpn, client_cert) = out.server.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"gossip/1"[..]));
        assert!(!client_cert, "self-signed clients present no certificate");
    }
}

#[tokio::test]
async fn tls_none_builds_nothing() {
    assert!(
        TlsSetup::new(&TlsConfig::None, "localhost", ALPN)
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn server_refuses_a_client_offering_another_alpn() {
    let server = TlsSetup::self_signed("localhost", ALPN).unwrap();
    let other = gossip_tls::unverified_client_config(&[b"other/9"]).unwrap();
    let out = exchange(server.server, Arc::new(other), "localhost").await;
    let err = out.server.unwrap_err().to_string();
    assert!(
        err.contains("peer doesn't support any known protocol"),
        "{err}"
    );
    assert!(out.client.is_err());
}

#[tokio::test]
async fn mtls_with_dev_certs_works_both_ways() {
    let dir = dev_dir(2);
    let one = mtls(&dev_node_files(dir.path(), 1));
    let two = mtls(&dev_node_files(dir.path(), 2));
    assert_eq!(one.mode, TlsMode::Mtls);
    for name in ["localhost", "127.0.0.1", "::1", "node-1", "gossip.test"] {
        let out = exchange(one.server.clone(), two.client.clone(), name).await;
        out.client.unwrap_or_else(|e| panic!("{name}: {e}"));
        let (alpn, client_cert) = out.server.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"gossip/1"[..]));
        assert!(client_cert, "mTLS clients present their certificate");
    }
    let out = exchange(two.server, one.client, "node-2").await;
    out.client.unwrap();
    out.server.unwrap();
}

#[tokio::test]
async fn mtls_client_checks_the_dialed_name() {
    let dir = dev_dir(2);
    let one = mtls(&dev_node_files(dir.path(), 1));
    let two = mtls(&dev_node_files(dir.path(), 2));
    // node-2's certificate does not cover node-1's name.
    let out = exchange(two.server, one.client, "node-1").await;
    let err = out.client.unwrap_err().to_string();
    assert!(
        err.contains("certificate not valid for name \"node-1\""),
        "{err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn mtls_server_refuses_a_client_cert_from_another_ca() {
    let ours = dev_dir(1);
    let theirs = dev_dir(1);
    let server = mtls(&dev_node_files(ours.path(), 1));
    // The intruder trusts our CA (so it accepts our server) but its own
    // certificate was issued by another CA.
    let intruder_files = MtlsFiles {
        ca_cert: ours.path().join("ca.pem"),
        ..dev_node_files(theirs.path(), 1)
    };
    let intruder = mtls(&intruder_files);
    let out = exchange(server.server, intruder.client, "localhost").await;
    let err = out.server.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(out.client.is_err(), "the client never gets an answer");
}

#[tokio::test]
async fn mtls_server_refuses_a_client_without_certificate() {
    let dir = dev_dir(1);
    let server = mtls(&dev_node_files(dir.path(), 1));
    let anonymous = gossip_tls::unverified_client_config(ALPN).unwrap();
    let out = exchange(server.server, Arc::new(anonymous), "localhost").await;
    let err = out.server.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn mtls_client_refuses_a_server_from_another_ca() {
    let ours = dev_dir(1);
    let theirs = dev_dir(1);
    let stranger = mtls(&dev_node_files(theirs.path(), 1));
    let us = mtls(&dev_node_files(ours.path(), 1));
    let out = exchange(stranger.server, us.client, "localhost").await;
    let err = out.client.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(out.server.is_err());
}

#[track_caller]
fn check_load_error(files: &MtlsFiles, path: &Path, expected: &str) {
    let err = TlsSetup::mtls(files, ALPN).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name {}: {text}",
        path.display()
    );
    assert!(text.contains(expected), "{text}");
}

#[test]
fn load_errors_name_the_file() {
    let dir = dev_dir(1);
    let good = dev_node_files(dir.path(), 1);
    let missing = dir.path().join("missing.pem");

    let files = MtlsFiles {
        ca_cert: missing.clone(),
        ..good.clone()
    };
    check_load_error(&files, &missing, "cannot read CA certificate file");
    assert!(matches!(
        TlsSetup::mtls(&files, ALPN),
        Err(TlsError::Read { .. })
    ));

    let files = MtlsFiles {
        cert: missing.clone(),
        ..good.clone()
    };
    check_load_error(&files, &missing, "cannot read certificate file");

    let files = MtlsFiles {
        key: missing.clone(),
        ..good.clone()
    };
    check_load_error(&files, &missing, "cannot read private key file");

    // A certificate file given as key: no key in it.
    let files = MtlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    };
    check_load_error(&files, &good.cert, "invalid private key file");

    // A key file given as CA: no certificate in it.
    let files = MtlsFiles {
        ca_cert: good.key.clone(),
        ..good.clone()
    };
    check_load_error(&files, &good.key, "invalid CA certificate file");

    // A key of another node: rustls refuses the pair.
    let other_dir = dev_dir(1);
    let other = dev_node_files(other_dir.path(), 1);
    let key = std::fs::read(&other.key).unwrap();
    let mismatched = dir.path().join("other-key.pem");
    std::fs::write(&mismatched, key).unwrap();
    let files = MtlsFiles {
        key: mismatched,
        ..good
    };
    assert!(matches!(
        TlsSetup::mtls(&files, ALPN),
        Err(TlsError::Config(_))
    ));
}

#[test]
fn key_errors_do_not_quote_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad-key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nSECRETSECRET!!!$$$\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let certs = dev_dir(1);
    let good = dev_node_files(certs.path(), 1);
    let err = TlsSetup::mtls(
        &MtlsFiles {
            key: key.clone(),
            ..good
        },
        ALPN,
    )
    .unwrap_err();
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(
        !text.contains("SECRET") && !debug.contains("SECRET"),
        "{debug}"
    );
}

#[test]
fn dev_certs_are_written_in_order_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let written = generate_dev_certs(&out, 2, &[]).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "ca.pem",
            "ca-key.pem",
            "node-1.pem",
            "node-1-key.pem",
            "node-2.pem",
            "node-2-key.pem"
        ]
    );
    assert!(written.iter().all(|p| p.starts_with(&out)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in &written {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let key = p.to_str().unwrap().ends_with("-key.pem");
            assert_eq!(mode, if key { 0o600 } else { 0o644 }, "{}", p.display());
        }
    }
    // Regenerating overwrites: the new CA no longer trusts the old nodes.
    let old = std::fs::read(out.join("ca.pem")).unwrap();
    generate_dev_certs(&out, 1, &[]).unwrap();
    assert_ne!(old, std::fs::read(out.join("ca.pem")).unwrap());
}
