//! The store conformance suites (feature `testkit`), one per store role.
//!
//! A store proves it keeps the rules of the roles it implements by running
//! their suites (which checks belong to which role: see
//! [`conformance_suite!`](crate::conformance_suite)). A
//! store crate provides a [`StoreHarness`] (how to make a fresh, empty store
//! and how to move its clock forward) and expands
//! [`conformance_suite!`](crate::conformance_suite) with its roles — or
//! [`store_conformance_suite!`](crate::store_conformance_suite) for a full
//! store — in one of its test files, which generates one test per check:
//!
//! ```text
//! aiopslab_core::store_conformance_suite! {
//!     harness = MyHarness::new().await,
//!     test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
//!     concurrency = (32, 10_000),
//! }
//! ```
//!
//! The checks set up and inspect through a full store, so a store that
//! implements only some roles runs their suites over a
//! [`StoreParts`](crate::store::StoreParts) that puts it in place of those
//! roles, the rest served by the full store it works against.
//!
//! Each check is also a public `async fn` taking the harness, so a store can
//! run a single one by hand. Checks panic with a message naming the broken
//! rule. They never assume time stands still: store time moves only through
//! [`StoreHarness::advance_clock`] as far as the checks are concerned, and
//! every limit they rely on (60 s leases, 90 s offline threshold) is far
//! longer than a check takes. They compare timestamps only when both were
//! read after the last clock move, so a harness may move the clock by
//! shifting stored timestamps back.
//!
//! [`MemoryHarness`] runs the suite on [`MemoryStore`](crate::MemoryStore).

use async_trait::async_trait;
use std::time::Duration;

use crate::policy::LeasePolicy;
use crate::store::TaskStore;

mod batches;
mod cancel;
mod claims;
mod concurrency;
mod export;
mod fair_share;
mod final_reports;
mod instances;
mod json;
mod leases;
mod lifecycle;
mod listing;
mod logs;
mod macros;
mod memory;
mod refills;
pub mod support;
mod text;
mod webhooks;
mod workers;

pub use batches::{
    batch_creates_a_group, concurrent_idempotent_batches_create_once, grouped, idempotency_key_conflict,
    idempotent_batch_replays, key,
};
pub use cancel::{cancel_pending_task, cancel_running_task, failed_run_of_cancelled_task_is_not_retried};
pub use claims::{
    claim_many_takes_the_best_up_to_its_limit, claim_order_priority_then_age, claim_respects_supported_problems,
    claim_routes_by_backend_type, claim_specific_task, claim_ties_break_on_id, dispatch_delay_holds_new_tasks,
};
pub use concurrency::{concurrent_claims_exactly_once, concurrent_sweeps_do_not_double_handle};
pub use export::{
    export_filters, export_outcomes_and_policy_versions, export_walks_episodes_in_order, sample_trajectory,
};
pub use fair_share::{
    fair_share_limit_changes_take_effect, fair_share_limits_hold_under_racing_claimers,
    fair_share_priority_beats_fairness, fair_share_round_robin_between_experiments,
    fair_share_unknown_experiment_is_unlimited, in_experiment,
};
pub use final_reports::{
    final_report_of_a_failure_with_retries_requeues, final_report_of_a_lost_lease_writes_nothing,
    final_report_writes_logs_trajectory_and_outcome,
};
pub use instances::{heartbeat_hands_back_tasks_it_does_not_list, new_instance_takes_a_live_id_over};
pub use json::{
    deep_json_from_workers_is_cut_alike, edge_numbers, edge_numbers_read_back_identically, random_json_round_trips,
    DEFAULT_JSON_SEED, RANDOM_JSON_CASES,
};
pub use leases::{
    extend_lease_keeps_lease_alive, heartbeat_keeps_leases_alive, lease_expiry_fails_without_retries,
    lease_expiry_requeues_with_retries, stale_token_refused_after_requeue, sweep_times_out_overdue_tasks,
};
pub use lifecycle::{
    claim_sets_running_state, create_and_get_defaults, create_tasks_in_order,
    failed_finish_requeues_while_retries_remain, finish_records_terminal_status, finish_replay_is_idempotent,
    terminal_status_is_final, unknown_ids_are_not_found,
};
pub use listing::{list_tasks_filters, list_tasks_pages, list_tasks_sorts, stats_counts};
pub use logs::{log_writes_need_a_lease, logs_in_order_with_filters, trajectory_save_replace_get};
pub use memory::MemoryHarness;
pub use refills::{
    aborted_members_are_refilled, concurrent_aborts_never_exceed_max_refills, enough_valid_members_stop_refilling,
    every_abort_path_refills, refills_run_out, retries_come_before_refills, timeouts_and_cancels_are_not_refilled,
};
pub use text::{nul_in_text_is_stored_as_replacement, nul_in_webhook_attempt_is_replaced};
pub use webhooks::{
    attempt_delivered, attempt_failed, claim_webhooks_leases_deliveries, concurrent_webhook_claims_exactly_once,
    late_webhook_reports_never_regress, webhook_attempts_move_deliveries,
    webhook_not_queued_on_requeue_or_without_callback, webhook_queued_by_sweep, webhook_queued_on_finish_and_cancel,
    with_callback, HOOK_URL,
};
pub use workers::{
    claim_needs_a_registered_live_worker, deregister_then_register_again, heartbeat_updates_worker,
    list_workers_filters, register_and_get_worker, register_refused_while_alive, sweep_marks_silent_workers_offline,
    worker_counters_follow_finishes, worker_ids_follow_one_pattern,
};

/// How the suite gets stores to test.
#[async_trait]
pub trait StoreHarness: Send + Sync + 'static {
    /// The store under test.
    type Store: TaskStore;

    /// A fresh, empty store (no tasks, no workers) enforcing `policy`.
    async fn store(&self, policy: LeasePolicy) -> Self::Store;

    /// Moves `store`'s clock forward by `by`, so lease, timeout and liveness
    /// rules can be tested without waiting. (MemoryStore: tokio's paused
    /// clock; PostgreSQL: shift the stored timestamps back.)
    async fn advance_clock(&self, store: &Self::Store, by: Duration);

    /// Up to `n` more handles on `store`'s state, each as a separate server
    /// replica (or a worker with a database connection of its own) would hold
    /// it, for the checks that race claimers across replicas
    /// (`fair_share_limits_hold_under_racing_claimers`). The default: none,
    /// and those checks race on `store` alone. (PostgreSQL: a store of its own,
    /// with one connection, on the same database.)
    async fn replicas(&self, _store: &Self::Store, _n: usize) -> Vec<Self::Store> {
        Vec::new()
    }
}
