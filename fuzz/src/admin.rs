//! Target `admin`: requests to the admin HTTP API of a running member.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use gossip_core::{Config, MemNetwork, Member, MemberOptions, Membership};
use gossip_node::admin::{Admin, ErrorBody};
use tower::ServiceExt;

/// Largest answer read, in bytes.
const MAX_ANSWER: usize = 4 << 20;

/// A member over an in-memory network, its admin router, and the runtime
/// they run on: current-thread (the member's tasks run only while a
/// request is served) with paused time, so a `POST /join` that waits
/// seconds for seeds that never answer takes no real time. Names in
/// `POST /join` resolve to a loopback address, never through DNS.
pub(crate) struct Api {
    runtime: tokio::runtime::Runtime,
    router: Router,
    /// The member, for the snapshot target's republishing.
    pub(crate) member: Arc<dyn Membership>,
}

thread_local! {
    /// One member per thread, kept across inputs (starting one per input
    /// would be most of the time spent); AFL restarts the process every
    /// few thousand inputs.
    static API: RefCell<Option<Api>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's API (started on first use). `f` returns
/// whether the member must be started afresh next time (it left).
pub(crate) fn with_api<R>(f: impl FnOnce(&Api) -> (R, bool)) -> R {
    API.with(|api| {
        let mut api = api.borrow_mut();
        let (out, restart) = f(api.get_or_insert_with(start));
        if restart {
            *api = None;
        }
        out
    })
}

fn start() -> Api {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let (router, member) = runtime.block_on(async {
        let net = MemNetwork::new();
        let config = Config {
            cluster_id: crate::CLUSTER.to_owned(),
            ..Config::default()
        };
        let member =
            Member::new(config, net.transport(), MemberOptions::default()).expect("a valid config");
        member.start().await.expect("an in-memory member starts");
        let member: Arc<dyn Membership> = Arc::new(member);
        let resolver = |_: &str, port: u16| Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
        let admin = Admin::start(member.clone()).with_resolver(Arc::new(resolver));
        (admin.router(), member)
    });
    Api {
        runtime,
        router,
        member,
    }
}

/// The methods the input's first byte picks from (modulo their number).
const METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
];

/// Byte 0 picks the method; the request target (path and query) runs to
/// the first newline; the rest is the body. A target the `http` crate
/// refuses never reaches our code and is skipped. Every answer that is not
/// a success must be a JSON [`ErrorBody`]. After a successful
/// `POST /leave` (any target whose path is `/leave`) the next input gets a
/// new member.
pub(crate) fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(which) % METHODS.len()].clone();
    let (target, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(request) = Request::builder()
        .method(method)
        .uri(target)
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    // The path the router routes on: the `http` crate drops a fragment
    // (`/leave#x`) and keeps only the path of an absolute target
    // (`http://h/leave`), so the raw target is not what decides.
    let leaves = request.uri().path() == "/leave";
    with_api(|api| {
        let (status, answer) = api.runtime.block_on(async {
            let response = api
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let answer = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
                .await
                .expect("an answer within the limit");
            (status, answer)
        });
        if status != StatusCode::OK {
            let error: Result<ErrorBody, _> = serde_json::from_slice(&answer);
            assert!(
                error.is_ok(),
                "a {status} answer is not a JSON error body: {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        ((), leaves && status == StatusCode::OK)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `POST` whose target the router sees as `/leave` (with a fragment,
    /// or in absolute form) makes the member leave; the next input must get
    /// a new member, not the stopped one (whose `GET /healthz` answers 503
    /// with its health, not an error body). AFL found the fragment form:
    /// `fuzz/corpus/admin/regress-leave-fragment`.
    #[test]
    fn every_target_the_router_sees_as_leave_restarts_the_member() {
        for leave in [
            &b"\x02/leave#"[..],
            b"\x02http://h/leave?x=1",
            b"\x02/leave",
        ] {
            run(leave);
            run(b"\x00/healthz");
            let restarted = with_api(|api| (api.member.members().len(), false));
            assert_eq!(restarted, 1, "{:?}", String::from_utf8_lossy(leave));
        }
    }
}
