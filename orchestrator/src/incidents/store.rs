//! The rows of incidents: reading them for the API, locking an OPEN one for a change, and
//! storing a communication with the NOTIFY task that delivers it. The engine
//! ([`super::Incidents`]) decides what happens; these functions do it in the transaction it
//! gives them.

use std::collections::{BTreeSet, HashMap};

use broker_config::System;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseTransaction, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::actions::{self, Action};
use super::entity::{action, communication, incident, unclassified_report};
use super::rules::IncidentState;
use super::views::{
    Communication, CommunicationKind, Incident, IncidentDetail, IncidentStatus, UnclassifiedReport,
};
use crate::error::ApiError;
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::tasks::{TaskRequest, TaskSpec};

/// Priority of the NOTIFY tasks: a communication goes before bulk work.
pub const NOTIFY_PRIORITY: i32 = 100;
/// Attempts of a NOTIFY task (a webhook that is down is tried again later).
pub const NOTIFY_MAX_ATTEMPTS: u32 = 5;

/// A communication owed, ready to store and send.
pub(super) struct Outgoing {
    pub(super) kind: CommunicationKind,
    pub(super) channel: String,
    pub(super) recipient: String,
    pub(super) message: String,
}

pub(super) fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or_default()
}

pub(super) fn levels_of(row: &incident::Model) -> BTreeSet<usize> {
    serde_json::from_value(row.levels_notified.clone()).unwrap_or_default()
}

pub(super) fn to_incident(
    row: incident::Model,
    codes: &HashMap<Uuid, String>,
) -> Result<Incident, ApiError> {
    let status = row.status.parse().map_err(|_| {
        ApiError::Internal(sea_orm::DbErr::Type(format!("incident {}: bad status", row.id)))
    })?;
    Ok(Incident {
        id: row.id,
        action_id: row.action_id,
        action_code: codes.get(&row.action_id).cloned(),
        status,
        occurrences: count(row.occurrences),
        opened_at: row.opened_at,
        last_occurrence_at: row.last_occurrence_at,
        resolved_at: row.resolved_at,
        external_sent_at: row.external_sent_at,
        levels_notified: levels_of(&row).into_iter().collect(),
        updated_at: row.updated_at,
    })
}
pub(super) fn state_of(row: &incident::Model) -> IncidentState {
    IncidentState {
        occurrences: count(row.occurrences),
        opened_at: row.opened_at,
        external_sent: row.external_sent_at.is_some(),
        levels_notified: levels_of(row),
    }
}

/// Locks an OPEN incident and returns it as it is now, or `None` if it is not OPEN. A guarded
/// `UPDATE … RETURNING` that changes nothing: it takes the row lock on PostgreSQL (waiting for,
/// then seeing, a report being counted) and the write lock on SQLite (as the transaction's first
/// statement, so no snapshot goes stale).
pub(super) async fn lock_open(
    txn: &DatabaseTransaction,
    id: Uuid,
) -> Result<Option<incident::Model>, ApiError> {
    let rows = incident::Entity::update_many()
        .col_expr(incident::Column::UpdatedAt, Expr::col(incident::Column::UpdatedAt))
        .filter(incident::Column::Id.eq(id))
        .filter(incident::Column::Status.eq(IncidentStatus::Open.as_str()))
        .exec_with_returning(txn)
        .await?;
    Ok(rows.into_iter().next())
}

