//! Growth: the time of one dispatch pass and the orchestrator's memory with B bots and W waiting
//! tasks. The orchestrator runs in this process (its library) so a single pass can be timed; the
//! bots' queues exist, so every offer is really published and confirmed.

use std::time::{Duration, Instant};

use broker_config::testing::TestVhost;
use broker_config::{BotName, Topology};
use chrono::Utc;
use orchestrator::entity::{bot, task};
use orchestrator::pipeline::rules::MAX_OFFERS_PER_PASS;
use orchestrator::{Config, Orchestrator};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One growth point.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Registered AVAILABLE bots.
    pub bots: usize,
    /// WAITING tasks.
    pub waiting: usize,
    /// Median time to offer one task to every bot (one dispatch pass, or as many as
    /// `MAX_OFFERS_PER_PASS` makes it), ms.
    pub pass_ms: f64,
    /// That time per task offered, µs.
    pub per_task_us: f64,
    /// This process's resident memory after loading, MiB.
    pub rss_mib: f64,
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Measures one point: `passes` dispatch passes with `bots` bots and `waiting` tasks.
pub async fn measure(bots: usize, waiting: usize, passes: usize) -> anyhow::Result<Point> {
    let vhost = TestVhost::create("growth").await?;
    let dir = std::env::temp_dir().join(format!("botline-growth-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let mut config =
        Config::for_database(format!("sqlite://{}?mode=rwc", dir.join("botline.db").display()));
    config.amqp_url = vhost.amqp_url();
    // No sweeps during the measurement: only the passes timed here run.
    config.sweep_interval = Duration::from_secs(3600);
    let app = Orchestrator::start(&config, CancellationToken::new()).await?;
    let db = app.db().clone();
    let now = Utc::now();

    for chunk in (0..waiting).collect::<Vec<_>>().chunks(1000) {
        let rows = chunk.iter().map(|n| task::ActiveModel {
            id: Set(Uuid::now_v7()),
            description: Set(format!("waiting {n}")),
            system: Set("NOOP".into()),
            status: Set(broker_config::TaskStatus::Waiting),
            attachment: Set(None),
            payload: Set(None),
            priority: Set(0),
            not_before: Set(now),
            attempt: Set(0),
            max_attempts: Set(3),
            failures: Set(0),
            bot_id: Set(None),
            avoid_bot_id: Set(None),
            offer_expires_at: Set(None),
            progress_done: Set(0),
            progress_total: Set(None),
            result: Set(None),
            error: Set(None),
            created_at: Set(now + chrono::Duration::microseconds(*n as i64)),
            started_at: Set(None),
            finished_at: Set(None),
            updated_at: Set(now),
            unanswered_offers: Set(0),
            max_run_seconds: Set(None),
            run_deadline: Set(None),
            offer_timeout_seconds: Set(None),
            rows_failed: Set(None),
        });
        task::Entity::insert_many(rows).exec(&db).await?;
    }
    let connection = broker_config::amqp::connect(&vhost.amqp_url(), "growth-setup").await?;
    let channel = connection.create_channel().await?;
    let mut bot_ids = Vec::with_capacity(bots);
    for chunk in (0..bots).collect::<Vec<_>>().chunks(500) {
        let mut rows = Vec::new();
        for n in chunk {
            let name = format!("growth-{n}");
            Topology::bot(&BotName::parse(&name)?).declare(&channel).await?;
            let id = Uuid::now_v7();
            bot_ids.push(id);
            rows.push(bot::ActiveModel {
                id: Set(id),
                name: Set(name),
                ip_address: Set(format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256)),
                status: Set(broker_config::BotStatus::Available),
                systems: Set("NOOP".into()),
                delivery: Set(broker_config::Delivery::Amqp),
                http_port: Set(None),
                last_heartbeat_at: Set(Some(now)),
                slots: Set(1),
                held: Set(0),
                batches: Set(false),
                created_at: Set(now),
                updated_at: Set(now),
                session_id: Set(None),
                paused: Set(false),
                unanswered_offers: Set(0),
                offers_paused_until: Set(None),
                tls: Set(false),
            });
        }
        bot::Entity::insert_many(rows).exec(&db).await?;
    }
    let rss = rss_mib();

    let mut times = Vec::new();
    for _ in 0..passes {
        let started = Instant::now();
        // A pass offers at most MAX_OFFERS_PER_PASS: as many passes as that takes, as the
        // dispatcher runs them (one after the other while a pass reaches its cap).
        let mut offered = 0;
        for _ in 0..bots.min(waiting).div_ceil(MAX_OFFERS_PER_PASS).max(1) {
            offered += app.pipeline().dispatch_due_tasks(Utc::now()).await?;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            offered == bots.min(waiting),
            "the passes offered {offered} tasks, expected {}",
            bots.min(waiting)
        );
        // Back to the same state for the next pass: the offered tasks WAITING, the bots free.
        task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value("WAITING"))
            .col_expr(task::Column::BotId, Expr::value(Option::<Uuid>::None))
            .col_expr(
                task::Column::OfferExpiresAt,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .filter(task::Column::Status.eq("ASSIGNED"))
            .exec(&db)
            .await?;
        bot::Entity::update_many()
            .col_expr(bot::Column::Status, Expr::value("AVAILABLE"))
            .col_expr(bot::Column::Held, Expr::value(0))
            .filter(bot::Column::Id.is_in(bot_ids.clone()))
            .exec(&db)
            .await?;
    }
    let pass_ms = crate::stats::summarize(times).p50_ms;
    drop(channel);
    drop(app);
    let _ = CancellationToken::new();
    let _ = std::fs::remove_dir_all(&dir);
    vhost.delete().await?;
    Ok(Point {
        bots,
        waiting,
        pass_ms,
        per_task_us: pass_ms * 1000.0 / bots.min(waiting) as f64,
        rss_mib: rss,
    })
}
