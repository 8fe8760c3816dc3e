//! The run-time operations of the admin API (issue #11): join through
//! addresses now, replace or edit this member's metadata, leave.
//!
//! | Route | Body | Answer |
//! |---|---|---|
//! | `POST /join` | `{"seeds": ["host:port", ...], "timeout_ms": N?}` | `{"answered": [...], "unanswered": [...]}` |
//! | `GET /meta` | | this member's metadata, `{"name": "value", ...}` |
//! | `PUT /meta` | `{"name": "value", ...}` | the new metadata (replaces all of it) |
//! | `PATCH /meta` | `{"set": {"name": "value"}?, "unset": ["name"]?}` | the new metadata |
//! | `POST /leave` | | `{"status": "left", "addr"}` once the leave is announced |
//!
//! A request is checked whole before anything changes: one bad address,
//! an empty name, a name both set and unset, or metadata over
//! [`MAX_META_ENTRIES`](gossip_core::MAX_META_ENTRIES) entries or
//! [`MAX_META_BYTES`](gossip_core::MAX_META_BYTES) bytes is a 4xx answer
//! with `{"error"}` and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use bytes::Bytes;
use gossip_core::{Membership, NodeAddr};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use tracing::{info, warn};

use super::{AdminState, ApiError};
use crate::seeds::resolve_now;

/// How long `POST /join` waits for the seeds to answer without
/// `timeout_ms`: 5 s.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `timeout_ms` `POST /join` accepts: 60 s.
pub const MAX_JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Most addresses in one `POST /join`.
pub const MAX_JOIN_SEEDS: usize = 64;

/// Body of `POST /join`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    seeds: Vec<String>,
    timeout_ms: Option<u64>,
}

/// The answer to `POST /join`: which of the addresses answered within the
/// wait (they are live members now; a `name:port` seed answered if one of
/// the name's addresses did) and which did not. Those that did not
/// stay recorded as seeds and are retried with backoff (see
/// [`Membership::add_seed`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// The addresses that are live members, in the order given.
    pub answered: Vec<String>,
    /// The addresses that did not answer in time, in the order given.
    pub unanswered: Vec<String>,
}

/// Body of `PATCH /meta`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaPatch {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
}

/// The answer to `POST /leave`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveAnswer {
    /// `"left"`: the leave was announced and the member has stopped.
    pub status: String,
    /// The member's advertised address.
    pub addr: String,
}

/// The JSON body as `T`, or a 400 naming what is wrong.
fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::Status(e.status(), e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body (expected {shape}): {e}")))
}

