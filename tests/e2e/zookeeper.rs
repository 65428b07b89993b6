//! A real ZooKeeper for the tests, from Debian's `zookeeper` package: one
//! standalone server, or an ensemble on loopback whose nodes can be killed
//! and restarted with their data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::{free_port, wait_for};

const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// One server: its config, its client address, and its process while it runs.
struct Node {
    config: PathBuf,
    log: PathBuf,
    address: String,
    main_class: &'static str,
    /// System properties the server's JVM needs (its JAAS file, for SASL).
    jvm_args: Vec<String>,
    process: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let process = Command::new("java")
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-cp"])
            // Debian's classpath for ZooKeeper lacks Netty's codec, which
            // its TLS (the Netty connection factory) needs.
            .arg(format!(
                "{ZOOKEEPER_JAR}:/usr/share/java/slf4j-simple.jar:/usr/share/java/netty-codec.jar"
            ))
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .args(&self.jvm_args)
            .arg(format!("org.apache.zookeeper.server.{}", self.main_class))
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start java (install Debian's `zookeeper` package, which brings Java)");
        self.process = Some(process);
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Sends a four-letter word and returns the answer ("" if none).
    fn four_letter(&self, word: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(&self.address) else {
            return String::new();
        };
        // A server still starting may accept and never answer: bound the read.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = stream.write_all(word.as_bytes());
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// Whether the server serves clients (it is in a quorum, or standalone).
    fn serving(&self) -> bool {
        self.four_letter("srvr").contains("Mode:")
    }
}

/// How clients reach a server.
enum Security {
    Plain,
    /// Mutual TLS, on a port of its own.
    Tls,
    /// SASL DIGEST-MD5 required of every session, for these users and passwords.
    Sasl(Vec<(String, String)>),
}

/// A ZooKeeper server or ensemble. Every process is killed on drop.
pub struct ZooKeeper {
    nodes: Vec<Node>,
    /// The connect string for clients: every node's `127.0.0.1:PORT` (its
    /// TLS port, for [`ZooKeeper::start_tls`]).
    pub connect: String,
    /// What a client needs for [`ZooKeeper::start_tls`]'s server.
    pub tls: Option<TlsFiles>,
    _dir: TempDir,
}

/// PEM files for a server that wants mutual TLS: the CA that signed its
/// certificate and the client's, and the client's certificate and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// A client certificate the CA signed.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Runs a certificate tool, which must succeed.
fn run(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (Debian's openssl, and keytool from ZooKeeper's Java): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client
/// certificate in `dir`, and the server's PKCS12 key and trust stores
/// (password `secret`).
fn make_certificates(dir: &Path) -> TlsFiles {
    let req = |name: &str, cn: &str| {
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
            dir,
        )
    };
    let sign = |name: &str, extensions: &str| {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
            dir,
        )
    };
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=weir-test-ca",
        ],
        dir,
    );
    req("server", "127.0.0.1");
    sign("server", "subjectAltName=IP:127.0.0.1\n");
    req("client", "weir");
    sign("client", "extendedKeyUsage=clientAuth\n");
    run(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-in",
            "server.pem",
            "-inkey",
            "server.key",
            "-out",
            "server.p12",
            "-passout",
            "pass:secret",
            "-name",
            "server",
        ],
        dir,
    );
    run(
        "keytool",
        &[
            "-importcert",
            "-noprompt",
            "-alias",
            "ca",
            "-file",
            "ca.pem",
            "-keystore",
            "trust.p12",
            "-storetype",
            "PKCS12",
            "-storepass",
            "secret",
        ],
        dir,
    );
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("client.pem"),
        key: dir.join("client.key"),
    }
}

fn assert_installed() {
    assert!(
        Path::new(ZOOKEEPER_JAR).exists(),
        "ZooKeeper is not installed ({ZOOKEEPER_JAR} missing): run `apt-get install zookeeper`, or use the README's test command"
    );
}

/// `forceSync=no`: a test's server outlives none of its machine's crashes,
/// only its own kills (the page cache keeps what it wrote), and an fsync
/// stalled behind the other tests' disk writes would hold every request
/// past the clients' 800 ms connection timeout. `maxSessionTimeout`: up
/// to 30 s, as a test asks (20 ticks, 4 s, would cap the supervisors'
/// default of 6 s).
const COMMON_CONFIG: &str = "tickTime=200\nadmin.enableServer=false\nforceSync=no\n\
                             maxSessionTimeout=30000\n\
                             4lw.commands.whitelist=ruok,srvr,stat\nmaxClientCnxns=200\n";

impl ZooKeeper {
    /// Starts a standalone server and waits until it serves. Panics (never
    /// skips) when ZooKeeper is not installed.
    pub fn start() -> ZooKeeper {
        ZooKeeper::launch(1, "127.0.0.1", Security::Plain)
    }

    /// Like [`ZooKeeper::start`], serving clients on `host`'s address
    /// instead of loopback (one a network namespace reaches, say).
    pub fn start_at(host: &str) -> ZooKeeper {
        ZooKeeper::launch(1, host, Security::Plain)
    }

    /// Starts an ensemble of `size` servers and waits until all serve.
    pub fn ensemble(size: usize) -> ZooKeeper {
        ZooKeeper::launch(size, "127.0.0.1", Security::Plain)
    }

