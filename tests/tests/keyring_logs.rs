//! No key ever reaches a log line (issue #12). In a test binary of its own,
//! so that one global `tracing` subscriber, at `trace` level, captures
//! every event of every thread into memory: the rotation and wrong-key
//! scenarios run over each transport, and the log must not contain any of
//! their keys in any form.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use gossip_core::Key;
use gossip_tests::keyring as s;
use gossip_tests::kinds::*;

/// The one log of this binary.
fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(log.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
}

macro_rules! logs {
    ($transport:ident, $kind:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $transport() {
            let log = log();
            let mut keys = s::rotation_under_traffic_loses_no_member_and_no_key($kind).await;
            keys.extend(s::a_member_with_a_wrong_key_or_none_is_rejected($kind).await);
            log.assert_free_of(&keys);
        }
    };
}

logs!(mem, Mem::default());
logs!(grpc, Grpc);
logs!(quic, Quic);

/// A `tracing` writer into memory.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Log {
    /// Panics if any key appears in the log, in base64, hex, or as Rust
    /// prints bytes (`[12, 34, ...]`, `b"\x0c\"..."`).
    #[track_caller]
    fn assert_free_of(&self, keys: &[Key]) {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        let lines = text.lines().count();
        assert!(
            lines > 100,
            "the run logged only {lines} lines: is the capture working?"
        );
        for key in keys {
            let bytes = key.as_bytes();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let forms = [
                ("base64", key.to_base64()),
                (
                    "base64 without padding",
                    key.to_base64().trim_end_matches('=').to_owned(),
                ),
                ("hex", hex.clone()),
                ("upper-case hex", hex.to_uppercase()),
                (
                    "a byte array",
                    format!("{:?}", &bytes[..8])
                        .trim_end_matches(']')
                        .to_owned(),
                ),
                (
                    "Bytes",
                    format!("{:?}", bytes::Bytes::copy_from_slice(&bytes[..8]))
                        .trim_end_matches('"')
                        .to_owned(),
                ),
            ];
            // The message names the form, not the key.
            for (name, form) in forms {
                assert!(
                    !text.contains(&form),
                    "key {} reached the log (as {name}) in {lines} lines",
                    key.id()
                );
            }
        }
        // The capture sees the keyring's own events: they name keys by id.
        assert!(
            keys.iter().any(|k| text.contains(&k.id().to_string())),
            "no keyring event was captured"
        );
        eprintln!("{lines} log lines, none with any of {} keys", keys.len());
    }
}
