//! `GET /metrics`: the gauges read from the database at each scrape (so every orchestrator of a
//! cluster answers the same), then what [`crate::metrics`] recorded.

use std::collections::{BTreeSet, HashMap};

use broker_config::{BotStatus, TaskStatus};
use sea_orm::{ConnectionTrait, EntityTrait as _, QuerySelect as _};

use crate::entity::{bot, task};
use crate::error::ApiError;
use crate::incidents::entity::incident;
use crate::incidents::views::IncidentStatus;

/// The text `GET /metrics` answers: the gauges read from `db` now, then everything recorded.
pub(super) async fn render(db: &impl ConnectionTrait) -> Result<String, ApiError> {
    use sea_orm::ColumnTrait as _;
    use sea_orm::QueryFilter as _;
    use sea_orm::sea_query::{Expr, ExprTrait as _};
    let tasks: Vec<(String, String, i64)> = task::Entity::find()
        .select_only()
        .column(task::Column::Status)
        .column(task::Column::System)
        .column_as(Expr::col(task::Column::Id).count(), "n")
        .group_by(task::Column::Status)
        .group_by(task::Column::System)
        .into_tuple()
        .all(db)
        .await?;
    let bots: Vec<(String, i64)> = bot::Entity::find()
        .select_only()
        .column(bot::Column::Status)
        .column_as(Expr::col(bot::Column::Id).count(), "n")
        .group_by(bot::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let open: Option<i64> = incident::Entity::find()
        .select_only()
        .column_as(Expr::col(incident::Column::Id).count(), "n")
        .filter(incident::Column::Status.eq(IncidentStatus::Open.as_str()))
        .into_tuple()
        .one(db)
        .await?;
    let mut text = String::new();
    // Every status of every system with tasks, and of bots, is present (0 included): a series
    // that vanishes at zero breaks rates and alerts.
    let systems: BTreeSet<&str> = tasks.iter().map(|(_, system, _)| system.as_str()).collect();
    let by_task: HashMap<(&str, &str), i64> =
        tasks.iter().map(|(status, system, n)| ((status.as_str(), system.as_str()), *n)).collect();
    let task_series = systems.iter().flat_map(|system| {
        TaskStatus::ALL.iter().map(|status| {
            let n = by_task.get(&(status.as_str(), *system)).copied().unwrap_or_default();
            (
                format!(
                    "status=\"{}\",system=\"{}\"",
                    status.as_str(),
                    crate::metrics::escape(system)
                ),
                n,
            )
        })
    });
    crate::metrics::gauge(
        &mut text,
        crate::metrics::TASKS,
        "Tasks by status and system, read from the database at each scrape",
        task_series,
    );
    let by_bot: HashMap<&str, i64> = bots.iter().map(|(status, n)| (status.as_str(), *n)).collect();
    let bot_series = BotStatus::ALL.iter().map(|status| {
        let n = by_bot.get(status.as_str()).copied().unwrap_or_default();
        (format!("status=\"{}\"", status.as_str()), n)
    });
    crate::metrics::gauge(
        &mut text,
        crate::metrics::BOTS,
        "Bots by status, read from the database at each scrape",
        bot_series,
    );
    let open = std::iter::once((String::new(), open.unwrap_or_default()));
    crate::metrics::gauge(
        &mut text,
        crate::metrics::INCIDENTS_OPEN,
        "Incidents open, read from the database at each scrape",
        open,
    );
    text.push_str(&crate::metrics::render_recorded());
    Ok(text)
}
