//! The systems Botline automates: a name every part agrees on. Which systems exist is data (the
//! orchestrator's `/api/v1/systems`); this type only says what a name may be, and names the four
//! that Botline ships with ([`Builtin`]).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest system name.
pub const MAX_SYSTEM_NAME_CHARS: usize = 64;

/// A target system's name: what a task is for and what a bot can run. Canonical: trimmed and
/// uppercase, 1 to 64 of `A`–`Z`, `0`–`9`, `_` and `-`, starting with a letter or digit, so it
/// is safe in a queue name, a routing key, a URL path and a CSV of names. Parsing accepts any
/// case (`vivo360` is `VIVO360`), as the original Vivo360 contract spells it `Vivo360`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct System(Cow<'static, str>);

/// A name that cannot be a system's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{value}' is not a system name: 1 to {MAX_SYSTEM_NAME_CHARS} letters, digits, '_' or '-', \
     starting with a letter or digit"
)]
pub struct InvalidSystemName {
    /// The name given.
    pub value: String,
}

impl System {
    /// User creation in the Vivo360 portal, one user per CSV row.
    pub const VIVO360: System = System(Cow::Borrowed("VIVO360"));
    /// Equipment (CPE) activation through the equipment config service.
    pub const CPE: System = System(Cow::Borrowed("CPE"));
    /// Delivery of an incident communication to a webhook.
    pub const NOTIFY: System = System(Cow::Borrowed("NOTIFY"));
    /// Does nothing for a configurable time; for tests and benchmarks.
    pub const NOOP: System = System(Cow::Borrowed("NOOP"));

    /// Checks and canonicalises a name (trimmed, uppercase).
    pub fn new(name: &str) -> Result<System, InvalidSystemName> {
        let canonical = name.trim().to_ascii_uppercase();
        let valid = (1..=MAX_SYSTEM_NAME_CHARS).contains(&canonical.len())
            && canonical
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && canonical.as_bytes()[0].is_ascii_alphanumeric();
        if !valid {
            return Err(InvalidSystemName { value: name.to_owned() });
        }
        // The built-ins borrow their static names: most tasks are for one of them.
        Ok(Builtin::ALL
            .into_iter()
            .map(Builtin::system)
            .find(|b| b.as_str() == canonical)
            .unwrap_or(System(Cow::Owned(canonical))))
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which of Botline's own systems this is, if one.
    pub fn builtin(&self) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.as_str() == self.as_str())
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for System {
    type Err = InvalidSystemName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        System::new(s)
    }
}

impl<'de> Deserialize<'de> for System {
    /// Reads a name in any case, as [`System::new`] does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        System::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for System {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A system's name (any case; stored uppercase): 1 to 64 letters, digits, '_' or \
                 '-'. GET /api/v1/systems lists the registered ones.",
            ))
            .pattern(Some("^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"))
            .examples(["VIVO360"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for System {}

/// The systems Botline ships an automation for (in the bot agent) and registers at first start
/// (a migration); the orchestrator's equipment API and incidents create tasks for two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Builtin {
    /// [`System::VIVO360`].
    Vivo360,
    /// [`System::CPE`].
    Cpe,
    /// [`System::NOTIFY`].
    Notify,
    /// [`System::NOOP`].
    Noop,
}

crate::named_enum!(Builtin, "system", {
    Vivo360 => "VIVO360",
    Cpe => "CPE",
    Notify => "NOTIFY",
    Noop => "NOOP",
});

impl Builtin {
    /// Its system.
    pub fn system(self) -> System {
        System(Cow::Borrowed(self.as_str()))
    }

    /// The CSV columns an attachment for it must have; `None` when it takes no CSV (its input is
    /// the task's JSON payload). The registered system's contract says the same (the migration
    /// that registers the built-ins writes these).
    pub fn required_columns(self) -> Option<&'static [&'static str]> {
        match self {
            Builtin::Vivo360 => Some(&crate::attachment::VIVO360_COLUMNS),
            Builtin::Cpe | Builtin::Notify | Builtin::Noop => None,
        }
    }
}

impl From<Builtin> for System {
    fn from(builtin: Builtin) -> System {
        builtin.system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_round_trips_through_json() {
        assert_eq!("vivo360".parse::<System>(), Ok(System::VIVO360));
        assert_eq!(" Noop ".parse::<System>(), Ok(System::NOOP));
        // The original Vivo360 contract spells it so, in JSON as in forms.
        assert_eq!(
            serde_json::from_str::<System>("\"Vivo360\"").expect("any case"),
            System::VIVO360
        );
        let payroll = serde_json::from_str::<System>("\"payroll-br_2\"").expect("any name");
        assert_eq!(payroll.as_str(), "PAYROLL-BR_2");
        assert_eq!(payroll.builtin(), None);
        for system in Builtin::ALL.map(Builtin::system).into_iter().chain([payroll]) {
            let json = serde_json::to_string(&system).expect("serialize");
            assert_eq!(json, format!("\"{}\"", system.as_str()));
            assert_eq!(serde_json::from_str::<System>(&json).expect("deserialize"), system);
        }
        assert_eq!(System::CPE.builtin(), Some(Builtin::Cpe));
    }

    #[test]
    fn refuses_names_unsafe_in_queues_and_paths() {
        for bad in ["", "  ", "a b", "-lead", "_lead", "a.b", "a/b", "ç", &"X".repeat(65)] {
            let err = System::new(bad).expect_err(bad);
            assert!(err.to_string().contains("is not a system name"), "{err}");
        }
        assert!(System::new(&"X".repeat(64)).is_ok());
        let refused = serde_json::from_str::<System>("\"a,b\"").expect_err("comma");
        assert!(refused.to_string().contains("'a,b' is not a system name"), "{refused}");
    }

    #[test]
    fn builtins_name_their_systems() {
        assert_eq!(
            Builtin::ALL.map(|b| b.system()),
            [System::VIVO360, System::CPE, System::NOTIFY, System::NOOP]
        );
        assert_eq!(
            "FAX".parse::<Builtin>().expect_err("not built in").to_string(),
            "unknown system 'FAX'; expected one of VIVO360, CPE, NOTIFY, NOOP"
        );
    }
}
