//! The conformance suites as test functions: [`conformance_suite!`](crate::conformance_suite)
//! expands the suites of the roles a store implements, one test function per
//! check, for any [`StoreHarness`](super::StoreHarness);
//! [`store_conformance_suite!`](crate::store_conformance_suite) expands every
//! role's, for a full store.
//!
//! Every check sets up and inspects through the harness's full store, so a
//! store that implements some roles only runs their suites over a
//! [`StoreParts`](crate::store::StoreParts) that puts it in place of those
//! roles (see `aiopslab-http/tests/remote_worker_conformance.rs`).

/// Expands to one test function per check of each role in `roles`.
///
/// | role | trait | checks |
/// |---|---|---|
/// | `worker_queue` | [`WorkerQueue`](crate::WorkerQueue) | claims (order, routing, a chosen task, dispatch delay), finishes and their replays, retries, leases and their tokens, heartbeats and hand-backs, registration and takeover, logs and trajectories from a lease, the worker-id rule, NULs and deep JSON from workers, 32 claimers exactly once |
/// | `task_api` | [`TaskApi`](crate::TaskApi) | creation and defaults, order, unknown ids, cancel, listing filters, sorts and pages, log reads, batches and idempotency keys (concurrent ones too), numbers and random JSON read back, refills of aborted group members (run out, stopped by `min_valid`, not for retries, timeouts or cancels, concurrent aborts within `max_refills`) |
/// | `fleet` | [`FleetView`](crate::FleetView), [`Housekeeping`](crate::Housekeeping) | lease expiry, timeouts, silent workers, worker listing, stats (and listing totals that agree with them), concurrent sweeps |
/// | `export` | [`EpisodeExport`](crate::EpisodeExport) | the keyset walk, filters |
/// | `final_reports` | [`FinalReports`](crate::FinalReports) (a capability: the harness's store must offer it) | logs, trajectory and finish in one step, replays, a lost lease writes nothing, a failure with retries requeues |
/// | `fair_share` | the claim's fair share between experiments, with [`Experiments`](crate::Experiments) (a capability: the harness's store must offer it) | round-robin between experiments of one priority, priority beats fairness, limits changed at runtime, unknown experiments unlimited, `max_running` never exceeded by racing claimers (on the harness's replicas when it has them) |
/// | `webhook_outbox` | [`WebhookOutbox`](crate::WebhookOutbox) | deliveries written with terminal statuses (not on requeue), leases on claims, attempts, late reports, NULs, concurrent claims |
///
/// ```no_run
/// aiopslab_core::conformance_suite! {
///     roles = [worker_queue, task_api, fleet, export, webhook_outbox],
///     harness = aiopslab_core::testkit::MemoryHarness::default(),
///     test = #[tokio::test(start_paused = true)],
///     concurrency = (32, 2000),
///     // optional: the attribute of the racing checks (default: `test`)
///     concurrency_test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
/// }
/// ```
///
/// - `roles`: any of `worker_queue`, `task_api`, `fleet`, `export`,
///   `webhook_outbox`, `final_reports`, `fair_share` (the table above says what
///   each checks).
/// - `harness`: an expression evaluated at the start of every test (it may
///   `.await`), giving a [`StoreHarness`](crate::testkit::StoreHarness).
/// - `test`: the attribute put on each generated `async fn`, e.g.
///   `#[tokio::test]`, `#[tokio::test(start_paused = true)]` or
///   `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`.
/// - `concurrency = (claimers, tasks)`: sizes of the racing claim and sweep
///   checks (`worker_queue`, `fleet`).
/// - `concurrency_test` (optional, last): a different attribute for the
///   checks that race (claims, sweeps, idempotency keys, webhook claims).
///
/// The generated functions are named after the checks in
/// [`testkit`](crate::testkit) (`claim_order_priority_then_age`, ...), so
/// expand the macro once per module.
#[macro_export]
macro_rules! conformance_suite {
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
    (@role worker_queue; $harness:expr, $test:meta, $claimers:expr, $tasks:expr, $racing:meta) => {
        $crate::conformance_suite!(@checks $harness, $test;
            claim_sets_running_state,
            finish_records_terminal_status,
            terminal_status_is_final,
            finish_replay_is_idempotent,
            failed_finish_requeues_while_retries_remain,
            claim_order_priority_then_age,
            claim_ties_break_on_id,
            claim_many_takes_the_best_up_to_its_limit,
            claim_routes_by_backend_type,
            claim_respects_supported_problems,
            claim_specific_task,
            dispatch_delay_holds_new_tasks,
            failed_run_of_cancelled_task_is_not_retried,
            stale_token_refused_after_requeue,
            heartbeat_keeps_leases_alive,
            extend_lease_keeps_lease_alive,
            register_and_get_worker,
            register_refused_while_alive,
            deregister_then_register_again,
            heartbeat_updates_worker,
            heartbeat_hands_back_tasks_it_does_not_list,
            new_instance_takes_a_live_id_over,
            worker_counters_follow_finishes,
            log_writes_need_a_lease,
            trajectory_save_replace_get,
            claim_needs_a_registered_live_worker,
            worker_ids_follow_one_pattern,
            nul_in_text_is_stored_as_replacement,
            deep_json_from_workers_is_cut_alike,
        );
        $crate::conformance_suite!(@sized $harness, $racing, $claimers, $tasks;
            concurrent_claims_exactly_once,
        );
    };
    (@role task_api; $harness:expr, $test:meta, $claimers:expr, $tasks:expr, $racing:meta) => {
        $crate::conformance_suite!(@checks $harness, $test;
            create_and_get_defaults,
            create_tasks_in_order,
            unknown_ids_are_not_found,
            cancel_pending_task,
            cancel_running_task,
            list_tasks_filters,
            list_tasks_sorts,
            list_tasks_pages,
            logs_in_order_with_filters,
            batch_creates_a_group,
            idempotent_batch_replays,
            idempotency_key_conflict,
            edge_numbers_read_back_identically,
            random_json_round_trips,
            aborted_members_are_refilled,
            refills_run_out,
            enough_valid_members_stop_refilling,
            retries_come_before_refills,
            every_abort_path_refills,
            timeouts_and_cancels_are_not_refilled,
        );
        $crate::conformance_suite!(@checks $harness, $racing;
            concurrent_idempotent_batches_create_once,
            concurrent_aborts_never_exceed_max_refills,
        );
    };
    (@role fleet; $harness:expr, $test:meta, $claimers:expr, $tasks:expr, $racing:meta) => {
        $crate::conformance_suite!(@checks $harness, $test;
            lease_expiry_fails_without_retries,
            lease_expiry_requeues_with_retries,
            sweep_times_out_overdue_tasks,
            sweep_marks_silent_workers_offline,
            list_workers_filters,
            stats_counts,
        );
        $crate::conformance_suite!(@sized $harness, $racing, $claimers, $tasks;
            concurrent_sweeps_do_not_double_handle,
        );
    };
    (@role export; $harness:expr, $test:meta, $claimers:expr, $tasks:expr, $racing:meta) => {
        $crate::conformance_suite!(@checks $harness, $test;
            export_walks_episodes_in_order,
            export_filters,
            export_outcomes_and_policy_versions,
        );
    };
    (@role final_reports; $harness:expr, $test:meta, $claimers:expr, $tasks:expr, $racing:meta) => {
        $crate::conformance_suite!(@checks $harness, $test;
            final_report_writes_logs_trajectory_and_outcome,
            final_report_of_a_lost_lease_writes_nothing,
            final_report_of_a_failure_with_retries_requeues,
        );
    };
    (@role fair_share; $harness:expr, $test:meta, $claimers:expr, $tasks:expr, $racing:meta) => {
        $crate::conformance_suite!(@checks $harness, $test;
            fair_share_round_robin_between_experiments,
            fair_share_priority_beats_fairness,
            fair_share_limit_changes_take_effect,
            fair_share_unknown_experiment_is_unlimited,
        );
        $crate::conformance_suite!(@sized $harness, $racing, $claimers, $tasks;
            fair_share_limits_hold_under_racing_claimers,
        );
    };
    (@role webhook_outbox; $harness:expr, $test:meta, $claimers:expr, $tasks:expr, $racing:meta) => {
        $crate::conformance_suite!(@checks $harness, $test;
            webhook_queued_on_finish_and_cancel,
            webhook_queued_by_sweep,
            webhook_not_queued_on_requeue_or_without_callback,
            claim_webhooks_leases_deliveries,
            webhook_attempts_move_deliveries,
            late_webhook_reports_never_regress,
            nul_in_webhook_attempt_is_replaced,
        );
        $crate::conformance_suite!(@checks $harness, $racing;
            concurrent_webhook_claims_exactly_once,
        );
    };
    (
        roles = [$($role:ident),+ $(,)?],
        harness = $harness:expr,
        test = #[$test:meta],
        concurrency = ($claimers:expr, $tasks:expr),
        concurrency_test = #[$racing:meta] $(,)?
    ) => {
        $( $crate::conformance_suite!(@role $role; $harness, $test, $claimers, $tasks, $racing); )+
    };
    (
        roles = [$($role:ident),+ $(,)?],
        harness = $harness:expr,
        test = #[$test:meta],
        concurrency = ($claimers:expr, $tasks:expr) $(,)?
    ) => {
        $( $crate::conformance_suite!(@role $role; $harness, $test, $claimers, $tasks, $test); )+
    };
}

/// Every role's suite, for a full [`TaskStore`](crate::TaskStore):
/// [`conformance_suite!`](crate::conformance_suite) with all five roles and
/// the same arguments otherwise.
///
/// ```no_run
/// aiopslab_core::store_conformance_suite! {
///     harness = aiopslab_core::testkit::MemoryHarness::default(),
///     test = #[tokio::test(start_paused = true)],
///     concurrency = (32, 2000),
///     concurrency_test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
/// }
/// ```
#[macro_export]
macro_rules! store_conformance_suite {
    ($($args:tt)*) => {
        $crate::conformance_suite! {
            roles = [worker_queue, task_api, fleet, export, webhook_outbox],
            $($args)*
        }
    };
}
