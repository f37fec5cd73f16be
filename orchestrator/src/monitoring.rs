//! The dashboard's monitoring view, computed (`GET /api/v1/monitoring`): throughput per minute,
//! wait and run times per system, and each bot's utilisation and success rate over a recent
//! window, from the tasks' own times. Pure: [`crate::store::monitoring`] reads the rows.
//!
//! Each task counts once, from its row: its first acceptance (`started_at`, kept across the
//! attempts that follow) to its end, under the bot that ended it. A task retried after a failed
//! run counts as one long run; `/metrics` counts every run on its own, for whoever needs that.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The longest window, in minutes: a day.
pub const MAX_MINUTES: u32 = 24 * 60;
/// The window when none is asked for.
pub const DEFAULT_MINUTES: u32 = 60;

/// A task's times, as far as monitoring reads them: every task that ended in the window or is
/// running now.
#[derive(Debug, Clone)]
pub struct TaskTimes {
    /// Its system's name.
    pub system: String,
    /// Ended well (COMPLETE), badly (FAILED), or neither (running, cancelled).
    pub outcome: Outcome,
    /// The bot that ran (or runs) it.
    pub bot_id: Option<Uuid>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When a bot accepted it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// How a task's last run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// COMPLETE.
    Completed,
    /// FAILED.
    Failed,
    /// RUNNING now.
    Running,
    /// Anything else (cancelled, waiting, offered): no verdict on the bot, no run going.
    Other,
}

/// A bot, as far as monitoring reads it.
#[derive(Debug, Clone)]
pub struct BotSlots {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// How many tasks it runs at once: its utilisation is over all of them.
    pub slots: u32,
}

/// What `GET /api/v1/monitoring` answers.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Monitoring {
    /// The window's start: `until` less `minutes`, on a minute's start.
    pub since: DateTime<Utc>,
    /// Now.
    pub until: DateTime<Utc>,
    /// The window's length asked for.
    pub minutes: u32,
    /// Tasks ended per minute, oldest first, one entry for every minute of the window.
    pub throughput: Vec<Minute>,
    /// WAITING tasks now, per system (every system, zeros included).
    pub waiting: BTreeMap<String, u64>,
    /// Wait and run times per system with tasks in the window.
    pub timings: Vec<Timings>,
    /// Every bot, by name.
    pub bots: Vec<BotUse>,
    /// Messages in the dead-letter queue now; absent when the broker could not be asked.
    pub dead_letters: Option<u64>,
}

/// The tasks that ended in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Minute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Tasks that ended COMPLETE in it.
    pub completed: u64,
    /// Tasks that ended FAILED in it.
    pub failed: u64,
}

/// A system's wait (created → accepted, of tasks accepted in the window) and run (accepted →
/// ended, of runs ended in the window) times, in seconds; absent where there is none.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Timings {
    /// The system.
    pub system: String,
    /// Runs ended in the window.
    pub runs: u64,
    /// The median wait.
    pub wait_p50_seconds: Option<f64>,
    /// The wait 95 % of tasks did not exceed.
    pub wait_p95_seconds: Option<f64>,
    /// The median run.
    pub run_p50_seconds: Option<f64>,
    /// The run time 95 % of runs did not exceed.
    pub run_p95_seconds: Option<f64>,
}

/// A bot's share of the window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BotUse {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its tasks that completed in the window.
    pub completed: u64,
    /// Its tasks that failed in the window.
    pub failed: u64,
    /// Time its slots spent running tasks in the window, summed over slots.
    pub busy_seconds: f64,
    /// `busy_seconds` over the window times its slots: 0 to 1.
    pub utilisation: f64,
    /// `completed` over `completed + failed`; absent without either.
    pub success_rate: Option<f64>,
}

/// The window that ends `now` and lasts `minutes`, starting on a minute's start (so every bucket
/// is a whole minute but the last, which runs to now).
pub fn window_start(now: DateTime<Utc>, minutes: u32) -> DateTime<Utc> {
    let this_minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    this_minute - Duration::minutes(i64::from(minutes.saturating_sub(1)))
}

