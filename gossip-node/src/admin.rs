//! The admin endpoint: JSON over HTTP, for operators, scripts and the demo.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /members[?all=true]` | the live members, this one included (with `all=true` also the dead and left ones still remembered): `[{"addr", "generation", "incarnation", "state", "meta", "version", "last_heard_ms"}]` |
//! | `GET /kv` | every live key grouped by owner: `{"host:port": {"key": {"value", "version", "ttl_ms"}}}` |
//! | `PUT /kv/{key}[?ttl_ms=N]` | sets a key of this member to the request body; `{"key", "version"}` |
//! | `DELETE /kv/{key}` | deletes a key of this member; `{"key", "version"}`, or 404 if absent |
//! | `GET /stats` | message counters: totals, `sent_by_kind` and `received_by_kind` (`{"ping": {"messages", "bytes"}, ...}`), rejections, `send_failures`, `queue_depth`, `probe_rtt` (`{"bounds_us", "counts", "sum_us", "count"}`) |
//! | `GET /peers` | the addresses of the other live members: `["host:port", ...]` |
//! | `POST /gossip` | broadcasts `{"payload": <any JSON>, "ttl": hops?, "uuid": "..."?}` from this member; `{"uuid", "duplicate"}` |
//! | `GET /messages` | the last 1000 broadcasts this member delivered, its own included, newest first: `[{"uuid", "origin", "origin_generation", "version", "ttl", "payload", "encoding", "received_at_ms"}]` |
//! | `GET /metrics` | Prometheus text format (see the `metrics` table below) |
//! | `POST /join` | joins through `{"seeds": ["host:port", ...], "timeout_ms": N?}` now; `{"answered": [...], "unanswered": [...]}` after at most `timeout_ms` (default 5000) |
//! | `GET /meta` | this member's metadata: `{"name": "value", ...}` |
//! | `PUT /meta` | replaces this member's metadata with the body, `{"name": "value", ...}`; the new metadata |
//! | `PATCH /meta` | edits it: `{"set": {"name": "value", ...}?, "unset": ["name", ...]?}`; the new metadata |
//! | `GET /keys[?timeout_ms=N]` | every live member's key ids (issue #12; see the `keys` module) |
//! | `POST /keys/install`, `/keys/use`, `/keys/remove` | changes every live member's keyring: `{"key": "<base64>", "timeout_ms": N?}`; per member its key ids, its refusal or `no_answer` |
//! | `POST /leave` | leaves gracefully and stops, as SIGTERM does; `{"status": "left", "addr"}` once the leave is announced |
//! | `GET /healthz` | `{"status": "ok", "addr", "generation", "members"}`, or 503 with `"status": "stopping"` once shutting down |
//!
//! `POST /gossip` puts the JSON text of `payload` on the wire, so every
//! member's `GET /messages` shows the same JSON value (`"encoding":
//! "json"`); a broadcast whose bytes are not JSON shows as a string
//! (`"encoding": "text"`). `ttl` is the hop limit, 1 to
//! [`MAX_BROADCAST_TTL`] (default: the configured `broadcast_ttl`). A
//! caller-chosen `uuid` makes retries safe: a broadcast id this member has
//! already seen is neither sent nor delivered again, and the answer says
//! `"duplicate": true`.
//!
//! Errors are a 4xx or 5xx status with `{"error": "..."}`; a request that
//! fails changes nothing. The router works over any
//! `Arc<dyn Membership>`, so it serves every transport.
//!
//! # Metrics
//!
//! `GET /metrics` comes from a Prometheus recorder of this member's own
//! (never the global one), filled from [`Membership::stats`] and
//! [`Membership::all_members`] at each scrape:
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `gossip_messages_sent_total`, `gossip_bytes_sent_total` | counter | `kind` |
//! | `gossip_messages_received_total`, `gossip_bytes_received_total` | counter | `kind` |
//! | `gossip_messages_rejected_total` | counter | `reason`: `oversized`, `malformed`, `foreign_cluster`, `decrypt`, `overloaded` |
//! | `gossip_send_failures_total` | counter | |
//! | `gossip_send_refused_total` | counter | |
//! | `gossip_driver_late_wakeups_total` | counter | |
//! | `gossip_driver_max_lateness_seconds` | gauge | |
//! | `gossip_members` | gauge | `state`: `alive`, `suspect`, `dead`, `left` |
//! | `gossip_dissemination_queue_depth` | gauge | |
//! | `gossip_probe_rtt_seconds` | histogram | buckets from 0.5 ms to 5 s |
//! | `gossip_handler_runs_total` | counter | `handler`, `result`: `ok`, `failed`, `timeout` |
//! | `gossip_handler_dropped_total` | counter | `handler` |
//!
//! `kind` is the message kind: `ping`, `ack`, `ping_req`, `sync_request`,
//! `sync_digest`, `delta`, `gossip` (piggybacked updates and broadcasts
//! only) or `sync_buckets`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use gossip_core::{GossipError, Membership};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;
use uuid::Uuid;

