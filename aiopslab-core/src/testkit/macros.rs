//! [`store_conformance_suite!`](crate::store_conformance_suite): one test
//! function per conformance check, for any [`StoreHarness`](super::StoreHarness).

/// Expands to one test function per conformance check.
///
/// ```no_run
/// aiopslab_core::store_conformance_suite! {
///     harness = aiopslab_core::testkit::MemoryHarness::default(),
///     test = #[tokio::test(start_paused = true)],
///     concurrency = (32, 2000),
///     // optional: the attribute of the racing checks (default: `test`)
///     concurrency_test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
/// }
/// ```
///
/// - `harness`: an expression evaluated at the start of every test (it may
///   `.await`), giving a [`StoreHarness`](crate::testkit::StoreHarness).
/// - `test`: the attribute put on each generated `async fn`, e.g.
///   `#[tokio::test]`, `#[tokio::test(start_paused = true)]` or
///   `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`.
/// - `concurrency = (claimers, tasks)`: sizes of the two concurrency checks.
/// - `concurrency_test` (optional, last): a different attribute for the
///   checks that race (claims, sweeps, idempotency keys, webhook claims).
///
/// The generated functions are named after the checks in
/// [`testkit`](crate::testkit) (`claim_order_priority_then_age`, ...), so
/// expand the macro once per module.
#[macro_export]
macro_rules! store_conformance_suite {
    (@checks $harness:expr, $test:meta; $($check:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $check() {
                let harness = $harness;
                $crate::testkit::$check(&harness).await;
            }
        )*
    };
    (@sized $harness:expr, $test:meta, $claimers:expr, $tasks:expr; $($check:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $check() {
                let harness = $harness;
                $crate::testkit::$check(&harness, $claimers, $tasks).await;
            }
        )*
    };
    (
        harness = $harness:expr,
        test = #[$test:meta],
        concurrency = ($claimers:expr, $tasks:expr),
        concurrency_test = #[$concurrency_test:meta] $(,)?
    ) => {
        $crate::store_conformance_suite!(@checks $harness, $test;
            create_and_get_defaults,
            create_tasks_in_order,
            claim_sets_running_state,
            finish_records_terminal_status,
            terminal_status_is_final,
            finish_replay_is_idempotent,
            failed_finish_requeues_while_retries_remain,
            unknown_ids_are_not_found,
            claim_order_priority_then_age,
            claim_ties_break_on_id,
            claim_routes_by_backend_type,
            claim_respects_supported_problems,
            claim_specific_task,
            dispatch_delay_holds_new_tasks,
            cancel_pending_task,
            cancel_running_task,
            failed_run_of_cancelled_task_is_not_retried,
            stale_token_refused_after_requeue,
            lease_expiry_fails_without_retries,
            lease_expiry_requeues_with_retries,
            heartbeat_keeps_leases_alive,
            extend_lease_keeps_lease_alive,
            sweep_times_out_overdue_tasks,
            register_and_get_worker,
            register_refused_while_alive,
            deregister_then_register_again,
            heartbeat_updates_worker,
            heartbeat_hands_back_tasks_it_does_not_list,
            new_instance_takes_a_live_id_over,
            sweep_marks_silent_workers_offline,
            worker_counters_follow_finishes,
            list_workers_filters,
            list_tasks_filters,
            list_tasks_sorts,
            list_tasks_pages,
            stats_counts,
            logs_in_order_with_filters,
            log_writes_need_a_lease,
            trajectory_save_replace_get,
            batch_creates_a_group,
            idempotent_batch_replays,
            idempotency_key_conflict,
            export_walks_episodes_in_order,
            export_filters,
            webhook_queued_on_finish_and_cancel,
            webhook_queued_by_sweep,
            webhook_not_queued_on_requeue_or_without_callback,
            claim_webhooks_leases_deliveries,
            webhook_attempts_move_deliveries,
            late_webhook_reports_never_regress,
            claim_needs_a_registered_live_worker,
            worker_ids_follow_one_pattern,
            nul_in_text_is_stored_as_replacement,
            nul_in_webhook_attempt_is_replaced,
            edge_numbers_read_back_identically,
            random_json_round_trips,
            deep_json_from_workers_is_cut_alike,
        );
        $crate::store_conformance_suite!(@sized $harness, $concurrency_test, $claimers, $tasks;
            concurrent_claims_exactly_once,
            concurrent_sweeps_do_not_double_handle,
        );
        $crate::store_conformance_suite!(@checks $harness, $concurrency_test;
            concurrent_idempotent_batches_create_once,
            concurrent_webhook_claims_exactly_once,
        );
    };
    (
        harness = $harness:expr,
        test = #[$test:meta],
        concurrency = ($claimers:expr, $tasks:expr) $(,)?
    ) => {
        $crate::store_conformance_suite! {
            harness = $harness,
            test = #[$test],
            concurrency = ($claimers, $tasks),
            concurrency_test = #[$test],
        }
    };
}
