//! The keyring routes of the admin API (issue #12): list and change the
//! keyring of every live member with one request.
//!
//! | Route | Body | Answer |
//! |---|---|---|
//! | `GET /keys[?timeout_ms=N]` | | every live member's key ids |
//! | `POST /keys/install` | `{"key": "<base64>", "timeout_ms": N?}` | each member installs the key |
//! | `POST /keys/use` | idem | each member makes the (installed) key its primary |
//! | `POST /keys/remove` | idem | each member removes the key (not its primary) |
//!
//! The answer, [`KeysAnswer`], names every member asked, this one included:
//! the ids of its keys after the operation (`done`), its refusal
//! (`failed`), or `no_answer` within `timeout_ms` (default 5000, at most
//! 60000); and for each key id on how many members it is installed and the
//! primary. It is `200 OK` whether or not every member did it: `complete`
//! says. Keys appear only as ids: a key sent to `install` is never echoed,
//! logged or shown. A node that does not encrypt answers `409 Conflict`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use bytes::Bytes;
use gossip_core::{Key, KeyId, KeyringOp, KeyringOutcome, KeyringReport, Membership, NodeAddr};
use serde::{Deserialize, Serialize};

use super::ApiError;

/// How long a keyring request waits for the members' answers without
/// `timeout_ms`: 5 s.
pub const DEFAULT_KEYS_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `timeout_ms` the keyring routes accept: 60 s.
pub const MAX_KEYS_TIMEOUT: Duration = Duration::from_secs(60);

/// How many members have a key: installed, and as their primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    /// Members that answered and have the key installed.
    pub installed: usize,
    /// Members that answered and seal with it.
    pub primary: usize,
}

/// One member's answer, as JSON: `{"outcome": "done", "keys": [...]}`,
/// `{"outcome": "failed", "error": "..."}` or `{"outcome": "no_answer"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MemberKeys {
    /// Done: the member's key ids after the operation, the primary first.
    Done {
        /// Key ids (16 hex digits each).
        keys: Vec<String>,
    },
    /// The member refused; its keyring is unchanged.
    Failed {
        /// Why.
        error: String,
    },
    /// No answer within the timeout.
    NoAnswer,
}

/// The answer of every keyring route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysAnswer {
    /// Every member asked did it.
    pub complete: bool,
    /// Every member asked, by address.
    pub members: BTreeMap<String, MemberKeys>,
    /// The members that did not answer.
    pub no_answer: Vec<String>,
    /// For each key id, on how many members it is installed and primary.
    pub keys: BTreeMap<String, KeyCount>,
}

impl From<&KeyringReport> for KeysAnswer {
    fn from(r: &KeyringReport) -> Self {
        let ids = |keys: &[KeyId]| keys.iter().map(ToString::to_string).collect();
        Self {
            complete: r.is_complete(),
            members: r
                .members
                .iter()
                .map(|(addr, o)| {
                    let m = match o {
                        KeyringOutcome::Done { keys } => MemberKeys::Done { keys: ids(keys) },
                        KeyringOutcome::Failed { error } => MemberKeys::Failed {
                            error: error.clone(),
                        },
                        KeyringOutcome::NoAnswer => MemberKeys::NoAnswer,
                    };
                    (addr.to_string(), m)
                })
                .collect(),
            no_answer: r.no_answer().into_iter().map(NodeAddr::to_string).collect(),
            keys: r
                .key_counts()
                .into_iter()
                .map(|(id, (installed, primary))| (id.to_string(), KeyCount { installed, primary }))
                .collect(),
        }
    }
}

/// Body of `POST /keys/{install,use,remove}`. `Debug` hides the key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    key: String,
    timeout_ms: Option<u64>,
}

/// Query of `GET /keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    timeout_ms: Option<u64>,
}

