//! sea-orm rows of the incident tables. Statuses, kinds and JSON columns are parsed into the
//! engine's types at the edge of [`super`].

pub mod action;
pub mod action_trigger;
pub mod communication;
pub mod incident;
pub mod unclassified_report;
