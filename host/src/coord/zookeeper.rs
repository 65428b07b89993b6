//! ZooKeeper behind [`Connector`] and [`Session`]: connecting with errors a
//! user can act on, the latch on zookeeper-client's Curator-compatible lock
//! recipe, and fenced writes as one multi-op with a check of the latch node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::mpsc;
use zookeeper_client::{self as zkc, AddWatchMode, CheckWriteError, CreateMode, EventType, LockOptions, LockPrefix};

use super::{Connector, FenceError, FencedOp, Session, SessionEvents};
use crate::metrics::Metrics;

/// How to reach the ensemble and what to ask of it.
#[derive(Debug, Clone)]
pub struct ZkSettings {
    /// Connect string, e.g. `127.0.0.1:2181,127.0.0.1:2182`.
    pub connect: String,
    /// Session timeout negotiated with the server (which clamps it to 2..20 ticks).
    pub session_timeout: Duration,
    /// `user:password` for digest authentication. When set, every znode weir
    /// creates is readable and writable only by sessions with the same credentials.
    pub auth: Option<String>,
    /// `(user, password)` for SASL DIGEST-MD5, which the servers check as
    /// the session opens (their JAAS `Server` section names the users).
    /// When set, every znode weir creates is open only to that user.
    pub sasl: Option<(String, String)>,
    /// TLS to every server (the CA to trust and, for mutual TLS, this
    /// client's certificate); `None` for plaintext.
    pub tls: Option<zkc::TlsOptions>,
}

impl ZkSettings {
    /// The ACL for every znode weir creates.
    pub fn acls(&self) -> zkc::Acls<'static> {
        if self.auth.is_some() || self.sasl.is_some() {
            zkc::Acls::creator_all()
        } else {
            zkc::Acls::anyone_all()
        }
    }
}

/// A hint for errors whose fix is not obvious from the client's words.
pub fn hint(error: &zkc::Error) -> &'static str {
    match error {
        zkc::Error::NoAuth => {
            " (the cluster's znodes are closed to this session: set --zk-auth user:password (WEIR_ZK_AUTH) \
             or --zk-sasl user:password (WEIR_ZK_SASL) as its supervisors have them)"
        }
        zkc::Error::AuthFailed => " (ZooKeeper rejected the --zk-auth or --zk-sasl credentials)",
        _ => "",
    }
}

/// Failures talking to ZooKeeper, split by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZkError {
    /// No server answered within the deadline.
    #[error(
        "cannot reach ZooKeeper at {connect} within {timeout:?} ({what}): is it running? (set --zookeeper or WEIR_ZOOKEEPER){}",
        if *tls { "; with --zk-tls-ca, check that these are the servers' secureClientPort and that they accept the certificates" } else { "" }
    )]
    Unreachable {
        /// The connect string tried.
        connect: String,
        /// How long we tried.
        timeout: Duration,
        /// Which setting bounded the wait.
        what: &'static str,
        /// Whether it was tried over TLS, where a refused handshake looks
        /// like a server that does not answer.
        tls: bool,
    },
    /// The servers end every session that does not authenticate (SASL
    /// required), and this one was given no credentials.
    #[error("the ZooKeeper servers at {connect} require authentication: set --zk-sasl user:password (WEIR_ZK_SASL)")]
    AuthRequired {
        /// The connect string tried.
        connect: String,
    },
    /// The connect string does not parse.
    #[error("bad ZooKeeper connect string `{connect}`: {source} (expected host:port[,host:port...])")]
    BadConnectString {
        /// The connect string given.
        connect: String,
        /// What the client said.
        source: zkc::Error,
    },
    /// Any other ZooKeeper error, with what we were doing.
    #[error("ZooKeeper {what}: {source}{}", hint(source))]
    Op {
        /// The operation that failed.
        what: String,
        /// What the client said.
        #[source]
        source: zkc::Error,
    },
}

impl ZkError {
    /// Wraps a client error with the operation it interrupted.
    pub fn op(what: impl Into<String>, source: zkc::Error) -> Self {
        ZkError::Op {
            what: what.into(),
            source,
        }
    }

    /// The client error behind an operation failure, if any.
    pub fn source_error(&self) -> Option<&zkc::Error> {
        match self {
            ZkError::Op { source, .. } | ZkError::BadConnectString { source, .. } => Some(source),
            ZkError::Unreachable { .. } | ZkError::AuthRequired { .. } => None,
        }
    }
}

