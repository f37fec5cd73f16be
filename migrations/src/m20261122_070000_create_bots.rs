//! The bots table: who can run what, and whether it is free.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_070000_create_bots"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Bots::Table)
                    .col(pk_uuid(Bots::Id))
                    .col(string_len_uniq(Bots::Name, 64))
                    .col(string_len(Bots::IpAddress, 45))
                    .col(string_len(Bots::Status, 16))
                    // Comma-separated system names ("NOOP,VIVO360"): a portable way to ask
                    // "can this bot run X" with one LIKE on both SQLite and PostgreSQL.
                    .col(string_len(Bots::Systems, 128))
                    .col(string_len(Bots::Delivery, 8).default("amqp"))
                    .col(integer_null(Bots::HttpPort))
                    .col(timestamp_with_time_zone_null(Bots::LastHeartbeatAt))
                    .col(uuid_null(Bots::CurrentTaskId))
                    .col(timestamp_with_time_zone(Bots::CreatedAt))
                    .col(timestamp_with_time_zone(Bots::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // One bot per endpoint. AMQP bots have no port (NULL), and NULLs never collide, so several
        // AMQP bots may share a host, as the demo's three do; HTTP bots are found by address.
        manager
            .create_index(
                Index::create()
                    .name("ux_bots_endpoint")
                    .table(Bots::Table)
                    .col(Bots::IpAddress)
                    .col(Bots::HttpPort)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_bots_status")
                    .table(Bots::Table)
                    .col(Bots::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Bots::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
pub enum Bots {
    Table,
    Id,
    Name,
    IpAddress,
    Status,
    Systems,
    Delivery,
    HttpPort,
    LastHeartbeatAt,
    CurrentTaskId,
    CreatedAt,
    UpdatedAt,
    /// Added by m20261122_140000_add_session_to_bots.
    SessionId,
    /// Added by m20261202_150000_add_rotation_to_bots.
    Paused,
    /// Added by m20261202_150000_add_rotation_to_bots.
    UnansweredOffers,
    /// Added by m20261202_150000_add_rotation_to_bots.
    OffersPausedUntil,
    /// Added by m20261202_160000_add_tls_to_bots.
    Tls,
}
