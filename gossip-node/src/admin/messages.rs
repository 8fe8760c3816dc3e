//! The broadcasts a member delivered, for `GET /messages`: a bounded ring
//! fed by one task subscribed to the member's events.
//!
//! Payload encoding: `POST /gossip` puts the JSON text of its `payload`
//! (compact, UTF-8) on the wire, so a payload that parses as JSON is shown as
//! that JSON value (`"encoding": "json"`). Broadcasts from other programs may
//! carry any bytes; those are shown as a string (`"encoding": "text"`,
//! invalid UTF-8 replaced by U+FFFD).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use gossip_core::{BroadcastMsg, Event, Membership};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::warn;
use uuid::Uuid;

/// Broadcasts kept by [`MessageLog`]; older ones are forgotten.
pub const MESSAGE_LOG_CAPACITY: usize = 1000;

/// One delivered broadcast, as `GET /messages` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeliveredMessage {
    /// The broadcast's id.
    pub uuid: Uuid,
    /// Address of the member that broadcast it.
    pub origin: String,
    /// Generation of that member.
    pub origin_generation: u64,
    /// The origin's broadcast counter.
    pub version: u64,
    /// Hops left when it arrived here.
    pub ttl: u32,
    /// The payload: a JSON value, or a string (see `encoding`).
    pub payload: Value,
    /// `"json"` if the payload bytes were JSON text, `"text"` otherwise.
    pub encoding: &'static str,
    /// When this member delivered it, ms since the Unix epoch.
    pub received_at_ms: u64,
}

impl DeliveredMessage {
    fn new(b: BroadcastMsg, received_at_ms: u64) -> Self {
        let (payload, encoding) = match serde_json::from_slice::<Value>(&b.payload) {
            Ok(v) => (v, "json"),
            Err(_) => (
                Value::String(String::from_utf8_lossy(&b.payload).into_owned()),
                "text",
            ),
        };
        Self {
            uuid: b.uuid,
            origin: b.origin.addr.to_string(),
            origin_generation: b.origin.generation,
            version: b.version,
            ttl: b.ttl,
            payload,
            encoding,
            received_at_ms,
        }
    }
}

/// The last [`MESSAGE_LOG_CAPACITY`] broadcasts delivered, newest first.
#[derive(Debug, Default)]
pub struct MessageLog {
    ring: Mutex<VecDeque<DeliveredMessage>>,
}

impl MessageLog {
    /// A copy of the log, newest first.
    pub fn newest_first(&self) -> Vec<DeliveredMessage> {
        self.lock().iter().rev().cloned().collect()
    }

    fn push(&self, m: DeliveredMessage) {
        let mut ring = self.lock();
        if ring.len() == MESSAGE_LOG_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(m);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<DeliveredMessage>> {
        // A panic while holding the lock leaves a valid ring behind.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Subscribes to `member`'s events now and spawns the task that records its
/// delivered broadcasts into `log`. The task ends when `stop` turns true or
/// its sender is dropped, or when the member's event channel closes.
pub(super) fn spawn_recorder(
    member: &dyn Membership,
    log: Arc<MessageLog>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut events = member.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                event = events.recv() => match event {
                    Ok(Event::Broadcast(b)) => log.push(DeliveredMessage::new(b, now_ms())),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "message log fell behind the member's events");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gossip_core::{NodeAddr, NodeId};

    fn msg(i: u128, payload: &'static [u8]) -> BroadcastMsg {
        BroadcastMsg {
            uuid: Uuid::from_u128(i),
            origin: NodeId::new(NodeAddr::parse("127.0.0.1:7001").unwrap(), 5),
            version: i as u64,
            ttl: 3,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn json_payloads_come_back_as_json_and_others_as_text() {
        let m = DeliveredMessage::new(msg(1, br#"{"a":[1,2.5,"x"]}"#), 7);
        assert_eq!(m.payload, serde_json::json!({"a": [1, 2.5, "x"]}));
        assert_eq!(m.encoding, "json");
        let m = DeliveredMessage::new(msg(2, b"plain words"), 7);
        assert_eq!(m.payload, Value::String("plain words".into()));
        assert_eq!(m.encoding, "text");
        let m = DeliveredMessage::new(msg(3, b"\xff\xfe"), 7);
        assert_eq!(m.encoding, "text");
        assert_eq!(m.origin, "127.0.0.1:7001");
        assert_eq!(m.origin_generation, 5);
    }

    #[test]
    fn the_log_is_bounded_and_newest_first() {
        let log = MessageLog::default();
        for i in 0..(MESSAGE_LOG_CAPACITY as u128 + 5) {
            log.push(DeliveredMessage::new(msg(i, b"1"), 0));
        }
        let all = log.newest_first();
        assert_eq!(all.len(), MESSAGE_LOG_CAPACITY);
        assert_eq!(
            all[0].uuid,
            Uuid::from_u128(MESSAGE_LOG_CAPACITY as u128 + 4)
        );
        assert_eq!(all.last().unwrap().uuid, Uuid::from_u128(5));
    }
}
