//! Incidents: monitoring platforms report failing services (a service and a return code); a
//! report that matches an action's trigger opens an incident for it, or counts one more
//! occurrence on the open one; the incident then owes communications — to customers once its
//! occurrences reach a minimum, to each internal escalation level once its volume or its
//! minutes are reached, and "service restored" when it is resolved — and each goes out as a
//! NOTIFY task through the same pipeline as any other work.
//!
//! - [`rules`]: what is due, when an incident is quiet, whether levels rise (pure, `now` in).
//! - [`report`]: the two input shapes, checked into [`Trigger`]s.
//! - [`actions`]: actions (CRUD), checked into [`ActionSpec`](actions::ActionSpec).
//! - [`sample`]: the classic action the demo loads.
//! - [`Incidents`] (here): the engine. [`Incidents::report`] counts a request's reports (one
//!   occurrence per action the request matches, as the original counts them),
//!   [`Incidents::check_incidents`] escalates by minutes and resolves quiet incidents (the timer
//!   calls it; tests call it with a clock of their own), [`Incidents::resolve`] resolves on
//!   request, and [`Incidents::run`] runs the timer and the consumer of
//!   `botline.monitoring.incidents`.
//!
//! Exactly once, under concurrency, on both databases: every change to an incident happens in a
//! transaction that first takes the incident's lock — on PostgreSQL the action's row
//! (`SELECT … FOR UPDATE`) for a report, the incident's row (a guarded `UPDATE … RETURNING`)
//! for the timer and resolution; on SQLite the database's write lock, taken by making a write
//! the transaction's first statement — and the communications owed are recorded, with their
//! NOTIFY tasks, in that same transaction.

pub mod actions;
pub mod entity;
pub mod report;
pub mod rules;
pub mod sample;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use broker_config::topology::MONITORING_INCIDENTS_QUEUE;
use broker_config::{ConsumerSpec, Decision, System, TaskStatus, Topology};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait as _, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, Set, TransactionTrait as _,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::actions::Action;
use self::entity::{action, action_trigger, communication, incident, unclassified_report};
use self::report::Trigger;
use self::rules::{Due, IncidentState, Target};
use crate::changes::Changes;
use crate::entity::task;
use crate::error::ApiError;
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::tasks::{self, TaskRequest, TaskSpec};

/// The channel internal escalations are delivered on (`/webhooks/internal`).
pub const INTERNAL_CHANNEL: &str = "internal";
pub use self::rules::{DEFAULT_RESTORED_MESSAGE, DEFAULT_RESTORED_MESSAGE_PT};
/// Priority of the NOTIFY tasks: a communication goes before bulk work.
pub const NOTIFY_PRIORITY: i32 = 100;
/// Attempts of a NOTIFY task (a webhook that is down is tried again later).
pub const NOTIFY_MAX_ATTEMPTS: u32 = 5;

/// Timings of the incident engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentSettings {
    /// How often the timer escalates by minutes and resolves quiet incidents.
    pub check_interval: Duration,
    /// An incident with no report for this long is resolved.
    pub quiet_period: Duration,
}

impl Default for IncidentSettings {
    fn default() -> IncidentSettings {
        IncidentSettings {
            check_interval: Duration::from_secs(30),
            quiet_period: Duration::from_secs(30 * 60),
        }
    }
}

/// An incident's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum IncidentStatus {
    /// Reports are being counted; communications go out as they fall due.
    Open,
    /// Over (by request, or quiet for the quiet period).
    Resolved,
}

impl IncidentStatus {
    /// The uppercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "OPEN",
            IncidentStatus::Resolved => "RESOLVED",
        }
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IncidentStatus {
    type Err = broker_config::UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "OPEN" => Ok(IncidentStatus::Open),
            "RESOLVED" => Ok(IncidentStatus::Resolved),
            _ => Err(broker_config::UnknownValue::new("status", s, &["OPEN", "RESOLVED"])),
        }
    }
}

