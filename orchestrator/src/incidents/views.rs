//! What the API shows of incidents: incidents with their communications, the reports no action
//! matched, and what became of each report of a request; with the names of their statuses and
//! kinds, as stored and shown.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::entity::communication;
use super::report::Trigger;

/// An incident's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum IncidentStatus {
    /// Reports are being counted; communications go out as they fall due.
    Open,
    /// Over (by request, or quiet for the quiet period).
    Resolved,
}

broker_config::named_enum!(IncidentStatus, "status", {
    Open => "OPEN",
    Resolved => "RESOLVED",
});

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

broker_config::named_enum!(CommunicationKind, "kind", {
    External => "external",
    Internal => "internal",
    Restored => "restored",
});

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

broker_config::named_enum!(ReportResult, "result", {
    Opened => "opened",
    Counted => "counted",
    Unclassified => "unclassified",
});

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
    pub(super) fn counted_with(&self, trigger: &Trigger, first: usize) -> ReportOutcome {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The name serde writes (the API's) is the one `as_str` stores and `FromStr` reads.
    fn same_names<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + Serialize + std::str::FromStr + PartialEq + std::fmt::Debug,
    {
        for &value in all {
            let name = as_str(value);
            assert_eq!(serde_json::to_value(value).expect("serializes"), name, "{value:?}");
            assert_eq!(name.to_uppercase().parse::<T>().ok(), Some(value), "{name}");
        }
    }

    #[test]
    fn stored_and_wire_names_are_unchanged_and_agree() {
        assert_eq!(IncidentStatus::ALL.map(IncidentStatus::as_str), ["OPEN", "RESOLVED"]);
        assert_eq!(
            CommunicationKind::ALL.map(CommunicationKind::as_str),
            ["external", "internal", "restored"]
        );
        assert_eq!(
            ReportResult::ALL.map(ReportResult::as_str),
            ["opened", "counted", "unclassified"]
        );
        same_names(&IncidentStatus::ALL, IncidentStatus::as_str);
        same_names(&CommunicationKind::ALL, CommunicationKind::as_str);
        same_names(&ReportResult::ALL, ReportResult::as_str);
        let unknown = "CLOSED".parse::<IncidentStatus>().expect_err("not a status");
        assert_eq!(unknown.to_string(), "unknown status 'CLOSED'; expected one of OPEN, RESOLVED");
    }
}
