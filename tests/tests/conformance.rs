//! Every scenario of `gossip_tests::scenarios`, against every transport.
//! A new transport gets the whole suite by adding one `conformance!` line.

macro_rules! conformance {
    ($transport:ident, $kind:expr) => {
        mod $transport {
            use gossip_tests::scenarios as s;
            #[allow(unused_imports)]
            use gossip_tests::kinds::*;

            conformance!(@tests $kind;
                join_through_a_seed,
                chain_of_ten,
                metadata_update_seen_by_all,
                keys_set_delete_and_ttl_seen_by_all,
                broadcast_delivered_exactly_once,
                killed_member_is_removed_within_the_bound,
                leaving_member_is_removed_at_once,
                seed_that_never_answers_is_not_a_member,
                restart_with_a_new_generation_replaces_the_old,
                bad_input_is_rejected_and_changes_nothing,
                no_false_deaths_under_twenty_percent_loss,
                partition_heals_to_one_view,
            );
        }
    };
    (@tests $kind:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                s::$scenario($kind).await;
            }
        )*
    };
}

conformance!(mem, Mem::default());
conformance!(grpc, Grpc);
conformance!(quic, Quic);
