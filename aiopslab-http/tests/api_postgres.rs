//! The API suite over `PgStore` on a real PostgreSQL: each test gets a fresh
//! database from `aiopslab_postgres::testing` (`DATABASE_URL`, else a
//! throwaway server; never skipped silently).

mod api_support;

use api_support::Backing;

api_tests!(Backing::postgres());
