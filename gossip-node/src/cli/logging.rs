//! The tracing subscriber of the binary: logs go to standard error, as
//! readable text or one JSON object per line, filtered by `RUST_LOG`
//! (env-filter syntax, e.g. `info,gossip_core=debug`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG`
/// is unset; an invalid `RUST_LOG` is reported on standard error and
/// replaced by `default_filter`. Does nothing if a subscriber is already
/// installed (e.g. by a test).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("gossip-node: ignoring invalid RUST_LOG {spec:?}: {e}");
            EnvFilter::new(default_filter)
        }),
        _ => EnvFilter::new(default_filter),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // An error only means a subscriber is already installed.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
