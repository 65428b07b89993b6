//! A real PostgreSQL server for the tests: Debian's `postgresql` (installed
//! by `scripts/setup`), initialised in a temp dir and started on a free
//! loopback port, as the `postgres` user when the tests run as root
//! (PostgreSQL refuses root). Stopped on drop; `psql` runs the queries.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::{free_port, wait_for};

/// A running PostgreSQL cluster with trust authentication for `postgres`.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    /// Initialises and starts a cluster; fails loudly when PostgreSQL is
    /// not installed.
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| versions.flatten().map(|v| v.path().join("bin")).max())
            .filter(|bin| bin.join("initdb").exists())
            .expect("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run scripts/setup");
        let dir = tempfile::tempdir().unwrap();
        let server = Postgres {
            dir,
            bin,
            port: free_port(),
        };
        if is_root() {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(server.dir.path())
                .status()
                .unwrap();
            assert!(chown.success(), "chown of the PostgreSQL dir to the postgres user");
        }
        let data = server.data();
        let initdb = server.as_owner("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"]);
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        server.start_again();
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a PostgreSQL program as the user that owns the cluster.
    fn as_owner(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.args(args).output().expect("run a PostgreSQL program")
    }

    /// Starts the server (after [`Postgres::kill`]); waits until it answers.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let data = self.data();
        // After a kill -9 the old backends hold its shared memory until they
        // notice their postmaster is gone: try again until they have.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let started = self.as_owner("pg_ctl", &["-D", &data, "-l", &log, "-w", "-o", &options, "start"]);
            if started.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pg_ctl start: {}{}",
                String::from_utf8_lossy(&started.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_for("PostgreSQL to answer", Duration::from_secs(30), || {
            self.try_sql("SELECT 1").ok()
        });
    }

    /// `kill -9` of the postmaster (its backends go with it).
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
        assert!(killed.success());
        wait_for("PostgreSQL to die", Duration::from_secs(10), || {
            self.try_sql("SELECT 1").is_err().then_some(())
        });
    }

    /// `postgresql://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL; its rows, one line each, columns split by `|`.
    pub fn sql(&self, sql: &str) -> Vec<String> {
        self.try_sql(sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    fn try_sql(&self, sql: &str) -> Result<Vec<String>, String> {
        let psql = self.bin.join("psql");
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.as_owner("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
