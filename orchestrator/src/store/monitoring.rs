//! What the monitoring view reads ([`crate::monitoring`]): the times of the tasks that ended in
//! its window or run now, every bot's slots, and the WAITING tasks per system.

use std::collections::BTreeMap;

use broker_config::TaskStatus;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr, ExprTrait as _};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QuerySelect as _,
};
use uuid::Uuid;

use crate::entity::{bot, task};
use crate::error::ApiError;
use crate::monitoring::{BotSlots, Outcome, TaskTimes};

type TimesRow =
    (String, TaskStatus, Option<Uuid>, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The tasks that ended at or after `since`, were accepted at or after it, or run now.
pub async fn task_times(
    db: &impl ConnectionTrait,
    since: DateTime<Utc>,
) -> Result<Vec<TaskTimes>, ApiError> {
    let rows: Vec<TimesRow> = task::Entity::find()
        .select_only()
        .column(task::Column::System)
        .column(task::Column::Status)
        .column(task::Column::BotId)
        .column(task::Column::CreatedAt)
        .column(task::Column::StartedAt)
        .column(task::Column::FinishedAt)
        .filter(
            Condition::any()
                .add(task::Column::FinishedAt.gte(since))
                .add(task::Column::StartedAt.gte(since))
                .add(task::Column::Status.eq(TaskStatus::Running)),
        )
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(system, status, bot_id, created_at, started_at, finished_at)| TaskTimes {
            system,
            outcome: match status {
                TaskStatus::Complete => Outcome::Completed,
                TaskStatus::Failed => Outcome::Failed,
                TaskStatus::Running => Outcome::Running,
                _ => Outcome::Other,
            },
            bot_id,
            created_at,
            started_at,
            finished_at,
        })
        .collect())
}

/// Every bot with its slots.
pub async fn bot_slots(db: &impl ConnectionTrait) -> Result<Vec<BotSlots>, ApiError> {
    let rows: Vec<(Uuid, String, i32)> = bot::Entity::find()
        .select_only()
        .column(bot::Column::Id)
        .column(bot::Column::Name)
        .column(bot::Column::Slots)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, slots)| BotSlots { id, name, slots: u32::try_from(slots).unwrap_or(1) })
        .collect())
}

/// WAITING tasks per system: every registered system, zeros included.
pub async fn waiting(db: &impl ConnectionTrait) -> Result<BTreeMap<String, u64>, ApiError> {
    let counts: Vec<(String, i64)> = task::Entity::find()
        .select_only()
        .column(task::Column::System)
        .column_as(Expr::col(task::Column::Id).count(), "n")
        .filter(task::Column::Status.eq(TaskStatus::Waiting))
        .group_by(task::Column::System)
        .into_tuple()
        .all(db)
        .await?;
    let mut waiting: BTreeMap<String, u64> = super::systems::list_systems(db)
        .await?
        .into_iter()
        .map(|system| (system.name.as_str().to_owned(), 0))
        .collect();
    for (system, n) in counts {
        waiting.insert(system, u64::try_from(n).unwrap_or_default());
    }
    Ok(waiting)
}
