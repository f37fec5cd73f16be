//! The attendances and attendance_services tables: the customer-service records the attendance ETL
//! loads, normalized, with the raw record beside them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_090000_create_attendances"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Attendances::Table)
                    .col(pk_uuid(Attendances::Id))
                    // The message id, or "sha256:<hex>" of the canonical record when the message
                    // has none: a redelivered or duplicated record is loaded once.
                    .col(string_len_uniq(Attendances::MessageKey, 255))
                    .col(text(Attendances::Name))
                    // 11 digits, punctuation removed.
                    .col(string_len(Attendances::Document, 11))
                    .col(integer(Attendances::Age))
                    .col(string_len(Attendances::Sex, 16))
                    .col(string_len(Attendances::Channel, 16))
                    .col(timestamp_with_time_zone(Attendances::AttendedAt))
                    // The day as the platform recorded it (its local time zone): reports group by
                    // it on both backends, as SQLite cannot convert time zones.
                    .col(date(Attendances::AttendedOn))
                    .col(boolean(Attendances::Headache))
                    .col(boolean(Attendances::OtherSymptoms))
                    .col(boolean(Attendances::CovidContact))
                    .col(string_len(Attendances::CovidTest, 16))
                    .col(integer(Attendances::ServiceScore))
                    .col(boolean(Attendances::Solved))
                    .col(json_binary(Attendances::Raw))
                    .col(timestamp_with_time_zone(Attendances::LoadedAt))
                    .to_owned(),
            )
            .await?;
        // The reports' questions: a range of days, grouped by day or by channel.
        manager
            .create_index(
                Index::create()
                    .name("ix_attendances_day_channel")
                    .table(Attendances::Table)
                    .col(Attendances::AttendedOn)
                    .col(Attendances::Channel)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_attendances_channel")
                    .table(Attendances::Table)
                    .col(Attendances::Channel)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AttendanceServices::Table)
                    .col(uuid(AttendanceServices::AttendanceId))
                    // The key the platform gave the service ("1", "2", …), as a number.
                    .col(integer(AttendanceServices::Position))
                    .col(text(AttendanceServices::Service))
                    .primary_key(
                        Index::create()
                            .col(AttendanceServices::AttendanceId)
                            .col(AttendanceServices::Position),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_attendance_services_attendance")
                            .from(AttendanceServices::Table, AttendanceServices::AttendanceId)
                            .to(Attendances::Table, Attendances::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_attendance_services_service")
                    .table(AttendanceServices::Table)
                    .col(AttendanceServices::Service)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AttendanceServices::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Attendances::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
pub enum Attendances {
    Table,
    Id,
    MessageKey,
    Name,
    Document,
    Age,
    Sex,
    Channel,
    AttendedAt,
    AttendedOn,
    Headache,
    OtherSymptoms,
    CovidContact,
    CovidTest,
    ServiceScore,
    Solved,
    Raw,
    LoadedAt,
}

#[derive(DeriveIden)]
pub enum AttendanceServices {
    Table,
    AttendanceId,
    Position,
    Service,
}
