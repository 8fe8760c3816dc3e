//! `gossip-node certs`: a development CA and node certificates for
//! `tls = "mtls"`, written by [`gossip_tls::generate_dev_certs`].
//!
//! For development and tests: the CA's private key is written next to the
//! certificates. In production, sign node certificates with a CA whose key
//! never reaches the members.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use gossip_tls::MtlsFiles;
use gossip_tls::TlsError;

/// Flags of `gossip-node certs`.
#[derive(Clone, Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into; created if missing, files of the same names
    /// are overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Number of node certificates.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub nodes: u16,

    /// A host name or IP address (without port) every node certificate is
    /// valid for, besides localhost, 127.0.0.1, ::1 and node-N: the host
    /// part of the members' advertised addresses. Repeat for several.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

/// Writes the CA and node certificates `args` asks for and returns the text
/// to print: the paths written and a config snippet that uses them.
///
/// # Errors
/// [`TlsError::Write`] naming the file or directory that could not be
/// written, [`TlsError::Generate`] for a host that is not a valid DNS name
/// or IP address.
pub fn run(args: &CertsArgs) -> Result<String, TlsError> {
    // Absolute, so that the printed snippet works from any directory.
    let dir = std::path::absolute(&args.out).map_err(|source| TlsError::Write {
        path: args.out.clone(),
        source,
    })?;
    let nodes = usize::from(args.nodes);
    let written = gossip_tls::generate_dev_certs(&dir, nodes, &args.hosts)?;
    Ok(report(&dir, nodes, &args.hosts, &written))
}

/// What [`run`] prints.
fn report(dir: &Path, nodes: usize, hosts: &[String], written: &[PathBuf]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Wrote a development CA and {nodes} node certificate{} to {}:",
        if nodes == 1 { "" } else { "s" },
        dir.display()
    );
    let width = written
        .iter()
        .map(|p| p.display().to_string().len())
        .max()
        .unwrap_or(0);
    for (i, path) in written.iter().enumerate() {
        let what = match i {
            0 => "CA certificate: give it to every member".to_owned(),
            1 => "CA private key: keep it off the members".to_owned(),
            _ if i % 2 == 0 => format!("node {} certificate", i / 2),
            _ => format!("node {} private key", i / 2),
        };
        let _ = writeln!(out, "  {:<width$}  {what}", path.display().to_string());
    }
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    names.extend(hosts.iter().map(String::as_str));
    let _ = writeln!(
        out,
        "\nNode certificates are valid for {} (and node N for the name node-N): \
         members must advertise one of these hosts.",
        names.join(", ")
    );
    let _ = writeln!(
        out,
        "\nTo run node 1 with mutual TLS, add to its config file (node N: node-N.pem and \
         node-N-key.pem),\nor pass --tls mtls --tls-ca FILE --tls-cert FILE --tls-key FILE:\n"
    );
    out.push_str(&mtls_toml(&gossip_tls::dev_node_files(dir, 1)));
    out
}

/// The config-file lines that select mutual TLS with `files`.
pub fn mtls_toml(files: &MtlsFiles) -> String {
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    format!(
        "tls = \"mtls\"\ntls_ca = {}\ntls_cert = {}\ntls_key = {}\n",
        quote(&files.ca_cert),
        quote(&files.cert),
        quote(&files.key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, NodeConfig, RunArgs};
    use gossip_tls::TlsConfig;

    #[test]
    fn writes_files_and_a_snippet_that_configures_mtls() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a \"quoted\" dir");
        let text = run(&CertsArgs {
            out: out.clone(),
            nodes: 2,
            hosts: vec!["gossip.internal".to_owned()],
        })
        .unwrap();
        for name in [
            "ca.pem",
            "ca-key.pem",
            "node-1.pem",
            "node-1-key.pem",
            "node-2.pem",
            "node-2-key.pem",
        ] {
            let path = out.join(name);
            assert!(path.is_file(), "{name} missing");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
        assert!(text.contains("gossip.internal"), "{text}");
        assert!(
            !text.contains("PRIVATE KEY"),
            "key material printed:\n{text}"
        );

        // The snippet, as printed, selects mutual TLS with node 1's files.
        let snippet = &text[text.find("tls = \"mtls\"").unwrap()..];
        let file = FileConfig::parse(snippet, Path::new("snippet.toml")).unwrap();
        let args = RunArgs {
            listen: Some("127.0.0.1:0".to_owned()),
            ..RunArgs::default()
        };
        let config = NodeConfig::merge(&args, file).unwrap();
        assert_eq!(
            config.tls,
            TlsConfig::Mtls(gossip_tls::dev_node_files(&out, 1))
        );
    }

    #[test]
    fn an_invalid_host_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = run(&CertsArgs {
            out: tmp.path().to_owned(),
            nodes: 1,
            hosts: vec!["hôte.example".to_owned()],
        });
        assert!(err.is_err(), "{err:?}");
    }
}
