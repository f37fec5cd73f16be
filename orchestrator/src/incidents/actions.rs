//! Actions: what a monitored failure means and whom to tell. Their request shape
//! ([`ActionRequest`]), the checked form ([`ActionSpec`], the only one stored), how the API
//! shows them ([`Action`]) and their storage.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, Set, TransactionSession as _, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::IncidentStatus;
use super::entity::{action, action_trigger, incident};
use super::report::{RawTrigger, Trigger};
use super::rules::{self, ActionRules, External, Level, Who};
use crate::error::{ApiError, unique_violation};

/// The longest action name.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest action code.
pub const MAX_CODE_CHARS: usize = 64;
/// The longest message, customers group or level name.
pub const MAX_TEXT_CHARS: usize = 2000;
/// The most levels an action may have.
pub const MAX_LEVELS: usize = 20;
/// The longest channel name.
pub const MAX_CHANNEL_CHARS: usize = 32;
/// The most teams one level may alert.
pub const MAX_TEAMS_PER_LEVEL: usize = 20;
/// The longest language tag (BCP 47 allows 35).
pub const MAX_LANGUAGE_CHARS: usize = 35;

/// An action's fields as a client sends them (POST and PUT).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// A name people read (unique).
    #[schema(example = "Login unavailable")]
    pub name: String,
    /// A short code for programs (unique).
    #[schema(example = "LOGIN_UNAVAILABLE")]
    pub code: String,
    /// The reports that mean this action, `[{"service","status"}]` (or `servico`/`retorno`);
    /// a pair belongs to one action at most.
    #[schema(value_type = Vec<Trigger>)]
    pub triggers: Vec<RawTrigger>,
    /// Which customers are told: free text or a query for the messaging platform.
    #[schema(example = "All app users")]
    pub customers_group: String,
    /// What customers are told, and after how many occurrences; absent: nobody outside.
    #[serde(default)]
    pub external: Option<External>,
    /// Internal escalation, lowest first; thresholds must rise from level to level.
    #[serde(default)]
    pub levels: Vec<Level>,
}

/// An action's fields, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// Trimmed, non-empty.
    pub name: String,
    /// Trimmed, non-empty.
    pub code: String,
    /// At least one, no repeats.
    pub triggers: Vec<Trigger>,
    /// Trimmed, non-empty.
    pub customers_group: String,
    /// What customers are told.
    pub external: Option<External>,
    /// Rising levels.
    pub levels: Vec<Level>,
}

fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(field, format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(field, format!("{field} must be at most {max} characters")));
    }
    Ok(value.to_owned())
}

impl ActionSpec {
    /// Checks a request; every refusal names its field (`levels[1].volume`).
    pub fn parse(request: ActionRequest) -> Result<ActionSpec, ApiError> {
        let name = text("name", &request.name, MAX_NAME_CHARS)?;
        let code = text("code", &request.code, MAX_CODE_CHARS)?;
        if request.triggers.is_empty() {
            return Err(ApiError::invalid("triggers", "an action needs at least one trigger"));
        }
        let mut triggers = Vec::new();
        let mut seen = BTreeSet::new();
        for (index, raw) in request.triggers.iter().enumerate() {
            let field = format!("triggers[{index}]");
            let trigger = raw.check(&field).map_err(|e| ApiError::invalid(e.field, e.message))?;
            if !seen.insert(trigger.clone()) {
                return Err(ApiError::invalid(field, format!("{trigger} is listed twice")));
            }
            triggers.push(trigger);
        }
        let customers_group = text("customers_group", &request.customers_group, MAX_TEXT_CHARS)?;
        let external = request.external.map(check_external).transpose()?;
        if request.levels.len() > MAX_LEVELS {
            return Err(ApiError::invalid("levels", format!("at most {MAX_LEVELS} levels")));
        }
        let levels = request
            .levels
            .into_iter()
            .enumerate()
            .map(|(index, level)| Ok(Level { who: check_who(index, &level.who)?, ..level }))
            .collect::<Result<Vec<_>, ApiError>>()?;
        rules::validate_levels(&levels).map_err(|v| ApiError::invalid(v.field, v.message))?;
        Ok(ActionSpec { name, code, triggers, customers_group, external, levels })
    }
}

/// Checks whom level `index` alerts: each team named, none twice.
fn check_who(index: usize, who: &Who) -> Result<Who, ApiError> {
    let field = format!("levels[{index}].who");
    match who {
        Who::One(team) => Ok(Who::One(text(&field, team, MAX_NAME_CHARS)?)),
        Who::Many(teams) => {
            if teams.is_empty() {
                return Err(ApiError::invalid(field, "a level alerts at least one team"));
            }
            if teams.len() > MAX_TEAMS_PER_LEVEL {
                return Err(ApiError::invalid(
                    field,
                    format!("a level alerts at most {MAX_TEAMS_PER_LEVEL} teams"),
                ));
            }
            let mut checked: Vec<String> = Vec::with_capacity(teams.len());
            for (n, team) in teams.iter().enumerate() {
                let team = text(&format!("{field}[{n}]"), team, MAX_NAME_CHARS)?;
                if checked.contains(&team) {
                    return Err(ApiError::invalid(
                        format!("{field}[{n}]"),
                        format!("'{team}' is listed twice in this level"),
                    ));
                }
                checked.push(team);
            }
            Ok(Who::Many(checked))
        }
    }
}

