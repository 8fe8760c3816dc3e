//! Target `grpc`: the request bodies the gRPC server decodes and handles.

use gossip_grpc::fuzzing;

/// The first byte picks (modulo 3) a `Gossip` stream's request body, a
/// unary `Send`'s, or the answer stream of a `Gossip` call as our client
/// reads it; the rest is the body (gRPC length-prefixed messages).
pub(crate) fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let (inbound, mut rx) = crate::gate();
    match which % 3 {
        0 => {
            fuzzing::gossip_stream(&inbound, body);
        }
        1 => {
            let _ = fuzzing::unary_send(&inbound, body);
        }
        _ => {
            fuzzing::gossip_answers(&inbound, body);
        }
    }
    while let Ok(env) = rx.try_recv() {
        assert_eq!(env.cluster_id, crate::CLUSTER);
    }
}
