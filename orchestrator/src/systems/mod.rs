//! Systems as data: what a client sends to register or change a system ([`SystemRequest`],
//! [`SystemPatch`]), checked into [`SystemSpec`]; the system as the API shows it ([`SystemView`]);
//! its input [`Contract`]; and the [`Registry`] that task creation checks tasks against.
//! Pure: no IO ([`crate::store::systems`] stores them).

use std::collections::BTreeMap;

use broker_config::System;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod contract;

pub use contract::{Checker, Contract};

use crate::entity::system;
use crate::error::ApiError;
/// The most attempts a task (or a system's default) may ask for.
pub const MAX_MAX_ATTEMPTS: u32 = 100;
/// The longest maximum run time a task (or a system's default) may ask for: a week.
pub const MAX_RUN_SECONDS: u32 = 7 * 24 * 3600;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// The longest offer timeout a system may give its tasks: an hour.
pub const MAX_OFFER_TIMEOUT_SECONDS: u32 = 3600;

/// Defaults for a system's tasks; each one absent is the orchestrator's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"max_attempts": 5, "priority": 0}))]
pub struct TaskDefaults {
    /// Runs that may fail before a task fails for good, 1 to 100 (orchestrator's: 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How long an offer waits for the bot's answer, 1 to 3,600 seconds (orchestrator's:
    /// `--offer-timeout`).
    #[serde(default)]
    pub offer_timeout_seconds: Option<u32>,
    /// A task's maximum run time, 1 to 604,800 seconds (orchestrator's: `--max-run-time`).
    #[serde(default)]
    pub max_run_seconds: Option<u32>,
    /// Higher runs first (orchestrator's: 0).
    #[serde(default)]
    pub priority: Option<i32>,
}

impl TaskDefaults {
    fn check(self) -> Result<TaskDefaults, ApiError> {
        let within = |field: &str, value: Option<u32>, max: u32, what: &str| match value {
            Some(v) if !(1..=max).contains(&v) => Err(ApiError::invalid(
                format!("defaults.{field}"),
                format!("{field} must be between 1 and {max} ({what})"),
            )),
            _ => Ok(()),
        };
        within("max_attempts", self.max_attempts, MAX_MAX_ATTEMPTS, "runs")?;
        within(
            "offer_timeout_seconds",
            self.offer_timeout_seconds,
            MAX_OFFER_TIMEOUT_SECONDS,
            "an hour",
        )?;
        within("max_run_seconds", self.max_run_seconds, MAX_RUN_SECONDS, "a week")?;
        Ok(self)
    }
}

/// A system to register (`POST /api/v1/systems`).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "PAYROLL",
    "description": "Payroll entries in the ERP, one per CSV row",
    "input": {"kind": "csv", "columns": ["employee", "amount"]},
    "defaults": {"max_attempts": 5, "priority": 0}
}))]
pub struct SystemRequest {
    /// Its name, in any case (stored uppercase): 1 to 64 letters, digits, '_' or '-'.
    #[schema(example = "PAYROLL")]
    pub name: System,
    /// What it is, for people (up to 2,000 characters).
    #[serde(default)]
    #[schema(example = "Payroll entries in the ERP, one per CSV row")]
    pub description: String,
    /// What its tasks must carry; default: anything (`{"kind": "none"}`).
    #[serde(default = "no_contract")]
    pub input: Contract,
    /// Defaults for its tasks.
    #[serde(default)]
    pub defaults: TaskDefaults,
}

fn no_contract() -> Contract {
    Contract::None
}

/// A change of a system (`PUT` and `PATCH` alike): only the fields given change. A client may
/// send back the system it read: `name` must then be this one's, and the read-only fields are
/// ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPatch {
    /// This system's name, if sent: a system is not renamed.
    pub name: Option<System>,
    /// A new description.
    pub description: Option<String>,
    /// A new contract (replacing it whole).
    pub input: Option<Contract>,
    /// New defaults (replacing them whole).
    pub defaults: Option<TaskDefaults>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub builtin: Option<serde_json::Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub created_at: Option<serde_json::Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub updated_at: Option<serde_json::Value>,
}

