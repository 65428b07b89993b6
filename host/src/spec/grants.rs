//! What a job's sandbox lets its guest reach (environment, directories,
//! the network), as its spec grants it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{spec_error, SpecError};

/// Access a job's guest is given beyond computing on its input. Every
/// replica gives the same, since it lives in the spec, not in a replica's setup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Environment variables the guest sees (and no others).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Host directories the guest may read.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Whether the guest may open sockets and resolve host names.
    #[serde(default)]
    pub network: bool,
    /// The addresses it may reach, when the grant names them; otherwise any
    /// address but loopback and link-local ones.
    #[serde(default)]
    pub network_to: Vec<Cidr>,
}

impl Grants {
    /// Whether a granted network reaches `ip`. Without a list, loopback and
    /// link-local addresses stay closed: they hold the supervisor's own
    /// endpoints, often ZooKeeper, and the cloud metadata service (169.254.169.254).
    pub fn reaches(&self, ip: IpAddr) -> bool {
        if !self.network {
            return false;
        }
        if !self.network_to.is_empty() {
            return self.network_to.iter().any(|cidr| cidr.contains(ip));
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
            IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80),
        }
    }
}

/// An address range, `ADDRESS[/PREFIX]` (`10.0.0.0/8`, `192.0.2.7`,
/// `2001:db8::/32`); a bare address is the range of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl FromStr for Cidr {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(Cidr)
            .map_err(|_| {
                spec_error(format!(
                    "`{s}` is not an address range; expected e.g. 10.0.0.0/8 or 192.0.2.7"
                ))
            })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for Cidr {
    type Error = SpecError;

    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(cidr: Cidr) -> String {
        cidr.to_string()
    }
}

/// A host directory shown read-only to the guest at a path of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// The directory on the supervisor's machine (absolute).
    pub host: String,
    /// Where the guest sees it.
    pub guest: String,
}

impl FromStr for DirGrant {
    type Err = SpecError;

    /// `HOST[::GUEST]`, as wasmtime's `--dir`; the guest path defaults to the host's.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (host, guest) = s.split_once("::").unwrap_or((s, s));
        if !host.starts_with('/') || !guest.starts_with('/') || guest.contains("::") {
            return Err(spec_error(format!(
                "`{s}`: expected an absolute directory, `HOST[::GUEST]`, e.g. /srv/data::/data"
            )));
        }
        Ok(DirGrant {
            host: host.to_string(),
            guest: guest.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_grants_are_absolute_and_default_to_the_same_path() {
        assert_eq!(
            "/srv/data::/data".parse::<DirGrant>().unwrap(),
            DirGrant {
                host: "/srv/data".into(),
                guest: "/data".into()
            }
        );
        assert_eq!("/srv".parse::<DirGrant>().unwrap().guest, "/srv");
        for bad in ["data", "/srv::data", "::/data", "/a::/b::/c"] {
            assert!(bad.parse::<DirGrant>().unwrap_err().0.contains("absolute"), "{bad}");
        }
    }

    #[test]
    fn a_network_grant_keeps_loopback_and_metadata_closed_unless_named() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let open = Grants {
            network: true,
            ..Grants::default()
        };
        for closed in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!open.reaches(ip(closed)), "{closed}");
        }
        for reachable in ["10.1.2.3", "192.0.2.7", "2001:db8::1"] {
            assert!(open.reaches(ip(reachable)), "{reachable}");
        }
        let listed = Grants {
            network: true,
            network_to: vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            ..Grants::default()
        };
        assert!(listed.reaches(ip("127.0.0.1")) && listed.reaches(ip("10.200.0.1")));
        assert!(!listed.reaches(ip("11.0.0.1")) && !listed.reaches(ip("127.0.0.2")));
        assert!(!Grants::default().reaches(ip("10.1.2.3")), "no grant, no network");
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let cidr: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            serde_json::from_value::<Cidr>(serde_json::to_value(cidr).unwrap()).unwrap(),
            cidr
        );
    }

    #[test]
    fn specs_without_grants_read_as_granting_nothing() {
        let grants: Grants = serde_json::from_str("{}").unwrap();
        assert_eq!(grants, Grants::default());
        assert!(!grants.network && grants.env.is_empty() && grants.dirs.is_empty());
    }
}