pub(super) async fn join(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<JoinAnswer>, ApiError> {
    let req: JoinRequest = parse_body(body, r#"{"seeds": ["host:port", ...], "timeout_ms": N}"#)?;
    if req.seeds.is_empty() {
        return Err(ApiError::BadRequest("`seeds` is empty".to_owned()));
    }
    if req.seeds.len() > MAX_JOIN_SEEDS {
        return Err(ApiError::BadRequest(format!(
            "{} seeds, more than the limit of {MAX_JOIN_SEEDS}",
            req.seeds.len()
        )));
    }
    let timeout = match req.timeout_ms {
        None => DEFAULT_JOIN_TIMEOUT,
        Some(ms) if ms == 0 || Duration::from_millis(ms) > MAX_JOIN_TIMEOUT => {
            return Err(ApiError::BadRequest(format!(
                "timeout_ms must be between 1 and {}",
                MAX_JOIN_TIMEOUT.as_millis()
            )));
        }
        Some(ms) => Duration::from_millis(ms),
    };
    let addrs = req
        .seeds
        .iter()
        .map(|s| {
            NodeAddr::parse(s.trim()).map_err(|e| {
                ApiError::BadRequest(format!("invalid seed address {:?}: {}", e.addr, e.why))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let member = &state.member;
    if state.stopping.load(Ordering::SeqCst) {
        return Err(ApiError::Gossip(gossip_core::GossipError::ShutDown));
    }
    info!(seeds = ?req.seeds, "joining through the admin API");
    let deadline = tokio::time::Instant::now() + timeout;
    // Each seed with the addresses it stands for (a name: all of its own).
    let mut targets = Vec::new();
    for seed in addrs {
        let resolved = match resolve_now(state.resolver.as_ref(), &seed).await {
            Ok(resolved) => resolved,
            Err(e) => {
                warn!(%seed, error = %e, "cannot resolve a seed of POST /join");
                Vec::new()
            }
        };
        for a in &resolved {
            member.add_seed(a.clone());
        }
        targets.push((seed, resolved));
    }
    loop {
        let live = live_addrs(member.as_ref());
        let (answered, unanswered): (Vec<_>, Vec<_>) = targets
            .iter()
            .partition(|(_, resolved)| resolved.iter().any(|a| live.contains(a)));
        if unanswered.is_empty() || tokio::time::Instant::now() >= deadline {
            let text = |v: Vec<&(NodeAddr, Vec<NodeAddr>)>| {
                v.into_iter().map(|(seed, _)| seed.to_string()).collect()
            };
            return Ok(Json(JoinAnswer {
                answered: text(answered),
                unanswered: text(unanswered),
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn live_addrs(member: &dyn Membership) -> std::collections::BTreeSet<NodeAddr> {
    member.members().into_iter().map(|m| m.addr).collect()
}

/// This member's own metadata, as the cluster sees it.
fn own_meta(member: &dyn Membership) -> BTreeMap<String, String> {
    let me = member.local_id();
    member
        .all_members()
        .into_iter()
        .find(|m| m.id() == me)
        .map(|m| m.meta)
        .unwrap_or_default()
}

/// Refuses empty names: a `name=value` entry needs a name.
fn check_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
    if names.into_iter().any(String::is_empty) {
        return Err(ApiError::BadRequest(
            "a metadata name must not be empty".to_owned(),
        ));
    }
    Ok(())
}

pub(super) async fn get_meta(State(state): State<AdminState>) -> Json<BTreeMap<String, String>> {
    Json(own_meta(state.member.as_ref()))
}

pub(super) async fn put_meta(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let meta: BTreeMap<String, String> =
        parse_body(body, r#"an object of strings, {"name": "value", ...}"#)?;
    check_names(meta.keys())?;
    let _writing = state.meta_lock.lock().await;
    state.member.set_meta(meta.clone())?;
    info!(
        entries = meta.len(),
        "metadata replaced through the admin API"
    );
    Ok(Json(meta))
}

pub(super) async fn patch_meta(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let patch: MetaPatch = parse_body(
        body,
        r#"{"set": {"name": "value", ...}, "unset": ["name", ...]}"#,
    )?;
    check_names(patch.set.keys().chain(&patch.unset))?;
    if let Some(both) = patch.unset.iter().find(|k| patch.set.contains_key(*k)) {
        return Err(ApiError::BadRequest(format!(
            "{both:?} is both set and unset"
        )));
    }
    // One edit at a time: two concurrent patches both land.
    let _writing = state.meta_lock.lock().await;
    let mut meta = own_meta(state.member.as_ref());
    meta.extend(patch.set);
    for name in &patch.unset {
        meta.remove(name);
    }
    state.member.set_meta(meta.clone())?;
    info!(
        entries = meta.len(),
        "metadata edited through the admin API"
    );
    Ok(Json(meta))
}

pub(super) async fn leave(State(state): State<AdminState>) -> Json<LeaveAnswer> {
    info!("leaving the cluster: POST /leave");
    state.stopping.store(true, Ordering::SeqCst);
    let addr = state.member.local_id().addr.to_string();
    state.member.shutdown().await;
    state.leave.send_replace(true);
    Json(LeaveAnswer {
        status: "left".to_owned(),
        addr,
    })
}