use crate::handlers::HandlerStats;
use crate::seeds::{Resolve, SystemResolver};

mod keys;
mod messages;
mod metrics;
mod ops;

pub use keys::{DEFAULT_KEYS_TIMEOUT, KeyCount, KeysAnswer, MAX_KEYS_TIMEOUT, MemberKeys};
pub use messages::{DeliveredMessage, MESSAGE_LOG_CAPACITY, MessageLog};
pub use ops::{DEFAULT_JOIN_TIMEOUT, JoinAnswer, LeaveAnswer, MAX_JOIN_SEEDS, MAX_JOIN_TIMEOUT};

/// Largest `ttl` (hops) `POST /gossip` accepts.
pub const MAX_BROADCAST_TTL: u32 = 64;

/// What every admin request can reach: the member, its message log, its
/// metrics recorder and whether it is shutting down.
#[derive(Clone)]
pub struct AdminState {
    member: Arc<dyn Membership>,
    messages: Arc<MessageLog>,
    metrics: Arc<metrics::Metrics>,
    stopping: Arc<AtomicBool>,
    /// The event handlers' counters, if the member has handlers.
    handlers: Option<Arc<HandlerStats>>,
    /// Resolves seed names of `POST /join`.
    resolver: Arc<dyn Resolve>,
    /// Serializes metadata edits (`PUT` and `PATCH /meta`).
    meta_lock: Arc<tokio::sync::Mutex<()>>,
    /// Set to `true` once `POST /leave` has left the cluster.
    leave: Arc<watch::Sender<bool>>,
    /// Stops the message log's task: on `true`, or once every clone of the
    /// state is gone.
    stop_log: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("member", &self.member.local_id())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl FromRef<AdminState> for Arc<dyn Membership> {
    fn from_ref(state: &AdminState) -> Self {
        state.member.clone()
    }
}

/// The admin endpoint of one member: the state behind its router and the
/// task that records delivered broadcasts for `GET /messages`.
#[derive(Debug)]
pub struct Admin {
    state: AdminState,
    log_task: JoinHandle<()>,
}

impl Admin {
    /// Subscribes to `member`'s events and spawns the task that records its
    /// delivered broadcasts; broadcasts delivered before this call are not
    /// listed.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(member: Arc<dyn Membership>) -> Self {
        Self::with_handlers(member, None)
    }

