//! `gossip-node keygen` and `gossip-node keys list|install|use|remove`
//! (issue #12): make a key, and change the keyring of every live member
//! through one running node's admin API (`/keys`).
//!
//! Rotation without downtime:
//!
//! ```sh
//! NEW=$(gossip-node keygen)
//! gossip-node keys install "$NEW"   # every member opens with it too
//! gossip-node keys use "$NEW"       # every member seals with it
//! gossip-node keys remove "$OLD"    # the old key opens nothing any more
//! ```
//!
//! Each command prints one line per member (its key ids, its refusal, or
//! `no answer`) and fails unless every member did it. `KEY` may be `-` to
//! read the key from standard input, so it does not show in the process
//! list.

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use clap::{Args, Subcommand};
use gossip_core::Key;
use reqwest::Method;

use crate::admin::{KeysAnswer, MemberKeys};
use crate::cli::client::{AdminArgs, Api, REQUEST_TIMEOUT, print_answer};
use crate::cli::error::ClientError;

/// Flags of `gossip-node keygen`.
#[derive(Clone, Debug, Args)]
pub struct KeygenArgs {}

/// Prints a new random key (32 bytes from the operating system, standard
/// base64) for `encrypt_key` or `keys install`.
///
/// # Errors
/// [`ClientError::BadInput`] if the operating system gives no random bytes.
pub fn keygen(_args: KeygenArgs) -> Result<(), ClientError> {
    let key = Key::generate().map_err(|e| ClientError::BadInput(e.to_string()))?;
    writeln!(std::io::stdout().lock(), "{}", key.to_base64())?;
    Ok(())
}

/// Flags of `gossip-node keys`.
#[derive(Clone, Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    /// Where the node's admin API is.
    pub admin: AdminArgs,
    /// What to do with every live member's keyring.
    #[command(subcommand)]
    pub op: KeysOp,
    /// How long to wait for the members' answers, ms (default 5000, at
    /// most 60000).
    #[arg(long, value_name = "MS", global = true)]
    pub timeout_ms: Option<u64>,
    /// Print the node's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The keyring operations.
#[derive(Clone, Debug, Subcommand)]
pub enum KeysOp {
    /// List every live member's key ids, and how many members hold each.
    List,
    /// Install KEY on every live member (it opens what they receive).
    Install(KeyArg),
    /// Make the installed KEY every live member's primary (it seals what
    /// they send).
    Use(KeyArg),
    /// Remove KEY from every live member (it must not be a primary).
    Remove(KeyArg),
}

/// The key of an operation.
#[derive(Clone, Args)]
pub struct KeyArg {
    /// The key, standard base64 (`gossip-node keygen`), or `-` to read it
    /// from standard input.
    #[arg(value_name = "KEY")]
    pub key: String,
}

impl std::fmt::Debug for KeyArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyArg(<hidden>)")
    }
}

/// The key given, read from standard input for `-`, checked before it is
/// sent.
fn read_key(arg: &KeyArg) -> Result<Key, ClientError> {
    let text = if arg.key == "-" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line
    } else {
        arg.key.clone()
    };
    Key::from_base64(&text).map_err(|e| ClientError::BadInput(e.to_string()))
}

/// How long the request may take: the members' `timeout_ms` and 5 s for
/// the node itself, and never less than the client's usual limit (a
/// `--timeout-ms` longer than that limit used to end the request before
/// the node's answer).
fn request_timeout(timeout_ms: Option<u64>) -> Duration {
    let members = Duration::from_millis(timeout_ms.unwrap_or(0));
    (members + Duration::from_secs(5)).max(REQUEST_TIMEOUT)
}

