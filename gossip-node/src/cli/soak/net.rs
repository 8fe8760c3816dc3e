//! The soak's network when it runs with namespaces (`--network netns`):
//! one namespace per member, so that a few members can be cut off from the
//! rest (issue #12, "a partition of a few members now and then").
//!
//! Each member has two links:
//!
//! - `eth0`, its gossip link, at `10.78.X.Y/16` on the data bridge. A
//!   partition moves the bridge ports of the cut-off members to a second
//!   bridge: they still reach each other, not the rest (their frames to
//!   the rest go nowhere: no refusal, a silent drop), and the rest no
//!   longer reach them. A heal moves them back.
//! - `mgmt0`, its admin link, at `10.M.X.Y/16` on a management bridge
//!   that also holds `10.M.255.254` in the soak's own namespace, where `M`
//!   is the first of 79..=254 that no address of the soak's namespace uses
//!   (two soaks can run at once). It is never cut, so the soak keeps
//!   writing to cut-off members and reading their views, as an operator's
//!   management network would. Members gossip on `10.78` addresses only,
//!   and have no route beyond their two subnets, so nothing crosses from
//!   one network to the other.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::cli::netns::{Lab, NetnsError, ip_output};
use crate::cli::procs::NodeHost;

/// Gossip port of every member (each has its own namespace).
const GOSSIP_PORT: u16 = 7946;
/// Admin port of every member.
const ADMIN_PORT: u16 = 7947;

/// The namespaces, bridges and links of one soak; deleted when dropped.
#[derive(Debug)]
pub(super) struct SoakNet {
    lab: Lab,
    data: String,
    cut: String,
    /// The bridge port of each member's gossip link, by position.
    ports: Vec<String>,
    hosts: Vec<NodeHost>,
}

/// The address of member `k` (from 1) in a `/16` whose first two octets
/// are `a.b`: `a.b.(k / 256).(k % 256)`.
fn address(a: u8, b: u8, k: usize) -> Ipv4Addr {
    let [.., hi, lo] = u32::try_from(k).unwrap_or(u32::MAX).to_be_bytes();
    Ipv4Addr::new(a, b, hi, lo)
}

/// The first `N` of 79..=254 such that no address listed in `addrs` (the
/// output of `ip -o -4 addr show`) is in `10.N.0.0/16`.
fn free_second_octet(addrs: &str) -> Option<u8> {
    let used: Vec<u8> = addrs
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("10."))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    (79..=254).find(|n| !used.contains(n))
}

impl SoakNet {
    /// Builds the network of `members` members (at most 65,000).
    ///
    /// # Errors
    /// [`NetnsError::Unavailable`] if namespaces cannot be made here;
    /// [`NetnsError::Ip`] if a step fails (what was made is deleted).
    pub(super) fn build(members: usize) -> Result<Self, NetnsError> {
        let mut lab = Lab::new("gs")?;
        let data = lab.bridge('B')?;
        let cut = lab.bridge('C')?;
        let mgmt = lab.bridge('M')?;
        let m = free_second_octet(&ip_output(&["-o", "-4", "addr", "show"])?).ok_or_else(|| {
            NetnsError::Unavailable("every 10.N.0.0/16 from N = 79 to 254 is in use".into())
        })?;
        lab.address_bridge(&mgmt, &format!("10.{m}.255.254/16"))?;
        let mut ports = Vec::with_capacity(members);
        let mut hosts = Vec::with_capacity(members);
        for k in 1..=members {
            let ns = lab.namespace(k)?;
            let (gossip, admin) = (address(10, 78, k), address(10, m, k));
            ports.push(lab.plug(&ns, k, 'd', "eth0", &data, &format!("{gossip}/16"))?);
            lab.plug(&ns, k, 'm', "mgmt0", &mgmt, &format!("{admin}/16"))?;
            hosts.push(NodeHost {
                netns: ns,
                listen: SocketAddr::V4(SocketAddrV4::new(gossip, GOSSIP_PORT)),
                admin: SocketAddr::V4(SocketAddrV4::new(admin, ADMIN_PORT)),
            });
        }
        Ok(Self {
            lab,
            data,
            cut,
            ports,
            hosts,
        })
    }

    /// Where each member runs, by position.
    pub(super) fn hosts(&self) -> &[NodeHost] {
        &self.hosts
    }

    /// Cuts the members at `positions` off from the others (not from each
    /// other).
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub(super) fn cut(&self, positions: &[usize]) -> Result<(), NetnsError> {
        for &i in positions {
            self.lab.move_port(&self.ports[i], &self.cut)?;
        }
        Ok(())
    }

    /// Joins the members at `positions` to the others again.
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub(super) fn heal(&self, positions: &[usize]) -> Result<(), NetnsError> {
        for &i in positions {
            self.lab.move_port(&self.ports[i], &self.data)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_their_subnet() {
        assert_eq!(address(10, 78, 1), Ipv4Addr::new(10, 78, 0, 1));
        assert_eq!(address(10, 78, 256), Ipv4Addr::new(10, 78, 1, 0));
        assert_eq!(address(10, 79, 500), Ipv4Addr::new(10, 79, 1, 244));
    }

    #[test]
    fn the_management_subnet_is_one_not_in_use() {
        let addrs = "1: lo    inet 127.0.0.1/8 scope host lo\n\
                     5: gs1aM    inet 10.79.255.254/16 scope global gs1aM\n\
                     6: eth0    inet 10.80.3.4/24 brd 10.80.3.255 scope global eth0\n";
        assert_eq!(free_second_octet(addrs), Some(81));
        assert_eq!(free_second_octet(""), Some(79));
    }
}