/// What a communication is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommunicationKind {
    /// To customers, once occurrences reach the minimum.
    External,
    /// To a support team, at an escalation level.
    Internal,
    /// To customers, when an incident they were told about is resolved.
    Restored,
}

impl CommunicationKind {
    /// The lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CommunicationKind::External => "external",
            CommunicationKind::Internal => "internal",
            CommunicationKind::Restored => "restored",
        }
    }
}

/// Where a report came from (kept with unclassified reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /api/v1/incidents/triggers`.
    Api,
    /// A message on `botline.monitoring`.
    Broker,
    /// A pipeline task that ended FAILED.
    Pipeline,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Broker => "broker",
            Source::Pipeline => "pipeline",
        }
    }
}

/// An incident, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Incident {
    /// Its id.
    pub id: Uuid,
    /// The action it belongs to.
    pub action_id: Uuid,
    /// That action's code.
    pub action_code: Option<String>,
    /// OPEN or RESOLVED.
    pub status: IncidentStatus,
    /// Reports counted.
    pub occurrences: u32,
    /// When the first report came.
    pub opened_at: DateTime<Utc>,
    /// When the last report came.
    pub last_occurrence_at: DateTime<Utc>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When customers were told, if they were.
    pub external_sent_at: Option<DateTime<Utc>>,
    /// The escalation levels alerted (indexes into the action's levels).
    pub levels_notified: Vec<usize>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A communication an incident sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Communication {
    /// Its id (also the `Idempotency-Key` of its delivery).
    pub id: Uuid,
    /// external, internal or restored.
    pub kind: String,
    /// Where it went (`Push`, `internal`, …).
    pub channel: String,
    /// To whom: the customers' group, or the level's team.
    pub recipient: String,
    /// What it said.
    pub message: String,
    /// The NOTIFY task delivering it.
    pub task_id: Uuid,
    /// When it was sent (its task created).
    pub sent_at: DateTime<Utc>,
}

impl From<communication::Model> for Communication {
    fn from(row: communication::Model) -> Communication {
        Communication {
            id: row.id,
            kind: row.kind,
            channel: row.channel,
            recipient: row.recipient,
            message: row.message,
            task_id: row.task_id,
            sent_at: row.sent_at,
        }
    }
}

/// An incident with its communications, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    /// The incident.
    #[serde(flatten)]
    pub incident: Incident,
    /// What it sent.
    pub communications: Vec<Communication>,
}

/// A report that matched nothing, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnclassifiedReport {
    /// Its id.
    pub id: Uuid,
    /// The service.
    pub service: String,
    /// The return code.
    pub status: String,
    /// api, broker or pipeline.
    pub source: String,
    /// When it came.
    pub received_at: DateTime<Utc>,
}

/// What became of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportResult {
    /// It matched an action with no open incident: one was opened.
    Opened,
    /// It matched an action with an open incident: one more occurrence.
    Counted,
    /// It matched no action; it was recorded, and an action must be registered for it.
    Unclassified,
}

/// The action a report matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ActionRef {
    /// Its id.
    pub id: Uuid,
    /// Its code.
    pub code: String,
    /// Its name.
    pub name: String,
}

/// What happened to one report, as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReportOutcome {
    /// The report, normalised.
    #[serde(flatten)]
    pub trigger: Trigger,
    /// opened, counted or unclassified.
    pub result: ReportResult,
    /// The same, in a sentence.
    pub message: String,
    /// The action it matched.
    pub action: Option<ActionRef>,
    /// The incident it counted on.
    pub incident_id: Option<Uuid>,
    /// The incident's occurrences, this one included.
    pub occurrences: Option<u32>,
    /// The communications this report made due (and sent).
    pub communications: Vec<Communication>,
    /// When an earlier report of the same request already counted for the same action (or was
    /// the same unmatched pair): its index. This one made no occurrence of its own.
    pub counted_with: Option<usize>,
}

