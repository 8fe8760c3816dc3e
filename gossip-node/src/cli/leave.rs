//! `gossip-node leave`: a running node leaves the cluster gracefully and
//! stops, as on SIGTERM (`POST /leave`).

use std::io::Write as _;

use clap::Args;
use reqwest::Method;

use crate::admin::LeaveAnswer;
use crate::cli::client::{AdminArgs, Api};
use crate::cli::error::ClientError;

/// Flags of `gossip-node leave`.
#[derive(Clone, Debug, Args)]
pub struct LeaveArgs {
    #[command(flatten)]
    /// Where the node's admin API is.
    pub admin: AdminArgs,
}

/// Body of `gossip-node leave`: returns once the node has announced its
/// leave; the node process then stops.
///
/// # Errors
/// As [`crate::cli::client::members`].
pub async fn run(args: LeaveArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.admin.admin)?;
    let url = api.url("/leave")?;
    let answer: LeaveAnswer = api.send(Method::POST, url, Vec::new()).await?;
    writeln!(
        std::io::stdout().lock(),
        "{} left the cluster; it is stopping",
        answer.addr
    )?;
    Ok(())
}
