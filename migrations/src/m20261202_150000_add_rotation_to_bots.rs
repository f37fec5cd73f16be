//! What keeps a bot in or out of rotation besides its status: `paused` (an operator took it out;
//! nothing the bot reports undoes it), and the offers it left unanswered in a row with the time
//! before which it gets no new offer (a per-bot backoff, so a bot that takes POSTs and never
//! reports is not offered task after task).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261122_070000_create_bots::Bots;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_150000_add_rotation_to_bots"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        let columns = [
            boolean(Bots::Paused).default(false).to_owned(),
            integer(Bots::UnansweredOffers).default(0).to_owned(),
            timestamp_with_time_zone_null(Bots::OffersPausedUntil).to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(Table::alter().table(Bots::Table).add_column(&mut column).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Bots::OffersPausedUntil, Bots::UnansweredOffers, Bots::Paused] {
            manager
                .alter_table(Table::alter().table(Bots::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
