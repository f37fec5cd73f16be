//! Systems as data: the `systems` table (a name, a description, the input contract of its tasks
//! and their defaults), with Botline's four built-ins as rows, editable like any other. A task's
//! own offer timeout (from its system's default). System names may now be 64 characters: the
//! columns that hold them widen on PostgreSQL (SQLite does not enforce lengths).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::m20261122_070100_create_tasks::Tasks;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_070000_create_systems"
    }
}

/// A built-in system's row: name, description, input kind, CSV columns and JSON Schema (JSON).
pub type BuiltinSystem =
    (&'static str, &'static str, &'static str, Option<&'static str>, Option<&'static str>);

/// The built-ins as this migration registers them: name, description, input kind (`csv`, `json`,
/// `none`), CSV columns and JSON Schema (as JSON text). Later changes to them are migrations of
/// their own, not edits here.
pub const BUILTIN_SYSTEMS: [BuiltinSystem; 4] = [
    (
        "VIVO360",
        "User creation in the Vivo360 portal, one user per CSV row.",
        "csv",
        Some(r#"["name","email","login","profile"]"#),
        None,
    ),
    (
        "CPE",
        "Equipment (CPE) activation through the equipment config service; what \
         POST /api/v1/equipment/cpe/{id} creates.",
        "json",
        None,
        Some(
            r#"{"type":"object","required":["equipment_id","timeoutInSeconds","parameters"],"properties":{"equipment_id":{"type":"string","pattern":"^[A-Za-z0-9]{6,64}$"},"timeoutInSeconds":{"type":"integer","minimum":1,"maximum":3600},"parameters":{"type":["object","array"]}}}"#,
        ),
    ),
    (
        "NOTIFY",
        "Delivery of an incident communication to the webhook of its channel; what incidents create.",
        "json",
        None,
        Some(
            r#"{"type":"object","required":["channel","to","message","communication_id"],"properties":{"channel":{"type":"string","minLength":1,"maxLength":32},"to":{"type":"string"},"message":{"type":"string"},"communication_id":{"type":"string","minLength":1}}}"#,
        ),
    ),
    (
        "NOOP",
        "Does nothing for a while (payload {\"duration_ms\": N}); for tests and benchmarks.",
        "none",
        None,
        None,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Systems::Table)
                    // Canonical (uppercase): the API parses names in any case before they
                    // reach the database, so the primary key is the case-insensitive one.
                    .col(string_len(Systems::Name, 64).primary_key())
                    .col(text(Systems::Description).default(""))
                    // csv, json or none.
                    .col(string_len(Systems::Input, 8))
                    // csv: the columns its CSV must have, a JSON list of names.
                    .col(json_binary_null(Systems::Columns))
                    // json: the JSON Schema its tasks' payload must meet.
                    .col(json_binary_null(Systems::Schema))
                    // Defaults for its tasks; none: the orchestrator's.
                    .col(integer_null(Systems::MaxAttempts))
                    .col(integer_null(Systems::OfferTimeoutSeconds))
                    .col(integer_null(Systems::MaxRunSeconds))
                    .col(integer_null(Systems::Priority))
                    .col(timestamp_with_time_zone(Systems::CreatedAt))
                    .col(timestamp_with_time_zone(Systems::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // Plain SQL: the same text for both databases (PostgreSQL reads the quoted JSON as
        // jsonb, SQLite stores it as text; neither constant holds a quote to escape).
        let db = manager.get_connection();
        for (name, description, input, columns, schema) in BUILTIN_SYSTEMS {
            let json = |text: Option<&str>| text.map_or("NULL".to_owned(), |t| format!("'{t}'"));
            db.execute_unprepared(&format!(
                "INSERT INTO systems (name, description, input, columns, schema, created_at, \
                 updated_at) VALUES ('{name}', '{description}', '{input}', {}, {}, \
                 CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                json(columns),
                json(schema),
            ))
            .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(integer_null(Tasks::OfferTimeoutSeconds))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE tasks ALTER COLUMN system TYPE varchar(64)").await?;
            db.execute_unprepared("ALTER TABLE bots ALTER COLUMN systems TYPE text").await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::OfferTimeoutSeconds)
                    .to_owned(),
            )
            .await?;
        manager.drop_table(Table::drop().table(Systems::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
pub enum Systems {
    Table,
    Name,
    Description,
    Input,
    Columns,
    Schema,
    MaxAttempts,
    OfferTimeoutSeconds,
    MaxRunSeconds,
    Priority,
    CreatedAt,
    UpdatedAt,
}
