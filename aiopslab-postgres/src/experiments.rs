//! Experiments as a resource on PostgreSQL ([`Experiments`]): their limits in the `experiments` table (migration
//! 006), their counts read from the tasks' partial indexes.
//!
//! A limit changes in a transaction that first locks the table (`EXCLUSIVE`): it waits for the claims in flight and
//! holds new ones back until it commits, so every claim runs entirely under the old limit or entirely under the new
//! one (the `claim` module relies on it).

use aiopslab_core::experiment::{validate_experiment_name, Experiment, ExperimentSettings};
use aiopslab_core::{Experiments, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::Connection;

use crate::rows::ExperimentRow;
use crate::sql;
use crate::PgStore;

impl PgStore {
    /// The experiments `name` selects (`None`: all), with their counts.
    async fn select_experiments(&self, name: Option<&str>) -> StoreResult<Vec<Experiment>> {
        let mut conn = self.conn("experiments").await?;
        let result: Result<Vec<ExperimentRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_EXPERIMENTS)
            .bind(name)
            .fetch_all(conn.raw())
            .await;
        conn.done("experiments", result)?
            .into_iter()
            .map(Experiment::try_from)
            .collect()
    }

    /// One experiment, or `NotFound`.
    async fn select_experiment(&self, name: &str) -> StoreResult<Experiment> {
        self.select_experiments(Some(name))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                entity: "experiment",
                id: name.to_string(),
            })
    }
}

#[async_trait]
impl Experiments for PgStore {
    #[tracing::instrument(skip(self), fields(max_running = ?settings.max_running))]
    async fn set_experiment(&self, name: &str, settings: ExperimentSettings) -> StoreResult<Experiment> {
        validate_experiment_name("name", name)?;
        settings.validate()?;
        let max_running = settings.max_running.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let mut conn = self.conn("set_experiment").await?;
        let result = async {
            let mut tx = conn.raw().begin().await?;
            sqlx::query(sql::EXPERIMENT_LOCK_TIMEOUT).execute(&mut *tx).await?;
            sqlx::query(sql::LOCK_EXPERIMENTS).execute(&mut *tx).await?;
            sqlx::query(sql::UPSERT_EXPERIMENT)
                .bind(name)
                .bind(max_running)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        conn.done("set_experiment", result)?;
        tracing::debug!("experiment set");
        self.select_experiment(name).await
    }

    async fn get_experiment(&self, name: &str) -> StoreResult<Experiment> {
        validate_experiment_name("name", name)?;
        self.select_experiment(name).await
    }

    async fn list_experiments(&self) -> StoreResult<Vec<Experiment>> {
        self.select_experiments(None).await
    }
}
