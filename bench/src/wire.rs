//! Bytes on the wire, from the loopback device's counters. They count every
//! process in the network namespace, so they are only read when this process
//! has a namespace of its own (`unshare --net`): one whose only interface is
//! `lo`. There they add what payload counts leave out: IP and TCP/UDP
//! headers, TCP acknowledgements, HTTP/2 and gRPC framing, TLS and QUIC.

/// Bytes the loopback device has transmitted (IP packets, headers
/// included), or `None` when this process shares its network namespace with
/// other interfaces (and so, probably, with other processes).
pub(crate) fn loopback_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/dev").ok()?;
    parse(&text)
}

/// The `lo` transmit byte counter from the text of `/proc/net/dev`, if `lo`
/// is the only interface listed.
fn parse(text: &str) -> Option<u64> {
    let mut lo = None;
    // Two header lines, then `name: rx_bytes rx_packets ... tx_bytes ...`.
    for line in text.lines().skip(2) {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != "lo" {
            return None;
        }
        // Receive has 8 columns; transmit bytes is the 9th number.
        lo = counters.split_whitespace().nth(8)?.parse().ok();
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::parse;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    #[test]
    fn reads_lo_transmit_bytes_only_in_a_private_namespace() {
        let alone = format!(
            "{HEADER}    lo:     128       1    0    0    0     0          0         0      130       1    0    0    0     0       0          0\n"
        );
        assert_eq!(parse(&alone), Some(130));
        let shared = format!("{alone}  eth0: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n");
        assert_eq!(parse(&shared), None);
        assert_eq!(parse(HEADER), None);
    }
}
