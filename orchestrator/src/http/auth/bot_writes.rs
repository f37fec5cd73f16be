//! What a bot's token may write: register that bot, change or delete its record, report on
//! the tasks it was given; each write checked against the database and the body before the
//! handler sees it. The rules of those routes ([`super::rules`]) call [`check_bot_write`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use broker_config::BotName;
use sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};
use uuid::Uuid;

use super::identity::Refusal;
use super::rules::refuse;
use crate::entity::{task, task_event};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::extract::JsonBytes;
use crate::tasks::EventKind;

/// The writes a bot's token may attempt, named by the rule of the route ([`super::rules`]) with
/// the id of the route's path; each is then checked against the database and the body
/// ([`check_bot_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotWrite {
    /// `POST /api/v1/bots`: registering itself.
    Register,
    /// `PUT`/`PATCH /api/v1/bots/{id}`: its own record (a resource or a bot event).
    ChangeBot(Uuid),
    /// `DELETE /api/v1/bots/{id}`: its own record.
    DeleteBot(Uuid),
    /// `PUT`/`PATCH /api/v1/tasks/{id}`: a report on a task it was given (an event, or a status
    /// RUNNING, COMPLETE or FAILED).
    ReportTask(Uuid),
    /// Anything else (an id that is not a UUID).
    Never,
}

/// Checks a bot's write against the database (whose bot, whose task) and its body (which name,
/// which bot's event), and hands back the request, its body read and put back.
pub(super) async fn check_bot_write(
    state: &AppState,
    me: &BotName,
    write: BotWrite,
    parts: Parts,
    body: Body,
) -> Result<Request, Response> {
    let not_this_bot =
        |what: &str| refuse(Refusal::NotThisBot(format!("the token of bot {me} {what}")));
    if write == BotWrite::Never {
        return Err(not_this_bot(
            "may only read, register that bot, change its record and report on the tasks it was given",
        ));
    }
    let limit = crate::http::body_limit(state.max_attachment_bytes);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::TooLarge { field: None, message: "request body is over the size limit".into() }
            .into_response()
    })?;
    let db = &state.db;
    let body = JsonBytes(bytes.clone());
    match write {
        BotWrite::Register => {
            if named(&bytes) != Ok(Some(me.as_str().to_owned())) {
                return Err(not_this_bot("may only register that bot: the body's name must be it"));
            }
        }
        BotWrite::ChangeBot(id) | BotWrite::DeleteBot(id) => {
            if !is_bot(db, id, me).await.map_err(IntoResponse::into_response)? {
                return Err(not_this_bot("may only change that bot's own record"));
            }
            let own_body = match write {
                BotWrite::DeleteBot(_) => true,
                _ if body.is_event() => {
                    body.event().map_err(IntoResponse::into_response)?.bot() == me
                }
                // Renaming would hand the record to another bot's token.
                _ => match named(&bytes) {
                    Ok(None) => true,
                    Ok(Some(name)) => name == me.as_str(),
                    Err(()) => false,
                },
            };
            if write == BotWrite::ChangeBot(id) && !body.is_event() && pauses(&bytes) {
                return Err(not_this_bot(
                    "may not pause or resume that bot: only an operator takes a bot out of rotation",
                ));
            }
            if !own_body {
                return Err(not_this_bot("may only send that bot's own events and keep its name"));
            }
        }
        BotWrite::ReportTask(id) => {
            if body.is_event() {
                let event = body.event().map_err(IntoResponse::into_response)?;
                if event.bot() != me || event.task().map(|t| t.task_id) != Some(id) {
                    return Err(not_this_bot(
                        "may only report that bot's own events about this task",
                    ));
                }
            } else if !is_status_report(&bytes) {
                return Err(not_this_bot(
                    "may only report on tasks (status RUNNING, COMPLETE or FAILED, or an event), not edit them",
                ));
            }
            if !was_given(db, id, me).await.map_err(IntoResponse::into_response)? {
                return Err(not_this_bot("may only report on the tasks that bot was given"));
            }
        }
        BotWrite::Never => {}
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Whether a JSON body sets `paused`.
fn pauses(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        paused: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|probe| probe.paused.is_some())
}

/// Whether a body is a plain status report (RUNNING, COMPLETE, FAILED): the handler then checks
/// that the task is this bot's and that nothing but the report's fields change.
fn is_status_report(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        status: Option<broker_config::TaskStatus>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .is_ok_and(|probe| probe.status.is_some_and(broker_config::TaskStatus::is_report))
}

/// The `name` of a JSON object body: `Ok(None)` without one, `Err` when the body is not such an
/// object.
fn named(bytes: &[u8]) -> Result<Option<String>, ()> {
    #[derive(serde::Deserialize)]
    struct Probe {
        name: Option<String>,
    }
    serde_json::from_slice::<Probe>(bytes).map(|probe| probe.name).map_err(|_| ())
}

/// Whether the bot `id` exists and is named `me`.
async fn is_bot(db: &DatabaseConnection, id: Uuid, me: &BotName) -> Result<bool, ApiError> {
    let record = crate::store::bots::find_by_id(db, id).await?;
    Ok(record.is_some_and(|bot| bot.name == me.as_str()))
}

/// Whether the task `id` is held by the bot `me`, or was offered to it before. A bot that once
/// held a task may still report on it: its late events are fenced by attempt, recorded as stale
/// and change nothing, exactly as they would over the broker.
async fn was_given(db: &DatabaseConnection, id: Uuid, me: &BotName) -> Result<bool, ApiError> {
    let Some(bot) = crate::store::bots::find_by_name(db, me.as_str()).await? else {
        return Ok(false);
    };
    let Some(task) = task::Entity::find_by_id(id).one(db).await? else {
        return Ok(false);
    };
    if task.bot_id == Some(bot.id) {
        return Ok(true);
    }
    let offered = task_event::Entity::find()
        .filter(task_event::Column::TaskId.eq(id))
        .filter(task_event::Column::BotId.eq(bot.id))
        .filter(task_event::Column::Kind.eq(EventKind::Assigned.as_str()))
        .one(db)
        .await?;
    Ok(offered.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_json_objects_only() {
        assert_eq!(named(br#"{"name":"a","x":1}"#), Ok(Some("a".to_owned())));
        assert_eq!(named(br#"{"status":"AVAILABLE"}"#), Ok(None));
        assert_eq!(named(br#"{"name":"a","name":"b"}"#), Err(()), "duplicates are ambiguous");
        assert_eq!(named(b"[1]"), Err(()));
        assert_eq!(named(b"not json"), Err(()));
    }
}
