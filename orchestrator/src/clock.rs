//! The current time, as Botline stores it.

use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};

/// Now, truncated to microseconds: PostgreSQL keeps microseconds, so a timestamp read back equals
/// the one written, on both backends (cursors compare them exactly).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// `wait` after `at`, or the end of time when that is past it (a configured timeout of a
/// thousand centuries must not panic the dispatcher: chrono's `+` does on overflow).
pub fn after(at: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| at.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_past_the_end_of_time_ends_there() {
        let at = now();
        assert_eq!(after(at, Duration::from_secs(90)), at + chrono::Duration::seconds(90));
        assert_eq!(after(at, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        // Within chrono's TimeDelta, past its last date.
        assert_eq!(after(at, Duration::from_secs(1_000_000_000_000_000)), DateTime::<Utc>::MAX_UTC);
    }
}
