//! The multiviewer page: a page served on the daemon's HTTP port, beside
//! `/metrics` and `/healthz`, that master control leaves open all night.
//! It shows the event clock (UTC, the countdown to T0, the time on air);
//! pictures of the programme, the feeds and the slate with a level meter
//! per audio track ([`crate::media::thumbs`]); one tile per leg coloured
//! by its state, with its partner's local time and air time; the as-run
//! tail with the pictures partners got (the visual as-run) and the latest
//! alerts; and master control's buttons for operators ([`control`]).
//!
//! - **Pushed.** `GET /api/web/status` streams the coordinator's snapshots
//!   (the ones `WatchStatus` sends) as server-sent events, one JSON board
//!   each ([`view::board`]). Each page has a task that waits on the
//!   snapshot watch and a 4-deep queue to the browser: a stalled browser
//!   holds only its own task, never the coordinator or another page.
//! - **Signed in.** The page asks for an access token, keeps it in the
//!   tab's session storage and sends it as `authorization: Bearer`, never
//!   in a URL; the check is the gRPC one ([`Tokens::authenticate`]), with
//!   its failed-login guard. Any role may watch; operators and admins get
//!   master control's buttons ([`control`]).
//! - **Offline.** The page is three static files compiled into the
//!   binary; it fetches nothing from anywhere else (its Content Security
//!   Policy says so to the browser).
//! - **TLS.** When the gRPC port has TLS, so does the page: it is served
//!   on its own port (`--web-listen`) with the same certificate, HTTP/2
//!   offered first ([`tls`]), and the plain-HTTP metrics port refuses it
//!   with the reason (a token would cross the network in clear). Without
//!   TLS it is on the metrics port, and on `--web-listen` if given.

pub mod control;
pub mod tls;
pub mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, watch};

use crate::api::auth::{Caller, Tokens};
use crate::coordinator::{Coordinator, Snapshot};

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");

/// Everything the page's first request needs: the page and its two files
/// from here, nothing from anywhere else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob:; \
                      frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Boards a page may have queued before its task waits for the browser.
const PAGE_QUEUE: usize = 4;

#[derive(Clone)]
struct Web {
    tokens: Tokens,
    coordinator: Coordinator,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Set when the daemon stops: every page's stream ends.
    closing: watch::Receiver<bool>,
    /// Cluster mode: a follower's page points at the leader's.
    cluster: Option<crate::cluster::Cluster>,
}

/// The page's routes.
pub fn routes(
    tokens: Tokens,
    coordinator: Coordinator,
    closing: watch::Receiver<bool>,
    cluster: Option<crate::cluster::Cluster>,
) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/web/whoami", get(whoami))
        .route("/api/web/status", get(status))
        .route("/api/web/action", post(action))
        .route("/api/web/thumb/{name}", get(thumb))
        .route("/api/web/asrun", get(asrun))
        .route("/api/web/alerts", get(alerts))
        .route("/api/web/picture/{id}", get(picture))
        .with_state(Web { tokens, snapshots: coordinator.subscribe(), coordinator, closing, cluster })
}

/// The page; on a cluster follower, a redirect to the leader's page
/// (master control and the legs run there).
async fn index(State(web): State<Web>) -> Response {
    if let Some(c) = &web.cluster
        && !c.view().leads()
    {
        let leader = c.other_leader(std::time::Duration::from_millis(500)).await;
        if let Some(page) = leader.and_then(|l| l.page) {
            return axum::response::Redirect::temporary(&page).into_response();
        }
    }
    asset("text/html; charset=utf-8", INDEX)
}

/// Cluster mode, on a node that does not lead: the leader's page, if
/// the leader is known and serves one.
fn leader_page(c: &crate::cluster::Cluster) -> Option<String> {
    let v = c.view();
    if v.leads() {
        return None;
    }
    v.leader.filter(|l| l.name != c.node()).and_then(|l| l.page)
}

/// What the board says of the cluster (absent in single-node mode).
fn cluster_board(c: &crate::cluster::Cluster) -> serde_json::Value {
    let v = c.view();
    serde_json::json!({
        "node": c.node(),
        "leads": v.leads(),
        "leader": v.leader.as_ref().map(|l| l.name.clone()),
        "leader_page": leader_page(c),
    })
}

/// What a plain-HTTP port answers for the page when the gRPC port has
/// TLS: where the page is instead.
pub fn refused_without_tls(web: Option<SocketAddr>) -> Router {
    let text = match web {
        Some(addr) if addr.ip().is_unspecified() => format!(
            "The multiviewer page is not served here: the gRPC port has TLS and this port is plain HTTP, so a token \
             would cross the network in clear. Open https://(this host):{}/ instead.\n",
            addr.port()
        ),
        Some(addr) => format!(
            "The multiviewer page is not served here: the gRPC port has TLS and this port is plain HTTP, so a token \
             would cross the network in clear. Open https://{addr}/ instead.\n"
        ),
        None => "The multiviewer page is not served here: the gRPC port has TLS and this port is plain HTTP, so a \
                 token would cross the network in clear. Serve it over TLS with --web-listen, or watch with \
                 `simulcastctl watch`.\n"
            .to_owned(),
    };
    Router::new().route("/", get(move || async move { (StatusCode::NOT_FOUND, text) }))
}

