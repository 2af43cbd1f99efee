//! The online-RL suite (batches, groups, idempotency, export, webhooks) over
//! `PgStore` on a real PostgreSQL (a fresh database per test, from
//! `DATABASE_URL` or a throwaway server). "Reopening" connects a new
//! `PgStore` to the same database: a restarted server, or a second replica.

mod rl_support;

use std::sync::Arc;

use aiopslab_core::{LeasePolicy, TaskStore};
use aiopslab_postgres::testing::TestDatabase;
use aiopslab_postgres::{PgStore, PgStoreOptions};
use rl_support::{Backing, Reopen};

async fn postgres() -> Backing {
    let database = TestDatabase::create().await;
    let options = PgStoreOptions::default().max_connections(4);
    let store: Arc<dyn TaskStore> = Arc::new(database.store_with(LeasePolicy::default(), &options).await);
    let url = database.url();
    let reopen: Reopen = Arc::new(move || {
        let url = url.clone();
        let options = options.clone();
        Box::pin(async move {
            let store = PgStore::connect_with(&url, LeasePolicy::default(), &options)
                .await
                .expect("reconnect to the test database");
            Arc::new(store) as Arc<dyn TaskStore>
        })
    });
    Backing {
        store,
        reopen,
        guard: Some(Box::new(database)),
    }
}

rl_tests!(postgres());
