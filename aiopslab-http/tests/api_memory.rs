//! The API suite over the embedded `MemoryStore`, driven in-process.

mod api_support;

use std::sync::Arc;

use aiopslab_core::MemoryStore;
use api_support::Backing;

async fn memory() -> Backing {
    Backing::new(Arc::new(MemoryStore::new()))
}

api_tests!(memory());
