"""The broker contract's messages, as Botline's Rust programs define them.

The shapes come from `contract.schema.json`, generated from broker-config's message types and
checked in beside this module (a Rust test fails when the two drift; this package's tests check
every message built here against it). Messages are JSON objects with `"v"` (the contract version)
and `"type"`; commands (`task.assign`, `tasks.assign`, `task.cancel`) come to the bot's queue,
events go to the `botline.events` exchange with their type as routing key, or several together
as `bot.events`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

VERSION = 1
TASKS_EXCHANGE = "botline.tasks"
EVENTS_EXCHANGE = "botline.events"
DEAD_LETTER_EXCHANGE = "botline.dlx"
BOT_QUEUE_PREFIX = "botline.bot."
OFFERS_TYPE = "tasks.assign"
EVENTS_TYPE = "bot.events"
MAX_BATCH = 1000
MAX_SLOTS = 10_000
#: The largest row number (the contract's rows are unsigned 32-bit).
MAX_ROW = 2**32 - 1
#: What a bot's name may be (it is also its queue's name).
BOT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
ROW_STATUSES = ("CREATED", "REJECTED", "FAILED", "DONE")
#: The events this package sends, by type: a test checks the schema knows each and no other.
EVENT_TYPES = (
    "task.accepted",
    "task.rejected",
    "task.progress",
    "task.completed",
    "task.failed",
    "task.released",
    "bot.online",
    "bot.heartbeat",
    "bot.status",
    "bot.offline",
)
#: The commands this package reads.
COMMAND_TYPES = ("task.assign", "task.cancel")

Json = dict[str, Any]


class MalformedMessage(ValueError):
    """A message that is not a command of this contract version (it is dead-lettered)."""


@cache
def schema() -> Json:
    """The contract's JSON Schema (draft 2020-12)."""
    text = resources.files("botline").joinpath("contract.schema.json").read_text(encoding="utf-8")
    loaded: Json = json.loads(text)
    return loaded


@cache
def _validators() -> dict[str, Any]:
    """A validator per message type: the schema's variant of that type (so an error names the
    field at fault, not "none of the variants"), with the envelope's version."""
    try:
        import jsonschema
    except ImportError as error:  # pragma: no cover - a missing extra
        raise RuntimeError("validating messages needs jsonschema: pip install 'botline[validate]'") from error
    document = schema()
    defs = document["$defs"]
    version = {"properties": {"v": {"const": VERSION}}, "required": ["v"]}
    by_type: dict[str, Any] = {
        variant["properties"]["type"]["const"]: {"allOf": [variant, version]}
        for name in ("Command", "Event")
        for variant in defs[name]["oneOf"]
    }
    by_type[OFFERS_TYPE] = {"$ref": "#/$defs/OffersMessage"}
    by_type[EVENTS_TYPE] = {"$ref": "#/$defs/EventsMessage"}
    # Formats are checked too (`uuid`, `date-time` with rfc3339-validator): serde refuses them.
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return {
        kind: jsonschema.Draft202012Validator({**variant, "$defs": defs}, format_checker=checker)
        for kind, variant in by_type.items()
    }


def validate(message: Json) -> None:
    """Raises `MalformedMessage` naming what is wrong if `message` breaks the contract."""
    from jsonschema.exceptions import best_match

    kind = message.get("type")
    validator = _validators().get(kind) if isinstance(kind, str) else None
    if validator is None:
        raise MalformedMessage(f"unknown message type {kind!r}")
    error = best_match(validator.iter_errors(message))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(message)"
        raise MalformedMessage(f"{kind} breaks the contract: {where}: {error.message}")


