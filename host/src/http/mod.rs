//! The supervisor's HTTP endpoint, on axum and hyper: the dashboard at
//! `/`, the REST API under `/api/v1/` ([`api`]), `GET /metrics`
//! (OpenMetrics text), `GET /healthz` (200 while the supervisor's
//! ZooKeeper session is connected, 503 otherwise) and `GET /peer`, which
//! the other supervisors hold open to see this process die
//! ([`crate::liveness`]). All of it reads; none of it changes what runs.
//! A client that sends no request in time is dropped, and an accept error
//! never spins the loop.

mod api;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::history::History;
use crate::liveness;
use crate::metrics::Metrics;
pub use api::ClusterReader;

/// The dashboard: one page, its script and style inline, nothing fetched
/// from elsewhere, so it works offline.
const DASHBOARD: &str = include_str!("../../assets/dashboard.html");

/// What the handlers read.
pub struct HttpState {
    /// This supervisor's series.
    pub metrics: Arc<Metrics>,
    /// The recent checkpoints and attempts of the tasks it ran.
    pub history: Arc<History>,
    /// The cluster as ZooKeeper and the storage dir hold it.
    pub cluster: ClusterReader,
    /// What this supervisor answers its peers' liveness connections with.
    pub identity: Bytes,
    /// Liveness connections this endpoint still takes.
    pub peers: Arc<Semaphore>,
}

/// How many liveness connections an endpoint holds at once: far more than
/// a cluster has replicas, few enough that a client cannot pile up
/// never-ending answers.
pub const PEER_CONNECTIONS: usize = 256;

/// How long a client may take to send its request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves requests until the task is dropped. Errors on one connection
/// never stop the server.
pub async fn serve(listener: TcpListener, state: HttpState) {
    let router = api::routes()
        .route("/", get(dashboard))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route(liveness::PATH, get(peer))
        .with_state(Arc::new(state));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("http: cannot accept a connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("http: {e}");
            }
        });
    }
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], DASHBOARD)
}

/// The series, readable by a dashboard served by another replica (the
/// page reads every replica's).
async fn render_metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        state.metrics.render(),
    )
}

/// A peer's liveness connection: held open for as long as this process lives.
async fn peer(State(state): State<Arc<HttpState>>) -> axum::response::Response {
    match state.peers.clone().try_acquire_owned() {
        Ok(permit) => liveness::held_open(state.identity.clone(), permit).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "too many liveness connections\n").into_response(),
    }
}

async fn healthz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.metrics.zookeeper_connected.get() == 1 {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to ZooKeeper\n")
    }
}
