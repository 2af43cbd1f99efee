//! The conformance suites of the roles the HTTP clients implement, over a
//! real socket to the real router, which serves a fresh `MemoryStore` per
//! check: [`HttpStore`] is the store's worker side (the worker-queue suite),
//! [`ApiClient`] its operator's reads and export (the fleet and export
//! suites), and the fair-share suite's claims go through it too (limits set on
//! the server's store, claims over HTTP). This proves clients and server together keep each role's rules,
//! errors included (the server maps each `StoreError` to HTTP, the client
//! maps it back).
//!
//! The roles neither client implements are served by that `MemoryStore`
//! (through [`StoreParts`]): the task API the checks set up with
//! (`ApiClient`'s task calls are plain methods, not a `TaskApi`: the public
//! batch endpoint always makes a group), and the sweep and the outbox, which
//! run in the server beside its store. Their suites are not run here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiopslab_core::store::StoreParts;
use aiopslab_core::testkit::StoreHarness;
use aiopslab_core::{LeasePolicy, MemoryStore, TaskStore};
use aiopslab_http::app::serve;
use aiopslab_http::client::{ApiClient, HttpStore};
use aiopslab_http::server::{ApiConfig, ApiState};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

/// One server per store, each over its own `MemoryStore`.
#[derive(Default)]
struct HttpHarness {
    memories: Mutex<Vec<MemoryStore>>,
    stop: CancellationToken,
}

impl Drop for HttpHarness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl StoreHarness for HttpHarness {
    type Store = StoreParts;

    async fn store(&self, policy: LeasePolicy) -> StoreParts {
        let memory = MemoryStore::with_policy(policy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let backing: Arc<dyn TaskStore> = Arc::new(memory.clone());
        let state = ApiState::with_default_scheduler(backing.clone(), ApiConfig::default());
        tokio::spawn(serve(listener, state, None, self.stop.child_token()));
        let api = Arc::new(ApiClient::new(&url, None).expect("api client"));
        self.memories.lock().expect("harness lock").push(memory);
        StoreParts::new(backing)
            .with_queue(Arc::new(HttpStore::new(&url, None).expect("worker client")))
            .with_fleet(api.clone())
            .with_export(api)
    }

    /// Moves the clock of every store this harness made (a check makes one).
    async fn advance_clock(&self, _store: &StoreParts, by: Duration) {
        for memory in self.memories.lock().expect("harness lock").iter() {
            memory.advance_clock(by);
        }
    }
}

aiopslab_core::conformance_suite! {
    roles = [worker_queue, fleet, export, final_reports, fair_share],
    harness = HttpHarness::default(),
    test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
    concurrency = (16, 200),
}
