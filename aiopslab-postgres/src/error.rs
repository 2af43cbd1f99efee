//! Mapping database failures onto [`StoreError`].
//!
//! Callers decide what to do from the class of the error alone: connection, pool and I/O failures, server
//! shutdowns, serialization failures and deadlocks become [`StoreError::Unavailable`] (worth retrying); constraint
//! violations become [`StoreError::Invalid`] naming the field the constraint guards. The full database message is
//! logged here with `tracing` and never copied into the error, so no SQL text or schema detail reaches a client.

use aiopslab_core::{StoreError, ValidationError};

/// Converts a sqlx error into the store's error classes. `op` names the store operation, for the log.
pub(crate) fn map_sqlx(op: &'static str, error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) => map_database(op, db.code().as_deref(), db.constraint(), &error),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            tracing::warn!(op, %error, "database unavailable");
            StoreError::Unavailable(format!("database unavailable during {op}"))
        }
        _ => {
            tracing::error!(op, %error, "database error");
            StoreError::Internal(format!("database error during {op}"))
        }
    }
}

fn map_database(op: &'static str, code: Option<&str>, constraint: Option<&str>, error: &sqlx::Error) -> StoreError {
    let code = code.unwrap_or("");
    match code {
        // serialization_failure, deadlock_detected, lock_not_available, query_canceled (statement timeout)
        "40001" | "40P01" | "55P03" | "57014" => {
            tracing::warn!(op, code, %error, "transient database conflict");
            StoreError::Unavailable(format!("transient database conflict during {op}; retry"))
        }
        // connection exceptions, insufficient resources, operator intervention (shutdown, restart), system errors
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") || c.starts_with("58") => {
            tracing::warn!(op, code, %error, "database unavailable");
            StoreError::Unavailable(format!("database unavailable during {op}"))
        }
        // integrity constraint violations
        c if c.starts_with("23") => {
            tracing::info!(op, code, %error, "constraint violation");
            StoreError::Invalid(constraint_violation(constraint))
        }
        // data exceptions (value out of range, invalid text representation, ...)
        c if c.starts_with("22") => {
            tracing::info!(op, code, %error, "data exception");
            StoreError::Invalid(ValidationError::new("request", "a value is out of range for the store"))
        }
        _ => {
            tracing::error!(op, code, %error, "database error");
            StoreError::Internal(format!("database error during {op} (SQLSTATE {code})"))
        }
    }
}

/// Names the field a schema constraint guards, so the error reads like request validation.
fn constraint_violation(constraint: Option<&str>) -> ValidationError {
    let Some(name) = constraint else {
        return ValidationError::new("request", "violates a rule of the store");
    };
    let field = name
        .strip_suffix("_check")
        .or_else(|| name.strip_suffix("_fkey"))
        .or_else(|| name.strip_suffix("_pkey"))
        .unwrap_or(name);
    let field = field
        .strip_prefix("tasks_")
        .or_else(|| field.strip_prefix("workers_"))
        .or_else(|| field.strip_prefix("task_logs_"))
        .or_else(|| field.strip_prefix("trajectories_"))
        .unwrap_or(field);
    if name.ends_with("_pkey") {
        ValidationError::new("id", "already exists")
    } else {
        ValidationError::new(field, "violates a rule of the store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_become_fields() {
        assert_eq!(constraint_violation(Some("tasks_max_steps_check")).field, "max_steps");
        assert_eq!(constraint_violation(Some("workers_pkey")).field, "id");
        assert_eq!(constraint_violation(Some("task_logs_task_id_fkey")).field, "task_id");
        assert_eq!(constraint_violation(None).field, "request");
    }

    #[test]
    fn io_and_pool_errors_are_transient() {
        let err = map_sqlx("claim", sqlx::Error::PoolTimedOut);
        assert!(err.is_transient(), "{err}");
        let err = map_sqlx("claim", sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(err.is_transient(), "{err}");
        assert!(!err.to_string().contains("reset"), "no driver detail leaks: {err}");
        let err = map_sqlx("get_task", sqlx::Error::RowNotFound);
        assert!(matches!(err, StoreError::Internal(_)), "{err}");
    }
}
