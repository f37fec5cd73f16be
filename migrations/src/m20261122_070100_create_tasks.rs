//! The tasks table: the work, its place in the task life and its outcome.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261122_070000_create_bots::Bots;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_070100_create_tasks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .col(pk_uuid(Tasks::Id))
                    .col(text(Tasks::Description))
                    .col(string_len(Tasks::System, 16))
                    .col(string_len(Tasks::Status, 16))
                    .col(text_null(Tasks::Attachment))
                    .col(json_binary_null(Tasks::Payload))
                    .col(integer(Tasks::Priority).default(0))
                    .col(timestamp_with_time_zone(Tasks::NotBefore))
                    // The offer number: every offer increments it, and it fences stale bots.
                    .col(integer(Tasks::Attempt).default(0))
                    .col(integer(Tasks::MaxAttempts).default(3))
                    // Runs that failed (an error or a lost bot); max_attempts bounds these, so
                    // rejected or ignored offers never use up a task's attempts.
                    .col(integer(Tasks::Failures).default(0))
                    .col(uuid_null(Tasks::BotId))
                    // The bot that last rejected or ignored the task: offered to others first.
                    .col(uuid_null(Tasks::AvoidBotId))
                    .col(timestamp_with_time_zone_null(Tasks::OfferExpiresAt))
                    .col(integer(Tasks::ProgressDone).default(0))
                    .col(integer_null(Tasks::ProgressTotal))
                    .col(json_binary_null(Tasks::Result))
                    .col(text_null(Tasks::Error))
                    .col(timestamp_with_time_zone(Tasks::CreatedAt))
                    .col(timestamp_with_time_zone_null(Tasks::StartedAt))
                    .col(timestamp_with_time_zone_null(Tasks::FinishedAt))
                    .col(timestamp_with_time_zone(Tasks::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tasks_bot")
                            .from(Tasks::Table, Tasks::BotId)
                            .to(Bots::Table, Bots::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        // The dispatcher's question, per system a free bot runs: the oldest due WAITING tasks,
        // most urgent first. An index range scan, however many tasks wait.
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_dispatch")
                    .table(Tasks::Table)
                    .col(Tasks::Status)
                    .col(Tasks::System)
                    .col((Tasks::Priority, IndexOrder::Desc))
                    .col(Tasks::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // Listing newest or oldest first, with a (created_at, id) cursor.
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_created")
                    .table(Tasks::Table)
                    .col(Tasks::CreatedAt)
                    .col(Tasks::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_bot")
                    .table(Tasks::Table)
                    .col(Tasks::BotId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Tasks::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
pub enum Tasks {
    Table,
    Id,
    Description,
    System,
    Status,
    Attachment,
    Payload,
    Priority,
    NotBefore,
    Attempt,
    MaxAttempts,
    Failures,
    BotId,
    AvoidBotId,
    OfferExpiresAt,
    ProgressDone,
    ProgressTotal,
    Result,
    Error,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
    /// Added by m20261202_150100_add_run_limits_to_tasks.
    UnansweredOffers,
    /// Added by m20261202_150100_add_run_limits_to_tasks.
    MaxRunSeconds,
    /// Added by m20261202_150100_add_run_limits_to_tasks.
    RunDeadline,
    /// Added by m20261203_070000_create_systems.
    OfferTimeoutSeconds,
}
