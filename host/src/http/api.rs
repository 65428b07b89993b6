//! The REST API, `/api/v1/...`: JSON, read-only, the same views `weir
//! status`, `weir jobs` and `weir savepoints --output json` print (their
//! field names are stable), plus the checkpoints and attempts this
//! supervisor saw ([`crate::history`]). The cluster is read through a
//! ZooKeeper session of the API's own, opened on first use and again
//! after it ends, so a slow reader never holds up the supervisor's
//! session. Every answer may be read from a page served by another
//! replica (`Access-Control-Allow-Origin: *`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use zookeeper_client as zkc;

use super::HttpState;
use crate::coord::zookeeper::{self, ZkSettings};
use crate::ha::Layout;
use crate::savepoint;
use crate::spec::validate_job_name;
use crate::storage::Storage;
use crate::views::{self, SavepointView};

/// How long the API waits for ZooKeeper to answer a connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after a failed connect the API answers 503 without trying
/// again, so a dashboard polling an unreachable ensemble is told at once.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The API's session, or why the last try to open one failed, and when.
#[derive(Default)]
struct Session {
    client: Option<zkc::Client>,
    failed: Option<(Instant, String)>,
}

/// Reads the cluster for the API: the ZooKeeper settings and storage dir
/// the supervisor runs with, and the API's session once open.
pub struct ClusterReader {
    zk: ZkSettings,
    layout: Layout,
    cluster_id: String,
    storage: Storage,
    session: tokio::sync::Mutex<Session>,
}

impl ClusterReader {
    /// A reader of the cluster `cluster_id`, whose znodes `layout` names.
    pub fn new(zk: ZkSettings, layout: Layout, cluster_id: String, storage: Storage) -> ClusterReader {
        ClusterReader {
            zk,
            layout,
            cluster_id,
            storage,
            session: tokio::sync::Mutex::default(),
        }
    }

    /// The API's session: the open one, or a new one if it has ended
    /// (unless the last try failed under [`RETRY_AFTER`] ago).
    async fn client(&self) -> Result<zkc::Client, String> {
        let mut session = self.session.lock().await;
        if let Some(client) = session.client.as_ref().filter(|c| !c.state().is_terminated()) {
            return Ok(client.clone());
        }
        if let Some((_, why)) = session.failed.as_ref().filter(|(at, _)| at.elapsed() < RETRY_AFTER) {
            return Err(why.clone());
        }
        match zookeeper::connect(&self.zk, CONNECT_TIMEOUT, "the REST API's connect timeout").await {
            Ok(client) => {
                *session = Session {
                    client: Some(client.clone()),
                    failed: None,
                };
                Ok(client)
            }
            Err(e) => {
                let why = e.to_string();
                session.failed = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }
}

pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{name}", get(job))
        .route("/api/v1/jobs/{name}/checkpoints", get(checkpoints))
        .route("/api/v1/jobs/{name}/attempts", get(attempts))
        .route("/api/v1/jobs/{name}/savepoints", get(savepoints))
        .fallback(not_found)
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec_pretty(body).expect("views serialize");
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// An error answer: `{"error": "..."}`, the cause and the fix in one line.
fn error(status: StatusCode, message: String) -> Response {
    #[derive(Serialize)]
    struct ErrorBody {
        error: String,
    }
    json(status, &ErrorBody { error: message })
}

/// ZooKeeper did not answer: 503, since the next try may work.
fn unavailable(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// A 400 saying what job names are, unless `name` is one.
fn refusal(name: &str) -> Option<Response> {
    validate_job_name(name)
        .err()
        .map(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

fn no_job(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no job named `{name}`; GET /api/v1/jobs lists them"),
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; the API is /api/v1/cluster, /api/v1/jobs and /api/v1/jobs/NAME[/checkpoints|/attempts|/savepoints]"
            .into(),
    )
}

async fn cluster(State(state): State<Arc<HttpState>>) -> Response {
    let reader = &state.cluster;
    let client = match reader.client().await {
        Ok(client) => client,
        Err(e) => return unavailable(e),
    };
    match views::read_cluster(&client, &reader.layout, &reader.cluster_id).await {
        Ok(view) => json(StatusCode::OK, &view),
        Err(e) => unavailable(e),
    }
}

async fn jobs(State(state): State<Arc<HttpState>>) -> Response {
    let reader = &state.cluster;
    let client = match reader.client().await {
        Ok(client) => client,
        Err(e) => return unavailable(e),
    };
    match views::read_jobs(&client, &reader.layout).await {
        Ok(views) => json(StatusCode::OK, &views),
        Err(e) => unavailable(e),
    }
}

async fn job(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    if let Some(refused) = refusal(&name) {
        return refused;
    }
    let reader = &state.cluster;
    let client = match reader.client().await {
        Ok(client) => client,
        Err(e) => return unavailable(e),
    };
    match views::read_job(&client, &reader.layout, &name).await {
        Ok(Some(view)) => json(StatusCode::OK, &view),
        Ok(None) => no_job(&name),
        Err(e) => unavailable(e),
    }
}

async fn checkpoints(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    if let Some(refused) = refusal(&name) {
        return refused;
    }
    json(StatusCode::OK, &state.history.checkpoints(&name))
}

async fn attempts(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    if let Some(refused) = refusal(&name) {
        return refused;
    }
    json(StatusCode::OK, &state.history.attempts(&name))
}

async fn savepoints(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    if let Some(refused) = refusal(&name) {
        return refused;
    }
    match savepoint::list(&state.cluster.storage, &name).await {
        Ok(found) => {
            let views: Vec<SavepointView> = found
                .into_iter()
                .map(|(path, manifest)| SavepointView { path, manifest })
                .collect();
            json(StatusCode::OK, &views)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot list savepoints: {e}")),
    }
}
