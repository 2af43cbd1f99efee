//! The online-RL suite (batches, groups, idempotency, export, webhooks) over
//! the embedded `MemoryStore`. "Reopening" it hands back the same store, as a
//! server restarted in the same process (the store outlives the server).

mod rl_support;

use std::sync::Arc;

use aiopslab_core::{MemoryStore, TaskStore};
use rl_support::{Backing, Reopen};

async fn memory() -> Backing {
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
    let same = store.clone();
    let reopen: Reopen = Arc::new(move || {
        let same = same.clone();
        Box::pin(async move { same })
    });
    Backing {
        store,
        reopen,
        guard: None,
    }
}

rl_tests!(memory());