/// Wait between two tries to reach an ensemble that does not answer.
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Opens a session, trying again until `deadline` has passed, then failing
/// with [`ZkError::Unreachable`] naming `what` bounded the wait (the client
/// on its own gives up after its connection timeout, well before a
/// `--connect-timeout` the user chose).
///
/// Cancel-safe: dropping the future drops the half-open session.
pub async fn connect(settings: &ZkSettings, deadline: Duration, what: &'static str) -> Result<zkc::Client, ZkError> {
    let unreachable = || ZkError::Unreachable {
        connect: settings.connect.clone(),
        timeout: deadline,
        what,
        tls: settings.tls.is_some(),
    };
    let give_up = Instant::now() + deadline;
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        let mut connector = zkc::Client::connector().with_session_timeout(settings.session_timeout);
        if let Some(auth) = &settings.auth {
            connector = connector.with_auth("digest", auth.as_bytes());
        }
        if let Some((user, password)) = &settings.sasl {
            connector = connector.with_sasl(zkc::SaslOptions::digest_md5(user.clone(), password.clone()));
        }
        let connecting = match &settings.tls {
            Some(tls) => connector
                .with_tls(tls.clone())
                .secure_connect(&settings.connect)
                .boxed(),
            None => connector.connect(&settings.connect).boxed(),
        };
        match tokio::time::timeout(left, connecting).await {
            Err(_) => return Err(unreachable()),
            Ok(Err(zkc::Error::Timeout | zkc::Error::NoHosts | zkc::Error::ConnectionLoss)) => {
                if Instant::now() + CONNECT_RETRY >= give_up {
                    return Err(unreachable());
                }
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Ok(Err(source @ zkc::Error::BadArguments(_))) => {
                return Err(ZkError::BadConnectString {
                    connect: settings.connect.clone(),
                    source,
                })
            }
            Ok(Err(zkc::Error::AuthFailed)) if settings.sasl.is_none() && settings.auth.is_none() => {
                return Err(ZkError::AuthRequired {
                    connect: settings.connect.clone(),
                })
            }
            Ok(Err(source)) => return Err(ZkError::op(format!("connect to {}", settings.connect), source)),
            Ok(Ok(client)) => return Ok(client),
        }
    }
}

/// The ensemble named by a connect string; each session waits at most its
/// own session timeout to connect, and times its requests into `metrics`.
#[derive(Debug, Clone)]
pub struct ZooKeeper {
    settings: ZkSettings,
    metrics: Arc<Metrics>,
}

impl ZooKeeper {
    /// Sessions with `settings`.
    pub fn new(settings: ZkSettings, metrics: Arc<Metrics>) -> Self {
        ZooKeeper { settings, metrics }
    }
}

#[async_trait::async_trait]
impl Connector for ZooKeeper {
    async fn connect(&self) -> Result<(Arc<dyn Session>, SessionEvents), ZkError> {
        let client = connect(&self.settings, self.settings.session_timeout, "the session timeout").await?;
        let (tx, events) = SessionEvents::channel();
        let mut states = client.state_watcher();
        tokio::spawn(async move {
            loop {
                let state = states.changed().await;
                if tx.send(state).is_err() || state.is_terminated() {
                    return;
                }
            }
        });
        tracing::info!(session = ?client.session_id(), timeout = ?client.session_timeout(), "connected to ZooKeeper");
        let session = ZkSession {
            client,
            acls: self.settings.acls(),
            latches: Mutex::new(Vec::new()),
            metrics: self.metrics.clone(),
        };
        Ok((Arc::new(session), events))
    }
}

/// One ZooKeeper session and the latch nodes it holds.
struct ZkSession {
    client: zkc::Client,
    acls: zkc::Acls<'static>,
    /// The latch recipe's handles: each deletes its node when dropped, so
    /// they live as long as the session.
    latches: Mutex<Vec<zkc::OwnedLockClient>>,
    metrics: Arc<Metrics>,
}

impl ZkSession {
    /// `request`'s answer, its latency recorded as `name`'s. The latch's
    /// wait and the watches are not requests with a latency: they wait
    /// for other sessions by design.
    async fn timed<T>(&self, name: &'static str, request: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let answer = request.await;
        self.metrics.zookeeper_request(name, started.elapsed());
        answer
    }
}

#[async_trait::async_trait]
impl Session for ZkSession {
    fn timeout(&self) -> Duration {
        self.client.session_timeout()
    }

    async fn get_data(&self, path: &str) -> Result<(Vec<u8>, i32), zkc::Error> {
        let (data, stat) = self.timed("get_data", self.client.get_data(path)).await?;
        Ok((data, stat.version))
    }

    async fn list_children(&self, path: &str) -> Result<Vec<String>, zkc::Error> {
        self.timed("list_children", self.client.list_children(path)).await
    }

