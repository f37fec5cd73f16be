//! `bots.tls`: an HTTP bot served over HTTPS, so the orchestrator's pushes (a task's CSV, its
//! payload) cross the network encrypted and go only to the bot whose certificate it trusts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261122_070000_create_bots::Bots;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_160000_add_tls_to_bots"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Bots::Table)
                    .add_column(boolean(Bots::Tls).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Bots::Table).drop_column(Bots::Tls).to_owned())
            .await
    }
}
