//! Systems as stored: listing, reading, registering, changing and deleting them, and the
//! [`Registry`] task creation checks against.

use broker_config::{System, TaskStatus};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, Set,
};

use crate::entity::{system, task};
use crate::error::{ApiError, unique_violation};
use crate::systems::{Registry, SystemSpec, SystemView};

/// Every registered system, by name.
pub async fn list_systems(db: &impl ConnectionTrait) -> Result<Vec<SystemView>, ApiError> {
    let rows = system::Entity::find().order_by_asc(system::Column::Name).all(db).await?;
    rows.into_iter().map(SystemView::from_model).collect()
}

/// One system.
pub async fn get_system(db: &impl ConnectionTrait, name: &System) -> Result<SystemView, ApiError> {
    let row = system::Entity::find_by_id(name.as_str())
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("system"))?;
    SystemView::from_model(row)
}

/// The registry of every system, for checking new and changed tasks. One small read: a
/// deployment has tens of systems, not thousands.
pub async fn registry(db: &impl ConnectionTrait) -> Result<Registry, ApiError> {
    Ok(Registry::new(list_systems(db).await?))
}

/// Registers a system; a 409 when the name is taken.
pub async fn create_system(
    db: &impl ConnectionTrait,
    spec: SystemSpec,
    now: DateTime<Utc>,
) -> Result<SystemView, ApiError> {
    let name = spec.name.clone();
    let mut row = system::ActiveModel {
        name: Set(spec.name.to_string()),
        created_at: Set(now),
        ..Default::default()
    };
    set_fields(&mut row, spec, now);
    let inserted = row.insert(db).await.map_err(|err| match unique_violation(&err) {
        Some(_) => ApiError::conflict(
            "name_taken",
            Some("name"),
            format!("a system named '{name}' is already registered"),
        ),
        None => err.into(),
    })?;
    SystemView::from_model(inserted)
}

/// Changes a system (its name stays). Tasks already created keep the defaults they got; the new
/// contract checks the tasks created or changed from now on.
pub async fn update_system(
    db: &impl ConnectionTrait,
    spec: SystemSpec,
    now: DateTime<Utc>,
) -> Result<SystemView, ApiError> {
    let current = system::Entity::find_by_id(spec.name.as_str())
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("system"))?;
    let mut row: system::ActiveModel = current.into();
    set_fields(&mut row, spec, now);
    SystemView::from_model(row.update(db).await?)
}

/// Sets every field a [`SystemSpec`] holds (all but the name and the creation time).
fn set_fields(row: &mut system::ActiveModel, spec: SystemSpec, now: DateTime<Utc>) {
    let (input, columns, schema) = spec.input.to_columns();
    let as_i32 = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok());
    row.description = Set(spec.description);
    row.input = Set(input.to_owned());
    row.columns = Set(columns);
    row.schema = Set(schema);
    row.max_attempts = Set(as_i32(spec.defaults.max_attempts));
    row.offer_timeout_seconds = Set(as_i32(spec.defaults.offer_timeout_seconds));
    row.max_run_seconds = Set(as_i32(spec.defaults.max_run_seconds));
    row.priority = Set(spec.defaults.priority);
    row.updated_at = Set(now);
}

/// Deletes a system: a 409 for a built-in (the bot agent, the equipment API and incidents rely
/// on them) and for a system with unfinished tasks (WAITING, ASSIGNED or RUNNING: cancel or
/// finish them first). Run it in a transaction, so the check and the delete see one state.
pub async fn delete_system(db: &impl ConnectionTrait, name: &System) -> Result<(), ApiError> {
    if name.builtin().is_some() {
        return Err(ApiError::conflict(
            "system_builtin",
            None,
            format!("{name} is one of Botline's own systems: change it, but it cannot be deleted"),
        ));
    }
    let unfinished = task::Entity::find()
        .filter(task::Column::System.eq(name.as_str()))
        .filter(task::Column::Status.is_in([
            TaskStatus::Waiting,
            TaskStatus::Assigned,
            TaskStatus::Running,
        ]))
        .count(db)
        .await?;
    if unfinished > 0 {
        return Err(ApiError::conflict(
            "system_has_tasks",
            None,
            format!(
                "{name} has {unfinished} unfinished task(s) (WAITING, ASSIGNED or RUNNING): \
                 cancel them or let them finish first"
            ),
        ));
    }
    let deleted = system::Entity::delete_by_id(name.as_str()).exec(db).await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::NotFound("system"));
    }
    Ok(())
}