/// Body of `gossip-node keys ...`.
///
/// # Errors
/// [`ClientError::BadInput`] for a key that is not one, or if some member
/// did not do it (the lines printed say which); otherwise as
/// [`crate::cli::client::members`].
pub async fn run(args: KeysArgs) -> Result<(), ClientError> {
    let api = Api::with_timeout(&args.admin.admin, request_timeout(args.timeout_ms))?;
    let query = args
        .timeout_ms
        .map_or_else(String::new, |ms| format!("?timeout_ms={ms}"));
    let (path, key) = match &args.op {
        KeysOp::List => ("/keys", None),
        KeysOp::Install(k) => ("/keys/install", Some(read_key(k)?)),
        KeysOp::Use(k) => ("/keys/use", Some(read_key(k)?)),
        KeysOp::Remove(k) => ("/keys/remove", Some(read_key(k)?)),
    };
    let answer: KeysAnswer = match key {
        None => api.get(&format!("{path}{query}")).await?,
        Some(key) => {
            let mut body = serde_json::json!({ "key": key.to_base64() });
            if let Some(ms) = args.timeout_ms {
                body["timeout_ms"] = ms.into();
            }
            let url = api.url(path)?;
            api.send(Method::POST, url, body.to_string().into_bytes())
                .await?
        }
    };
    print_answer(args.json, &answer, |out, answer| write_answer(out, answer))?;
    if !answer.complete {
        let failed = answer
            .members
            .values()
            .filter(|m| matches!(m, MemberKeys::Failed { .. }))
            .count();
        return Err(ClientError::BadInput(format!(
            "not done everywhere: {failed} member(s) refused, {} did not answer",
            answer.no_answer.len()
        )));
    }
    Ok(())
}

/// One line per member, then one per key id.
fn write_answer(out: &mut dyn std::io::Write, answer: &KeysAnswer) -> std::io::Result<()> {
    let total = answer.members.len();
    for (addr, m) in &answer.members {
        match m {
            MemberKeys::Done { keys } => {
                let shown: Vec<String> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        if i == 0 {
                            format!("{k} (primary)")
                        } else {
                            k.clone()
                        }
                    })
                    .collect();
                writeln!(out, "{addr}: {}", shown.join(", "))?;
            }
            MemberKeys::Failed { error } => writeln!(out, "{addr}: refused: {error}")?,
            MemberKeys::NoAnswer => writeln!(out, "{addr}: no answer")?,
        }
    }
    for (id, c) in &answer.keys {
        writeln!(
            out,
            "key {id}: installed on {} of {total} members, primary on {}",
            c.installed, c.primary
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_every_member_and_key() {
        let answer = KeysAnswer {
            complete: false,
            members: [
                (
                    "127.0.0.1:1".to_owned(),
                    MemberKeys::Done {
                        keys: vec!["aa".into(), "bb".into()],
                    },
                ),
                (
                    "127.0.0.1:2".to_owned(),
                    MemberKeys::Failed {
                        error: "key bb is the primary key".into(),
                    },
                ),
                ("127.0.0.1:3".to_owned(), MemberKeys::NoAnswer),
            ]
            .into(),
            no_answer: vec!["127.0.0.1:3".into()],
            keys: [(
                "aa".to_owned(),
                crate::admin::KeyCount {
                    installed: 1,
                    primary: 1,
                },
            )]
            .into(),
        };
        let mut out = Vec::new();
        write_answer(&mut out, &answer).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1:1: aa (primary), bb\n\
             127.0.0.1:2: refused: key bb is the primary key\n\
             127.0.0.1:3: no answer\n\
             key aa: installed on 1 of 3 members, primary on 1\n"
        );
    }

    #[test]
    fn a_bad_key_is_refused_before_anything_is_sent() {
        let err = read_key(&KeyArg {
            key: "c2VjcmV0".into(),
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("invalid key") && !err.contains("c2VjcmV0"),
            "{err}"
        );
    }

    #[test]
    fn the_request_outlasts_the_members_timeout() {
        assert_eq!(request_timeout(None), REQUEST_TIMEOUT);
        assert_eq!(request_timeout(Some(1_000)), REQUEST_TIMEOUT);
        assert_eq!(request_timeout(Some(60_000)), Duration::from_secs(65));
    }
}
