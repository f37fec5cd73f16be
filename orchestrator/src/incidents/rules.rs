//! The incident rules as plain functions of their inputs and of `now`: which communications an
//! incident owes ([`due_communications`]), when it is quiet enough to resolve ([`is_quiet`]),
//! whether an action's escalation levels make sense ([`validate_levels`]), what customers read
//! when the service is back ([`restored_message`]) and how the reports of one request make
//! occurrences ([`group_request`]). The engine in [`super`] loads the inputs, stores the
//! outcome and sends what is due.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What customers are told, once an incident has enough occurrences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct External {
    /// Occurrences before customers are told (at least 1).
    #[schema(example = 5)]
    pub min_occurrences: u32,
    /// Where: `Push`, `SMS`, `e-mail`… (delivered to the webhook of that name, lowercased).
    #[schema(example = "Push")]
    pub channel: String,
    /// What customers read.
    #[schema(example = "Our app is unavailable, we will let you know when it is back")]
    pub message: String,
    /// What customers read when the incident is resolved; when absent, a default sentence in
    /// `language` (English or Portuguese; another language must give it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_message: Option<String>,
    /// The language customers are told in, a BCP 47 tag (`en`, `pt-BR`); absent: English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "pt-BR")]
    pub language: Option<String>,
}

/// What customers read when an incident is resolved and its action gives no sentence of its own,
/// in English (also for actions that name no language).
pub const DEFAULT_RESTORED_MESSAGE: &str =
    "Our service is back to normal. Thank you for your patience.";
/// The same, in Portuguese (`pt`, `pt-BR`, …), the language of the original's customers.
pub const DEFAULT_RESTORED_MESSAGE_PT: &str =
    "Nosso serviço voltou ao normal. Obrigado pela paciência.";

/// What customers read when the incident they were told about is resolved: the action's own
/// `restored_message`, else the default sentence in its language. An action in a language
/// without a default sentence must give its own (refused naming `external.restored_message`).
pub fn restored_message(external: &External) -> Result<String, RuleViolation> {
    if let Some(message) = &external.restored_message {
        return Ok(message.clone());
    }
    let language = external.language.as_deref().unwrap_or("en");
    // The primary subtag decides: `pt-BR` and `pt-PT` read the same sentence.
    let primary = language.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
    match primary.as_str() {
        "en" => Ok(DEFAULT_RESTORED_MESSAGE.to_owned()),
        "pt" => Ok(DEFAULT_RESTORED_MESSAGE_PT.to_owned()),
        _ => Err(violation(
            "external.restored_message".to_owned(),
            format!(
                "customers are told in '{language}', which has no default \"service restored\" sentence (en, pt); give external.restored_message"
            ),
        )),
    }
}

/// Whom a level alerts: one team (`"Analyst N1"`) or several at once
/// (`["Analyst N1", "Infrastructure"]`). Written back in the shape it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Who {
    /// One team.
    #[schema(example = "Analyst N1")]
    One(String),
    /// Several teams, each alerted.
    Many(Vec<String>),
}

impl Who {
    /// The teams, in order.
    pub fn teams(&self) -> Vec<&str> {
        match self {
            Who::One(team) => vec![team.as_str()],
            Who::Many(teams) => teams.iter().map(String::as_str).collect(),
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.teams().join(", "))
    }
}

impl From<&str> for Who {
    fn from(team: &str) -> Who {
        Who::One(team.to_owned())
    }
}

/// One internal escalation level: whom to alert once the incident is this big or this old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Alert at this many occurrences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 10)]
    pub volume: Option<u32>,
    /// Alert once the incident has been open this many minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 5)]
    pub minutes: Option<u32>,
    /// Who is alerted: a team (`Analyst N1`, `Coordination`…) or a list of teams.
    pub who: Who,
}

/// What an action says about communications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRules {
    /// What customers are told, if anything.
    pub external: Option<External>,
    /// Internal escalation, lowest level first.
    pub levels: Vec<Level>,
}

/// What an incident has seen and sent so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentState {
    /// Reports counted.
    pub occurrences: u32,
    /// When the first report came.
    pub opened_at: DateTime<Utc>,
    /// Whether customers were told.
    pub external_sent: bool,
    /// The levels (indexes into [`ActionRules::levels`]) already alerted.
    pub levels_notified: BTreeSet<usize>,
}

/// A communication an incident owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// The external communication to customers.
    External,
    /// The internal alert of this level (an index into [`ActionRules::levels`]).
    Level(usize),
}

/// Whole minutes between `opened_at` and `now` (0 when `now` is earlier).
pub fn minutes_ongoing(opened_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - opened_at).num_minutes().max(0)
}

