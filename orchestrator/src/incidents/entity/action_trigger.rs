//! A row of `action_triggers`: a (service, return code) pair that means an action.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "action_triggers")]
pub struct Model {
    /// Lowercase.
    #[sea_orm(primary_key, auto_increment = false)]
    pub service: String,
    /// Uppercase.
    #[sea_orm(primary_key, auto_increment = false)]
    pub return_code: String,
    pub action_id: Uuid,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