/// The `q`-quantile of `sorted` values (nearest rank: a value that occurred), `None` if empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// The monitoring view of `tasks` and `bots` over the `minutes` that end `now`.
pub fn compute(
    tasks: &[TaskTimes],
    bots: &[BotSlots],
    waiting: BTreeMap<String, u64>,
    dead_letters: Option<u64>,
    now: DateTime<Utc>,
    minutes: u32,
) -> Monitoring {
    let since = window_start(now, minutes);
    let mut throughput: Vec<Minute> = (0..minutes)
        .map(|i| Minute {
            minute: since + Duration::minutes(i64::from(i)),
            completed: 0,
            failed: 0,
        })
        .collect();
    let mut waits: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut runs: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut per_bot: HashMap<Uuid, (u64, u64, f64)> = HashMap::new();
    for task in tasks {
        let ended_in_window = task.finished_at.filter(|at| *at >= since && *at <= now);
        if let Some(at) = ended_in_window {
            let last = throughput.len().saturating_sub(1);
            let index = usize::try_from((at - since).num_minutes()).unwrap_or(0).min(last);
            if let Some(minute) = throughput.get_mut(index) {
                match task.outcome {
                    Outcome::Completed => minute.completed += 1,
                    Outcome::Failed => minute.failed += 1,
                    Outcome::Running | Outcome::Other => {}
                }
            }
        }
        let Some(started) = task.started_at else {
            continue;
        };
        if started >= since {
            waits.entry(&task.system).or_default().push(seconds(task.created_at, started));
        }
        if let Some(at) = ended_in_window {
            runs.entry(&task.system).or_default().push(seconds(started, at));
        }
        let Some(bot) = task.bot_id else {
            continue;
        };
        // The part of its run inside the window: a run still going counts up to now. A task
        // offered again (WAITING, ASSIGNED) runs nowhere now.
        let end = match (task.finished_at, task.outcome) {
            (Some(at), _) => at.min(now),
            (None, Outcome::Running) => now,
            (None, _) => continue,
        };
        let busy = seconds(started.max(since), end);
        let entry = per_bot.entry(bot).or_default();
        entry.2 += busy;
        if ended_in_window.is_some() {
            match task.outcome {
                Outcome::Completed => entry.0 += 1,
                Outcome::Failed => entry.1 += 1,
                Outcome::Running | Outcome::Other => {}
            }
        }
    }
    let mut systems: Vec<&str> = waits.keys().chain(runs.keys()).copied().collect();
    systems.sort_unstable();
    systems.dedup();
    let timings = systems
        .into_iter()
        .map(|system| {
            let mut wait = waits.remove(system).unwrap_or_default();
            let mut run = runs.remove(system).unwrap_or_default();
            wait.sort_by(f64::total_cmp);
            run.sort_by(f64::total_cmp);
            Timings {
                system: system.to_owned(),
                runs: run.len() as u64,
                wait_p50_seconds: quantile(&wait, 0.5),
                wait_p95_seconds: quantile(&wait, 0.95),
                run_p50_seconds: quantile(&run, 0.5),
                run_p95_seconds: quantile(&run, 0.95),
            }
        })
        .collect();
    let window = seconds(since, now).max(1.0);
    let mut bots: Vec<BotUse> = bots
        .iter()
        .map(|bot| {
            let (completed, failed, busy) = per_bot.get(&bot.id).copied().unwrap_or_default();
            let ended = completed + failed;
            BotUse {
                id: bot.id,
                name: bot.name.clone(),
                completed,
                failed,
                busy_seconds: busy,
                utilisation: (busy / (window * f64::from(bot.slots.max(1)))).clamp(0.0, 1.0),
                success_rate: (ended > 0).then(|| completed as f64 / ended as f64),
            }
        })
        .collect();
    bots.sort_by(|a, b| a.name.cmp(&b.name));
    Monitoring { since, until: now, minutes, throughput, waiting, timings, bots, dead_letters }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z").unwrap().with_timezone(&Utc)
            + Duration::minutes(minute)
            + Duration::seconds(second)
    }

    fn task(
        outcome: Outcome,
        bot: Option<Uuid>,
        created: DateTime<Utc>,
        started: Option<DateTime<Utc>>,
        finished: Option<DateTime<Utc>>,
    ) -> TaskTimes {
        TaskTimes {
            system: "VIVO360".into(),
            outcome,
            bot_id: bot,
            created_at: created,
            started_at: started,
            finished_at: finished,
        }
    }

    #[test]
    fn the_window_starts_on_a_minute_and_has_one_bucket_per_minute() {
        let now = at(10, 30);
        assert_eq!(window_start(now, 1), at(10, 0));
        assert_eq!(window_start(now, 60), at(-49, 0));
        let view = compute(&[], &[], BTreeMap::new(), None, now, 3);
        let minutes: Vec<_> = view.throughput.iter().map(|m| m.minute).collect();
        assert_eq!(minutes, [at(8, 0), at(9, 0), at(10, 0)]);
        assert!(view.timings.is_empty());
    }

    #[test]
    fn quantiles_are_values_that_occurred() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[4.0], 0.95), Some(4.0));
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(10.0));
        assert_eq!(quantile(&values, 0.95), Some(19.0));
        assert_eq!(quantile(&values, 1.0), Some(20.0));
    }

    #[test]
    fn tasks_are_counted_in_the_minute_they_ended_with_their_wait_and_run() {
        let bot = Uuid::now_v7();
        let tasks = [
            // Created 10 s before its acceptance, ran 20 s, completed in minute 1.
            task(Outcome::Completed, Some(bot), at(0, 50), Some(at(1, 0)), Some(at(1, 20))),
            // Failed in minute 2 after a 40 s run.
            task(Outcome::Failed, Some(bot), at(1, 0), Some(at(1, 30)), Some(at(2, 10))),
            // Ended before the window: not counted anywhere.
            task(Outcome::Completed, Some(bot), at(-30, 0), Some(at(-29, 0)), Some(at(-28, 0))),
            // Cancelled while waiting: no run, no verdict.
            task(Outcome::Other, None, at(0, 0), None, Some(at(2, 0))),
        ];
        let bots = [BotSlots { id: bot, name: "bot-1".into(), slots: 1 }];
        let view = compute(&tasks, &bots, BTreeMap::new(), Some(2), at(2, 59), 3);
        let counts: Vec<_> = view.throughput.iter().map(|m| (m.completed, m.failed)).collect();
        assert_eq!(counts, [(0, 0), (1, 0), (0, 1)]);
        let vivo = &view.timings[0];
        assert_eq!((vivo.system.as_str(), vivo.runs), ("VIVO360", 2));
        assert_eq!((vivo.wait_p50_seconds, vivo.wait_p95_seconds), (Some(10.0), Some(30.0)));
        assert_eq!((vivo.run_p50_seconds, vivo.run_p95_seconds), (Some(20.0), Some(40.0)));
        let use_ = &view.bots[0];
        assert_eq!((use_.completed, use_.failed, use_.busy_seconds), (1, 1, 60.0));
        assert_eq!(use_.success_rate, Some(0.5));
        // 60 s busy in a window of 2 min 59 s.
        assert!((use_.utilisation - 60.0 / 179.0).abs() < 1e-9, "{}", use_.utilisation);
        assert_eq!(view.dead_letters, Some(2));
    }

    #[test]
    fn a_run_still_going_counts_up_to_now_and_only_inside_the_window_over_every_slot() {
        let bot = Uuid::now_v7();
        // Accepted 10 minutes before the window, which runs from 10:00 to 10:01:30: 90 s of the
        // run are inside it, over 4 slots.
        let tasks = [
            task(Outcome::Running, Some(bot), at(-11, 0), Some(at(-10, 0)), None),
            // Accepted once, then offered again: not running, not busy.
            task(Outcome::Other, Some(bot), at(-11, 0), Some(at(-10, 0)), None),
        ];
        let bots = [
            BotSlots { id: bot, name: "wide".into(), slots: 4 },
            BotSlots { id: Uuid::now_v7(), name: "idle".into(), slots: 1 },
        ];
        let view = compute(&tasks, &bots, BTreeMap::new(), None, at(1, 30), 2);
        let names: Vec<_> = view.bots.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["idle", "wide"]);
        let wide = &view.bots[1];
        assert_eq!(wide.busy_seconds, 90.0);
        assert!((wide.utilisation - 0.25).abs() < 1e-9, "{}", wide.utilisation);
        assert_eq!(wide.success_rate, None);
        assert_eq!((view.bots[0].busy_seconds, view.bots[0].utilisation), (0.0, 0.0));
        // Its wait began before the window: not a wait of this window.
        assert!(view.timings.is_empty());
    }
}
