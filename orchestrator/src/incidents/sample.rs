//! The classic sample action, loaded by the demo (`botline-demo`), as the original's final
//! version has it: the login service answering 503 or 404; customers get a push after 5
//! occurrences; Analyst N1 at 10 occurrences or 5 minutes, Analyst N2 at 20 or 20 minutes,
//! Coordination at 60 minutes. An occurrence is one report request that lists either pair (or both).

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::json;

use super::actions::{self, Action, ActionRequest, ActionSpec};
use crate::error::ApiError;

/// The sample action's code.
pub const SAMPLE_CODE: &str = "LOGIN_UNAVAILABLE";

/// The sample action, as a client would POST it.
pub fn sample_request() -> Result<ActionRequest, serde_json::Error> {
    serde_json::from_value(json!({
        "name": "Login unavailable",
        "code": SAMPLE_CODE,
        "triggers": [
            {"service": "login", "status": "503"},
            {"service": "login", "status": "404"}
        ],
        "customers_group": "All app users",
        "external": {
            "min_occurrences": 5,
            "channel": "Push",
            "message": "Our app is unavailable, we will let you know when it is back",
            "restored_message": "Our app is back. Thank you for your patience."
        },
        "levels": [
            {"volume": 10, "minutes": 5, "who": "Analyst N1"},
            {"volume": 20, "minutes": 20, "who": "Analyst N2"},
            {"minutes": 60, "who": "Coordination"}
        ]
    }))
}

/// Creates the sample action unless an action with its code exists; returns it when created.
pub async fn ensure_sample_action(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<Option<Action>, ApiError> {
    if actions::find_by_code(db, SAMPLE_CODE).await?.is_some() {
        return Ok(None);
    }
    let request = sample_request().map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    let spec = ActionSpec::parse(request)?;
    actions::create_action(db, spec, now).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_a_valid_action() {
        let request = sample_request().expect("the sample parses");
        let spec = ActionSpec::parse(request).expect("the sample is valid");
        assert_eq!(spec.code, SAMPLE_CODE);
        assert_eq!(spec.triggers.len(), 2);
        let thresholds: Vec<(Option<u32>, Option<u32>, String)> =
            spec.levels.iter().map(|l| (l.volume, l.minutes, l.who.to_string())).collect();
        assert_eq!(
            thresholds,
            [
                (Some(10), Some(5), "Analyst N1".to_owned()),
                (Some(20), Some(20), "Analyst N2".to_owned()),
                (None, Some(60), "Coordination".to_owned()),
            ],
            "the original's final version"
        );
        assert_eq!(spec.external.as_ref().map(|e| e.min_occurrences), Some(5));
    }
}