/// The communications `state` owes at `now`, each at most once over the incident's life: the
/// external one once occurrences reach its minimum; each level once its volume is reached or it
/// has been open its minutes, whichever comes first.
pub fn due_communications(
    rules: &ActionRules,
    state: &IncidentState,
    now: DateTime<Utc>,
) -> Vec<Due> {
    let mut due = Vec::new();
    if let Some(external) = &rules.external
        && !state.external_sent
        && state.occurrences >= external.min_occurrences
    {
        due.push(Due::External);
    }
    let minutes = minutes_ongoing(state.opened_at, now);
    for (index, level) in rules.levels.iter().enumerate() {
        if state.levels_notified.contains(&index) {
            continue;
        }
        let by_volume = level.volume.is_some_and(|volume| state.occurrences >= volume);
        let by_time = level.minutes.is_some_and(|limit| minutes >= i64::from(limit));
        if by_volume || by_time {
            due.push(Due::Level(index));
        }
    }
    due
}

/// When an incident whose last report came at `last_occurrence_at` stops being ongoing: after
/// `quiet` without reports.
pub fn quiet_since(last_occurrence_at: DateTime<Utc>, quiet: Duration) -> DateTime<Utc> {
    crate::clock::after(last_occurrence_at, quiet)
}

/// Whether an incident has had no report for `quiet` at `now`, and is to be resolved.
pub fn is_quiet(last_occurrence_at: DateTime<Utc>, quiet: Duration, now: DateTime<Utc>) -> bool {
    now >= quiet_since(last_occurrence_at, quiet)
}

/// The time to judge escalation by minutes at: `now`, or the moment the incident went quiet if
/// that is earlier. An incident resolved for quiet is never escalated for minutes it spent quiet,
/// however late the timer runs.
pub fn escalation_time(
    last_occurrence_at: DateTime<Utc>,
    quiet: Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    now.min(quiet_since(last_occurrence_at, quiet))
}

/// A rule an action breaks, with the field at fault (`levels[1].volume`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuleViolation {
    /// The field, as a path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn violation(field: String, message: impl Into<String>) -> RuleViolation {
    RuleViolation { field, message: message.into() }
}

/// Checks that escalation levels rise: each has a volume or minutes (or both), each above zero,
/// and each volume (minutes) strictly greater than the volume (minutes) of the levels before it
/// that have one. A level that would fire before the level under it is refused.
pub fn validate_levels(levels: &[Level]) -> Result<(), RuleViolation> {
    let mut last_volume: Option<(usize, u32)> = None;
    let mut last_minutes: Option<(usize, u32)> = None;
    for (index, level) in levels.iter().enumerate() {
        if level.volume.is_none() && level.minutes.is_none() {
            return Err(violation(
                format!("levels[{index}]"),
                "a level needs a volume of occurrences, minutes ongoing, or both",
            ));
        }
        for (name, value, last) in [
            ("volume", level.volume, &mut last_volume),
            ("minutes", level.minutes, &mut last_minutes),
        ] {
            let Some(value) = value else { continue };
            let field = format!("levels[{index}].{name}");
            if value == 0 {
                return Err(violation(field, format!("{name} must be at least 1")));
            }
            if let Some((previous, bound)) = *last
                && value <= bound
            {
                return Err(violation(
                    field,
                    format!(
                        "levels must rise: {name} {value} of '{}' is not above {bound} of '{}' (to alert several teams at once, list them in one level's `who`)",
                        level.who, levels[previous].who
                    ),
                ));
            }
            *last = Some((index, value));
        }
    }
    Ok(())
}

/// What one report of a request counts on: an action, or nothing (it is kept as unclassified).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target<A, T> {
    /// The action its trigger belongs to.
    Action(A),
    /// No action: the report itself.
    Unclassified(T),
}

