//! The systems Botline automates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::status::UnknownValue;

/// A target system: what a task is for and what a bot can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum System {
    /// User creation in the Vivo360 portal, one user per CSV row.
    Vivo360,
    /// Equipment (CPE) activation through the equipment config service.
    Cpe,
    /// Delivery of an incident communication to a webhook.
    Notify,
    /// Does nothing for a configurable time; for tests and benchmarks.
    Noop,
}

impl System {
    /// Every system, in a stable order.
    pub const ALL: [System; 4] = [System::Vivo360, System::Cpe, System::Notify, System::Noop];

    /// The uppercase name used in the API, the database and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Vivo360 => "VIVO360",
            System::Cpe => "CPE",
            System::Notify => "NOTIFY",
            System::Noop => "NOOP",
        }
    }

    /// The CSV columns an attachment for this system must have; `None` when the system takes no
    /// CSV (its input is the task's JSON payload).
    pub fn required_columns(self) -> Option<&'static [&'static str]> {
        match self {
            System::Vivo360 => Some(&crate::attachment::VIVO360_COLUMNS),
            System::Cpe | System::Notify | System::Noop => None,
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for System {
    /// Reads a system name in any case (`"Vivo360"`, as the original contract spells it).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for System {
    type Err = UnknownValue;

    /// Parses a system name, ignoring case (`vivo360` on a command line is `VIVO360`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        System::ALL
            .into_iter()
            .find(|system| system.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownValue::new("system", s, &System::ALL.map(System::as_str)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_round_trips_through_json() {
        assert_eq!("vivo360".parse::<System>(), Ok(System::Vivo360));
        assert_eq!(" Noop ".parse::<System>(), Ok(System::Noop));
        // The original Vivo360 contract spells it so, in JSON as in forms.
        assert_eq!(
            serde_json::from_str::<System>("\"Vivo360\"").expect("any case"),
            System::Vivo360
        );
        let unknown = serde_json::from_str::<System>("\"SAP\"").expect_err("unknown");
        assert!(unknown.to_string().contains("expected one of VIVO360"), "{unknown}");
        for system in System::ALL {
            let json = serde_json::to_string(&system).expect("serialize");
            assert_eq!(json, format!("\"{}\"", system.as_str()));
            assert_eq!(serde_json::from_str::<System>(&json).expect("deserialize"), system);
        }
    }

    #[test]
    fn unknown_system_lists_the_known_ones() {
        let err = "FAX".parse::<System>().expect_err("FAX is not a system");
        assert_eq!(
            err.to_string(),
            "unknown system 'FAX'; expected one of VIVO360, CPE, NOTIFY, NOOP"
        );
    }
}
