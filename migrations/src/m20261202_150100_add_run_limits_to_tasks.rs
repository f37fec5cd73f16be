//! Bounds on a task's life at the bot boundary: how many of its offers went unanswered (past a
//! limit it fails instead of being offered forever), its own maximum run time (none: the
//! orchestrator's default), and when the current run must have ended (set when a bot accepts).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261122_070100_create_tasks::Tasks;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_150100_add_run_limits_to_tasks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        let columns = [
            integer(Tasks::UnansweredOffers).default(0).to_owned(),
            integer_null(Tasks::MaxRunSeconds).to_owned(),
            timestamp_with_time_zone_null(Tasks::RunDeadline).to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(Table::alter().table(Tasks::Table).add_column(&mut column).to_owned())
                .await?;
        }
        // The run-time sweep reads RUNNING tasks past their deadline: a short range of an index.
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_run_deadline")
                    .table(Tasks::Table)
                    .col(Tasks::Status)
                    .col(Tasks::RunDeadline)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_tasks_run_deadline").table(Tasks::Table).to_owned())
            .await?;
        for column in [Tasks::RunDeadline, Tasks::MaxRunSeconds, Tasks::UnansweredOffers] {
            manager
                .alter_table(Table::alter().table(Tasks::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
