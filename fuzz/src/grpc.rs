//! Target `grpc`: the request bodies the gRPC server decodes and handles.

use gossip_grpc::fuzzing;

/// The first byte picks (even or odd) a `Gossip` stream's body or a unary
/// `Send`'s body; the rest is the body (gRPC length-prefixed messages).
pub(crate) fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let (inbound, mut rx) = crate::gate();
    if which % 2 == 0 {
        fuzzing::gossip_stream(&inbound, body);
    } else {
        let _ = fuzzing::unary_send(&inbound, body);
    }
    while let Ok(env) = rx.try_recv() {
        assert_eq!(env.cluster_id, crate::CLUSTER);
    }
}
