//! The current time, as Botline stores it.

use chrono::{DateTime, SubsecRound as _, Utc};

/// Now, truncated to microseconds: PostgreSQL keeps microseconds, so a timestamp read back equals
/// the one written, on both backends (cursors compare them exactly).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
