//! The observability port: `GET /metrics` (Prometheus text format) and
//! `GET /healthz` (200 `SERVING` or 503 `NOT_SERVING`, the very value the
//! gRPC health service reports, read from the same watch); the multiviewer
//! page ([`crate::web`]) is served beside them.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::{CONTENT_TYPE, Metrics};

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    serving: watch::Receiver<bool>,
}

/// Serves `/metrics` and `/healthz`, and `more` (the multiviewer page), on
/// `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    serving: watch::Receiver<bool>,
    more: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(Shared { metrics, serving })
        .merge(more);
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_page(State(s): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], s.metrics.render())
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    if *s.serving.borrow() { (StatusCode::OK, "SERVING\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n") }
}
