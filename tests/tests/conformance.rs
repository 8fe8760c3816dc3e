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
                large_value_seen_by_all,
                broadcast_delivered_exactly_once,
                killed_member_is_removed_within_the_bound,
                leaving_member_is_removed_at_once,
                seed_that_never_answers_is_not_a_member,
                restart_with_a_new_generation_replaces_the_old,
                bad_input_is_rejected_and_changes_nothing,
                no_false_deaths_under_twenty_percent_loss,
                partition_heals_to_one_view,
                a_stopped_member_is_removed_fast,
                a_partitioned_member_is_not_removed_before_its_time,
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

/// Transports that keep connections: warm-up opens one to every member.
mod grpc_connections {
    use gossip_tests::kinds::*;
    use gossip_tests::scenarios as s;

    conformance!(@tests Grpc; a_quiet_cluster_holds_a_connection_to_every_member);
}

mod quic_connections {
    use gossip_tests::kinds::*;
    use gossip_tests::scenarios as s;

    conformance!(@tests Quic; a_quiet_cluster_holds_a_connection_to_every_member);
}

/// The first gRPC wire version (unary `Send` only), as a member of the
/// previous release runs it: the scenarios that exercise sending, receiving
/// and bad input.
mod grpc_unary {
    use gossip_tests::kinds::*;
    use gossip_tests::scenarios as s;

    conformance!(@tests GrpcUnary;
        join_through_a_seed,
        keys_set_delete_and_ttl_seen_by_all,
        large_value_seen_by_all,
        killed_member_is_removed_within_the_bound,
        a_stopped_member_is_removed_fast,
        bad_input_is_rejected_and_changes_nothing,
    );
}

/// Under mutual TLS, the scenarios where authentication matters, and the
/// refusal of a peer without a certificate from the cluster CA.
macro_rules! conformance_mtls {
    ($transport:ident, $kind:expr) => {
        mod $transport {
            use gossip_tests::kinds::*;
            use gossip_tests::scenarios as s;

            conformance!(@tests $kind;
                join_through_a_seed,
                chain_of_ten,
                keys_set_delete_and_ttl_seen_by_all,
                killed_member_is_removed_within_the_bound,
                leaving_member_is_removed_at_once,
                restart_with_a_new_generation_replaces_the_old,
                partition_heals_to_one_view,
                a_stopped_member_is_removed_fast,
                mtls_refuses_a_peer_without_a_cluster_certificate,
            );
        }
    };
}

conformance_mtls!(grpc_mtls, GrpcMtls::default());
conformance_mtls!(quic_mtls, QuicMtls::default());
