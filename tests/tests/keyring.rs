//! The keyring scenarios (issue #12) over every transport. The check that
//! no key reaches a log line is `keyring_logs.rs`, a binary of its own.

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
        }
    };
}

keyring!(mem, Mem::default());
keyring!(grpc, Grpc);
keyring!(quic, Quic);
