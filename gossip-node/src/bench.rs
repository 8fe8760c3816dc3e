//! `gossip-node bench`: real processes on loopback. (Scaffolding: filled in
//! by issue #4.)

use clap::Args;

/// Flags of `gossip-node bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {}

/// Body of `gossip-node bench`.
///
/// # Errors
/// Not implemented yet.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
