//! A network namespace joined to the host by one veth link, for tests
//! that cut a process off the network while it runs: the link goes down
//! and the process's connections fall silent (no reset, as in a real
//! partition), and comes back up to heal it. Needs root (`ip netns`).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::harness::installed;

/// The namespace and its link; both are removed when dropped.
pub struct Netns {
    /// The namespace's name, for `ip netns exec`.
    pub name: String,
    host_dev: String,
    /// The host's end of the link: a server listening here is reachable
    /// from the host and, while the link is up, from inside.
    pub host_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new(installed("ip"))
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "`ip {}` failed (network namespaces need root and iproute2): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Netns {
    /// A namespace named after this process and its count of them, with
    /// loopback up and a /30 link to the host in 10.231.0.0/16.
    pub fn new() -> Netns {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let (pid, nth) = (std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
        let id = format!("{pid}x{nth}");
        let name = format!("weir-{id}");
        let (host_dev, ns_dev) = (format!("wh{id}"), format!("wn{id}"));
        let link = pid.wrapping_mul(7).wrapping_add(nth) % 16384;
        let (third, fourth) = (link / 64, (link % 64) * 4);
        let host_ip = format!("10.231.{third}.{}", fourth + 1);
        let ns_ip = format!("10.231.{third}.{}", fourth + 2);
        // Left over by an earlier run killed with this pid, if any.
        let _ = Command::new(installed("ip")).args(["netns", "del", &name]).output();
        let _ = Command::new(installed("ip")).args(["link", "del", &host_dev]).output();
        ip(&["netns", "add", &name]);
        let netns = Netns {
            name,
            host_dev,
            host_ip,
        };
        ip(&["link", "add", &netns.host_dev, "type", "veth", "peer", "name", &ns_dev]);
        ip(&["link", "set", &ns_dev, "netns", &netns.name]);
        ip(&["addr", "add", &format!("{}/30", netns.host_ip), "dev", &netns.host_dev]);
        ip(&["link", "set", &netns.host_dev, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_dev]);
        inside(&["link", "set", &ns_dev, "up"]);
        inside(&["link", "set", "lo", "up"]);
        netns
    }

    /// Cuts the link: nothing goes in or out of the namespace.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_dev, "down"]);
    }

    /// Brings the link back.
    pub fn heal(&self) {
        ip(&["link", "set", &self.host_dev, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the link, and the pair with it.
        let _ = Command::new(installed("ip"))
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new(installed("ip"))
            .args(["link", "del", &self.host_dev])
            .output();
    }
}
