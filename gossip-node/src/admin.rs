//! The admin endpoint: JSON over HTTP, for operators, scripts and the demo.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /members` | the live members, this one included: `[{"addr", "generation", "incarnation", "state", "meta", "version", "last_heard_ms"}]` |
//! | `GET /kv` | every live key grouped by owner: `{"host:port": {"key": {"value", "version", "ttl_ms"}}}` |
//! | `PUT /kv/{key}[?ttl_ms=N]` | sets a key of this member to the request body; `{"key", "version"}` |
//! | `DELETE /kv/{key}` | deletes a key of this member; `{"key", "version"}`, or 404 if absent |
//! | `GET /stats` | message counters |
//!
//! Errors are a 4xx or 5xx status with `{"error": "..."}`; a request that
//! fails changes nothing. The router works over any
//! `Arc<dyn Membership>`, so it serves every transport.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use gossip_core::{GossipError, Membership};
use serde::{Deserialize, Serialize};

/// The admin API of `member`.
pub fn router(member: Arc<dyn Membership>) -> Router {
    Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/members", get(members))
        .route("/kv", get(kv))
        .route("/kv/{*key}", axum::routing::put(put_key).delete(delete_key))
        .route("/stats", get(stats))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(member)
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

async fn members(State(member): Member) -> Response {
    Json(member.members()).into_response()
}

async fn kv(State(member): Member) -> Response {
    Json(member.kv()).into_response()
}

async fn stats(State(member): Member) -> Response {
    Json(member.stats()).into_response()
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
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use gossip_core::{Config, MemNetwork, Member as CoreMember, MemberOptions};
    use serde_json::Value;
    use tower::ServiceExt;

    async fn member() -> Arc<dyn Membership> {
        let net = MemNetwork::new();
        let m =
            CoreMember::new(Config::default(), net.transport(), MemberOptions::default()).unwrap();
        m.start().await.unwrap();
        Arc::new(m)
    }

    async fn call(app: &Router, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {bytes:?}"));
        (status, json)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_then_get_kv() {
        let m = member().await;
        let me = m.local_id().addr.to_string();
        let app = router(m.clone());
        let (status, put) = call(&app, Method::PUT, "/kv/greeting", "hello").await;
        assert_eq!(status, StatusCode::OK, "{put}");
        assert_eq!(put["key"], "greeting");
        let version = put["version"].as_u64().unwrap();
        let (status, kv) = call(&app, Method::GET, "/kv", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(kv[&me]["greeting"]["value"], "hello", "{kv}");
        assert_eq!(kv[&me]["greeting"]["version"], version, "{kv}");
        assert_eq!(kv[&me]["greeting"]["ttl_ms"], Value::Null, "{kv}");

        let (status, put) = call(&app, Method::PUT, "/kv/temp?ttl_ms=60000", "x").await;
        assert_eq!(status, StatusCode::OK, "{put}");
        let (_, kv) = call(&app, Method::GET, "/kv", "").await;
        let ttl = kv[&me]["temp"]["ttl_ms"].as_u64().unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{kv}");

        let (status, del) = call(&app, Method::DELETE, "/kv/greeting", "").await;
        assert_eq!(status, StatusCode::OK, "{del}");
        assert!(del["version"].as_u64().unwrap() > version, "{del}");
        let (_, kv) = call(&app, Method::GET, "/kv", "").await;
        assert!(kv[&me].get("greeting").is_none(), "{kv}");
        m.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_missing_key_is_404_json() {
        let m = member().await;
        let app = router(m.clone());
        let (status, body) = call(&app, Method::DELETE, "/kv/nope", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no key \"nope\"");
        m.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_contains_self() {
        let m = member().await;
        let me = m.local_id();
        let app = router(m.clone());
        let (status, body) = call(&app, Method::GET, "/members", "").await;
        assert_eq!(status, StatusCode::OK);
        let list = body.as_array().unwrap();
        let own = list
            .iter()
            .find(|x| x["addr"] == me.addr.as_str())
            .unwrap_or_else(|| panic!("self missing from {body}"));
        assert_eq!(own["generation"], me.generation);
        assert_eq!(own["state"], "alive");
        for field in ["incarnation", "meta"] {
            assert!(own.get(field).is_some(), "{field} missing from {own}");
        }
        m.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_requests_are_json_4xx_and_change_nothing() {
        let m = member().await;
        let app = router(m.clone());
        let long = format!("/kv/{}", "k".repeat(300));
        let too_big = "v".repeat(200 * 1024);
        for (method, uri, body, want) in [
            (
                Method::PUT,
                "/kv/a?ttl_ms=abc",
                "v",
                StatusCode::BAD_REQUEST,
            ),
            (Method::PUT, "/kv/a?ttl_ms=0", "v", StatusCode::BAD_REQUEST),
            (Method::PUT, "/kv/a?other=1", "v", StatusCode::BAD_REQUEST),
            (Method::PUT, long.as_str(), "v", StatusCode::BAD_REQUEST),
            (
                Method::PUT,
                "/kv/big",
                too_big.as_str(),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (Method::GET, "/nowhere", "", StatusCode::NOT_FOUND),
            (Method::POST, "/members", "", StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let (status, json) = call(&app, method.clone(), uri, body).await;
            assert_eq!(status, want, "{method} {uri}: {json}");
            assert!(json["error"].is_string(), "{method} {uri}: {json}");
        }
        let (_, kv) = call(&app, Method::GET, "/kv", "").await;
        let me = m.local_id().addr.to_string();
        assert!(
            kv.get(&me)
                .is_none_or(|keys| keys.as_object().unwrap().is_empty()),
            "{kv}"
        );
        m.shutdown().await;
    }
}
