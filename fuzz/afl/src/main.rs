//! `gossip-fuzz-afl <target>`: runs the named target of `gossip-fuzz` on
//! every input AFL++ gives it (persistent mode). Build with
//! `cargo afl build --release`; run as FUZZING.md says.

use gossip_fuzz::{Target, run};

fn main() {
    let target = match std::env::args().nth(1).map(|name| name.parse::<Target>()) {
        Some(Ok(target)) => target,
        Some(Err(e)) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
        None => {
            eprintln!("usage: gossip-fuzz-afl <target>");
            std::process::exit(2);
        }
    };
    afl::fuzz!(|data: &[u8]| {
        run(target, data);
    });
}
