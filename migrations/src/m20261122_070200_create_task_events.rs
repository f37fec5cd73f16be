//! The task_events table: the append-only history of every transition and event.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261122_070100_create_tasks::Tasks;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_070200_create_task_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TaskEvents::Table)
                    .col(big_pk_auto(TaskEvents::Id))
                    // Null for bot events (online, offline) that concern no task.
                    .col(uuid_null(TaskEvents::TaskId))
                    // No foreign key: the history outlives a deleted bot.
                    .col(uuid_null(TaskEvents::BotId))
                    .col(integer_null(TaskEvents::Attempt))
                    .col(string_len(TaskEvents::Kind, 32))
                    .col(json_binary_null(TaskEvents::Detail))
                    .col(timestamp_with_time_zone(TaskEvents::At))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_task_events_task")
                            .from(TaskEvents::Table, TaskEvents::TaskId)
                            .to(Tasks::Table, Tasks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_task_events_task")
                    .table(TaskEvents::Table)
                    .col(TaskEvents::TaskId)
                    .col(TaskEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(TaskEvents::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
pub enum TaskEvents {
    Table,
    Id,
    TaskId,
    BotId,
    Attempt,
    Kind,
    Detail,
    At,
}
