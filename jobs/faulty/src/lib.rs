//! A job that misbehaves on purpose, for weir's fault tests. It echoes every
//! number it sees, and on the number named in its config it:
//! `trap_on=N` panics (a trap); `spin_on=N` loops forever;
//! `grow_on=N` allocates without bound; `reject_on=N` refuses the record
//! (an error from `process`, which its `--on-error` route handles), and
//! `reject_every=N` every multiple of N. With `probe=HOST:PORT` it instead
//! reports, for its first event, what the host lets it reach: environment
//! variables, the directory `probe_dir` (default `/`), and a TCP connection
//! to HOST:PORT. With `block_on=HOST:PORT` it connects there and waits for
//! bytes that never come: blocked in a host call, not burning CPU.

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Config, Context, Error, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct Faulty {
    #[serde(skip)]
    trap_on: Option<i64>,
    #[serde(skip)]
    spin_on: Option<i64>,
    #[serde(skip)]
    grow_on: Option<i64>,
    #[serde(skip)]
    reject_on: Option<i64>,
    #[serde(skip)]
    reject_every: Option<i64>,
    #[serde(skip)]
    probe: Option<String>,
    #[serde(skip)]
    probe_dir: Option<String>,
    #[serde(skip)]
    block_on: Option<String>,
    /// A default, so that the faulty job takes any job's state: an upgrade
    /// to it gets as far as its first records.
    #[serde(default)]
    probed: bool,
}

/// What the sandbox allows, as one line: `env=N fs=... net=...`.
fn probe(address: &str, dir: &str) -> String {
    let fs = match std::fs::read_dir(dir) {
        Ok(_) => "readable",
        Err(_) => "denied",
    };
    let net = match std::net::TcpStream::connect(address) {
        Ok(_) => "connected",
        Err(_) => "denied",
    };
    format!("env={} fs={fs} net={net}", std::env::vars().count())
}

impl Job for Faulty {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.trap_on = config_value(config, "trap_on")?;
        self.spin_on = config_value(config, "spin_on")?;
        self.grow_on = config_value(config, "grow_on")?;
        self.reject_on = config_value(config, "reject_on")?;
        self.reject_every = config_value(config, "reject_every")?;
        self.probe = config_value(config, "probe")?;
        self.probe_dir = config_value(config, "probe_dir")?;
        self.block_on = config_value(config, "block_on")?;
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let n = record.int()?;
        if self.reject_on == Some(n) {
            return Err(Error::new(format!("faulty job: reject_on={n} reached")));
        }
        if self.reject_every.is_some_and(|every| every != 0 && n % every == 0) {
            return Err(Error::new(format!("faulty job: {n} is a multiple of reject_every")));
        }
        if let Some(address) = &self.block_on {
            if let Ok(mut stream) = std::net::TcpStream::connect(address) {
                let _ = std::io::Read::read(&mut stream, &mut [0u8; 1]);
            }
        }
        if let Some(address) = &self.probe {
            if !self.probed {
                self.probed = true;
                ctx.emit_text(&probe(address, self.probe_dir.as_deref().unwrap_or("/")));
            }
            return Ok(());
        }
        if self.trap_on == Some(n) {
            panic!("faulty job: trap_on={n} reached");
        }
        if self.spin_on == Some(n) {
            let mut x = n as u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        if self.grow_on == Some(n) {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        ctx.emit_int(n);
        Ok(())
    }
}

weir_guest::export_job!(Faulty);
