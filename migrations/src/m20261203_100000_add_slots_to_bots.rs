//! `bots.slots` and `bots.held`: a bot runs up to `slots` tasks at once, and holds `held` of
//! them (ASSIGNED or RUNNING) now. `held` replaces `current_task_id`, which could name one task
//! only; the API still shows a `current_task_id` (the first task held) to older clients.
//! `bots.batches`: the bot reads several offers in one message (`tasks.assign`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261122_070000_create_bots::Bots;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_100000_add_slots_to_bots"
    }
}

#[derive(DeriveIden)]
enum Capacity {
    Slots,
    Held,
    Batches,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            integer(Capacity::Slots).default(1),
            integer(Capacity::Held).default(0),
            boolean(Capacity::Batches).default(false),
        ] {
            manager
                .alter_table(Table::alter().table(Bots::Table).add_column(column).to_owned())
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared("UPDATE bots SET held = 1 WHERE current_task_id IS NOT NULL")
            .await?;
        manager
            .alter_table(
                Table::alter().table(Bots::Table).drop_column(Bots::CurrentTaskId).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Bots::Table)
                    .add_column(uuid_null(Bots::CurrentTaskId))
                    .to_owned(),
            )
            .await?;
        for column in [Capacity::Batches, Capacity::Held, Capacity::Slots] {
            manager
                .alter_table(Table::alter().table(Bots::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
