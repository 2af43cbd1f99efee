//! The API suite over `PgStore` on a real PostgreSQL: each test gets a fresh
//! database from `aiopslab_postgres::testing` (`DATABASE_URL`, else a
//! throwaway server; never skipped silently).

mod api_support;

use std::sync::Arc;

use aiopslab_core::LeasePolicy;
use aiopslab_postgres::testing::TestDatabase;
use aiopslab_postgres::PgStoreOptions;
use api_support::Backing;

async fn postgres() -> Backing {
    let database = TestDatabase::create().await;
    let store = database
        .store_with(LeasePolicy::default(), &PgStoreOptions::default().max_connections(4))
        .await;
    Backing {
        store: Arc::new(store),
        guard: Some(Box::new(database)),
    }
}

api_tests!(postgres());