    /// A standalone server whose clients connect over TLS and must
    /// present a certificate its CA signed (`ssl.clientAuth=need`).
    /// [`ZooKeeper::connect`] is its TLS port; the plaintext one serves
    /// only the harness's readiness checks.
    pub fn start_tls() -> ZooKeeper {
        ZooKeeper::launch(1, "127.0.0.1", Security::Tls)
    }

    /// A standalone server that lets in only sessions authenticated by
    /// SASL DIGEST-MD5 as one of `users` (`(name, password)`).
    pub fn start_sasl(users: &[(&str, &str)]) -> ZooKeeper {
        let users = users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        ZooKeeper::launch(1, "127.0.0.1", Security::Sasl(users))
    }

    fn launch(size: usize, host: &str, security: Security) -> ZooKeeper {
        assert_installed();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..size).map(|_| (free_port(), free_port(), free_port())).collect();
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, election))| format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1))
            .collect();
        let mut nodes: Vec<Node> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, _, _))| {
                let data = dir.path().join(format!("data-{}", i + 1));
                std::fs::create_dir_all(&data).unwrap();
                let mut config = format!(
                    "{COMMON_CONFIG}clientPortAddress={host}\ndataDir={}\nclientPort={client}\n",
                    data.display()
                );
                if size > 1 {
                    std::fs::write(data.join("myid"), format!("{}\n", i + 1)).unwrap();
                    config.push_str(&format!("initLimit=20\nsyncLimit=10\n{servers}"));
                }
                let path = dir.path().join(format!("zoo-{}.cfg", i + 1));
                std::fs::write(&path, config).unwrap();
                Node {
                    config: path,
                    log: dir.path().join(format!("zookeeper-{}.log", i + 1)),
                    address: format!("{host}:{client}"),
                    main_class: if size > 1 {
                        "quorum.QuorumPeerMain"
                    } else {
                        "ZooKeeperServerMain"
                    },
                    jvm_args: Vec::new(),
                    process: None,
                }
            })
            .collect();
        if let Security::Sasl(users) = &security {
            let jaas = dir.path().join("jaas.conf");
            let users: String = users.iter().map(|(u, p)| format!(" user_{u}=\"{p}\"")).collect();
            std::fs::write(
                &jaas,
                format!("Server {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required{users};\n}};\n"),
            )
            .unwrap();
            let config = &nodes[0].config;
            let plain = std::fs::read_to_string(config).unwrap();
            let settings = "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n\
                            enforce.auth.enabled=true\nenforce.auth.schemes=sasl\n";
            std::fs::write(config, plain + settings).unwrap();
            nodes[0].jvm_args = vec![format!("-Djava.security.auth.login.config={}", jaas.display())];
        }
        let mut connect = nodes.iter().map(|n| n.address.as_str()).collect::<Vec<_>>().join(",");
        let tls = matches!(security, Security::Tls).then(|| {
            let files = make_certificates(dir.path());
            let secure = free_port();
            let stores = dir.path().display();
            let settings = format!(
                "secureClientPort={secure}\nsecureClientPortAddress={host}\n\
                 serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
                 ssl.keyStore.location={stores}/server.p12\nssl.keyStore.password=secret\nssl.keyStore.type=PKCS12\n\
                 ssl.trustStore.location={stores}/trust.p12\nssl.trustStore.password=secret\nssl.trustStore.type=PKCS12\n\
                 ssl.clientAuth=need\n"
            );
            let config = &nodes[0].config;
            let plain = std::fs::read_to_string(config).unwrap();
            std::fs::write(config, plain + &settings).unwrap();
            connect = format!("{host}:{secure}");
            files
        });
        let mut zk = ZooKeeper {
            nodes,
            connect,
            tls,
            _dir: dir,
        };
        for n in 0..size {
            zk.nodes[n].spawn();
        }
        zk.wait_serving();
        zk
    }

    /// Waits until every running node serves clients.
    pub fn wait_serving(&self) {
        wait_for("ZooKeeper to serve", Duration::from_secs(60), || {
            self.nodes
                .iter()
                .filter(|n| n.process.is_some())
                .all(Node::serving)
                .then_some(())
        });
    }

    /// The id of the newest transaction node 0 has seen. Within one
    /// leader epoch (its high 32 bits) it counts every transaction: each
    /// write (a multi-op is one), and sessions opened and closed.
    pub fn zxid(&self) -> u64 {
        let srvr = self.nodes[0].four_letter("srvr");
        srvr.lines()
            .find_map(|l| l.strip_prefix("Zxid: 0x"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no Zxid in ZooKeeper's srvr answer: {srvr:?}"))
    }

    /// The process id of node `n` (0-based), which must be running.
    pub fn pid(&self, n: usize) -> u32 {
        self.nodes[n].process.as_ref().expect("the node runs").id()
    }

    /// Kills node `n` (0-based) with SIGKILL.
    pub fn kill(&mut self, n: usize) {
        self.nodes[n].kill();
    }

    /// Starts node `n` again, on its old data.
    pub fn restart(&mut self, n: usize) {
        self.nodes[n].spawn();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}
