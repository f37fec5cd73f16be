//! A row of `incidents`.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "incidents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub action_id: Uuid,
    /// OPEN or RESOLVED.
    pub status: String,
    pub occurrences: i32,
    pub opened_at: DateTimeUtc,
    pub last_occurrence_at: DateTimeUtc,
    pub resolved_at: Option<DateTimeUtc>,
    pub external_sent_at: Option<DateTimeUtc>,
    /// The indexes of the levels alerted, `[0, 1]`.
    pub levels_notified: Json,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
