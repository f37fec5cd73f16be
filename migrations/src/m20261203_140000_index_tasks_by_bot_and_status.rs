//! The tasks a bot holds, counted by an index: `ix_tasks_bot` (bot only) becomes
//! `ix_tasks_bot_status` (bot, status). Whenever a task leaves a bot, its held count is recounted
//! from its ASSIGNED and RUNNING tasks; by bot alone that count read every task the bot ever ran,
//! so it grew with the bot's history, where by bot and status it reads only the tasks it holds.

use sea_orm_migration::prelude::*;

use crate::m20261122_070100_create_tasks::Tasks;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_140000_index_tasks_by_bot_and_status"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_bot_status")
                    .table(Tasks::Table)
                    .col(Tasks::BotId)
                    .col(Tasks::Status)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Its leading column serves every search by bot alone. (SQLite runs a migration outside
        // a transaction: a crash between the two statements leaves both, and the rerun goes on.)
        manager
            .drop_index(
                Index::drop().name("ix_tasks_bot").table(Tasks::Table).if_exists().to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_bot")
                    .table(Tasks::Table)
                    .col(Tasks::BotId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("ix_tasks_bot_status")
                    .table(Tasks::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
