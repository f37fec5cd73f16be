//! The attendance ETL: customer-service records published to `botline.attendance` are extracted
//! from `botline.attendance.etl` in batches, validated and normalized ([`record`]), loaded in one
//! transaction per batch ([`load`]) and acknowledged after the commit. Bad records go to the
//! dead-letter queue with every reason; the [`report`] answers the service team's questions;
//! [`produce`] publishes synthetic records for demos and tests.

use std::time::Duration;

use broker_config::amqp::{ConsumerSpec, consume_batches};
use broker_config::topology::ATTENDANCE_ETL_QUEUE;
use broker_config::{Message, Topology};
use chrono_tz::Tz;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

pub mod load;
pub mod produce;
pub mod record;
pub mod report;

/// The most records loaded in one transaction.
pub const MAX_BATCH: usize = 500;
/// How long a batch waits to fill after its first record: the latency a lone record pays.
pub const MAX_WAIT: Duration = Duration::from_millis(50);
/// Records the broker may send ahead: two batches, so the next fills while one is loaded.
const PREFETCH: u16 = 1000;

/// How the ETL reads records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtlSettings {
    /// The time zone of the platform's local dates.
    pub timezone: Tz,
    /// The largest record loaded, in bytes; larger ones are dead-lettered with their size.
    pub max_record_bytes: u64,
    /// How many times a record may fail to load for an internal reason before it is
    /// dead-lettered (`--max-message-failures`).
    pub max_failures: u32,
}

impl Default for EtlSettings {
    fn default() -> EtlSettings {
        EtlSettings {
            timezone: crate::defaults::TIMEZONE,
            max_record_bytes: record::DEFAULT_MAX_RECORD_BYTES,
            max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        }
    }
}

/// Consumes `botline.attendance.etl` (declaring `topology`) until `shutdown` fires, loading each
/// batch of records into `db` as `settings` say. Reconnects to the broker when it is lost.
pub async fn run_etl(
    db: DatabaseConnection,
    amqp_url: String,
    topology: Topology,
    settings: EtlSettings,
    shutdown: CancellationToken,
) {
    let spec = ConsumerSpec {
        url: amqp_url,
        name: "orchestrator-etl".into(),
        queue: ATTENDANCE_ETL_QUEUE.into(),
        topology,
        prefetch: PREFETCH,
        max_failures: settings.max_failures,
        hearing: None,
    };
    consume_batches(spec, MAX_BATCH, MAX_WAIT, shutdown, move |messages: Vec<Message>| {
        let db = db.clone();
        async move {
            let decisions = load::load_batch(&db, settings, &messages).await;
            crate::metrics::etl_records(&decisions);
            decisions
        }
    })
    .await;
}
