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

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use zookeeper_client as zkc;

use super::HttpState;
use crate::coord::zookeeper::{self, ZkError, ZkSettings};
use crate::ha::Layout;
use crate::savepoint;
use crate::spec::validate_job_name;
use crate::storage::Storage;
use crate::views::{self, SavepointView};

/// How long the API waits for ZooKeeper to answer a connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the cluster for the API: the ZooKeeper settings and storage dir
/// the supervisor runs with, and the API's session once open.
pub struct ClusterReader {
    zk: ZkSettings,
    layout: Layout,
    cluster_id: String,
    storage: Storage,
    client: tokio::sync::Mutex<Option<zkc::Client>>,
}

impl ClusterReader {
    /// A reader of the cluster `cluster_id`, whose znodes `layout` names.
    pub fn new(zk: ZkSettings, layout: Layout, cluster_id: String, storage: Storage) -> ClusterReader {
        ClusterReader {
            zk,
            layout,
            cluster_id,
            storage,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The API's session: the open one, or a new one if it has ended.
    async fn client(&self) -> Result<zkc::Client, ZkError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.state().is_terminated()) {
            return Ok(client.clone());
        }
        let client = zookeeper::connect(&self.zk, CONNECT_TIMEOUT, "the REST API's connect timeout").await?;
        *slot = Some(client.clone());
        Ok(client)
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
fn unavailable(e: ZkError) -> Response {
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
    let read = async {
        let client = reader.client().await?;
        views::read_cluster(&client, &reader.layout, &reader.cluster_id).await
    };
    match read.await {
        Ok(view) => json(StatusCode::OK, &view),
        Err(e) => unavailable(e),
    }
}

async fn jobs(State(state): State<Arc<HttpState>>) -> Response {
    let reader = &state.cluster;
    let read = async {
        let client = reader.client().await?;
        views::read_jobs(&client, &reader.layout).await
    };
    match read.await {
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
        Some(view) => json(StatusCode::OK, &view),
        None => no_job(&name),
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
