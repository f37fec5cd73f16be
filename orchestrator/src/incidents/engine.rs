//! The incident engine: counts reports into incidents, sends what they owe, escalates them by
//! minutes and resolves them (quiet, or on request), each change in one transaction that first
//! takes the incident's lock (see the module [`super`]).

use std::sync::Arc;
use std::time::Duration;

use broker_config::{System, TaskStatus};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait as _, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, Set, TransactionTrait as _,
};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use super::actions::Action;
use super::entity::{action, action_trigger, incident, unclassified_report};
use super::report::Trigger;
use super::rules::{self, DEFAULT_RESTORED_MESSAGE, Due, Target};
use super::store::{self, Outgoing, count, get_incident, load_action, lock_open, state_of};
use super::views::{
    ActionRef, Communication, CommunicationKind, IncidentDetail, IncidentStatus, ReportOutcome,
    ReportResult,
};
use crate::changes::Changes;
use crate::entity::task;
use crate::error::ApiError;

/// The channel internal escalations are delivered on (`/webhooks/internal`).
pub const INTERNAL_CHANNEL: &str = "internal";

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
            check_interval: crate::defaults::INCIDENT_CHECK_INTERVAL,
            quiet_period: crate::defaults::INCIDENT_QUIET_PERIOD,
        }
    }
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
    pub(super) db: DatabaseConnection,
    pub(super) changes: Changes,
    pub(super) wake: Arc<Notify>,
    pub(super) settings: IncidentSettings,
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

broker_config::named_enum!(Source, "source", {
    Api => "api",
    Broker => "broker",
    Pipeline => "pipeline",
});

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
            sent.push(store::send_communication(txn, action, &row, outgoing, now).await?);
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
                        sent.push(
                            store::send_communication(txn, action, &row, outgoing, now).await?,
                        );
                    }
                    continue;
                }
            };
            sent.push(store::send_communication(txn, action, &row, outgoing, now).await?);
        }
        let mut active: incident::ActiveModel = row.into();
        active.external_sent_at = Set(external_sent_at);
        active.levels_notified = Set(json!(levels));
        active.updated_at = Set(now);
        let row = active.update(txn).await?;
        Ok((row, sent))
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
            .filter(task::Column::Status.eq(TaskStatus::Failed))
            .filter(task::Column::System.ne(System::NOTIFY.as_str()))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_keep_their_stored_names() {
        assert_eq!(Source::ALL.map(Source::as_str), ["api", "broker", "pipeline"]);
        assert_eq!(" Broker ".parse::<Source>(), Ok(Source::Broker));
    }
}
