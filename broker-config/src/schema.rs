//! The broker contract as a JSON Schema (draft 2020-12), derived from the message types of
//! [`crate::messages`], for bots written in other languages.
//!
//! The document is checked in at `sdk/python/src/botline/contract.schema.json`, where the Python
//! package reads it; `tests/contract_schema.rs` fails when the types and the file drift apart
//! (`BOTLINE_WRITE_SCHEMA=1 cargo test -p broker-config --test contract_schema` rewrites it).
//! Its `$defs` name every message a bot receives (`CommandMessage`, `OffersMessage`) and sends
//! (`EventMessage`, `EventsMessage`); the document itself accepts any of the four.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Map, Value, json};

use crate::bot_name::MAX_BOT_NAME_LEN;
use crate::messages::{Command, EVENTS_TYPE, Event, MAX_BATCH, MAX_SLOTS, OFFERS_TYPE, VERSION};
use crate::system::MAX_SYSTEM_NAME_CHARS;
use crate::{BotName, System};

impl JsonSchema for BotName {
    fn schema_name() -> Cow<'static, str> {
        "BotName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A bot name, also its queue's (`botline.bot.<name>`): lowercase letters, digits, '-', '_' and '.', starting with a letter or digit.",
            "type": "string",
            "pattern": format!("^[a-z0-9][a-z0-9._-]{{0,{}}}$", MAX_BOT_NAME_LEN - 1),
        })
    }
}

impl JsonSchema for System {
    fn schema_name() -> Cow<'static, str> {
        "System".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A system's name, read in any case and sent uppercase (`VIVO360`, `PAYROLL`).",
            "type": "string",
            "pattern": format!("^[A-Za-z0-9][A-Za-z0-9_-]{{0,{}}}$", MAX_SYSTEM_NAME_CHARS - 1),
        })
    }
}

/// The contract's JSON Schema: every message type with its fields, the envelope's version, and
/// the batched forms.
pub fn contract_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let command = generator.subschema_for::<Command>();
    let event = generator.subschema_for::<Event>();
    let mut defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    let version = json!({ "description": "The contract version.", "const": VERSION });
    // What schemars cannot say from the types alone (see `mend`).
    defs.values_mut().for_each(mend);
    let one = |what: &str, inner: &Schema| {
        json!({
            "description": format!("One {what} in its envelope."),
            "allOf": [inner, { "type": "object", "properties": { "v": version }, "required": ["v"] }],
        })
    };
    defs.insert("CommandMessage".into(), one("command", &command));
    defs.insert("EventMessage".into(), one("event", &event));
    defs.insert(
        "OffersMessage".into(),
        json!({
            "description": "Several offers to one bot (sent only to bots whose `bot.online` says `batches`).",
            "type": "object",
            "properties": {
                "v": version,
                "type": { "const": OFFERS_TYPE },
                "offers": {
                    "type": "array",
                    "maxItems": MAX_BATCH,
                    "items": { "allOf": [command, { "properties": { "type": { "const": "task.assign" } } }] },
                },
            },
            "required": ["v", "type", "offers"],
        }),
    );
    defs.insert(
        "EventsMessage".into(),
        json!({
            "description": "Several events of one bot in one message, published with the routing key `bot.events`; each event names the same bot.",
            "type": "object",
            "properties": {
                "v": version,
                "type": { "const": EVENTS_TYPE },
                "bot": { "$ref": "#/$defs/BotName" },
                "events": { "type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": event },
            },
            "required": ["v", "type", "bot", "events"],
        }),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("Botline broker contract, version {VERSION}"),
        "description": format!(
            "Generated from broker-config's message types (cargo test -p broker-config --test \
             contract_schema); do not edit. Commands go to a bot's queue, events to the \
             botline.events exchange with their type as routing key. A bot runs at most {MAX_SLOTS} \
             tasks at once."
        ),
        "anyOf": [
            { "$ref": "#/$defs/CommandMessage" },
            { "$ref": "#/$defs/OffersMessage" },
            { "$ref": "#/$defs/EventMessage" },
            { "$ref": "#/$defs/EventsMessage" },
        ],
        "$defs": defs,
    })
}

/// Mends what schemars derives, in every schema below `value`, by its `format`:
/// - `date-time`: its `default` goes. An event's `at` defaults to its receiver's clock, and
///   schemars would print the clock of the run that generated the schema, which is no default
///   anyone can rely on.
/// - `uint32`: it gets its maximum, which serde enforces and schemars only names.
fn mend(value: &mut Value) {
    match value {
        Value::Object(map) => {
            match map.get("format").and_then(Value::as_str) {
                Some("date-time") => {
                    map.remove("default");
                }
                Some("uint32") => {
                    map.insert("maximum".into(), json!(u32::MAX));
                }
                _ => {}
            }
            map.values_mut().for_each(mend);
        }
        Value::Array(items) => items.iter_mut().for_each(mend),
        _ => {}
    }
}