fn check_external(external: External) -> Result<External, ApiError> {
    if external.min_occurrences == 0 {
        return Err(ApiError::invalid(
            "external.min_occurrences",
            "external.min_occurrences must be at least 1",
        ));
    }
    let channel = external.channel.trim().to_owned();
    let valid_channel = !channel.is_empty()
        && channel.chars().count() <= MAX_CHANNEL_CHARS
        && channel.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_channel {
        return Err(ApiError::invalid(
            "external.channel",
            format!(
                "external.channel must be 1 to {MAX_CHANNEL_CHARS} letters, digits, '-' or '_' (Push, SMS, e-mail)"
            ),
        ));
    }
    let message = text("external.message", &external.message, MAX_TEXT_CHARS)?;
    let restored_message = external
        .restored_message
        .map(|m| text("external.restored_message", &m, MAX_TEXT_CHARS))
        .transpose()?;
    let language = external.language.map(|tag| tag.trim().to_owned());
    if let Some(tag) = &language {
        let valid = !tag.is_empty()
            && tag.chars().count() <= MAX_LANGUAGE_CHARS
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(ApiError::invalid(
                "external.language",
                format!(
                    "external.language must be a language tag such as en or pt-BR (1 to {MAX_LANGUAGE_CHARS} letters, digits or '-')"
                ),
            ));
        }
    }
    let external = External {
        min_occurrences: external.min_occurrences,
        channel,
        message,
        restored_message,
        language,
    };
    // Customers told in a language with no default "service restored" sentence must be given
    // one, rather than read it in English.
    rules::restored_message(&external).map_err(|v| ApiError::invalid(v.field, v.message))?;
    Ok(external)
}

/// An action, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Action {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its code.
    pub code: String,
    /// The reports that mean it.
    pub triggers: Vec<Trigger>,
    /// Which customers are told.
    pub customers_group: String,
    /// What customers are told.
    pub external: Option<External>,
    /// Internal escalation, lowest first.
    pub levels: Vec<Level>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Action {
    /// What the action says about communications, for [`rules::due_communications`].
    pub fn rules(&self) -> ActionRules {
        ActionRules { external: self.external.clone(), levels: self.levels.clone() }
    }
}

fn corrupt(id: Uuid, what: &str) -> ApiError {
    ApiError::Internal(sea_orm::DbErr::Type(format!("action {id}: stored {what} is invalid")))
}