def now() -> str:
    """The current time as the contract writes it (RFC 3339, UTC)."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def bot_queue(name: str) -> str:
    """The queue a bot consumes: `botline.bot.<name>`."""
    return BOT_QUEUE_PREFIX + name


@dataclass(frozen=True)
class TaskRef:
    """A task and the attempt a message is about: the attempt fences stale runs."""

    task_id: str
    attempt: int

    def fields(self) -> Json:
        return {"task_id": self.task_id, "attempt": self.attempt}


@dataclass(frozen=True)
class Offer:
    """A task offered to the bot (`task.assign`)."""

    ref: TaskRef
    system: str
    description: str
    attachment: str | None
    payload: Any
    resume_after_row: int
    offer_expires_at: datetime


@dataclass(frozen=True)
class Cancel:
    """Stop working on an attempt (`task.cancel`)."""

    ref: TaskRef
    reason: str


Command = Offer | Cancel


def _ref(body: Json) -> TaskRef:
    task_id, attempt = body.get("task_id"), body.get("attempt")
    if (
        not isinstance(task_id, str)
        or not isinstance(attempt, int)
        or isinstance(attempt, bool)
        or attempt < 0
    ):
        raise MalformedMessage(f"{body.get('type')} without a task_id and attempt")
    return TaskRef(task_id, attempt)


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise MalformedMessage("offer_expires_at is not a time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise MalformedMessage(f"offer_expires_at {value!r} is not a time") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _command(body: Any) -> Command:
    if not isinstance(body, dict):
        raise MalformedMessage("a command is a JSON object")
    kind = body.get("type")
    if kind == "task.assign":
        system, resume = body.get("system"), body.get("resume_after_row", 0)
        if (
            not isinstance(system, str)
            or not isinstance(resume, int)
            or isinstance(resume, bool)
            or resume < 0
        ):
            raise MalformedMessage("task.assign without a system, or with a bad resume_after_row")
        attachment = body.get("attachment")
        return Offer(
            ref=_ref(body),
            system=system.upper(),
            description=str(body.get("description", "")),
            attachment=attachment if isinstance(attachment, str) else None,
            payload=body.get("payload"),
            resume_after_row=resume,
            offer_expires_at=_time(body.get("offer_expires_at")),
        )
    if kind == "task.cancel":
        return Cancel(ref=_ref(body), reason=str(body.get("reason", "")))
    raise MalformedMessage(f"unknown command type {kind!r}")


def decode_commands(data: bytes) -> list[Command]:
    """The commands of one message: one, or the offers of a `tasks.assign`."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedMessage(f"not JSON: {error}") from None
    if not isinstance(body, dict):
        raise MalformedMessage("a message is a JSON object")
    if body.get("v") != VERSION:
        raise MalformedMessage(
            f"unsupported message version {body.get('v')!r} (this package speaks {VERSION})"
        )
    if body.get("type") != OFFERS_TYPE:
        return [_command(body)]
    offers = body.get("offers")
    if not isinstance(offers, list) or len(offers) > MAX_BATCH:
        raise MalformedMessage(f"a {OFFERS_TYPE} message carries 1 to {MAX_BATCH} offers")
    commands = [_command(offer) for offer in offers]
    if any(not isinstance(c, Offer) for c in commands):
        raise MalformedMessage(f"a {OFFERS_TYPE} message carries only task.assign offers")
    return commands


def row(n: int, status: str, message: str) -> Json:
    """One CSV row's outcome."""
    return {"row": n, "status": status, "message": message}


def event(kind: str, bot: str, **fields: Any) -> Json:
    """An event of `bot` (without its envelope's `v`, added by `encode_events`)."""
    return {"type": kind, "bot": bot, **fields, "at": now()}


def task_event(kind: str, bot: str, ref: TaskRef, **fields: Any) -> Json:
    """An event about the attempt `ref`."""
    return event(kind, bot, **ref.fields(), **fields)


def dumps(value: Any) -> str:
    """JSON as the contract takes it: compact, and no NaN or infinity, which the receiver refuses
    (a message it cannot read is dead-lettered whole); those raise `ValueError`."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def encode_events(bot: str, events: list[Json]) -> tuple[str, bytes]:
    """The message carrying `events` (1 to `MAX_BATCH`) and its routing key: the event itself for
    one, `bot.events` for several."""
    return frame_events(bot, [(str(e["type"]), dumps(e)) for e in events])


def frame_events(bot: str, events: list[tuple[str, str]]) -> tuple[str, bytes]:
    """`encode_events` for events already encoded, each its type and its JSON object (without
    `v`, as `dumps` writes it): they are framed, not encoded again."""
    if len(events) == 1:
        ((kind, text),) = events
        return kind, f'{{"v":{VERSION},{text[1:]}'.encode()
    texts = ",".join(text for _, text in events)
    head = f'{{"v":{VERSION},"type":"{EVENTS_TYPE}","bot":{dumps(bot)},"events":['
    return EVENTS_TYPE, f"{head}{texts}]}}".encode()
