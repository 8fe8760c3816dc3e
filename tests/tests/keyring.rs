//! The keyring scenarios (issue #12) over every transport, and the check
//! that no key ever reaches a log line: the rotation scenario runs again
//! with every `tracing` event, down to `trace`, written to a buffer, which
//! must not contain any key used in any of its forms.

use std::io::Write;
use std::sync::{Arc, Mutex};

use gossip_core::Key;
use gossip_tests::keyring as s;
use gossip_tests::kinds::*;

macro_rules! keyring {
    ($transport:ident, $kind:expr) => {
        mod $transport {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_member_with_a_wrong_key_or_none_is_rejected() {
                s::a_member_with_a_wrong_key_or_none_is_rejected($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rotation_under_traffic_loses_no_member_and_no_key() {
                s::rotation_under_traffic_loses_no_member_and_no_key($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_member_that_does_not_answer_is_reported() {
                s::a_member_that_does_not_answer_is_reported($kind).await;
            }

            /// On one thread, so that the thread's subscriber sees every
            /// task's events.
            #[tokio::test(flavor = "current_thread")]
            async fn keys_never_reach_a_log_line() {
                let log = Log::default();
                let subscriber = tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::TRACE)
                    .with_ansi(false)
                    .with_writer(log.clone())
                    .finish();
                let keys = {
                    let _guard = tracing::subscriber::set_default(subscriber);
                    let mut keys =
                        s::rotation_under_traffic_loses_no_member_and_no_key($kind).await;
                    keys.extend(s::a_member_with_a_wrong_key_or_none_is_rejected($kind).await);
                    keys
                };
                log.assert_free_of(&keys);
            }
        }
    };
}

keyring!(mem, Mem::default());
keyring!(grpc, Grpc);
keyring!(quic, Quic);

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
                key.to_base64(),
                key.to_base64().trim_end_matches('=').to_owned(),
                hex.clone(),
                hex.to_uppercase(),
                format!("{:?}", &bytes[..8])
                    .trim_end_matches(']')
                    .to_owned(),
                format!("{:?}", bytes::Bytes::copy_from_slice(&bytes[..8]))
                    .trim_end_matches('"')
                    .to_owned(),
            ];
            for form in forms {
                assert!(
                    !text.contains(&form),
                    "a key reached the log (as {form:?}) in {lines} lines"
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