/// The API view of a stored action and its triggers.
pub fn to_action(
    row: action::Model,
    mut triggers: Vec<action_trigger::Model>,
) -> Result<Action, ApiError> {
    triggers.sort_by(|a, b| (&a.service, &a.return_code).cmp(&(&b.service, &b.return_code)));
    let external = row
        .external
        .filter(|v| !v.is_null())
        .map(serde_json::from_value)
        .transpose()
        .map_err(|_| corrupt(row.id, "external"))?;
    let levels = serde_json::from_value(row.levels).map_err(|_| corrupt(row.id, "levels"))?;
    Ok(Action {
        id: row.id,
        name: row.name,
        code: row.code,
        triggers: triggers
            .into_iter()
            .map(|t| Trigger { service: t.service, status: t.return_code })
            .collect(),
        customers_group: row.customers_group,
        external,
        levels,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// One action with its triggers.
pub async fn get_action(db: &impl ConnectionTrait, id: Uuid) -> Result<Action, ApiError> {
    let row = action::Entity::find_by_id(id).one(db).await?.ok_or(ApiError::NotFound("action"))?;
    let triggers = action_trigger::Entity::find()
        .filter(action_trigger::Column::ActionId.eq(id))
        .all(db)
        .await?;
    to_action(row, triggers)
}

/// Every action, oldest first (there are tens, not thousands).
pub async fn list_actions(db: &impl ConnectionTrait) -> Result<Vec<Action>, ApiError> {
    let rows = action::Entity::find()
        .order_by_asc(action::Column::CreatedAt)
        .order_by_asc(action::Column::Id)
        .all(db)
        .await?;
    let mut triggers = action_trigger::Entity::find().all(db).await?;
    rows.into_iter()
        .map(|row| {
            let (mine, rest) = triggers.drain(..).partition(|t| t.action_id == row.id);
            triggers = rest;
            to_action(row, mine)
        })
        .collect()
}

/// The action with this code, if any.
pub async fn find_by_code(db: &impl ConnectionTrait, code: &str) -> Result<Option<Uuid>, ApiError> {
    Ok(action::Entity::find()
        .filter(action::Column::Code.eq(code))
        .one(db)
        .await?
        .map(|row| row.id))
}

/// Refuses a name, code or trigger another action has, naming the field (409).
async fn check_unique(
    db: &impl ConnectionTrait,
    spec: &ActionSpec,
    except: Option<Uuid>,
) -> Result<(), ApiError> {
    let other = |id: Uuid| Some(id) != except;
    for (field, column, value) in
        [("name", action::Column::Name, &spec.name), ("code", action::Column::Code, &spec.code)]
    {
        if let Some(row) = action::Entity::find().filter(column.eq(value.as_str())).one(db).await?
            && other(row.id)
        {
            return Err(ApiError::conflict(
                "action_taken",
                Some(field),
                format!("another action has the {field} '{value}'"),
            ));
        }
    }
    for (index, trigger) in spec.triggers.iter().enumerate() {
        if let Some(row) =
            action_trigger::Entity::find_by_id((trigger.service.clone(), trigger.status.clone()))
                .one(db)
                .await?
            && other(row.action_id)
        {
            return Err(ApiError::conflict(
                "trigger_taken",
                Some(&format!("triggers[{index}]")),
                format!("{trigger} already means another action ({})", row.action_id),
            ));
        }
    }
    Ok(())
}

fn stored_external(spec: &ActionSpec) -> Option<serde_json::Value> {
    spec.external.as_ref().and_then(|e| serde_json::to_value(e).ok())
}

fn stored_levels(spec: &ActionSpec) -> serde_json::Value {
    serde_json::to_value(&spec.levels).unwrap_or_else(|_| serde_json::json!([]))
}

/// A unique violation that slipped past [`check_unique`] (two clients at once): a 409.
fn conflict_or(err: sea_orm::DbErr) -> ApiError {
    match unique_violation(&err) {
        Some(_) => ApiError::conflict(
            "action_taken",
            None,
            "another action has this name, code or one of these triggers",
        ),
        None => err.into(),
    }
}

async fn insert_triggers(
    txn: &impl ConnectionTrait,
    id: Uuid,
    triggers: &[Trigger],
) -> Result<(), ApiError> {
    for trigger in triggers {
        action_trigger::ActiveModel {
            service: Set(trigger.service.clone()),
            return_code: Set(trigger.status.clone()),
            action_id: Set(id),
        }
        .insert(txn)
        .await
        .map_err(conflict_or)?;
    }
    Ok(())
}

/// Stores a new action and its triggers.
pub async fn create_action(
    db: &impl TransactionTrait,
    spec: ActionSpec,
    now: DateTime<Utc>,
) -> Result<Action, ApiError> {
    let txn = db.begin().await?;
    check_unique(&txn, &spec, None).await?;
    let id = Uuid::now_v7();
    action::ActiveModel {
        id: Set(id),
        name: Set(spec.name.clone()),
        code: Set(spec.code.clone()),
        customers_group: Set(spec.customers_group.clone()),
        external: Set(stored_external(&spec)),
        levels: Set(stored_levels(&spec)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(conflict_or)?;
    insert_triggers(&txn, id, &spec.triggers).await?;
    let action = get_action(&txn, id).await?;
    txn.commit().await?;
    tracing::info!(action_id = %id, code = %action.code, "action created");
    Ok(action)
}

/// Replaces an action's fields and triggers. An OPEN incident keeps what it already sent and
/// follows the new rules from now on.
pub async fn replace_action(
    db: &impl TransactionTrait,
    id: Uuid,
    spec: ActionSpec,
    now: DateTime<Utc>,
) -> Result<Action, ApiError> {
    let txn = db.begin().await?;
    let row =
        action::Entity::find_by_id(id).one(&txn).await?.ok_or(ApiError::NotFound("action"))?;
    check_unique(&txn, &spec, Some(id)).await?;
    let mut active: action::ActiveModel = row.into();
    active.name = Set(spec.name.clone());
    active.code = Set(spec.code.clone());
    active.customers_group = Set(spec.customers_group.clone());
    active.external = Set(stored_external(&spec));
    active.levels = Set(stored_levels(&spec));
    active.updated_at = Set(now);
    active.update(&txn).await.map_err(conflict_or)?;
    action_trigger::Entity::delete_many()
        .filter(action_trigger::Column::ActionId.eq(id))
        .exec(&txn)
        .await?;
    insert_triggers(&txn, id, &spec.triggers).await?;
    let action = get_action(&txn, id).await?;
    txn.commit().await?;
    Ok(action)
}

/// Deletes an action with its triggers and its resolved incidents; refused (409) while one of
/// its incidents is OPEN.
pub async fn delete_action(db: &impl TransactionTrait, id: Uuid) -> Result<(), ApiError> {
    let txn = db.begin().await?;
    action::Entity::find_by_id(id).one(&txn).await?.ok_or(ApiError::NotFound("action"))?;
    let open = incident::Entity::find()
        .filter(incident::Column::ActionId.eq(id))
        .filter(incident::Column::Status.eq(IncidentStatus::Open.as_str()))
        .one(&txn)
        .await?;
    if let Some(open) = open {
        return Err(ApiError::conflict(
            "incident_open",
            None,
            format!("incident {} of this action is OPEN; resolve it first", open.id),
        ));
    }
    action::Entity::delete_by_id(id).exec(&txn).await?;
    txn.commit().await?;
    Ok(())
}