    /// As [`Admin::start`], and `GET /metrics` also serves the counters of
    /// the member's event handlers.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_handlers(member: Arc<dyn Membership>, handlers: Option<Arc<HandlerStats>>) -> Self {
        let messages = Arc::new(MessageLog::default());
        let (stop_log, stopped) = watch::channel(false);
        let log_task = messages::spawn_recorder(member.as_ref(), messages.clone(), stopped);
        Self {
            state: AdminState {
                member,
                messages,
                metrics: Arc::new(metrics::Metrics::new()),
                handlers,
                resolver: Arc::new(SystemResolver),
                stopping: Arc::new(AtomicBool::new(false)),
                meta_lock: Arc::new(tokio::sync::Mutex::new(())),
                leave: Arc::new(watch::channel(false).0),
                stop_log: Arc::new(stop_log),
            },
            log_task,
        }
    }

    /// `POST /join` resolves seed names through `resolver` (default: the
    /// system's). Call it before [`Admin::router`].
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.state.resolver = resolver;
        self
    }

    /// The router over this endpoint's state; clones serve the same state.
    pub fn router(&self) -> Router {
        routes(self.state.clone())
    }

    /// The broadcasts recorded so far.
    pub fn messages(&self) -> &Arc<MessageLog> {
        &self.state.messages
    }

    /// From now on `GET /healthz` answers 503: the member is shutting down.
    pub fn set_stopping(&self) {
        self.state.stopping.store(true, Ordering::SeqCst);
    }

    /// Resolves once `POST /leave` has left the cluster: the member has
    /// announced its leave and stopped, and whoever runs it should stop the
    /// rest (as on SIGTERM). Never resolves otherwise.
    pub fn leave_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut left = self.state.leave.subscribe();
        async move {
            if left.wait_for(|left| *left).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Marks the endpoint stopping, stops the message log's task and
    /// returns once it has ended.
    pub async fn stop(self) {
        self.set_stopping();
        self.state.stop_log.send_replace(true);
        if let Err(e) = self.log_task.await {
            warn!(error = %e, "message log task ended abnormally");
        }
    }
}

/// The admin API of `member`, for callers that need no handle on it (e.g.
/// tests): its message log's task ends once the router and every clone of
/// it are dropped. [`Admin`] stops the task explicitly instead.
///
/// # Panics
/// Outside a tokio runtime.
pub fn router(member: Arc<dyn Membership>) -> Router {
    let admin = Admin::start(member);
    // Detached: the task ends when the last state clone drops its sender.
    routes(admin.state)
}

fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/members", get(members))
        .route("/kv", get(kv))
        .route("/kv/{*key}", axum::routing::put(put_key).delete(delete_key))
        .route("/stats", get(stats))
        .route("/peers", get(peers))
        .route("/gossip", post(gossip))
        .route("/messages", get(messages))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/join", post(ops::join))
        .route(
            "/meta",
            get(ops::get_meta).put(ops::put_meta).patch(ops::patch_meta),
        )
        .route("/leave", post(ops::leave))
        .route("/keys", get(keys::list))
        .route("/keys/install", post(keys::install))
        .route("/keys/use", post(keys::use_key))
        .route("/keys/remove", post(keys::remove))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

type Member = State<Arc<dyn Membership>>;

/// The answer to `PUT` and `DELETE /kv/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The key.
    pub key: String,
    /// The version of the write or deletion.
    pub version: u64,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// Query of `PUT /kv/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    ttl_ms: Option<u64>,
}

/// Query of `GET /members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    /// Also list tombstones (dead and left members).
    #[serde(default)]
    all: bool,
}

async fn members(
    State(member): Member,
    query: Result<Query<MembersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let list = if query.all {
        member.all_members()
    } else {
        member.members()
    };
    Ok(Json(list).into_response())
}

async fn kv(State(member): Member) -> Response {
    Json(member.kv()).into_response()
}

async fn stats(State(member): Member) -> Response {
    Json(member.stats()).into_response()
}

async fn peers(State(member): Member) -> Response {
    let me = member.local_id().addr;
    let peers: Vec<String> = member
        .members()
        .into_iter()
        .filter(|m| m.addr != me)
        .map(|m| m.addr.to_string())
        .collect();
    Json(peers).into_response()
}

/// Body of `POST /gossip`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GossipRequest {
    /// Any JSON value; `null` counts as missing.
    payload: Option<Value>,
    ttl: Option<u32>,
    uuid: Option<String>,
}

/// The answer to `POST /gossip`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipAnswer {
    /// The broadcast's id.
    pub uuid: Uuid,
    /// True if this member had already seen a broadcast with this id (a
    /// caller-chosen one): nothing was sent or delivered.
    pub duplicate: bool,
}

