//! The live web dashboard: `GET /` on the admin endpoint.
//!
//! One HTML page, embedded in the binary (`dashboard/index.html`), with its
//! CSS and JavaScript inline: no build step, nothing fetched from elsewhere.
//! The page polls the same origin about once a second (`GET /members`,
//! `GET /kv`, `GET /messages`) and draws a table of every live member (state,
//! incarnation, generation, metadata, keys with their versions, time since
//! last heard) and a panel of recent broadcasts. An endpoint that is missing
//! (404) shows as empty; an unreachable node shows as an error in the status
//! line, and the page keeps polling.
//!
//! For tests and scripts, every member row carries `data-member="host:port"`
//! and `data-state="alive|suspect|dead|left"`, and the status line
//! (`id="status"`) carries `data-members` (the row count) and `data-ok`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use gossip_core::Membership;

/// The page, with [`NODE_PLACEHOLDER`] and [`GENERATION_PLACEHOLDER`] still in
/// it.
const PAGE: &str = include_str!("dashboard/index.html");
/// Replaced by the member's advertised address (HTML-escaped).
const NODE_PLACEHOLDER: &str = "{{NODE_ADDR}}";
/// Replaced by the member's generation.
const GENERATION_PLACEHOLDER: &str = "{{NODE_GENERATION}}";

/// `GET /`: the dashboard of `member`, as `text/html`, naming the member it
/// is served by. The page is never cached, so a reload after a restart shows
/// the new generation.
pub async fn page(State(member): State<Arc<dyn Membership>>) -> impl IntoResponse {
    let id = member.local_id();
    let html = render(id.addr.as_str(), id.generation);
    ([(header::CACHE_CONTROL, "no-store")], Html(html))
}

/// The page for the member at `addr` with `generation`.
fn render(addr: &str, generation: u64) -> String {
    PAGE.replace(NODE_PLACEHOLDER, &escape_html(addr))
        .replace(GENERATION_PLACEHOLDER, &generation.to_string())
}

/// `text` safe to place in HTML text or a quoted attribute.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use gossip_core::{Config, MemNetwork, Member, MemberOptions};
    use tower::ServiceExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn root_serves_the_dashboard_naming_this_member() {
        let net = MemNetwork::new();
        let m = Member::new(Config::default(), net.transport(), MemberOptions::default()).unwrap();
        m.start().await.unwrap();
        let m: Arc<dyn Membership> = Arc::new(m);
        let id = m.local_id();
        let app = crate::admin::router(m.clone());
        let req = Request::builder().uri("/").body(Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let html = std::str::from_utf8(&bytes).unwrap();
        for marker in [
            "<!doctype html>",
            "id=\"members\"",
            "id=\"status\"",
            "id=\"broadcasts\"",
            "fetch(",
            "/members",
            "/kv",
            "/messages",
            "data-member",
        ] {
            assert!(html.contains(marker), "{marker} missing from the page");
        }
        assert!(
            html.contains(&format!("content=\"{}\"", id.addr.as_str())),
            "the page does not name {}",
            id.addr.as_str()
        );
        assert!(html.contains(&format!("data-generation=\"{}\"", id.generation)));
        assert!(!html.contains("{{"), "a placeholder was left in the page");
        // Nothing is loaded from another origin.
        for external in ["http://", "https://", "//cdn", "<link", "src="] {
            assert!(!html.contains(external), "{external} in the page");
        }
        m.shutdown().await;
    }

    #[test]
    fn addresses_are_escaped() {
        let html = render("<x>&\"'", 7);
        assert!(html.contains("&lt;x&gt;&amp;&quot;&#39;"));
        assert!(!html.contains("<x>"));
    }
}