fn timeout(ms: Option<u64>) -> Result<Duration, ApiError> {
    match ms {
        None => Ok(DEFAULT_KEYS_TIMEOUT),
        Some(ms) if ms == 0 || Duration::from_millis(ms) > MAX_KEYS_TIMEOUT => {
            Err(ApiError::BadRequest(format!(
                "timeout_ms must be between 1 and {}",
                MAX_KEYS_TIMEOUT.as_millis()
            )))
        }
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

async fn change(
    member: &Arc<dyn Membership>,
    op: KeyringOp,
    timeout: Duration,
) -> Result<Json<KeysAnswer>, ApiError> {
    let report = member.change_keyring(op, timeout).await?;
    Ok(Json(KeysAnswer::from(&report)))
}

pub(super) async fn list(
    State(member): State<Arc<dyn Membership>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    change(&member, KeyringOp::List, timeout(query.timeout_ms)?).await
}

/// The key and the timeout of a `POST /keys/...` body. Error messages never
/// repeat the body: it holds a key.
fn parse(body: Result<Bytes, BytesRejection>) -> Result<(Key, Duration), ApiError> {
    let body = body.map_err(|e| ApiError::Status(e.status(), e.body_text()))?;
    let req: KeyRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid JSON body (expected {{\"key\": \"<base64>\", \"timeout_ms\": N}}) at line {}, column {}",
            e.line(),
            e.column()
        ))
    })?;
    let key = Key::from_base64(&req.key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((key, timeout(req.timeout_ms)?))
}

pub(super) async fn install(
    State(member): State<Arc<dyn Membership>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let (key, t) = parse(body)?;
    change(&member, KeyringOp::Install(key), t).await
}

pub(super) async fn use_key(
    State(member): State<Arc<dyn Membership>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let (key, t) = parse(body)?;
    change(&member, KeyringOp::Use(key), t).await
}

pub(super) async fn remove(
    State(member): State<Arc<dyn Membership>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let (key, t) = parse(body)?;
    change(&member, KeyringOp::Remove(key), t).await
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use gossip_core::{Keyring, MemNetwork, Member as CoreMember, MemberOptions, Sealer};
    use serde_json::json;

    use super::super::router;
    use super::super::tests::{call, pair};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_does_not_encrypt_answers_conflict() {
        let (a, b) = pair().await;
        let app = router(a.clone());
        let (status, answer) = call(&app, Method::GET, "/keys", "").await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("does not encrypt")
        );
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_listed_by_id_and_bad_requests_change_nothing() {
        let key = Key::generate().unwrap();
        let net = MemNetwork::new();
        let options = MemberOptions {
            keyring: Some(Sealer::new(Keyring::new(key.clone()))),
            ..MemberOptions::default()
        };
        let m = CoreMember::new(gossip_core::Config::default(), net.transport(), options).unwrap();
        m.start().await.unwrap();
        let m: Arc<dyn Membership> = Arc::new(m);
        let app = router(m.clone());
        let (status, answer) = call(&app, Method::GET, "/keys?timeout_ms=1000", "").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let id = key.id().to_string();
        assert_eq!(answer["complete"], true);
        assert_eq!(answer["keys"][&id], json!({"installed": 1, "primary": 1}));
        assert!(!answer.to_string().contains(&key.to_base64()));
        let secret = "c2VjcmV0";
        for (body, want) in [
            (json!({"key": secret}).to_string(), "invalid key"),
            (json!({"kee": secret}).to_string(), "invalid JSON body"),
            (format!("{{\"key\": \"{secret}\""), "invalid JSON body"),
            (
                json!({"key": key.to_base64(), "timeout_ms": 0}).to_string(),
                "timeout_ms must be between 1 and 60000",
            ),
        ] {
            let (status, answer) = call(&app, Method::POST, "/keys/install", &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(
                error.starts_with(want) && !error.contains(secret),
                "{error}"
            );
        }
        // Removing the primary: a per-member refusal, not an HTTP error.
        let body = json!({"key": key.to_base64()}).to_string();
        let (status, answer) = call(&app, Method::POST, "/keys/remove", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["complete"], false);
        let me = m.local_id().addr.to_string();
        assert_eq!(answer["members"][&me]["outcome"], "failed");
        assert_eq!(m.key_ids(), Some(vec![key.id()]));
        m.shutdown().await;
    }
}
