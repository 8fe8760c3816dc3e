//! `gossip-node members`, `kv` and `broadcast`: commands that talk to a
//! running member's admin API. (Scaffolding: filled in by issue #5.)

use clap::Args;

/// Flags of `gossip-node members`.
#[derive(Clone, Debug, Args)]
pub struct MembersArgs {}

/// Flags of `gossip-node kv`.
#[derive(Clone, Debug, Args)]
pub struct KvArgs {}

/// Flags of `gossip-node broadcast`.
#[derive(Clone, Debug, Args)]
pub struct BroadcastArgs {}

/// Body of `gossip-node members`.
///
/// # Errors
/// Not implemented yet.
pub async fn members(_args: MembersArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// Body of `gossip-node kv`.
///
/// # Errors
/// Not implemented yet.
pub async fn kv(_args: KvArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// Body of `gossip-node broadcast`.
///
/// # Errors
/// Not implemented yet.
pub async fn broadcast(_args: BroadcastArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
