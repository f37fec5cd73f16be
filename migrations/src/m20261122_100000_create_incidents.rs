//! The incident tables: actions (what a monitored failure means and whom to tell), their
//! triggers, the incidents they open, the communications sent, and the reports no action
//! matched.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_100000_create_incidents"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Actions::Table)
                    .col(pk_uuid(Actions::Id))
                    .col(string_len(Actions::Name, 200).unique_key())
                    .col(string_len(Actions::Code, 64).unique_key())
                    .col(text(Actions::CustomersGroup))
                    // {min_occurrences, channel, message, restored_message}; null: customers are
                    // never told.
                    .col(json_binary_null(Actions::External))
                    // [{volume?, minutes?, who}], rising.
                    .col(json_binary(Actions::Levels))
                    .col(timestamp_with_time_zone(Actions::CreatedAt))
                    .col(timestamp_with_time_zone(Actions::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ActionTriggers::Table)
                    // The key is the report itself: a (service, return code) pair maps to one
                    // action at most.
                    .col(string_len(ActionTriggers::Service, 100))
                    .col(string_len(ActionTriggers::ReturnCode, 64))
                    .col(uuid(ActionTriggers::ActionId))
                    .primary_key(
                        Index::create()
                            .name("pk_action_triggers")
                            .col(ActionTriggers::Service)
                            .col(ActionTriggers::ReturnCode),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_action_triggers_action")
                            .from(ActionTriggers::Table, ActionTriggers::ActionId)
                            .to(Actions::Table, Actions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_action_triggers_action")
                    .table(ActionTriggers::Table)
                    .col(ActionTriggers::ActionId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Incidents::Table)
                    .col(pk_uuid(Incidents::Id))
                    .col(uuid(Incidents::ActionId))
                    .col(string_len(Incidents::Status, 16))
                    .col(integer(Incidents::Occurrences).default(0))
                    .col(timestamp_with_time_zone(Incidents::OpenedAt))
                    .col(timestamp_with_time_zone(Incidents::LastOccurrenceAt))
                    .col(timestamp_with_time_zone_null(Incidents::ResolvedAt))
                    .col(timestamp_with_time_zone_null(Incidents::ExternalSentAt))
                    // The indexes (0-based) of the escalation levels already notified.
                    .col(json_binary(Incidents::LevelsNotified))
                    .col(timestamp_with_time_zone(Incidents::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_incidents_action")
                            .from(Incidents::Table, Incidents::ActionId)
                            .to(Actions::Table, Actions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // At most one OPEN incident per action, whatever the code does: a partial unique index
        // (SQLite and PostgreSQL both have them).
        manager
            .create_index(
                Index::create()
                    .name("ux_incidents_open")
                    .table(Incidents::Table)
                    .col(Incidents::ActionId)
                    .unique()
                    .and_where(Expr::col(Incidents::Status).eq("OPEN"))
                    .to_owned(),
            )
            .await?;
        // Listing newest first, and the timer's question (the OPEN ones).
        manager
            .create_index(
                Index::create()
                    .name("ix_incidents_opened")
                    .table(Incidents::Table)
                    .col(Incidents::OpenedAt)
                    .col(Incidents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_incidents_status")
                    .table(Incidents::Table)
                    .col(Incidents::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Communications::Table)
                    .col(pk_uuid(Communications::Id))
                    .col(uuid(Communications::IncidentId))
                    // external | internal | restored
                    .col(string_len(Communications::Kind, 16))
                    .col(string_len(Communications::Channel, 32))
                    .col(text(Communications::Recipient))
                    .col(text(Communications::Message))
                    // The NOTIFY task that delivers it; no foreign key: the history outlives a
                    // deleted task.
                    .col(uuid(Communications::TaskId))
                    .col(timestamp_with_time_zone(Communications::SentAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_communications_incident")
                            .from(Communications::Table, Communications::IncidentId)
                            .to(Incidents::Table, Incidents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_communications_incident")
                    .table(Communications::Table)
                    .col(Communications::IncidentId)
                    .col(Communications::SentAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UnclassifiedReports::Table)
                    .col(pk_uuid(UnclassifiedReports::Id))
                    .col(string_len(UnclassifiedReports::Service, 100))
                    .col(string_len(UnclassifiedReports::ReturnCode, 64))
                    // api | broker | pipeline
                    .col(string_len(UnclassifiedReports::Source, 16))
                    .col(timestamp_with_time_zone(UnclassifiedReports::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_unclassified_reports_pair")
                    .table(UnclassifiedReports::Table)
                    .col(UnclassifiedReports::Service)
                    .col(UnclassifiedReports::ReturnCode)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children first: the foreign keys point at the tables dropped after them.
        manager.drop_table(Table::drop().table(UnclassifiedReports::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Communications::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Incidents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ActionTriggers::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Actions::Table).to_owned()).await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
pub enum Actions {
    Table,
    Id,
    Name,
    Code,
    CustomersGroup,
    External,
    Levels,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum ActionTriggers {
    Table,
    ActionId,
    Service,
    ReturnCode,
}

#[derive(DeriveIden)]
pub enum Incidents {
    Table,
    Id,
    ActionId,
    Status,
    Occurrences,
    OpenedAt,
    LastOccurrenceAt,
    ResolvedAt,
    ExternalSentAt,
    LevelsNotified,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum Communications {
    Table,
    Id,
    IncidentId,
    Kind,
    Channel,
    Recipient,
    Message,
    TaskId,
    SentAt,
}

#[derive(DeriveIden)]
pub enum UnclassifiedReports {
    Table,
    Id,
    Service,
    ReturnCode,
    Source,
    ReceivedAt,
}
