//! The store conformance checks (aiopslab-core's `testkit`) run against
//! [`HttpStore`]: every call goes over a real socket to the real router, which
//! serves a fresh `MemoryStore` per check. This proves the client and the
//! server together keep the `TaskStore` rules, errors included (the server
//! maps each `StoreError` to HTTP, the client maps it back).
//!
//! Left out, on purpose: the checks that call `sweep` (a remote worker never
//! sweeps; `HttpStore::sweep` is a no-op and the server's own sweeper does
//! the work), and the ones for store-side machinery HTTP clients do not
//! drive (idempotency keys, the webhook outbox).

use std::sync::Mutex;
use std::time::Duration;

use aiopslab_core::testkit::{self, StoreHarness};
use aiopslab_core::{LeasePolicy, MemoryStore, TaskStore};
use aiopslab_http::app::serve;
use aiopslab_http::client::HttpStore;
use aiopslab_http::server::{ApiConfig, ApiState};
use async_trait::async_trait;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One server per store, each over its own `MemoryStore`; the clock of a
/// store is moved on the `MemoryStore` behind its server.
#[derive(Default)]
struct HttpHarness {
    servers: Mutex<Vec<(String, MemoryStore)>>,
    stop: CancellationToken,
}

impl Drop for HttpHarness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl StoreHarness for HttpHarness {
    type Store = HttpStore;

    async fn store(&self, policy: LeasePolicy) -> HttpStore {
        let memory = MemoryStore::with_policy(policy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared: Arc<dyn TaskStore> = Arc::new(memory.clone());
        let state = ApiState::with_default_scheduler(shared, ApiConfig::default());
        tokio::spawn(serve(listener, state, None, self.stop.child_token()));
        let client = HttpStore::new(&url, None).expect("client");
        self.servers
            .lock()
            .expect("harness lock")
            .push((client.base_url().to_string(), memory));
        client
    }

    async fn advance_clock(&self, store: &HttpStore, by: Duration) {
        let servers = self.servers.lock().expect("harness lock");
        let (_, memory) = servers
            .iter()
            .find(|(url, _)| url == store.base_url().as_str())
            .expect("a store made by this harness");
        memory.advance_clock(by);
    }
}

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = HttpHarness::default();
                testkit::$check(&harness).await;
            }
        )*
    };
}

checks!(
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
    register_and_get_worker,
    register_refused_while_alive,
    deregister_then_register_again,
    heartbeat_updates_worker,
    heartbeat_hands_back_tasks_it_does_not_list,
    new_instance_takes_a_live_id_over,
    worker_counters_follow_finishes,
    list_workers_filters,
    list_tasks_filters,
    list_tasks_sorts,
    list_tasks_pages,
    stats_counts,
    logs_in_order_with_filters,
    log_writes_need_a_lease,
    trajectory_save_replace_get,
    export_walks_episodes_in_order,
    export_filters,
    claim_needs_a_registered_live_worker,
    worker_ids_follow_one_pattern,
    nul_in_text_is_stored_as_replacement,
    edge_numbers_read_back_identically,
    random_json_round_trips,
    deep_json_from_workers_is_cut_alike,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_exactly_once() {
    let harness = HttpHarness::default();
    testkit::concurrent_claims_exactly_once(&harness, 16, 200).await;
}
