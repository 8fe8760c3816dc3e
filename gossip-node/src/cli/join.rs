//! `gossip-node join ADDR...`: a running node joins through these addresses
//! now (`POST /join`), and says which answered.

use std::io::Write as _;

use clap::Args;
use reqwest::Method;

use crate::admin::JoinAnswer;
use crate::cli::client::{AdminArgs, Api, pretty};
use crate::cli::error::ClientError;

/// Flags of `gossip-node join`.
#[derive(Clone, Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    /// Where the node's admin API is.
    pub admin: AdminArgs,
    /// Members to join through, HOST:PORT.
    #[arg(required = true, value_name = "ADDR")]
    pub addrs: Vec<String>,
    /// How long to wait for the addresses to answer, ms (default 5000, at
    /// most 60000). Those that do not stay seeds, retried with backoff.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Print the node's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Body of `gossip-node join`: one line per address, `answered` or
/// `no answer`.
///
/// # Errors
/// [`ClientError::Refused`] for a bad address (nothing joined);
/// [`ClientError::BadInput`] if no address answered; otherwise as
/// [`crate::cli::client::members`].
pub async fn run(args: JoinArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.admin.admin)?;
    let mut body = serde_json::json!({ "seeds": args.addrs });
    if let Some(ms) = args.timeout_ms {
        body["timeout_ms"] = ms.into();
    }
    let url = api.url("/join")?;
    let answer: JoinAnswer = api
        .send(Method::POST, url, body.to_string().into_bytes())
        .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            pretty(&serde_json::to_value(&answer).unwrap_or_default())
        )?;
    } else {
        for a in &answer.answered {
            writeln!(out, "{a}: answered")?;
        }
        for a in &answer.unanswered {
            writeln!(out, "{a}: no answer (kept as a seed, retried)")?;
        }
    }
    if answer.answered.is_empty() {
        return Err(ClientError::BadInput(format!(
            "none of {} address(es) answered",
            answer.unanswered.len()
        )));
    }
    Ok(())
}
