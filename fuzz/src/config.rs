//! Target `config`: the TOML file of `gossip-node run`.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use gossip_core::{Machine, NodeAddr, NodeId};
use gossip_node::RunArgs;
use gossip_node::config::FileConfig;

/// Deadlines a machine from an accepted configuration is run through.
const DEADLINES: usize = 12;

/// Parses `data` as the file (text that is not UTF-8 is refused as
/// `load` refuses it), resolves its paths, merges it under no flags and
/// validates it. A configuration that passes must start a `Machine`, which
/// then runs through its first deadlines, with a key set and a seed added,
/// without a panic.
pub(crate) fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/gossip/node.toml");
    let Ok(mut file) = FileConfig::parse(text, path) else {
        return;
    };
    file.resolve_paths(Path::new("/etc/gossip"));
    let Ok(config) = gossip_node::NodeConfig::merge(&RunArgs::default(), file) else {
        return;
    };
    let addr = config
        .advertise
        .clone()
        .unwrap_or_else(|| NodeAddr::from(config.listen));
    let mut now = Instant::now();
    let mut m = Machine::new(NodeId::new(addr, 1), config.protocol.clone(), 1, now)
        .expect("a validated configuration starts a machine");
    let _ = m.set_key(now, "k", Bytes::from_static(b"v"), None);
    for seed in &config.seeds {
        m.add_seed(now, seed.clone());
    }
    m.add_seed(
        now,
        NodeAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 1))),
    );
    for _ in 0..DEADLINES {
        let Some(deadline) = m.poll_timeout() else {
            break;
        };
        now = now.max(deadline);
        m.handle_timeout(now);
        while m.poll_transmit().is_some() {}
        while m.poll_event().is_some() {}
    }
}
