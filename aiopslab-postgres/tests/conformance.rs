//! The core store conformance suite, run on PgStore against a real PostgreSQL (one fresh database per check).
//!
//! The harness moves the store's clock by shifting every stored timestamp back (see
//! `aiopslab_postgres::testing::advance_clock`). The concurrency checks run 32 claimers over 10,000 tasks, each
//! claimer on its own connection.

use aiopslab_postgres::testing::PgHarness;

aiopslab_core::store_conformance_suite! {
    harness = PgHarness::with_connections(32),
    test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
    concurrency = (32, 10_000),
    concurrency_test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
}

// A capability PgStore offers: a run's end in one transaction.
aiopslab_core::conformance_suite! {
    roles = [final_reports],
    harness = PgHarness::with_connections(4),
    test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
    concurrency = (4, 100),
}

// Fair share between experiments, with the limits of the Experiments capability. The racing check runs its 32
// claimers on 32 stores of their own (the harness's replicas), so their claim statements race in the database.
mod fair_share {
    use aiopslab_postgres::testing::PgHarness;

    aiopslab_core::conformance_suite! {
        roles = [fair_share],
        harness = PgHarness::with_connections(4),
        test = #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
        concurrency = (32, 4_000),
    }
}
