//! `gossip-node simulate`: the deterministic simulator from the command
//! line. (Scaffolding: filled in by issue #4.)

use clap::Args;

/// Flags of `gossip-node simulate`.
#[derive(Clone, Debug, Args)]
pub struct SimulateArgs {}

/// Body of `gossip-node simulate`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