impl SystemPatch {
    /// The full request this patch makes of `current`.
    pub fn apply_to(self, current: SystemView) -> Result<SystemRequest, ApiError> {
        if self.name.as_ref().is_some_and(|name| *name != current.name) {
            return Err(ApiError::invalid(
                "name",
                format!(
                    "a system is not renamed: register the new name and delete {}",
                    current.name
                ),
            ));
        }
        Ok(SystemRequest {
            name: current.name,
            description: self.description.unwrap_or(current.description),
            input: self.input.unwrap_or(current.input),
            defaults: self.defaults.unwrap_or(current.defaults),
        })
    }
}

/// A system's fields, checked: only this type reaches the database.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemSpec {
    /// Its canonical name.
    pub name: System,
    /// Trimmed.
    pub description: String,
    /// Checked: its schema compiles.
    pub input: Contract,
    /// Each within its bounds.
    pub defaults: TaskDefaults,
}

impl SystemSpec {
    /// Checks a request; errors name the field.
    pub fn parse(request: SystemRequest) -> Result<SystemSpec, ApiError> {
        let description = request.description.trim().to_owned();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::invalid(
                "description",
                format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Ok(SystemSpec {
            name: request.name,
            description,
            input: request.input.check()?,
            defaults: request.defaults.check()?,
        })
    }
}

/// A system as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SystemView {
    /// Its name (uppercase).
    pub name: System,
    /// What it is.
    pub description: String,
    /// What its tasks must carry.
    pub input: Contract,
    /// Defaults for its tasks.
    pub defaults: TaskDefaults,
    /// One of the four Botline ships (VIVO360, CPE, NOTIFY, NOOP): editable, not deletable.
    pub builtin: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl SystemView {
    /// The view of a stored row; an error names what in the row does not read (a row written by
    /// hand).
    pub fn from_model(row: system::Model) -> Result<SystemView, ApiError> {
        let corrupt = |what: &str| {
            ApiError::Internal(sea_orm::DbErr::Custom(format!(
                "system {} has an unreadable {what}",
                row.name
            )))
        };
        let name = System::new(&row.name).map_err(|_| corrupt("name"))?;
        let input = Contract::from_columns(&row.input, row.columns.as_ref(), row.schema.as_ref())
            .ok_or_else(|| corrupt("input"))?;
        let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        Ok(SystemView {
            builtin: name.builtin().is_some(),
            name,
            description: row.description,
            input,
            defaults: TaskDefaults {
                max_attempts: positive(row.max_attempts),
                offer_timeout_seconds: positive(row.offer_timeout_seconds),
                max_run_seconds: positive(row.max_run_seconds),
                priority: row.priority,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The registered systems, as task creation needs them: each one's contract compiled once per
/// request, and its defaults.
#[derive(Debug, Default)]
pub struct Registry {
    systems: BTreeMap<System, Registered>,
}

/// One registered system, ready to check tasks.
#[derive(Debug)]
pub struct Registered {
    /// Checks its tasks' input.
    pub checker: Result<Checker, String>,
    /// Defaults for its tasks.
    pub defaults: TaskDefaults,
}

impl Registry {
    /// The registry of these systems.
    pub fn new(systems: impl IntoIterator<Item = SystemView>) -> Registry {
        let systems = systems
            .into_iter()
            .map(|view| {
                let checker = Checker::new(view.name.clone(), &view.input);
                (view.name, Registered { checker, defaults: view.defaults })
            })
            .collect();
        Registry { systems }
    }

    /// The system a task names: a 422 naming the registered ones when it is none of them.
    pub fn get(&self, system: &System) -> Result<(&Checker, &TaskDefaults), ApiError> {
        let Some(registered) = self.systems.get(system) else {
            let known: Vec<&str> = self.systems.keys().map(System::as_str).collect();
            return Err(ApiError::invalid(
                "system",
                format!(
                    "unknown system '{system}'; registered: {} (POST /api/v1/systems registers \
                     one)",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            ));
        };
        let checker = registered.checker.as_ref().map_err(|reason| {
            ApiError::Conflict {
                code: "system_contract_unusable",
                field: Some("system".into()),
                message: format!("{system}'s stored contract is unusable ({reason}); fix it with PUT /api/v1/systems/{system}"),
            }
        })?;
        Ok((checker, &registered.defaults))
    }

    /// The four built-ins as the migration registers them (`migrations::BUILTIN_SYSTEMS`), for
    /// tests of code that reads the registry without a database.
    #[cfg(test)]
    pub(crate) fn builtins() -> Registry {
        let now = crate::clock::now();
        Registry::new(migrations::BUILTIN_SYSTEMS.iter().filter_map(
            |(name, description, input, columns, schema)| {
                let parse = |text: &Option<&str>| text.and_then(|t| serde_json::from_str(t).ok());
                Some(SystemView {
                    name: System::new(name).ok()?,
                    description: (*description).to_owned(),
                    input: Contract::from_columns(
                        input,
                        parse(columns).as_ref(),
                        parse(schema).as_ref(),
                    )?,
                    defaults: TaskDefaults::default(),
                    builtin: true,
                    created_at: now,
                    updated_at: now,
                })
            },
        ))
    }

    /// The registered names, in order.
    pub fn names(&self) -> impl Iterator<Item = &System> {
        self.systems.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: serde_json::Value) -> SystemRequest {
        serde_json::from_value(value).expect("request shape")
    }

    fn field_of<T: std::fmt::Debug>(result: Result<T, ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field: Some(field), .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_request_is_checked_into_a_spec() {
        let spec = SystemSpec::parse(request(json!({
            "name": "payroll", "description": "  ERP entries ",
            "input": {"kind": "csv", "columns": ["Employee", "amount"]},
            "defaults": {"max_attempts": 5, "priority": -2}
        })))
        .expect("valid");
        assert_eq!(spec.name.as_str(), "PAYROLL");
        assert_eq!(spec.description, "ERP entries");
        assert_eq!(spec.input, Contract::Csv { columns: vec!["employee".into(), "amount".into()] });
        assert_eq!(spec.defaults.max_attempts, Some(5));
        let minimal = SystemSpec::parse(request(json!({"name": "x1"}))).expect("valid");
        assert_eq!(minimal.input, Contract::None);
    }

    #[test]
    fn bad_defaults_are_named() {
        for (defaults, field) in [
            (json!({"max_attempts": 0}), "defaults.max_attempts"),
            (json!({"offer_timeout_seconds": 3601}), "defaults.offer_timeout_seconds"),
            (json!({"max_run_seconds": 0}), "defaults.max_run_seconds"),
        ] {
            let parsed = SystemSpec::parse(request(json!({"name": "x", "defaults": defaults})));
            assert_eq!(field_of(parsed), field);
        }
        let long = "d".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert_eq!(
            field_of(SystemSpec::parse(request(json!({"name": "x", "description": long})))),
            "description"
        );
    }

    #[test]
    fn a_patch_changes_only_what_it_gives_and_never_the_name() {
        let now = crate::clock::now();
        let current = SystemView {
            name: System::new("PAYROLL").expect("name"),
            description: "old".into(),
            input: Contract::None,
            defaults: TaskDefaults { priority: Some(3), ..Default::default() },
            builtin: false,
            created_at: now,
            updated_at: now,
        };
        let patch = SystemPatch { description: Some("new".into()), ..Default::default() };
        let changed = patch.apply_to(current.clone()).expect("valid");
        assert_eq!((changed.description.as_str(), changed.defaults.priority), ("new", Some(3)));
        let rename = SystemPatch { name: Some(System::NOOP), ..Default::default() };
        assert_eq!(field_of(rename.apply_to(current.clone())), "name");
        let same =
            SystemPatch { name: Some(System::new("payroll").expect("name")), ..Default::default() };
        assert!(same.apply_to(current).is_ok());
    }

    #[test]
    fn an_unknown_system_lists_the_registered_ones() {
        let now = crate::clock::now();
        let view = |name: System| SystemView {
            name,
            description: String::new(),
            input: Contract::None,
            defaults: TaskDefaults::default(),
            builtin: true,
            created_at: now,
            updated_at: now,
        };
        let registry = Registry::new([view(System::NOOP), view(System::CPE)]);
        assert!(registry.get(&System::NOOP).is_ok());
        assert_eq!(Registry::builtins().names().count(), 4, "the migration's four read back");
        let unknown = registry.get(&System::new("SAP").expect("name")).expect_err("unknown");
        assert_eq!(
            unknown.to_string(),
            "unknown system 'SAP'; registered: CPE, NOOP (POST /api/v1/systems registers one)"
        );
    }
}
