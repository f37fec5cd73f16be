//! The incident rules as plain functions of their inputs and of `now`: which communications an
//! incident owes ([`due_communications`]), when it is quiet enough to resolve ([`is_quiet`]),
//! and whether an action's escalation levels make sense ([`validate_levels`]). The engine in
//! [`super`] loads the inputs, stores the outcome and sends what is due.

use std::collections::BTreeSet;
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
    /// What customers read when the incident is resolved (a default sentence when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_message: Option<String>,
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
    /// Who is alerted (`Analyst N1`, `Coordination`…).
    #[schema(example = "Analyst N1")]
    pub who: String,
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
                        "levels must rise: {name} {value} of '{}' is not above {bound} of '{}'",
                        level.who, levels[previous].who
                    ),
                ));
            }
            *last = Some((index, value));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn level(volume: Option<u32>, minutes: Option<u32>, who: &str) -> Level {
        Level { volume, minutes, who: who.to_owned() }
    }

    /// The classic action: push after 5; N1 at 10 or 5 min; N2 at 50 or 20 min; Coordination at
    /// 60 min.
    fn classic() -> ActionRules {
        ActionRules {
            external: Some(External {
                min_occurrences: 5,
                channel: "Push".into(),
                message: "Our app is unavailable, we will let you know when it is back".into(),
                restored_message: None,
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
