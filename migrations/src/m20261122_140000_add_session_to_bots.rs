//! `bots.session_id`: the run of the agent that last announced itself (`bot.online`), so a
//! `bot.online` the broker delivers again (the orchestrator died before acking it) is told from a
//! bot that restarted.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261122_070000_create_bots::Bots;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_140000_add_session_to_bots"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Bots::Table).add_column(uuid_null(Bots::SessionId)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Bots::Table).drop_column(Bots::SessionId).to_owned())
            .await
    }
}