/// Serves `page` on its own port until `shutdown`: over TLS with
/// `config`, else plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    page: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = page.into_make_service_with_connect_info::<SocketAddr>();
    match config {
        Some(config) => {
            use axum::serve::ListenerExt;
            // `tap_io` only to have the peer's address as the connection's.
            let listener = tls::TlsListener::new(listener, config)?.tap_io(|_| {});
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
    }
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The caller the request's `authorization` header names, or why not.
fn caller(web: &Web, headers: &HeaderMap, peer: SocketAddr) -> Result<Caller, Box<tonic::Status>> {
    let header = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    web.tokens.authenticate(header, Some(peer.ip())).map_err(Box::new)
}

/// The answer to a refusal, in words, with the RPC's code as HTTP's: a
/// login refused is 401 (429 for a peer refused after failing often).
fn refused(s: &tonic::Status) -> Response {
    (control::http_status(s), [(header::CACHE_CONTROL, "no-store")], format!("{}\n", s.message())).into_response()
}

async fn whoami(State(web): State<Web>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    match caller(&web, &headers, peer) {
        Ok(c) => json(&serde_json::json!({ "name": c.name, "role": c.role.as_str() })),
        Err(s) => refused(&s),
    }
}

/// The latest thumbnail of `name` (`program`, `primary`, `backup`,
/// `slate`), JPEG; 404 while there is none.
async fn thumb(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(s) = caller(&web, &headers, peer) {
        return refused(&s);
    }
    let found = web.snapshots.borrow().live.as_ref().and_then(|l| l.thumbnails.as_ref()).and_then(|t| t.get(&name));
    match found {
        Some(t) => (
            [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")],
            Body::from(Bytes::from_owner(t.jpeg)),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no thumbnail of `{}` yet\n", name.escape_debug())).into_response(),
    }
}

/// As-run entries the page shows.
const ASRUN_TAIL: usize = 30;
/// Alerts the page shows.
const ALERTS_TAIL: usize = 10;

/// JSON, not to be cached.
fn json(v: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], v.to_string()).into_response()
}

/// The tail of an event's as-run log (`?event=ev-...`), newest first.
async fn asrun(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(s) = caller(&web, &headers, peer) {
        return refused(&s);
    }
    let raw =
        query.as_deref().unwrap_or_default().split('&').find_map(|kv| kv.strip_prefix("event=")).unwrap_or_default();
    let read = match crate::api::events::event_id(raw) {
        Ok(id) => {
            let log = web.coordinator.asrun_tail(&id.0, ASRUN_TAIL).await;
            let pictures = web.coordinator.asrun_pictures(&id.0).await;
            log.and_then(|l| pictures.map(|p| (l, p))).map_err(tonic::Status::from)
        }
        Err(s) => Err(s),
    };
    match read {
        Ok((log, pictures)) => json(&view::asrun_tail(&log, &pictures, ASRUN_TAIL)),
        Err(s) => refused(&s),
    }
}

/// Picture `id` of the visual as-run, JPEG (a download names its event).
async fn picture(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    if let Err(s) = caller(&web, &headers, peer) {
        return refused(&s);
    }
    match web.coordinator.asrun_picture(id).await.map_err(tonic::Status::from) {
        Ok((event_id, _, jpeg)) => {
            let name = format!("attachment; filename=\"{event_id}-{id}.jpg\"");
            let disposition = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("attachment"));
            let mut r =
                ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpeg).into_response();
            r.headers_mut().insert(header::CONTENT_DISPOSITION, disposition);
            r
        }
        Err(s) => refused(&s),
    }
}

/// The latest alerts, newest first.
async fn alerts(State(web): State<Web>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(s) = caller(&web, &headers, peer) {
        return refused(&s);
    }
    match web.coordinator.alerts(ALERTS_TAIL).await.map_err(tonic::Status::from) {
        Ok(list) => json(&view::alerts(&list)),
        Err(s) => refused(&s),
    }
}

/// Master control: the action in the body, for an operator or admin
/// (see [`control`]); the event's state after it, or the refusal in words.
async fn action(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&web, &headers, peer) {
        Ok(c) => c,
        Err(s) => return refused(&s),
    };
    let done = match control::parse(&body) {
        Ok((id, a)) => control::run(&web.coordinator, &caller, id, a).await,
        Err(s) => Err(s),
    };
    match done {
        Ok(e) => json(&serde_json::json!({ "event_id": e.id.0, "state": e.state.as_str() })),
        Err(s) => refused(&s),
    }
}

/// The boards, pushed: one server-sent event per snapshot, from the
/// latest at once, then each change taken at the page's own offset (see
/// `WATCH_SPREAD`).
async fn status(State(web): State<Web>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(s) = caller(&web, &headers, peer) {
        return refused(&s);
    }
    // From a snapshot with every change the page's user has been answered.
    let mut snapshots = match web.coordinator.subscribe_fresh().await {
        Ok(s) => s,
        // A cluster follower runs no master control: its board (empty, and
        // saying where the leader is) is what it has.
        Err(crate::coordinator::CoordError::Unavailable(_)) if web.cluster.is_some() => web.coordinator.subscribe(),
        Err(e) => return refused(&tonic::Status::from(e)),
    };
    let (tx, rx) = mpsc::channel::<Result<String, Infallible>>(PAGE_QUEUE);
    let Web { mut closing, cluster, .. } = web;
    let offset = crate::api::monitor::next_offset();
    tokio::spawn(async move {
        loop {
            let text = {
                let snap = snapshots.borrow_and_update();
                let mut board = view::board(&snap);
                if let Some(c) = &cluster {
                    board["cluster"] = cluster_board(c);
                }
                format!("data: {board}\n\n")
            };
            tokio::select! {
                sent = tx.send(Ok(text)) => if sent.is_err() { break },
                _ = closing.wait_for(|c| *c) => break,
            }
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { break },
                _ = tx.closed() => break,
                _ = closing.wait_for(|c| *c) => break,
            }
            // As `WatchStatus` streams: each page at its own offset.
            if !crate::api::monitor::after_offset(offset, &mut closing).await {
                break;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
