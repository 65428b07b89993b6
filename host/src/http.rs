//! The supervisor's HTTP endpoint: `GET /metrics` (Prometheus text) and
//! `GET /healthz`. Deliberately tiny: two read-only routes need no framework.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Serves requests until the task is dropped. Errors on one connection
/// never stop the server.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &metrics).await {
                tracing::debug!("http: {e}");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut request = vec![0u8; 4096];
    let n = stream.read(&mut request).await?;
    let head = String::from_utf8_lossy(&request[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/metrics" => ("200 OK", metrics.render()),
        "/healthz" => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "try /metrics or /healthz\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
