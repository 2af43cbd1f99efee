//! The `total` of a task listing, at a cost that does not grow with the table.
//!
//! - Filtered by status and/or backend type alone (the unfiltered listing included): read from the maintained
//!   counts of migration 005, exact, a few rows whatever the table's size.
//! - Any other filter (problem, worker, group, experiment): counted exactly up to
//!   [`PgStoreOptions::exact_count_limit`](crate::PgStoreOptions::exact_count_limit) matches (one index range read
//!   of at most that many entries); above it, the planner's estimate of the matches, never below what is known to
//!   match, with `total_is_estimate` set.

use aiopslab_core::TaskFilter;
use serde_json::Value;

use crate::connections::Conn;
use crate::sql::{self, ListSql};
use crate::PgStore;

/// A listing's total and whether it is an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Total {
    pub(crate) n: u64,
    pub(crate) estimate: bool,
}

/// Whether the maintained counts answer this filter exactly (they are kept per status and backend type).
fn maintained(filter: &TaskFilter) -> bool {
    filter.problem_id.is_none()
        && filter.worker_id.is_none()
        && filter.group_id.is_none()
        && filter.experiment.is_none()
}

/// The row estimate of the top plan node of an `EXPLAIN (FORMAT JSON)` answer.
fn plan_rows(explained: &Value) -> Option<u64> {
    let rows = explained.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()?;
    // A finite, non-negative row count: the planner's estimates always are; anything else is no estimate.
    (rows.is_finite() && rows >= 0.0).then(|| rows.round() as u64)
}

impl PgStore {
    /// Counts what `filter` matches on `conn`, given the filters' values in binding order (`values`, then the
    /// group id) and the least that is known to match (`seen`: the offset plus the tasks on the page, when the
    /// page was not empty).
    pub(crate) async fn count_total(
        &self,
        conn: &mut Conn<'_>,
        filter: &TaskFilter,
        sql: &ListSql,
        values: &[&str],
        seen: u64,
    ) -> Result<Total, sqlx::Error> {
        if maintained(filter) {
            let n: i64 = sqlx::query_scalar(sql::COUNT_MAINTAINED)
                .bind(filter.status.map(|status| status.as_str()))
                .bind(filter.backend_type.as_deref())
                .fetch_one(conn.raw())
                .await?;
            return Ok(Total {
                n: u64::try_from(n).unwrap_or(0),
                estimate: false,
            });
        }
        let limit = self.inner.exact_count_limit;
        let mut capped = sqlx::query_scalar::<_, i64>(&sql.capped_count);
        for value in values {
            capped = capped.bind(*value);
        }
        if let Some(group_id) = filter.group_id {
            capped = capped.bind(group_id);
        }
        let cap = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let counted = u64::try_from(capped.bind(cap).fetch_one(conn.raw()).await?).unwrap_or(0);
        if counted <= limit {
            return Ok(Total {
                n: counted,
                estimate: false,
            });
        }
        let mut explain = sqlx::query_scalar::<_, Value>(&sql.estimate);
        for value in values {
            explain = explain.bind(*value);
        }
        if let Some(group_id) = filter.group_id {
            explain = explain.bind(group_id);
        }
        let explained = explain.fetch_one(conn.raw()).await?;
        let planned = plan_rows(&explained).unwrap_or(0);
        Ok(Total {
            n: planned.max(counted).max(seen),
            estimate: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_top_plan_nodes_rows() {
        let explained = serde_json::json!([{"Plan": {"Node Type": "Index Only Scan", "Plan Rows": 499_874.0}}]);
        assert_eq!(plan_rows(&explained), Some(499_874));
        assert_eq!(plan_rows(&serde_json::json!([{"Plan": {}}])), None);
        assert_eq!(plan_rows(&serde_json::json!({"Plan Rows": 3})), None);
    }

    #[test]
    fn status_and_backend_type_are_maintained_the_rest_is_counted() {
        assert!(maintained(&TaskFilter::default()));
        assert!(maintained(
            &TaskFilter::default()
                .with_status(Some(aiopslab_core::TaskStatus::Pending))
                .with_backend_type(Some("gpu".into()))
        ));
        assert!(!maintained(&TaskFilter::default().with_problem_id(Some("p".into()))));
        assert!(!maintained(&TaskFilter::default().with_worker_id(Some("w".into()))));
        assert!(!maintained(
            &TaskFilter::default().with_group_id(Some(uuid::Uuid::nil()))
        ));
    }
}
