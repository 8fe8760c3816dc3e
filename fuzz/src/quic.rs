//! Target `quic`: what a QUIC peer's bytes go through after QUIC and TLS.

use gossip_quic::fuzzing;

/// The first byte picks the reader (modulo 5): the `gossip/2` hello, a
/// datagram, a one-way stream, a `gossip/1` request stream, or a reply as
/// the client reads it. The rest is the peer's bytes.
pub(crate) fn run(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let (inbound, _rx) = crate::gate();
    match which % 5 {
        0 => {
            let (accepted, _addr) = fuzzing::hello(&inbound, bytes);
            if accepted {
                assert!(bytes.starts_with(crate::CLUSTER.as_bytes()));
            }
        }
        1 => fuzzing::datagram(&inbound, bytes),
        2 => fuzzing::uni_stream(&inbound, bytes),
        3 => {
            let _ = fuzzing::v1_stream(&inbound, bytes);
        }
        _ => {
            let _ = fuzzing::reply(bytes);
        }
    }
}
