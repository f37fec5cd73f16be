//! A row of `systems`.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "systems")]
pub struct Model {
    /// Canonical (uppercase), as `broker_config::System` writes it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub description: String,
    /// `csv`, `json` or `none`: [`crate::systems::Contract`].
    pub input: String,
    /// `csv`: the columns its CSV must have (a JSON list).
    pub columns: Option<Json>,
    /// `json`: the JSON Schema its tasks' payload must meet.
    pub schema: Option<Json>,
    pub max_attempts: Option<i32>,
    pub offer_timeout_seconds: Option<i32>,
    pub max_run_seconds: Option<i32>,
    pub priority: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
