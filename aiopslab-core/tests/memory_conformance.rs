//! The store conformance suite on [`MemoryStore`](aiopslab_core::MemoryStore), twice:
//!
//! - `paused_clock`: current-thread runtime with tokio's clock paused; the
//!   harness moves time with `tokio::time::advance`, so tokio's clock is
//!   what drives every lease, timeout and liveness rule.
//! - `multi_thread`: two worker threads, time moved with
//!   `MemoryStore::advance_clock`; the concurrency checks race for real
//!   here (32 claimers over 2,000 tasks).

mod paused_clock {
    aiopslab_core::store_conformance_suite! {
        harness = aiopslab_core::testkit::MemoryHarness::tokio_clock(),
        test = #[tokio::test(start_paused = true)],
        concurrency = (32, 2000),
    }
    // Capabilities the embedded store offers.
    aiopslab_core::conformance_suite! {
        roles = [final_reports, fair_share],
        harness = aiopslab_core::testkit::MemoryHarness::tokio_clock(),
        test = #[tokio::test(start_paused = true)],
        concurrency = (32, 2000),
    }
}

mod multi_thread {
    aiopslab_core::store_conformance_suite! {
        harness = aiopslab_core::testkit::MemoryHarness::default(),
        test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
        concurrency = (32, 2000),
    }
    aiopslab_core::conformance_suite! {
        roles = [fair_share],
        harness = aiopslab_core::testkit::MemoryHarness::default(),
        test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
        concurrency = (32, 2000),
    }
}