impl ReportOutcome {
    /// The outcome of `trigger`, a later report of the request that counted with report `first`.
    fn counted_with(&self, trigger: &Trigger, first: usize) -> ReportOutcome {
        let message = match self.result {
            ReportResult::Unclassified => format!(
                "{trigger} is repeated in this request: recorded once, with triggers[{first}]"
            ),
            _ => format!(
                "{trigger} counted with triggers[{first}] ({}): one occurrence per request for an action",
                self.trigger
            ),
        };
        ReportOutcome {
            trigger: trigger.clone(),
            message,
            communications: Vec::new(),
            counted_with: Some(first),
            ..self.clone()
        }
    }
}

/// One communication, as a request's summary lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SentItem {
    /// Where it went (`Push`, `internal`, …).
    pub channel: String,
    /// To whom: the customers' group, or a team.
    pub to: String,
    /// What it said.
    pub message: String,
}

/// What went out because of one request, split as the original's answer is: to customers
/// (`external`) and to the support teams (`internal`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SentSummary {
    /// Told to customers.
    pub external: Vec<SentItem>,
    /// Told to support teams (escalation levels).
    pub internal: Vec<SentItem>,
}

/// The summary of what `outcomes` sent, in order. Pure.
pub fn summarize(outcomes: &[ReportOutcome]) -> SentSummary {
    let mut summary = SentSummary::default();
    for communication in outcomes.iter().flat_map(|o| &o.communications) {
        let item = SentItem {
            channel: communication.channel.clone(),
            to: communication.recipient.clone(),
            message: communication.message.clone(),
        };
        if communication.kind == CommunicationKind::Internal.as_str() {
            summary.internal.push(item);
        } else {
            summary.external.push(item);
        }
    }
    summary
}

/// What one timer pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckSummary {
    /// Communications sent.
    pub communications: usize,
    /// Incidents resolved for quiet.
    pub resolved: usize,
}

/// The incident engine: cheap to clone (a pool, a broadcast sender, a notifier).
#[derive(Clone)]
pub struct Incidents {
    db: DatabaseConnection,
    changes: Changes,
    wake: Arc<Notify>,
    settings: IncidentSettings,
}

/// A communication owed, ready to store and send.
struct Outgoing {
    kind: CommunicationKind,
    channel: String,
    recipient: String,
    message: String,
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or_default()
}

fn levels_of(row: &incident::Model) -> BTreeSet<usize> {
    serde_json::from_value(row.levels_notified.clone()).unwrap_or_default()
}

