//! `gossip-node run`: one member until SIGINT or SIGTERM. Its flags are
//! [`crate::config::RunArgs`], owned by [`crate::config`] because every flag is also a key
//! of the config file.

use tracing::info;

use crate::cli::signals::Signals;
use crate::config::{NodeConfig, TlsKind};
use crate::error::NodeError;
use crate::node::start;

/// The body of `gossip-node run`: starts the member, logs one line with its
/// addresses, transport and TLS mode (never certificate or key contents),
/// waits for SIGINT or SIGTERM, then leaves gracefully; or stops once
/// `POST /leave` has left the cluster.
///
/// # Errors
/// As [`crate::node::start`], and [`NodeError::Signal`] if the signal handlers cannot be
/// installed (checked before the member starts).
pub async fn run_until_signal(config: NodeConfig) -> Result<(), NodeError> {
    let mut signals = Signals::new().map_err(NodeError::Signal)?;
    let node = start(&config).await?;
    let admin = node
        .admin_addr()
        .map_or_else(|| "none".to_owned(), |a| a.to_string());
    info!(
        listen = %node.listen_addr(),
        advertise = %node.advertise_addr(),
        admin = %admin,
        transport = %config.transport,
        tls = %TlsKind::of(&config.tls),
        cluster_id = %config.protocol.cluster_id,
        seeds = config.seeds.len(),
        "gossip-node started: listening on {} ({}, TLS {}), admin on {admin}",
        node.listen_addr(),
        config.transport,
        TlsKind::of(&config.tls),
    );
    let left = node.leave_requested();
    tokio::select! {
        signal = signals.recv() => info!(signal, "leaving the cluster"),
        () = left => info!("left the cluster (POST /leave); stopping"),
    }
    node.shutdown().await;
    info!("gossip-node stopped");
    Ok(())
}