async fn gossip(
    State(member): Member,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GossipAnswer>, ApiError> {
    let body = body.map_err(|e| ApiError::Status(e.status(), e.body_text()))?;
    let req: GossipRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let payload = req
        .payload
        .ok_or_else(|| ApiError::BadRequest("missing field `payload`".to_owned()))?;
    if let Some(ttl) = req.ttl
        && !(1..=MAX_BROADCAST_TTL).contains(&ttl)
    {
        return Err(ApiError::BadRequest(format!(
            "ttl must be between 1 and {MAX_BROADCAST_TTL} hops, got {ttl}"
        )));
    }
    let uuid = req
        .uuid
        .map(|u| {
            Uuid::parse_str(&u).map_err(|e| ApiError::BadRequest(format!("invalid uuid: {e}")))
        })
        .transpose()?;
    // The JSON text goes on the wire; `GET /messages` parses it back.
    let bytes = Bytes::from(payload.to_string());
    let answer = match uuid {
        Some(uuid) => GossipAnswer {
            uuid,
            duplicate: !member.broadcast_with_id(uuid, bytes, req.ttl)?,
        },
        None => GossipAnswer {
            uuid: member.broadcast(bytes, req.ttl)?,
            duplicate: false,
        },
    };
    Ok(Json(answer))
}

async fn messages(State(state): State<AdminState>) -> Response {
    Json(state.messages.newest_first()).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let text = state.metrics.render(
        &state.member.stats(),
        &state.member.all_members(),
        state.handlers.as_deref(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The answer to `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"`, or `"stopping"` once the member is shutting down (status 503).
    pub status: String,
    /// The member's advertised address.
    pub addr: String,
    /// The member's generation.
    pub generation: u64,
    /// Live members, this one included.
    pub members: usize,
}

async fn healthz(State(state): State<AdminState>) -> Response {
    let stopping = state.stopping.load(Ordering::SeqCst);
    let id = state.member.local_id();
    let health = Health {
        status: if stopping { "stopping" } else { "ok" }.to_owned(),
        addr: id.addr.to_string(),
        generation: id.generation,
        members: state.member.members().len(),
    };
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(health)).into_response()
}

async fn put_key(
    State(member): Member,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<PutQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeyVersion>, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let value = body.map_err(|e| ApiError::Status(e.status(), e.body_text()))?;
    let ttl = match query.ttl_ms {
        Some(0) => return Err(ApiError::BadRequest("ttl_ms must be positive".to_owned())),
        Some(ms) => Some(Duration::from_millis(ms)),
        None => None,
    };
    let version = member.set_key(&key, value, ttl)?;
    Ok(Json(KeyVersion { key, version }))
}

async fn delete_key(
    State(member): Member,
    key: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyVersion>, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match member.delete_key(&key)? {
        Some(version) => Ok(Json(KeyVersion { key, version })),
        None => Err(ApiError::NotFound(format!("no key {key:?}"))),
    }
}

/// Every way an admin request fails; the one place errors become HTTP
/// answers.
#[derive(Debug)]
enum ApiError {
    /// The member refused the command.
    Gossip(GossipError),
    /// Malformed path, query or body.
    BadRequest(String),
    /// Unknown route or key.
    NotFound(String),
    /// A known route with another method.
    MethodNotAllowed,
    /// A status chosen by axum's extractor (e.g. body too large).
    Status(StatusCode, String),
}

impl From<GossipError> for ApiError {
    fn from(e: GossipError) -> Self {
        ApiError::Gossip(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            ApiError::Gossip(e) => {
                let status = match e {
                    GossipError::InvalidKey(_) | GossipError::TooManyMetaEntries(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    GossipError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    GossipError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
                    // Only `Member::new` returns it; no admin command does.
                    GossipError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    // A keyring command to a member that does not encrypt.
                    GossipError::Keyring(gossip_core::KeyringError::NotEnabled) => {
                        StatusCode::CONFLICT
                    }
                    GossipError::Keyring(_) => StatusCode::BAD_REQUEST,
                };
                (status, e.to_string())
            }
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".to_owned(),
            ),
            ApiError::Status(s, m) => (s, m),
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

#[cfg(test)]
mod ops_tests;
#[cfg(test)]
pub(crate) mod tests;
