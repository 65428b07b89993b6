//! Connecting to ZooKeeper with errors a user can act on.

use std::time::Duration;

use zookeeper_client as zkc;

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
}

impl ZkSettings {
    /// The ACL for every znode weir creates.
    pub fn acls(&self) -> zkc::Acls<'static> {
        if self.auth.is_some() {
            zkc::Acls::creator_all()
        } else {
            zkc::Acls::anyone_all()
        }
    }
}

/// A hint for errors whose fix is not obvious from the client's words.
pub fn hint(error: &zkc::Error) -> &'static str {
    match error {
        zkc::Error::NoAuth => " (the cluster uses digest authentication: set --zk-auth user:password or WEIR_ZK_AUTH)",
        zkc::Error::AuthFailed => " (ZooKeeper rejected the --zk-auth credentials)",
        _ => "",
    }
}

/// Failures talking to ZooKeeper, split by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZkError {
    /// No server answered within the deadline.
    #[error(
        "cannot reach ZooKeeper at {connect} within {timeout:?}: is it running? (set --zookeeper or WEIR_ZOOKEEPER)"
    )]
    Unreachable {
        /// The connect string tried.
        connect: String,
        /// How long we tried.
        timeout: Duration,
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
            ZkError::Unreachable { .. } => None,
        }
    }
}

/// Opens a session, giving up after `deadline` with [`ZkError::Unreachable`].
///
/// Cancel-safe: dropping the future drops the half-open session.
pub async fn connect(settings: &ZkSettings, deadline: Duration) -> Result<zkc::Client, ZkError> {
    let mut connector = zkc::Client::connector().with_session_timeout(settings.session_timeout);
    if let Some(auth) = &settings.auth {
        connector = connector.with_auth("digest", auth.as_bytes());
    }
    match tokio::time::timeout(deadline, connector.connect(&settings.connect)).await {
        Err(_) | Ok(Err(zkc::Error::Timeout | zkc::Error::NoHosts | zkc::Error::ConnectionLoss)) => {
            Err(ZkError::Unreachable {
                connect: settings.connect.clone(),
                timeout: deadline,
            })
        }
        Ok(Err(source @ zkc::Error::BadArguments(_))) => Err(ZkError::BadConnectString {
            connect: settings.connect.clone(),
            source,
        }),
        Ok(Err(source)) => Err(ZkError::op(format!("connect to {}", settings.connect), source)),
        Ok(Ok(client)) => Ok(client),
    }
}
