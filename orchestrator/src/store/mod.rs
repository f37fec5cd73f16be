//! The storage layer: tasks, bots and task history as stored, and the rule every transaction
//! that changes a task and its bot together follows ([`begin_in_line`]). The pipeline, the
//! incident engine and the HTTP handlers all point down to it; it points to nothing above it.

pub mod bots;
pub mod history;
pub mod monitoring;
pub mod systems;
pub mod tasks;

use sea_orm::{ConnectionTrait as _, DbBackend, TransactionTrait};

use crate::error::ApiError;

/// The advisory lock key of the pipeline's transactions on PostgreSQL ("botline" in ASCII):
/// held exclusively by a transaction that may touch any bot, shared by those that touch some.
const PIPELINE_LOCK: i64 = 0x0062_6f74_6c69_6e65;

/// How many parts the pipeline's work is cut into on PostgreSQL, by bot name: transactions about
/// bots of different shards (a batch of one bot's events, a dispatch pass over other bots' free
/// slots) run side by side, each holding its shards' advisory locks.
pub const PIPELINE_SHARDS: u32 = 16;

/// The shard of the bot `name`: FNV-1a of the name, so every orchestrator of any version agrees.
/// (A rename moves a bot to another shard; renames take the whole pipeline's lock.)
pub fn shard_of(name: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(PIPELINE_SHARDS)).unwrap_or_default()
}

/// The shards a transaction holds: which bots it may offer tasks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shards(u32);

impl Shards {
    /// Every shard (SQLite's single writer, or the whole pipeline's lock).
    pub const ALL: Shards = Shards(u32::MAX);

    /// Whether the bot `name` is in them.
    pub fn contains(self, name: &str) -> bool {
        self.0 & (1 << shard_of(name)) != 0
    }

    fn of(shards: impl IntoIterator<Item = u32>) -> Shards {
        Shards(shards.into_iter().fold(0, |mask, shard| mask | (1 << shard)))
    }

    fn list(self) -> Vec<u32> {
        (0..PIPELINE_SHARDS).filter(|s| self.0 & (1 << s) != 0).collect()
    }
}

fn shard_lock(shard: u32) -> i64 {
    PIPELINE_LOCK + 1 + i64::from(shard)
}

/// Begins a transaction that waits its turn: on PostgreSQL every transaction that changes a task
/// and its bot together and may touch any bot (the API's cancel and delete, the sweeps) takes the
/// pipeline's advisory lock exclusively first, so it never deadlocks with another. SQLite has
/// one writer anyway.
pub async fn begin_in_line<D: TransactionTrait>(db: &D) -> Result<D::Transaction, ApiError> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PIPELINE_LOCK})")).await?;
    }
    Ok(txn)
}

/// Begins a transaction about the bots `names` (a batch of their events, and the offers to their
/// free slots it makes): on PostgreSQL it shares the pipeline's lock and takes its bots' shards
/// in ascending order, so transactions about bots of other shards run beside it and none
/// deadlocks on the locks. Returns the shards it holds.
pub async fn begin_for_bots<'a, D: TransactionTrait>(
    db: &D,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(D::Transaction, Shards), ApiError> {
    let txn = db.begin().await?;
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok((txn, Shards::ALL));
    }
    let shards = Shards::of(names.into_iter().map(shard_of));
    let mut locks = format!("SELECT pg_advisory_xact_lock_shared({PIPELINE_LOCK});");
    for shard in shards.list() {
        locks.push_str(&format!(" SELECT pg_advisory_xact_lock({});", shard_lock(shard)));
    }
    txn.execute_unprepared(&locks).await?;
    Ok((txn, shards))
}

/// Begins a dispatch pass's transaction: on PostgreSQL it shares the pipeline's lock and takes
/// whichever shards no other transaction holds, without waiting (the dispatcher passes again
/// shortly for free bots left out while tasks wait). Returns the shards it holds, possibly none.
pub async fn begin_for_dispatch<D: TransactionTrait>(
    db: &D,
) -> Result<(D::Transaction, Shards), ApiError> {
    let txn = db.begin().await?;
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok((txn, Shards::ALL));
    }
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock_shared({PIPELINE_LOCK})"))
        .await?;
    let rows = txn
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT s::integer AS shard FROM generate_series(0, {}) AS s \
                 WHERE pg_try_advisory_xact_lock({} + s)",
                PIPELINE_SHARDS - 1,
                PIPELINE_LOCK + 1
            ),
        ))
        .await?;
    let mut acquired = Vec::with_capacity(rows.len());
    for row in rows {
        let shard: i32 = row.try_get("", "shard")?;
        acquired.push(u32::try_from(shard).unwrap_or_default());
    }
    Ok((txn, Shards::of(acquired)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bot_s_shard_is_fixed_and_the_shards_are_used_evenly() {
        // FNV-1a of "bot-1" is 0x…: pinned, so orchestrators of any version agree.
        assert_eq!(shard_of("bot-1"), shard_of("bot-1"));
        assert_eq!(u64::from(shard_of("")), 0xcbf2_9ce4_8422_2325_u64 % 16);
        let mut counts = [0; PIPELINE_SHARDS as usize];
        for n in 0..1600 {
            counts[shard_of(&format!("bot-{n}")) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (60..=140).contains(&c)), "{counts:?}");
        let held = Shards::of([shard_of("bot-1")]);
        assert!(held.contains("bot-1"));
        assert!(Shards::ALL.contains("anything"));
        assert_eq!(Shards::of([3, 1, 3]).list(), [1, 3]);
    }
}
