//! `tasks.rows_failed`: how many of a CSV task's rows failed or were refused, kept beside the
//! result that holds them so the task list can filter on it (`GET /api/v1/tasks?rows_failed=true`)
//! without reading every result. NULL for a task without rows, or before its bot reported any.
//! Existing results are counted once here, each database with its own JSON function. With it,
//! indexes on `finished_at` and `started_at`, which the monitoring view and the list's sorts read.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261122_070100_create_tasks::Tasks;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_090000_add_rows_failed_to_tasks"
    }
}

#[derive(DeriveIden)]
enum RowsFailed {
    RowsFailed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(integer_null(RowsFailed::RowsFailed))
                    .to_owned(),
            )
            .await?;
        let backfill = match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                "UPDATE tasks SET rows_failed = (result->>'rows_failed')::integer \
                 WHERE progress_total IS NOT NULL AND result ? 'rows_failed'"
            }
            _ => {
                "UPDATE tasks SET rows_failed = json_extract(result, '$.rows_failed') \
                 WHERE progress_total IS NOT NULL AND json_type(result, '$.rows_failed') = 'integer'"
            }
        };
        manager.get_connection().execute_unprepared(backfill).await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_rows_failed")
                    .table(Tasks::Table)
                    .col(RowsFailed::RowsFailed)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // The monitoring view reads the tasks started or ended in its window, and the list sorts
        // by end: both by index rather than a scan of every task.
        for (name, column) in
            [("ix_tasks_finished_at", Tasks::FinishedAt), ("ix_tasks_started_at", Tasks::StartedAt)]
        {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Tasks::Table)
                        .col(column)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["ix_tasks_started_at", "ix_tasks_finished_at"] {
            manager
                .drop_index(Index::drop().name(name).table(Tasks::Table).if_exists().to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ix_tasks_rows_failed")
                    .table(Tasks::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Tasks::Table).drop_column(RowsFailed::RowsFailed).to_owned(),
            )
            .await
    }
}