pub(super) async fn load_action(
    db: &impl sea_orm::ConnectionTrait,
    id: Uuid,
) -> Result<Option<Action>, ApiError> {
    match actions::get_action(db, id).await {
        Ok(action) => Ok(Some(action)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

pub(super) async fn action_codes(
    db: &impl sea_orm::ConnectionTrait,
) -> Result<HashMap<Uuid, String>, ApiError> {
    let rows: Vec<(Uuid, String)> = action::Entity::find()
        .select_only()
        .column(action::Column::Id)
        .column(action::Column::Code)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// One incident with its communications.
pub async fn get_incident(
    db: &impl sea_orm::ConnectionTrait,
    id: Uuid,
) -> Result<IncidentDetail, ApiError> {
    let row =
        incident::Entity::find_by_id(id).one(db).await?.ok_or(ApiError::NotFound("incident"))?;
    let communications = communication::Entity::find()
        .filter(communication::Column::IncidentId.eq(id))
        .order_by_asc(communication::Column::SentAt)
        .order_by_asc(communication::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(Communication::from)
        .collect();
    let codes = action_codes(db).await?;
    Ok(IncidentDetail { incident: to_incident(row, &codes)?, communications })
}

/// A page of incidents, newest first by default, of the given statuses (all when empty).
pub async fn list_incidents(
    db: &impl sea_orm::ConnectionTrait,
    statuses: &[IncidentStatus],
    action_id: Option<Uuid>,
    page: PageRequest,
) -> Result<Page<Incident>, ApiError> {
    let mut select = incident::Entity::find();
    if !statuses.is_empty() {
        select = select.filter(incident::Column::Status.is_in(statuses.iter().map(|s| s.as_str())));
    }
    if let Some(action_id) = action_id {
        select = select.filter(incident::Column::ActionId.eq(action_id));
    }
    let codes = action_codes(db).await?;
    fetch_page(
        db,
        select,
        (incident::Column::OpenedAt, incident::Column::Id),
        page,
        |row| (row.opened_at, row.id),
        |row| to_incident(row, &codes),
    )
    .await
}

/// A page of the reports that matched no action, newest first by default.
pub async fn list_unclassified(
    db: &impl sea_orm::ConnectionTrait,
    page: PageRequest,
) -> Result<Page<UnclassifiedReport>, ApiError> {
    fetch_page(
        db,
        unclassified_report::Entity::find(),
        (unclassified_report::Column::ReceivedAt, unclassified_report::Column::Id),
        page,
        |row| (row.received_at, row.id),
        |row| {
            Ok(UnclassifiedReport {
                id: row.id,
                service: row.service,
                status: row.return_code,
                source: row.source,
                received_at: row.received_at,
            })
        },
    )
    .await
}

/// Stores a communication and the NOTIFY task that delivers it, in `txn`.
pub(super) async fn send_communication(
    txn: &DatabaseTransaction,
    action: &Action,
    incident: &incident::Model,
    outgoing: Outgoing,
    now: DateTime<Utc>,
) -> Result<Communication, ApiError> {
    let id = Uuid::now_v7();
    let payload = json!({
        "channel": outgoing.channel,
        "to": outgoing.recipient,
        "message": outgoing.message,
        "incident_id": incident.id,
        "communication_id": id,
        "kind": outgoing.kind.as_str(),
    });
    let request = TaskRequest {
        description: format!(
            "Notify {} ({}): incident {} of {}",
            outgoing.recipient, outgoing.channel, incident.id, action.code
        ),
        system: System::NOTIFY,
        attachment: None,
        payload: Some(payload),
        priority: Some(NOTIFY_PRIORITY),
        not_before: None,
        max_attempts: Some(NOTIFY_MAX_ATTEMPTS),
        max_run_seconds: None,
        status: None,
    };
    let registry = crate::store::systems::registry(txn).await?;
    let spec = TaskSpec::parse(request, None, 0, &registry)?;
    let task = crate::store::tasks::create_task(txn, spec, now).await?;
    let row = communication::ActiveModel {
        id: Set(id),
        incident_id: Set(incident.id),
        kind: Set(outgoing.kind.as_str().to_owned()),
        channel: Set(outgoing.channel),
        recipient: Set(outgoing.recipient),
        message: Set(outgoing.message),
        task_id: Set(task.id),
        sent_at: Set(now),
    }
    .insert(txn)
    .await?;
    tracing::info!(incident_id = %incident.id, communication_id = %id, task_id = %task.id, kind = outgoing.kind.as_str(), channel = %row.channel, recipient = %row.recipient, "communication sent");
    Ok(row.into())
}
