//! `gossip-node meta [set NAME=VALUE... | unset NAME...]`: show or edit a
//! running node's metadata (`GET` and `PATCH /meta`); every member sees the
//! change.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use reqwest::Method;

use crate::cli::client::{AdminArgs, Api, print_answer};
use crate::cli::error::ClientError;

/// Flags of `gossip-node meta`.
#[derive(Clone, Debug, Args)]
pub struct MetaArgs {
    #[command(flatten)]
    /// Where the node's admin API is.
    pub admin: AdminArgs,
    /// Print the metadata as JSON instead of NAME=VALUE lines.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do; nothing shows the metadata.
    #[command(subcommand)]
    pub op: Option<MetaOp>,
}

/// The `meta` operations.
#[derive(Clone, Debug, Subcommand)]
pub enum MetaOp {
    /// Set entries, keeping the others.
    Set {
        /// Entries NAME=VALUE.
        #[arg(required = true, value_name = "NAME=VALUE")]
        entries: Vec<String>,
    },
    /// Remove entries, keeping the others.
    Unset {
        /// Names to remove.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// Body of `gossip-node meta`: prints the node's metadata after the change
/// (if any), one `NAME=VALUE` per line.
///
/// # Errors
/// [`ClientError::BadInput`] for an entry that is not NAME=VALUE;
/// [`ClientError::Refused`] if the node refuses (e.g. over its limits:
/// nothing changed); otherwise as [`crate::cli::client::members`].
pub async fn run(args: MetaArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.admin.admin)?;
    let meta: BTreeMap<String, String> = match args.op {
        None => api.get("/meta").await?,
        Some(op) => {
            let body = match op {
                MetaOp::Set { entries } => {
                    let set = entries
                        .iter()
                        .map(|e| match e.split_once('=') {
                            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                            _ => Err(ClientError::BadInput(format!("{e:?} is not NAME=VALUE"))),
                        })
                        .collect::<Result<BTreeMap<_, _>, _>>()?;
                    serde_json::json!({ "set": set })
                }
                MetaOp::Unset { names } => serde_json::json!({ "unset": names }),
            };
            let url = api.url("/meta")?;
            api.send(Method::PATCH, url, body.to_string().into_bytes())
                .await?
        }
    };
    print_answer(args.json, &meta, |out, meta| {
        for (k, v) in meta {
            writeln!(out, "{k}={v}")?;
        }
        Ok(())
    })
}
