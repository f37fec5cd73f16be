//! A row of `attendances`: one customer-service record, normalized, with the raw record.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attendances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The message id, or `sha256:<hex>` of the canonical record.
    pub message_key: String,
    pub name: String,
    pub document: String,
    pub age: i32,
    pub sex: String,
    pub channel: String,
    pub attended_at: DateTimeUtc,
    /// The day in the platform's time zone.
    pub attended_on: Date,
    pub headache: bool,
    pub other_symptoms: bool,
    pub covid_contact: bool,
    pub covid_test: String,
    pub service_score: i32,
    pub solved: bool,
    pub raw: Json,
    pub loaded_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
