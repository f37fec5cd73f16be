//! Loading a batch of records: every valid record of the batch in one transaction (multi-row
//! INSERTs that skip message keys already loaded), then one [`Decision`] per message.

use std::collections::HashSet;

use broker_config::{Decision, Message};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait as _,
    QueryFilter as _, QuerySelect as _, Set, TransactionTrait as _,
};
use serde_json::Value;
use uuid::Uuid;

use super::EtlSettings;
use super::record::{self, Attendance};
use crate::clock::now;
use crate::entity::{attendance, attendance_service};
use crate::failure::Failure;

// Rows per INSERT, under SQLite's 32,766 bound parameters (18 and 3 columns a row).
const ATTENDANCE_ROWS_PER_INSERT: usize = 1000;
const SERVICE_ROWS_PER_INSERT: usize = 5000;

/// A record ready to load.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What makes loading it idempotent ([`record::message_key`]).
    pub key: String,
    /// The record as received.
    pub raw: Value,
    /// The record, normalized.
    pub attendance: Attendance,
}

/// Decodes and validates one message: the record to load, or every reason it cannot be. A body
/// over `settings.max_record_bytes` is refused before it is parsed.
pub fn prepare(message: &Message, settings: EtlSettings) -> Result<Prepared, String> {
    record::check_size(message.data.len(), settings.max_record_bytes)
        .map_err(|problem| problem.to_string())?;
    let raw = record::decode(&message.data).map_err(|problem| problem.to_string())?;
    let attendance =
        record::parse_record(&raw, settings.timezone).map_err(|p| record::reasons(&p))?;
    let key = record::message_key(message.message_id.as_deref(), &raw);
    Ok(Prepared { key, raw, attendance })
}

/// Loads a batch and decides each message's fate, by position: `Ack` for a record loaded now or
/// before (a duplicate), `DeadLetter` with every reason for an invalid one, and for a database
/// error what its [`Failure`] says: waiting in the queue while the database is down or busy,
/// retried (and counted) otherwise. Valid records share one transaction; should it fail for a
/// reason that is not transient, they are loaded one by one so that one record the database
/// refuses cannot hold back the others: that record is dead-lettered with the database's reason.
/// When every record is refused the fault is the database's (a missing table), not the records':
/// they are retried, and dead-lettered only after failing as many times as the consumer allows.
pub async fn load_batch(
    db: &DatabaseConnection,
    settings: EtlSettings,
    messages: &[Message],
) -> Vec<Decision> {
    let mut decisions = vec![Decision::Ack; messages.len()];
    let mut valid = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        match prepare(message, settings) {
            Ok(prepared) => valid.push((index, prepared)),
            Err(reasons) => {
                if let Some(decision) = decisions.get_mut(index) {
                    *decision = Decision::DeadLetter(reasons);
                }
            }
        }
    }
    let rows: Vec<&Prepared> = valid.iter().map(|(_, p)| p).collect();
    let failure = match insert(db, &rows, now()).await {
        Ok(loaded) => {
            tracing::debug!(
                batch = messages.len(),
                loaded,
                duplicates = rows.len() as u64 - loaded,
                invalid = messages.len() - rows.len(),
                "attendance batch committed"
            );
            return decisions;
        }
        Err(err) => Failure::from(err),
    };
    if let Failure::Transient(error) = &failure {
        tracing::warn!(%error, batch = messages.len(), "attendance batch not loaded; requeued");
        for (index, _) in &valid {
            set(&mut decisions, *index, Decision::Requeue);
        }
        return decisions;
    }
    tracing::warn!(error = %failure, batch = messages.len(), "attendance batch refused; loading its records one by one");
    let mut refused = Vec::new();
    for (index, prepared) in &valid {
        match insert(db, &[prepared], now()).await.map_err(Failure::from) {
            Ok(_) => {}
            Err(Failure::Transient(_)) => set(&mut decisions, *index, Decision::Requeue),
            Err(failure) => refused.push((*index, failure)),
        }
    }
    let systemic = refused.len() == valid.len();
    for (index, failure) in refused {
        let decision = if systemic {
            failure.decision()
        } else {
            Decision::DeadLetter(format!("the database refused the record: {failure}"))
        };
        set(&mut decisions, index, decision);
    }
    decisions
}

fn set(decisions: &mut [Decision], index: usize, decision: Decision) {
    if let Some(slot) = decisions.get_mut(index) {
        *slot = decision;
    }
}

/// Inserts `rows` and their services in one transaction, skipping message keys already loaded.
/// Returns how many were loaded now.
pub async fn insert(
    db: &DatabaseConnection,
    rows: &[&Prepared],
    loaded_at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    if rows.is_empty() {
        return Ok(0);
    }
    let txn = db.begin().await?;
    // Time-ordered ids: inserts append to the primary key's index instead of scattering.
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    for chunk in ids.iter().zip(rows).collect::<Vec<_>>().chunks(ATTENDANCE_ROWS_PER_INSERT) {
        let models = chunk.iter().map(|(id, row)| attendance_row(**id, row, loaded_at));
        attendance::Entity::insert_many(models)
            .on_conflict_do_nothing_on([attendance::Column::MessageKey])
            .exec_without_returning(&txn)
            .await?;
    }
    let inserted = inserted_ids(&txn, &ids).await?;
    let services: Vec<attendance_service::ActiveModel> = ids
        .iter()
        .zip(rows)
        .filter(|(id, _)| inserted.contains(id))
        .flat_map(|(id, row)| {
            row.attendance.services.iter().map(|service| attendance_service::ActiveModel {
                attendance_id: Set(*id),
                position: Set(i32::try_from(service.position).unwrap_or(i32::MAX)),
                service: Set(service.name.clone()),
            })
        })
        .collect();
    for chunk in services.chunks(SERVICE_ROWS_PER_INSERT) {
        attendance_service::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(inserted.len() as u64)
}

/// Which of `ids` are in the table: the rows this transaction inserted (the others met a key
/// already loaded, and their ids were never stored).
async fn inserted_ids<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<HashSet<Uuid>, DbErr> {
    let mut found = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(ATTENDANCE_ROWS_PER_INSERT) {
        let present: Vec<Uuid> = attendance::Entity::find()
            .select_only()
            .column(attendance::Column::Id)
            .filter(attendance::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(present);
    }
    Ok(found)
}

fn attendance_row(id: Uuid, row: &Prepared, loaded_at: DateTime<Utc>) -> attendance::ActiveModel {
    let a = &row.attendance;
    attendance::ActiveModel {
        id: Set(id),
        message_key: Set(row.key.clone()),
        name: Set(a.name.clone()),
        document: Set(a.document.clone()),
        age: Set(a.age),
        sex: Set(a.sex.as_str().to_owned()),
        channel: Set(a.channel.as_str().to_owned()),
        attended_at: Set(a.attended_at),
        attended_on: Set(a.attended_on),
        headache: Set(a.headache),
        other_symptoms: Set(a.other_symptoms),
        covid_contact: Set(a.covid_contact),
        covid_test: Set(a.covid_test.as_str().to_owned()),
        service_score: Set(a.service_score),
        solved: Set(a.solved),
        raw: Set(row.raw.clone()),
        loaded_at: Set(loaded_at),
    }
}