/// How the reports of one request count, as the original does: one occurrence per action whose
/// triggers the request matches, however many of its pairs it lists (its sample sends login/503
/// and login/404 together, as one occurrence), and a pair that matches nothing is recorded once.
/// Returns each target with the indexes of its reports, in the order of their first report.
pub fn group_request<A: PartialEq + Clone, T: PartialEq + Clone>(
    targets: &[Target<A, T>],
) -> Vec<(Target<A, T>, Vec<usize>)> {
    let mut groups: Vec<(Target<A, T>, Vec<usize>)> = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        match groups.iter_mut().find(|(seen, _)| seen == target) {
            Some((_, indexes)) => indexes.push(index),
            None => groups.push((target.clone(), vec![index])),
        }
    }
    groups
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn level(volume: Option<u32>, minutes: Option<u32>, who: &str) -> Level {
        Level { volume, minutes, who: who.into() }
    }

    /// The classic action as this file first had it: push after 5; N1 at 10 or 5 min; N2 at 50
    /// or 20 min; Coordination at 60 min. (The sample now follows the original's final version,
    /// N2 at 20; the steps below hold for both.)
    fn classic() -> ActionRules {
        ActionRules {
            external: Some(External {
                min_occurrences: 5,
                channel: "Push".into(),
                message: "Our app is unavailable, we will let you know when it is back".into(),
                restored_message: None,
                language: None,
            }),
            levels: vec![
                level(Some(10), Some(5), "Analyst N1"),
                level(Some(50), Some(20), "Analyst N2"),
                level(None, Some(60), "Coordination"),
            ],
        }
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
            + chrono::Duration::minutes(minutes)
    }

    /// Applies what is due, as the engine does, and returns it.
    fn step(rules: &ActionRules, state: &mut IncidentState, now: DateTime<Utc>) -> Vec<Due> {
        let due = due_communications(rules, state, now);
        for d in &due {
            match d {
                Due::External => state.external_sent = true,
                Due::Level(i) => {
                    state.levels_notified.insert(*i);
                }
            }
        }
        due
    }

    #[test]
    fn the_classic_scenario_step_by_step() {
        let rules = classic();
        let mut state = IncidentState {
            occurrences: 0,
            opened_at: at(0),
            external_sent: false,
            levels_notified: BTreeSet::new(),
        };
        // Reports 1 to 4 within the first minute: nothing.
        for n in 1..=4 {
            state.occurrences = n;
            assert_eq!(step(&rules, &mut state, at(0)), [], "report {n}");
        }
        state.occurrences = 5;
        assert_eq!(step(&rules, &mut state, at(1)), [Due::External], "5th report: push");
        for n in 6..=9 {
            state.occurrences = n;
            assert_eq!(step(&rules, &mut state, at(2)), [], "report {n}: push went once");
        }
        state.occurrences = 10;
        assert_eq!(step(&rules, &mut state, at(3)), [Due::Level(0)], "10th report: N1");
        // No more reports; the timer runs.
        assert_eq!(step(&rules, &mut state, at(19)), []);
        assert_eq!(step(&rules, &mut state, at(20)), [Due::Level(1)], "20 minutes: N2");
        assert_eq!(step(&rules, &mut state, at(21)), [], "N2 once");
        assert_eq!(step(&rules, &mut state, at(59)), []);
        assert_eq!(step(&rules, &mut state, at(60)), [Due::Level(2)], "60 minutes: Coordination");
        assert_eq!(step(&rules, &mut state, at(600)), [], "everything went once");
    }

    #[test]
    fn minutes_alone_escalate_and_a_late_check_sends_every_level_due() {
        let rules = classic();
        let state = IncidentState {
            occurrences: 1,
            opened_at: at(0),
            external_sent: false,
            levels_notified: BTreeSet::new(),
        };
        assert_eq!(due_communications(&rules, &state, at(4)), []);
        assert_eq!(due_communications(&rules, &state, at(5)), [Due::Level(0)]);
        assert_eq!(
            due_communications(&rules, &state, at(61)),
            [Due::Level(0), Due::Level(1), Due::Level(2)]
        );
        let burst = IncidentState { occurrences: 50, ..state };
        assert_eq!(
            due_communications(&rules, &burst, at(0)),
            [Due::External, Due::Level(0), Due::Level(1)],
            "a burst reaches several thresholds at once"
        );
    }

    #[test]
    fn no_external_communication_without_one_configured() {
        let rules = ActionRules { external: None, levels: vec![] };
        let state = IncidentState {
            occurrences: 1000,
            opened_at: at(0),
            external_sent: false,
            levels_notified: BTreeSet::new(),
        };
        assert_eq!(due_communications(&rules, &state, at(1000)), []);
    }

    #[test]
    fn quiet_incidents_resolve_and_are_not_escalated_for_their_quiet_time() {
        let quiet = Duration::from_secs(30 * 60);
        assert!(!is_quiet(at(10), quiet, at(39)));
        assert!(is_quiet(at(10), quiet, at(40)));
        assert_eq!(escalation_time(at(10), quiet, at(25)), at(25));
        assert_eq!(escalation_time(at(10), quiet, at(90)), at(40));
    }

    #[test]
    fn the_classic_levels_are_valid() {
        assert_eq!(validate_levels(&classic().levels), Ok(()));
        assert_eq!(validate_levels(&[]), Ok(()));
    }

    #[test]
    fn levels_that_do_not_rise_are_refused_with_their_field() {
        // The original gave N2 a volume of 5, below N1's 10.
        let original = [
            level(Some(10), Some(5), "Analyst N1"),
            level(Some(5), Some(20), "Analyst N2"),
            level(None, Some(60), "Coordination"),
        ];
        let error = validate_levels(&original).unwrap_err();
        assert_eq!(error.field, "levels[1].volume");
        assert!(error.message.contains("Analyst N2"), "{error}");
        let same_minutes = [level(None, Some(20), "N1"), level(None, Some(20), "N2")];
        assert_eq!(validate_levels(&same_minutes).unwrap_err().field, "levels[1].minutes");
        // Compared with the last level that has the threshold, not only the one just before.
        let skipping =
            [level(Some(10), None, "N1"), level(None, Some(20), "N2"), level(Some(8), None, "N3")];
        assert_eq!(validate_levels(&skipping).unwrap_err().field, "levels[2].volume");
        assert_eq!(validate_levels(&[level(None, None, "N1")]).unwrap_err().field, "levels[0]");
        assert_eq!(
            validate_levels(&[level(Some(0), None, "N1")]).unwrap_err().field,
            "levels[0].volume"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod request_and_language_tests {
    use super::*;

    fn level(volume: Option<u32>, minutes: Option<u32>, who: &str) -> Level {
        Level { volume, minutes, who: who.into() }
    }

    #[test]
    fn a_request_counts_once_per_action_and_keeps_a_repeated_pair_once() {
        use Target::{Action, Unclassified};
        // The original's sample: login/503 and login/404 together, both of one action.
        assert_eq!(group_request::<u8, &str>(&[Action(1), Action(1)]), [(Action(1), vec![0, 1])]);
        let mixed = [
            Action(1),
            Unclassified("search/503"),
            Action(2),
            Action(1),
            Unclassified("search/503"),
            Unclassified("pay/500"),
        ];
        assert_eq!(
            group_request(&mixed),
            [
                (Action(1), vec![0, 3]),
                (Unclassified("search/503"), vec![1, 4]),
                (Action(2), vec![2]),
                (Unclassified("pay/500"), vec![5]),
            ]
        );
        assert_eq!(group_request::<u8, u8>(&[]), []);
    }

    fn external(language: Option<&str>, restored: Option<&str>) -> External {
        External {
            min_occurrences: 5,
            channel: "Push".into(),
            message: "down".into(),
            restored_message: restored.map(str::to_owned),
            language: language.map(str::to_owned),
        }
    }

    #[test]
    fn service_restored_follows_the_action_s_language() {
        let message = |language, restored| restored_message(&external(language, restored));
        assert_eq!(message(None, None).unwrap(), DEFAULT_RESTORED_MESSAGE, "no language: English");
        assert_eq!(message(Some("en-GB"), None).unwrap(), DEFAULT_RESTORED_MESSAGE);
        assert_eq!(message(Some("pt-BR"), None).unwrap(), DEFAULT_RESTORED_MESSAGE_PT);
        assert_eq!(message(Some("PT"), None).unwrap(), DEFAULT_RESTORED_MESSAGE_PT);
        assert_eq!(message(Some("es"), Some("Ya volvimos")).unwrap(), "Ya volvimos");
        let refused = message(Some("es"), None).unwrap_err();
        assert_eq!(refused.field, "external.restored_message");
        assert!(refused.message.contains("'es'"), "{refused}");
    }

    #[test]
    fn a_level_alerts_one_team_or_a_list_written_back_as_given() {
        let one: Level = serde_json::from_str(r#"{"volume": 10, "who": "Analyst N1"}"#).unwrap();
        assert_eq!(one.who.teams(), ["Analyst N1"]);
        let many: Level =
            serde_json::from_str(r#"{"volume": 10, "who": ["Analyst N1", "Infra"]}"#).unwrap();
        assert_eq!(many.who.teams(), ["Analyst N1", "Infra"]);
        assert_eq!(many.who.to_string(), "Analyst N1, Infra");
        assert_eq!(serde_json::to_value(&one).unwrap()["who"], "Analyst N1");
        assert_eq!(
            serde_json::to_value(&many).unwrap()["who"],
            serde_json::json!(["Analyst N1", "Infra"])
        );
        assert!(serde_json::from_str::<Level>(r#"{"volume": 10, "who": 3}"#).is_err());
        // Equal thresholds are still refused, with the list as the way to share one.
        let equal = [level(Some(10), None, "N1"), level(Some(10), None, "Infra")];
        let refused = validate_levels(&equal).unwrap_err();
        assert_eq!(refused.field, "levels[1].volume");
        assert!(refused.message.contains("list them in one level"), "{refused}");
    }
}
