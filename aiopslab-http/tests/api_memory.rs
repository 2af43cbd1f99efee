//! The API suite over the embedded `MemoryStore`, driven in-process.

mod api_support;

use api_support::Backing;

api_tests!(Backing::memory());
