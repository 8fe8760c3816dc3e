//! Target `snapshot`: the snapshot file a member reads at start
//! (`DATA_DIR/snapshot.json`, gossip-node/src/snapshot.rs).

use gossip_node::NodeConfig;
use gossip_node::snapshot::{Snapshot, unix_ms};

/// Parses `data` as `SnapshotStore::load` does (`Snapshot::from_json`; a
/// file of another cluster is ignored there, so the cluster id is not
/// checked here) and, if it is usable, does what `node::start` does with
/// it: its metadata replaces the configured one (the configuration must
/// still validate: a usable snapshot never stops a member from starting),
/// the next generation, the seeds, and the keys republished on a running
/// member.
pub(crate) fn run(data: &[u8]) {
    let Ok(snapshot) = Snapshot::from_json(data) else {
        return;
    };
    let mut config = NodeConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 7000)));
    config.meta = snapshot.meta.clone();
    if let Err(e) = config.validate() {
        panic!("a usable snapshot makes the configuration invalid: {e}");
    }
    let now = unix_ms();
    assert!(snapshot.next_generation(now) > snapshot.generation || snapshot.generation == u64::MAX);
    let _ = snapshot.seeds();
    crate::admin::with_api(|api| {
        let set = snapshot.republish(api.member.as_ref(), now);
        assert!(set <= snapshot.keys.len());
        ((), false)
    });
}
