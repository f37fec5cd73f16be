//! The systems Botline automates.

use serde::Serialize;

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

crate::named_enum!(System, "system", {
    Vivo360 => "VIVO360",
    Cpe => "CPE",
    Notify => "NOTIFY",
    Noop => "NOOP",
});

impl System {
    /// The CSV columns an attachment for this system must have; `None` when the system takes no
    /// CSV (its input is the task's JSON payload).
    pub fn required_columns(self) -> Option<&'static [&'static str]> {
        match self {
            System::Vivo360 => Some(&crate::attachment::VIVO360_COLUMNS),
            System::Cpe | System::Notify | System::Noop => None,
        }
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
