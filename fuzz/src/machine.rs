//! Target `machine`: one `Machine` fed a script of inputs; the most
//! valuable target, since whatever passes the gate reaches
//! `Machine::handle_message`, and nothing a peer sends may panic it, stall
//! its timers or make it send what the documented limits forbid.
//!
//! # Script
//!
//! Byte 0 picks the `max_message_size` (modulo 3: the minimum, 1400 bytes,
//! the default 64 KiB). Then, until the input ends, one op byte and its
//! operands:
//!
//! ```text
//! op % 8 in 0..=3   message: sender byte s, u16 LE length n, n bytes of an
//!                   encoded Envelope (skipped if it does not decode). Its
//!                   cluster id is set to ours; if s < 0x80 its sender is
//!                   peer s % 8 (keeping the decoded generation, default 1),
//!                   else the decoded sender stays.
//! op % 8 == 4       time to the machine's next deadline, handle_timeout
//! op % 8 == 5       u16 LE t: time advances t × 4 ms, handle_timeout (a
//!                   stall when it skips deadlines)
//! op % 8 == 6       byte b: a send to peer b % 8 failed, refused if b & 8
//! op % 8 == 7       byte b, then a command by b % 5: add_seed(peer b / 5 % 8),
//!                   set_key (u8 length n, n bytes of key, u8 length m,
//!                   m bytes of value), delete_key (u8 length, key),
//!                   broadcast (u8 length, payload), leave
//! ```
//!
//! Peers are `127.0.0.1:7001` to `127.0.0.1:7008`; the machine is
//! `127.0.0.1:7000`, generation 1, in cluster [`CLUSTER`](crate::CLUSTER).

use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::pb::{self, Envelope};
use gossip_core::{Config, MIN_MESSAGE_SIZE, Machine, NodeAddr, NodeId};
use prost::Message;

/// Calls of `handle_timeout` at one instant after which the next deadline
/// must be later (a deadline that stays due would spin the driver).
const MAX_TIMEOUTS_AT_ONCE: usize = 8;

/// The input, read front to back; reads past the end yield zeros / empty.
struct Script<'a>(&'a [u8]);

impl<'a> Script<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> u16 {
        let lo = self.byte().unwrap_or(0);
        let hi = self.byte().unwrap_or(0);
        u16::from_le_bytes([lo, hi])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn short(&mut self) -> &'a [u8] {
        let n = self.byte().unwrap_or(0) as usize;
        self.bytes(n)
    }
}

fn peer(i: u8) -> NodeAddr {
    NodeAddr::from(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        7001 + u16::from(i % 8),
    )))
}

/// Runs the script `data` (see the module documentation).
pub(crate) fn run(data: &[u8]) {
    let (m, now) = run_script(data);
    // Reading the state must not panic either.
    let _ = m.members(now);
    let _ = m.all_members(now);
    let _ = m.kv(now);
}

/// Runs the script `data`; the machine and the time at the end.
fn run_script(data: &[u8]) -> (Machine, Instant) {
    let mut script = Script(data);
    let mut config = Config {
        cluster_id: crate::CLUSTER.to_owned(),
        ..Config::default()
    };
    config.max_message_size = match script.byte().unwrap_or(2) % 3 {
        0 => MIN_MESSAGE_SIZE,
        1 => 1400_usize.max(MIN_MESSAGE_SIZE),
        _ => config.max_message_size,
    };
    let me = NodeId::new(
        NodeAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 7000))),
        1,
    );
    let mut now = Instant::now();
    let mut m = Machine::new(me.clone(), config.clone(), 7, now).expect("a valid config");
    let mut left = false;
    while let Some(op) = script.byte() {
        match op % 8 {
            0..=3 => {
                let sender = script.byte().unwrap_or(0);
                let n = usize::from(script.u16());
                let Ok(mut env) = Envelope::decode(script.bytes(n)) else {
                    continue;
                };
                env.cluster_id = config.cluster_id.clone();
                if sender < 0x80 {
                    let generation = env.from.as_ref().map_or(1, |f| f.generation);
                    env.from = Some(pb::NodeId {
                        addr: peer(sender).to_string(),
                        generation,
                    });
                }
                m.handle_message(now, env);
            }
            4 => {
                if let Some(deadline) = m.poll_timeout() {
                    now = now.max(deadline);
                }
                timeouts_at(&mut m, now, left);
            }
            5 => {
                now += Duration::from_millis(u64::from(script.u16()) * 4);
                timeouts_at(&mut m, now, left);
            }
            6 => {
                let b = script.byte().unwrap_or(0);
                m.handle_send_error(now, &peer(b), b & 8 != 0);
            }
            _ => {
                let b = script.byte().unwrap_or(0);
                match b % 5 {
                    0 => m.add_seed(now, peer(b / 5)),
                    1 => {
                        let key = String::from_utf8_lossy(script.short()).into_owned();
                        let value = Bytes::copy_from_slice(script.short());
                        let _ = m.set_key(now, &key, value, None);
                    }
                    2 => {
                        let key = String::from_utf8_lossy(script.short()).into_owned();
                        let _ = m.delete_key(now, &key);
                    }
                    3 => {
                        let payload = Bytes::copy_from_slice(script.short());
                        let _ = m.broadcast(now, payload, None);
                    }
                    _ => {
                        m.leave(now);
                        left = true;
                    }
                }
            }
        }
        drain(&mut m, &me, &config);
    }
    (m, now)
}

/// Runs the timers due at `now` until none is due any more, which must take
/// at most [`MAX_TIMEOUTS_AT_ONCE`] calls.
fn timeouts_at(m: &mut Machine, now: Instant, left: bool) {
    for _ in 0..MAX_TIMEOUTS_AT_ONCE {
        m.handle_timeout(now);
        match m.poll_timeout() {
            Some(next) if next <= now => continue,
            Some(_) => return,
            None => {
                assert!(left, "a member that has not left always has a deadline");
                return;
            }
        }
    }
    panic!("a deadline stays due after {MAX_TIMEOUTS_AT_ONCE} timeouts at one instant");
}

/// Takes every output, checking what each transmit may be.
fn drain(m: &mut Machine, me: &NodeId, config: &Config) {
    while let Some(t) = m.poll_transmit() {
        assert_ne!(t.to, me.addr, "a message to itself");
        let size = t.msg.encoded_len();
        assert!(
            size <= config.max_message_size,
            "a message of {size} bytes, over the maximum {}: {:?}",
            config.max_message_size,
            t.msg.body
        );
        assert_eq!(t.msg.cluster_id, config.cluster_id);
        assert_eq!(t.msg.from, Some(me.to_pb()), "sent in its own name");
    }
    while m.poll_event().is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;

    /// The seed scripts are real traffic: the first one makes the machine
    /// learn every peer of the traced cluster, so the fuzzer starts deep
    /// in the protocol rather than at the gate; one of them writes a key.
    #[test]
    fn the_seed_scripts_bring_peers_and_keys() {
        let seed = |name: &str| {
            std::fs::read(Target::Machine.corpus_dir().join(name)).expect("the seed corpus")
        };
        let (m, now) = run_script(&seed("seed-trace-00"));
        assert_eq!(m.members(now).len(), 4, "{:?}", m.members(now));
        let wrote = (0..4).any(|i| {
            let (m, now) = run_script(&seed(&format!("seed-trace-{i:02}")));
            m.get_key(now, &m.local_id().addr, "color").is_some()
        });
        assert!(wrote, "no seed script writes the key");
    }
}
