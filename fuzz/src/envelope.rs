//! Target `envelope`: the gate every transport hands received bytes to.

use gossip_core::Rejection;

/// `Inbound::accept_bytes` on `data`; what it accepts reaches the queue,
/// and what it refuses is a typed rejection.
pub(crate) fn run(data: &[u8]) {
    let (inbound, mut rx) = crate::gate();
    match inbound.accept_bytes(data) {
        Ok(()) => {
            let env = rx.try_recv().expect("an accepted envelope is queued");
            assert_eq!(env.cluster_id, crate::CLUSTER);
            assert!(env.from.is_some() && env.body.is_some());
        }
        Err(
            Rejection::Malformed(_)
            | Rejection::Oversized { .. }
            | Rejection::ForeignCluster { .. }
            | Rejection::Decrypt(_)
            | Rejection::Overloaded
            | Rejection::ShuttingDown,
        ) => assert!(rx.try_recv().is_err(), "a refused envelope is not queued"),
    }
}
