//! Member identity: the advertised address plus the generation of one life.

use std::fmt;
use std::str::FromStr;

use gossip_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::error::AddrError;

/// The address a member advertises, `host:port` (e.g. `127.0.0.1:7001`); it is
/// the member's identity (requirement 1 of the core issue).
///
/// Parsing checks the shape only: a non-empty host and a port in 1..=65535.
/// No name resolution happens here; transports resolve when they connect.
///
/// Stored inline (no heap allocation, a copy to clone) up to 23 bytes, which
/// covers every IPv4 `host:port`: a member keeps each address in several
/// indexes, and a simulator holds millions of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeAddr(SmolStr);

impl NodeAddr {
    /// Parses and validates `host:port`.
    ///
    /// # Errors
    /// [`AddrError`] if the text has no `:port`, an empty host, a port that is
    /// not a number in 1..=65535, or is longer than 255 bytes.
    pub fn parse(s: &str) -> Result<Self, AddrError> {
        let bad = |why: &'static str| AddrError {
            addr: s.chars().take(64).collect(),
            why,
        };
        if s.len() > 255 {
            return Err(bad("longer than 255 bytes"));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("missing ':port'"))?;
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Self(SmolStr::new(s))),
            _ => Err(bad("port is not a number in 1..=65535")),
        }
    }

    /// The address as text, `host:port`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for NodeAddr {
    type Error = AddrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<NodeAddr> for String {
    fn from(a: NodeAddr) -> String {
        a.0.into()
    }
}

impl From<std::net::SocketAddr> for NodeAddr {
    fn from(a: std::net::SocketAddr) -> Self {
        Self(SmolStr::new(a.to_string()))
    }
}

/// One life of a member: its address and the generation it started with.
///
/// The generation is chosen at start (by default the wall clock in
/// milliseconds since the Unix epoch), so a member restarted on the same
/// address has a higher generation and supersedes its earlier life everywhere
/// (Cassandra's generation number).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The advertised address, `host:port`.
    pub addr: NodeAddr,
    /// Generation of this life; higher supersedes lower at the same address.
    pub generation: u64,
}

impl NodeId {
    /// Builds an id from its parts.
    pub fn new(addr: NodeAddr, generation: u64) -> Self {
        Self { addr, generation }
    }

    /// The wire form.
    pub fn to_pb(&self) -> pb::NodeId {
        pb::NodeId {
            addr: self.addr.0.to_string(),
            generation: self.generation,
        }
    }

    /// Parses the wire form.
    ///
    /// # Errors
    /// [`AddrError`] if the address is not `host:port`.
    pub fn from_pb(id: &pb::NodeId) -> Result<Self, AddrError> {
        Ok(Self {
            addr: NodeAddr::parse(&id.addr)?,
            generation: id.generation,
        })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.addr, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, ok: bool) {
        assert_eq!(NodeAddr::parse(input).is_ok(), ok, "{input}");
    }

    #[test]
    fn addr_shapes() {
        check("127.0.0.1:7001", true);
        check("[::1]:7001", true);
        check("node-a.local:1", true);
        check("127.0.0.1", false);
        check(":7001", false);
        check("a:0", false);
        check("a:70000", false);
        check("a:x", false);
        check(&format!("{}:1", "a".repeat(300)), false);
    }
}
