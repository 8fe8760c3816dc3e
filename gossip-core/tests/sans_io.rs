//! Architecture invariant, checked in CI: the protocol state machine and its
//! modules never read a clock, open a socket, spawn a task or sleep. Time
//! and randomness enter only as arguments (`now`, the RNG seed).

const PROTOCOL_FILES: &[&str] = &[
    "src/machine/mod.rs",
    "src/machine/probe.rs",
    "src/machine/sync.rs",
    "src/machine/timer.rs",
    "src/members.rs",
    "src/kv.rs",
    "src/swim.rs",
    "src/anti_entropy.rs",
    "src/digest.rs",
    "src/queue.rs",
    "src/dedup.rs",
    "src/config.rs",
    "src/event.rs",
    "src/id.rs",
];

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "tokio::",
    "std::thread",
    "thread_rng",
    "rand::rng()",
    "OsRng",
    "sleep(",
];

#[test]
fn the_state_machine_does_no_io() {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in PROTOCOL_FILES {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        // Unit tests at the bottom of a file may use a clock.
        let body = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
        // Doc examples and comments may show a clock; code may not.
        let code: String = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for bad in FORBIDDEN {
            assert!(
                !code.contains(bad),
                "{file} uses `{bad}`: the state machine must stay sans-IO"
            );
        }
    }
}