    async fn exists(&self, path: &str) -> Result<bool, zkc::Error> {
        Ok(self.timed("exists", self.client.check_stat(path)).await?.is_some())
    }

    async fn owner(&self, path: &str) -> Result<Option<u64>, zkc::Error> {
        let stat = self.timed("exists", self.client.check_stat(path)).await?;
        let owner = stat.ok_or(zkc::Error::NoNode)?.ephemeral_owner;
        // The id as the worker node's name spells it (two's complement hex).
        Ok((owner != 0).then_some(owner as u64))
    }

    async fn delete(&self, path: &str) -> Result<(), zkc::Error> {
        self.timed("delete", self.client.delete(path, None)).await
    }

    async fn create(&self, path: &str, data: &[u8]) -> Result<(), zkc::Error> {
        let options = CreateMode::Persistent.with_acls(self.acls);
        if let Some((parent, _)) = path.rsplit_once('/').filter(|(parent, _)| !parent.is_empty()) {
            self.timed("mkdir", self.client.mkdir(parent, &options)).await?;
        }
        self.timed("create", self.client.create(path, data, &options))
            .await
            .map(drop)
    }

    async fn contend(&self, dir: &str, data: &[u8]) -> Result<String, zkc::Error> {
        let prefix = LockPrefix::new_curator(dir, "latch-")?;
        let options = LockOptions::new(self.acls).with_ancestor_options(CreateMode::Persistent.with_acls(self.acls))?;
        let lock = self.client.lock(prefix, data, options).await?.into_owned();
        let path = lock.lock_path().to_string();
        self.latches.lock().expect("latch list lock").push(lock);
        Ok(path)
    }

    async fn register(&self, dir: &str, data: &[u8]) -> Result<String, zkc::Error> {
        let path = format!("{dir}/{:016x}", self.client.session_id().0);
        let options = CreateMode::Ephemeral.with_acls(self.acls);
        self.client
            .mkdir(dir, &CreateMode::Persistent.with_acls(self.acls))
            .await?;
        match self.client.create(&path, data, &options).await {
            Ok(_) | Err(zkc::Error::NodeExists) => Ok(path),
            Err(e) => Err(e),
        }
    }

    async fn fenced(&self, latch: &str, ops: &[FencedOp<'_>]) -> Result<Vec<i32>, FenceError> {
        let paths = ops.iter().map(|op| op.path()).collect::<Vec<_>>().join(", ");
        let request_failed = |source| FenceError::Zk {
            path: paths.clone(),
            source,
        };
        let mut writer = self.client.new_check_writer(latch, None).map_err(request_failed)?;
        let options = CreateMode::Persistent.with_acls(self.acls);
        for op in ops {
            match *op {
                FencedOp::Set { path, data, expected } => writer.add_set_data(path, data, expected),
                FencedOp::Create { path, data } => writer.add_create(path, data, &options),
                FencedOp::Check { path, version } => writer.add_check_version(path, version),
            }
            .map_err(request_failed)?;
        }
        let results = self
            .timed("multi", writer.commit())
            .await
            .map_err(|e| from_check(ops, &paths, e))?;
        Ok(ops
            .iter()
            .zip(results)
            .map(|(op, result)| match (op, result) {
                (_, zkc::MultiWriteResult::SetData { stat }) => stat.version,
                (FencedOp::Check { version, .. }, _) => *version,
                _ => 0,
            })
            .collect())
    }

    async fn watch_tree(&self, dir: &str) -> Result<mpsc::UnboundedReceiver<String>, zkc::Error> {
        let mut watcher = self.client.watch(dir, AddWatchMode::PersistentRecursive).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = watcher.changed().await;
                if event.event_type == EventType::Session {
                    if event.session_state.is_terminated() {
                        return;
                    }
                } else if tx.send(event.path.to_string()).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// What a failed fenced multi-op of `ops` (on `paths`) means.
fn from_check(ops: &[FencedOp<'_>], paths: &str, err: CheckWriteError) -> FenceError {
    match err {
        CheckWriteError::CheckFailed { .. } => FenceError::Deposed,
        CheckWriteError::OperationFailed {
            index,
            source: source @ (zkc::Error::BadVersion | zkc::Error::NodeExists | zkc::Error::NoNode),
        } => FenceError::Conflict {
            path: ops.get(index).map_or(paths, |op| op.path()).to_string(),
            source,
        },
        CheckWriteError::OperationFailed { source, .. } | CheckWriteError::RequestFailed { source } => FenceError::Zk {
            path: paths.to_string(),
            source,
        },
    }
}