fn to_incident(row: incident::Model, codes: &HashMap<Uuid, String>) -> Result<Incident, ApiError> {
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

impl Incidents {
    /// The engine over `db`; `wake` is the dispatcher's, so communications go out at once.
    pub fn new(
        db: DatabaseConnection,
        changes: Changes,
        wake: Arc<Notify>,
        settings: IncidentSettings,
    ) -> Incidents {
        Incidents { db, changes, wake, settings }
    }

    /// The engine's timings.
    pub fn settings(&self) -> &IncidentSettings {
        &self.settings
    }

    /// Counts the reports of one request as the original does: one occurrence for each action
    /// the request matches, however many of its pairs it lists, and each unmatched pair recorded
    /// once ([`rules::group_request`]); one transaction per action, in the order of the reports.
    /// Says what became of each report: a later report of an action (or a repeated pair) shares
    /// the first one's outcome, with `counted_with` naming it.
    pub async fn report(
        &self,
        triggers: &[Trigger],
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportOutcome>, ApiError> {
        let mut targets = Vec::with_capacity(triggers.len());
        for trigger in triggers {
            targets.push(match self.action_of(trigger).await? {
                Some(action_id) => Target::Action(action_id),
                None => Target::Unclassified(trigger.clone()),
            });
        }
        let mut outcomes: Vec<Option<ReportOutcome>> = vec![None; triggers.len()];
        for (target, indexes) in rules::group_request(&targets) {
            let Some((&first, rest)) = indexes.split_first() else { continue };
            let trigger = &triggers[first];
            let outcome = match target {
                Target::Action(action_id) => self.count(action_id, trigger, source, now).await?,
                Target::Unclassified(_) => self.unclassified(trigger, source, now).await?,
            };
            for &index in rest {
                outcomes[index] = Some(outcome.counted_with(&triggers[index], first));
            }
            outcomes[first] = Some(outcome);
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Counts one report (a broker message, a failed task): opens an incident for its action or
    /// counts one more on the open one, and sends what that makes due; records it as
    /// unclassified when no action matches.
    pub async fn report_one(
        &self,
        trigger: &Trigger,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<ReportOutcome, ApiError> {
        match self.action_of(trigger).await? {
            Some(action_id) => self.count(action_id, trigger, source, now).await,
            None => self.unclassified(trigger, source, now).await,
        }
    }

    /// The action `trigger` belongs to, if any.
    async fn action_of(&self, trigger: &Trigger) -> Result<Option<Uuid>, ApiError> {
        let matched =
            action_trigger::Entity::find_by_id((trigger.service.clone(), trigger.status.clone()))
                .one(&self.db)
                .await?;
        Ok(matched.map(|m| m.action_id))
    }

    /// Counts one occurrence of action `action_id`, reported as `trigger`.
    async fn count(
        &self,
        action_id: Uuid,
        trigger: &Trigger,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<ReportOutcome, ApiError> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            // Serialises the reports of one action, so only one of them may open its incident.
            // (SQLite ignores FOR UPDATE; there the UPDATE below, the transaction's first
            // statement, takes the database's write lock.)
            action::Entity::find_by_id(action_id).lock_exclusive().one(&txn).await?;
        }
        let counted = incident::Entity::update_many()
            .col_expr(
                incident::Column::Occurrences,
                Expr::col(incident::Column::Occurrences).add(1),
            )
            .col_expr(incident::Column::LastOccurrenceAt, Expr::value(now))
            .col_expr(incident::Column::UpdatedAt, Expr::value(now))
            .filter(incident::Column::ActionId.eq(action_id))
            .filter(incident::Column::Status.eq(IncidentStatus::Open.as_str()))
            .exec_with_returning(&txn)
            .await?;
        let Some(action) = load_action(&txn, action_id).await? else {
            // Deleted since the trigger was read.
            drop(txn);
            return self.unclassified(trigger, source, now).await;
        };
        let (row, result) = match counted.into_iter().next() {
            Some(row) => (row, ReportResult::Counted),
            None => {
                let row = incident::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    action_id: Set(action.id),
                    status: Set(IncidentStatus::Open.as_str().to_owned()),
                    occurrences: Set(1),
                    opened_at: Set(now),
                    last_occurrence_at: Set(now),
                    resolved_at: Set(None),
                    external_sent_at: Set(None),
                    levels_notified: Set(json!([])),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?;
                tracing::info!(incident_id = %row.id, action = %action.code, %trigger, "incident opened");
                (row, ReportResult::Opened)
            }
        };
        let (row, sent) = self.send_due(&txn, &action, row, now, now).await?;
        txn.commit().await?;
        self.announce(&sent);
        let occurrences = count(row.occurrences);
        let message = match result {
            ReportResult::Opened => format!(
                "{trigger} opened incident {} of action {} ({})",
                row.id, action.code, action.name
            ),
            _ => format!(
                "{trigger} counted on incident {} of action {}: {occurrences} occurrences",
                row.id, action.code
            ),
        };
        Ok(ReportOutcome {
            trigger: trigger.clone(),
            result,
            message,
            action: Some(ActionRef { id: action.id, code: action.code, name: action.name }),
            incident_id: Some(row.id),
            occurrences: Some(occurrences),
            communications: sent,
            counted_with: None,
        })
    }

    async fn unclassified(
        &self,
        trigger: &Trigger,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<ReportOutcome, ApiError> {
        unclassified_report::ActiveModel {
            id: Set(Uuid::now_v7()),
            service: Set(trigger.service.clone()),
            return_code: Set(trigger.status.clone()),
            source: Set(source.as_str().to_owned()),
            received_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        tracing::warn!(%trigger, source = source.as_str(), "report matches no action");
        Ok(ReportOutcome {
            trigger: trigger.clone(),
            result: ReportResult::Unclassified,
            message: format!(
                "no action matches {trigger}: it was recorded as unclassified; register a new action for it (POST /api/v1/actions)"
            ),
            action: None,
            incident_id: None,
            occurrences: None,
            communications: Vec::new(),
            counted_with: None,
        })
    }

    /// Escalates every OPEN incident whose minutes are reached, and resolves those quiet for the
    /// quiet period (after sending what fell due before they went quiet). The timer calls it
    /// every check interval with the clock's time; tests call it with theirs.
    pub async fn check_incidents(&self, now: DateTime<Utc>) -> Result<CheckSummary, ApiError> {
        let open = incident::Entity::find()
            .filter(incident::Column::Status.eq(IncidentStatus::Open.as_str()))
            .order_by_asc(incident::Column::OpenedAt)
            .all(&self.db)
            .await?;
        let mut summary = CheckSummary::default();
        for candidate in open {
            let Some(action) = load_action(&self.db, candidate.action_id).await? else { continue };
            let quiet =
                rules::is_quiet(candidate.last_occurrence_at, self.settings.quiet_period, now);
            let at = rules::escalation_time(
                candidate.last_occurrence_at,
                self.settings.quiet_period,
                now,
            );
            let owes =
                !rules::due_communications(&action.rules(), &state_of(&candidate), at).is_empty();
            if !quiet && !owes {
                continue;
            }
            let txn = self.db.begin().await?;
            let Some(row) = lock_open(&txn, candidate.id).await? else { continue };
            // Judged again on the locked row: a report may have come meanwhile.
            let quiet = rules::is_quiet(row.last_occurrence_at, self.settings.quiet_period, now);
            let at =
                rules::escalation_time(row.last_occurrence_at, self.settings.quiet_period, now);
            let (row, mut sent) = self.send_due(&txn, &action, row, at, now).await?;
            if quiet {
                let (_, restored) = self.close(&txn, &action, row, now).await?;
                sent.extend(restored);
                summary.resolved += 1;
            }
            txn.commit().await?;
            summary.communications += sent.len();
            self.announce(&sent);
        }
        Ok(summary)
    }

    /// Resolves an OPEN incident on request, telling customers the service is back if they were
    /// told it was down. 409 when it is already resolved.
    pub async fn resolve(&self, id: Uuid, now: DateTime<Utc>) -> Result<IncidentDetail, ApiError> {
        let txn = self.db.begin().await?;
        let Some(row) = lock_open(&txn, id).await? else {
            drop(txn);
            incident::Entity::find_by_id(id)
                .one(&self.db)
                .await?
                .ok_or(ApiError::NotFound("incident"))?;
            return Err(ApiError::conflict(
                "incident_resolved",
                Some("status"),
                format!("incident {id} is already RESOLVED"),
            ));
        };
        let action = load_action(&txn, row.action_id).await?.ok_or(ApiError::NotFound("action"))?;
        let (_, sent) = self.close(&txn, &action, row, now).await?;
        txn.commit().await?;
        self.announce(&sent);
        get_incident(&self.db, id).await
    }

    /// Marks a locked OPEN incident RESOLVED and sends "service restored" to customers who were
    /// told of it.
    async fn close(
        &self,
        txn: &DatabaseTransaction,
        action: &Action,
        row: incident::Model,
        now: DateTime<Utc>,
    ) -> Result<(incident::Model, Vec<Communication>), ApiError> {
        let told = row.external_sent_at.is_some();
        let mut active: incident::ActiveModel = row.into();
        active.status = Set(IncidentStatus::Resolved.as_str().to_owned());
        active.resolved_at = Set(Some(now));
        active.updated_at = Set(now);
        let row = active.update(txn).await?;
        tracing::info!(incident_id = %row.id, action = %action.code, occurrences = row.occurrences, "incident resolved");
        let mut sent = Vec::new();
        if let Some(external) = action.external.as_ref().filter(|_| told) {
            let outgoing = Outgoing {
                kind: CommunicationKind::Restored,
                channel: external.channel.clone(),
                recipient: action.customers_group.clone(),
                message: rules::restored_message(external).unwrap_or_else(|violation| {
                    // Only a row written by hand gets here: actions are checked when stored.
                    tracing::warn!(action = %action.code, %violation, "restored message in English");
                    DEFAULT_RESTORED_MESSAGE.to_owned()
                }),
            };
            sent.push(self.send(txn, action, &row, outgoing, now).await?);
        }
        Ok((row, sent))
    }

    /// Sends what a locked incident owes when judged at `at` (the minutes ongoing are counted up
    /// to it) and records it as sent at `now`.
    async fn send_due(
        &self,
        txn: &DatabaseTransaction,
        action: &Action,
        row: incident::Model,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(incident::Model, Vec<Communication>), ApiError> {
        let state = state_of(&row);
        let due = rules::due_communications(&action.rules(), &state, at);
        if due.is_empty() {
            return Ok((row, Vec::new()));
        }
        let mut sent = Vec::new();
        let mut levels = state.levels_notified.clone();
        let mut external_sent_at = row.external_sent_at;
        for item in due {
            let outgoing = match item {
                Due::External => {
                    let Some(external) = &action.external else { continue };
                    external_sent_at = Some(now);
                    Outgoing {
                        kind: CommunicationKind::External,
                        channel: external.channel.clone(),
                        recipient: action.customers_group.clone(),
                        message: external.message.clone(),
                    }
                }
                Due::Level(index) => {
                    let Some(level) = action.levels.get(index) else { continue };
                    levels.insert(index);
                    let message = format!(
                        "[{}] {}: {} occurrences, open for {} min since {}; escalated to {}",
                        action.code,
                        action.name,
                        row.occurrences,
                        rules::minutes_ongoing(row.opened_at, at),
                        row.opened_at.format("%Y-%m-%d %H:%M UTC"),
                        level.who
                    );
                    // Each team of the level is alerted on its own: one communication (and
                    // one delivery) per recipient.
                    for team in level.who.teams() {
                        let outgoing = Outgoing {
                            kind: CommunicationKind::Internal,
                            channel: INTERNAL_CHANNEL.to_owned(),
                            recipient: team.to_owned(),
                            message: message.clone(),
                        };
                        sent.push(self.send(txn, action, &row, outgoing, now).await?);
                    }
                    continue;
                }
            };
            sent.push(self.send(txn, action, &row, outgoing, now).await?);
        }
        let mut active: incident::ActiveModel = row.into();
        active.external_sent_at = Set(external_sent_at);
        active.levels_notified = Set(json!(levels));
        active.updated_at = Set(now);
        let row = active.update(txn).await?;
        Ok((row, sent))
    }

    /// Stores a communication and the NOTIFY task that delivers it, in `txn`.
    async fn send(
        &self,
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
            system: System::Notify,
            attachment: None,
            payload: Some(payload),
            priority: Some(NOTIFY_PRIORITY),
            not_before: None,
            max_attempts: Some(NOTIFY_MAX_ATTEMPTS),
            max_run_seconds: None,
            status: None,
        };
        let spec = TaskSpec::parse(request, None, 0)?;
        let task = tasks::create_task(txn, spec, now).await?;
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

    /// After a commit: live notices for the new tasks, and the dispatcher woken for them.
    fn announce(&self, sent: &[Communication]) {
        for communication in sent {
            self.changes.task(communication.task_id);
        }
        if !sent.is_empty() {
            self.wake.notify_one();
        }
    }

    /// Feeds pipeline tasks that just ended FAILED to the engine as reports (service = their
    /// system, return = their error code), so a burst of failures escalates like any monitored
    /// service. NOTIFY tasks are left out: a failed communication must not make more. Never
    /// fails: what goes wrong is logged.
    pub async fn report_failed_tasks(&self, ids: &[Uuid], now: DateTime<Utc>) {
        if ids.is_empty() {
            return;
        }
        let failed = task::Entity::find()
            .filter(task::Column::Id.is_in(ids.iter().copied()))
            .filter(task::Column::Status.eq(TaskStatus::Failed.as_str()))
            .filter(task::Column::System.ne(System::Notify.as_str()))
            .all(&self.db)
            .await;
        let failed = match failed {
            Ok(failed) => failed,
            Err(error) => {
                tracing::warn!(%error, "failed tasks not reported to incidents");
                return;
            }
        };
        for task in failed {
            let trigger = Trigger::of_failed_task(&task.system, task.error.as_deref());
            if let Err(error) = self.report_one(&trigger, Source::Pipeline, now).await {
                tracing::warn!(task_id = %task.id, %trigger, %error, "failed task not reported to incidents");
            }
        }
    }

    /// Runs the timer (every check interval) until `shutdown`: escalation and resolution.
    pub async fn run_timer(self, shutdown: CancellationToken) {
        // tokio's interval refuses a zero period; a configured 0 means "as often as sensible".
        let period = self.settings.check_interval.max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.check_incidents(crate::clock::now()).await {
                Ok(summary) if summary != CheckSummary::default() => {
                    tracing::info!(
                        sent = summary.communications,
                        resolved = summary.resolved,
                        "incidents checked"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "incident check failed; next tick retries"),
            }
        }
    }

    /// Consumes `botline.monitoring.incidents` (declaring `topology`) until `shutdown`: one
    /// report per message, either shape. A malformed report is dead-lettered with the reason;
    /// one the database cannot take now stays queued; one that fails otherwise is retried and
    /// dead-lettered after `max_failures` tries ([`Failure`](crate::failure::Failure)).
    pub async fn run_consumer(
        self,
        amqp_url: String,
        topology: Topology,
        max_failures: u32,
        shutdown: CancellationToken,
    ) {
        let spec = ConsumerSpec {
            url: amqp_url,
            name: "orchestrator-monitoring".into(),
            queue: MONITORING_INCIDENTS_QUEUE.into(),
            topology,
            // Reports are counted one at a time, in order; a few ahead hide the round trip.
            prefetch: 16,
            max_failures,
        };
        let engine = self.clone();
        broker_config::consume(spec, shutdown, move |message| {
            let engine = engine.clone();
            async move {
                let trigger = match report::parse_message(&message.data) {
                    Ok(trigger) => trigger,
                    Err(error) => {
                        return Decision::DeadLetter(format!("{}: {}", error.field, error.message));
                    }
                };
                match engine.report_one(&trigger, Source::Broker, crate::clock::now()).await {
                    Ok(_) => Decision::Ack,
                    Err(error) => {
                        tracing::warn!(?error, %trigger, failures = message.failures, "report not counted");
                        crate::failure::Failure::from(error).decision()
                    }
                }
            }
        })
        .await;
    }
}

fn state_of(row: &incident::Model) -> IncidentState {
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
async fn lock_open(
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

async fn load_action(
    db: &impl sea_orm::ConnectionTrait,
    id: Uuid,
) -> Result<Option<Action>, ApiError> {
    match actions::get_action(db, id).await {
        Ok(action) => Ok(Some(action)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

async fn action_codes(
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
