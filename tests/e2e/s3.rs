//! A real S3-compatible server for the tests: `s3s-fs` (installed by
//! `scripts/setup`) on a free loopback port, serving a temp dir in which
//! each bucket is a subdirectory. It checks request signatures and honours
//! `If-None-Match: *`, which weir's create-only writes rely on.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::{free_port, installed, wait_for};

/// The bucket every test uses.
pub const BUCKET: &str = "weir";

/// A running `s3s-fs`, killed on drop.
pub struct S3Server {
    dir: TempDir,
    endpoint: String,
    process: Child,
}

impl S3Server {
    /// Starts a server with an empty bucket [`BUCKET`]; fails loudly when
    /// `s3s-fs` is not installed.
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("s3s-fs.log")).unwrap();
        let process = Command::new(installed("s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "test", "--secret-key", "test"])
            .arg(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s3s-fs");
        let endpoint = format!("127.0.0.1:{port}");
        wait_for("s3s-fs to listen", Duration::from_secs(10), || {
            TcpStream::connect(&endpoint).ok()
        });
        S3Server {
            dir,
            endpoint: format!("http://{endpoint}"),
            process,
        }
    }

    /// The environment a `weir` process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// The directory holding the bucket's objects, to look at what weir wrote.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(BUCKET)
    }

    /// The server's pid, to stop and continue it.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
