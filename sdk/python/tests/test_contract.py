"""The contract without IO: every message this package builds meets the JSON Schema generated
from the Rust types, the package knows every message type the schema has, offers are judged as
Botline's agent judges them, and bad commands are refused with a reason."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from botline import contract
from botline.bot import LEFT_BEHIND_REASON, RELEASE_REASON, Report, Task, judge
from botline.contract import MalformedMessage, Offer, TaskRef

REF = TaskRef("0191c7d4-7f3a-7d43-9a49-5f8e2f7c1a10", 2)


def offer(ref: TaskRef = REF, system: str = "PAYROLL", expires_in: float = 60) -> Offer:
    return Offer(
        ref=ref,
        system=system,
        description="d",
        attachment=None,
        payload=None,
        resume_after_row=0,
        offer_expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires_in),
    )


def every_event() -> list[dict[str, Any]]:
    row = contract.row(1, "CREATED", "ok")
    return [
        contract.task_event("task.accepted", "py-1", REF),
        contract.task_event("task.rejected", "py-1", REF, reason="busy"),
        contract.task_event("task.progress", "py-1", REF, rows=[row]),
        contract.task_event("task.completed", "py-1", REF, rows=[row], output={"a": 1}, log="x\n"),
        contract.task_event("task.failed", "py-1", REF, rows=[], error="down", retryable=True),
        contract.task_event("task.released", "py-1", REF, rows=[row], reason=RELEASE_REASON),
        contract.event(
            "bot.online",
            "py-1",
            ip_address="10.0.0.1",
            systems=["PAYROLL"],
            session="0191c7d4-7f3a-7d43-9a49-5f8e2f7c1a11",
            slots=4,
            batches=True,
        ),
        contract.event("bot.heartbeat", "py-1", task=REF.fields(), tasks=[REF.fields()]),
        contract.event("bot.heartbeat", "py-1", task=None),
        contract.event("bot.status", "py-1", status="UNAVAILABLE"),
        contract.event("bot.offline", "py-1"),
    ]


def test_every_event_built_here_meets_the_schema_alone_and_batched() -> None:
    events = every_event()
    assert {e["type"] for e in events} == set(contract.EVENT_TYPES)
    for event in events:
        key, body = contract.encode_events("py-1", [event])
        assert key == event["type"]
        contract.validate(json.loads(body))
    key, body = contract.encode_events("py-1", events)
    assert key == "bot.events"
    contract.validate(json.loads(body))


def test_the_package_knows_every_message_type_of_the_schema() -> None:
    defs = contract.schema()["$defs"]

    def types(name: str) -> set[str]:
        return {v["properties"]["type"]["const"] for v in defs[name]["oneOf"]}

    assert types("Event") == set(contract.EVENT_TYPES), (
        "an event type was added or removed in the Rust contract"
    )
    assert types("Command") == set(contract.COMMAND_TYPES), (
        "a command was added or removed in the Rust contract"
    )
    assert defs["OffersMessage"]["properties"]["type"]["const"] == contract.OFFERS_TYPE
    assert defs["EventsMessage"]["properties"]["type"]["const"] == contract.EVENTS_TYPE
    assert defs["OffersMessage"]["properties"]["offers"]["maxItems"] == contract.MAX_BATCH


def test_a_broken_message_is_refused_naming_what_is_wrong() -> None:
    event = contract.task_event("task.progress", "py-1", REF, rows=[contract.row(1, "MAYBE", "")])
    with pytest.raises(MalformedMessage, match="MAYBE"):
        contract.validate({"v": 1, **event})
    with pytest.raises(MalformedMessage, match="bot"):
        contract.validate({"v": 1, **contract.event("bot.offline", "Not A Name")})
    with pytest.raises(MalformedMessage, match=r"unknown message type 'task\.explode'"):
        contract.validate({"v": 1, "type": "task.explode"})
    with pytest.raises(MalformedMessage, match="v"):
        contract.validate({**contract.event("bot.offline", "py-1"), "v": 2})


def test_commands_are_read_one_or_several_and_bad_ones_refused() -> None:
    assign = {
        "v": 1,
        "type": "task.assign",
        "task_id": REF.task_id,
        "attempt": 2,
        "system": "payroll",
        "description": "d",
        "attachment": base64.b64encode(b"a\n1\n").decode(),
        "payload": None,
        "resume_after_row": 3,
        "offer_expires_at": "2026-12-03T10:00:00Z",
    }
    contract.validate(assign)
    (one,) = contract.decode_commands(json.dumps(assign).encode())
    assert isinstance(one, Offer) and one.system == "PAYROLL" and one.resume_after_row == 3
    assert one.offer_expires_at == datetime(2026, 12, 3, 10, tzinfo=timezone.utc)
    inner = {k: v for k, v in assign.items() if k != "v"}
    several = {"v": 1, "type": "tasks.assign", "offers": [inner, inner]}
    contract.validate(several)
    assert len(contract.decode_commands(json.dumps(several).encode())) == 2
    cancel = {"v": 1, "type": "task.cancel", "task_id": REF.task_id, "attempt": 2, "reason": "by a user"}
    contract.validate(cancel)
    (stop,) = contract.decode_commands(json.dumps(cancel).encode())
    assert isinstance(stop, contract.Cancel) and stop.ref == REF

    bad = [
        (b"not json", "not JSON"),
        (b"[]", "object"),
        (json.dumps({**assign, "v": 2}).encode(), "version 2"),
        (json.dumps({**assign, "type": "task.explode"}).encode(), "unknown command"),
        (json.dumps({**assign, "attempt": "2"}).encode(), "attempt"),
        (json.dumps({**assign, "offer_expires_at": "soon"}).encode(), "not a time"),
        (
            json.dumps({"v": 1, "type": "tasks.assign", "offers": [{**cancel, "v": None}]}).encode(),
            "only task.assign",
        ),
    ]
    for body, reason in bad:
        with pytest.raises(MalformedMessage, match=reason):
            contract.decode_commands(body)


def test_offers_are_judged_as_botlines_agent_judges_them() -> None:
    now = datetime.now(timezone.utc)
    base: dict[str, Any] = {
        "now": now,
        "redelivered": False,
        "running": set(),
        "fates": {},
        "slots": 2,
        "closing": False,
        "systems": {"PAYROLL"},
    }
    other = TaskRef("0191c7d4-7f3a-7d43-9a49-5f8e2f7c1a12", 1)
    assert judge(offer(), **base) == ("accept", "")
    assert judge(offer(expires_in=-1), **base)[0] == "ignore"
    assert judge(offer(), **{**base, "running": {REF}}) == ("again", "already running here")
    assert judge(offer(), **{**base, "redelivered": True, "fates": {REF: "ended"}})[0] == "ignore"
    assert judge(offer(), **{**base, "redelivered": True, "fates": {REF: "cancelled"}})[0] == "ignore"
    # A second copy the broker does not mark redelivered: its publisher lost the confirm.
    assert judge(offer(), **{**base, "fates": {REF: "ended"}})[0] == "ignore"
    assert judge(offer(), **{**base, "redelivered": True}) == ("reject", LEFT_BEHIND_REASON)
    assert judge(offer(), **{**base, "redelivered": True, "fates": {REF: "offered"}}) == ("accept", "")
    assert judge(offer(), **{**base, "running": {other, TaskRef(other.task_id, 2)}}) == ("reject", "busy")
    assert judge(offer(), **{**base, "closing": True}) == ("reject", RELEASE_REASON)
    assert judge(offer(system="CPE"), **base) == ("reject", "this bot cannot run CPE")


def test_a_task_resumes_after_the_rows_done_and_a_report_refuses_bad_rows() -> None:
    csv = "\ufeffemployee,amount\nana,1\nbruno,2\ncarla,3\n".encode()
    task = Task(
        id="t", attempt=2, system="PAYROLL", description="", payload=None, attachment=csv, resume_after_row=1
    )
    assert [(n, row["employee"]) for n, row in task.rows()] == [(2, "bruno"), (3, "carla")]
    assert len(task.all_rows()) == 3
    report = Report(task)
    report.row(2, "done", "paid")
    with pytest.raises(ValueError, match="MAYBE"):
        report.row(3, "MAYBE")
    with pytest.raises(ValueError, match="row number"):
        report.row(0)
    assert report._take_rows() == [{"row": 2, "status": "DONE", "message": "paid"}]
    report._cancel("by a user")
    assert report.cancelled
    with pytest.raises(Exception, match="by a user"):
        report.row(3)


def test_a_reports_log_keeps_its_last_64_kib() -> None:
    report = Report(Task("t", 1, "X", "", None, None, 0))
    for n in range(2000):
        report.log(f"line {n:04} " + "x" * 100)
    text = report._log_text() or ""
    assert (
        len(text.encode()) <= 64 * 1024
        and text.endswith("x\n")
        and "line 1999" in text
        and "line 0000" not in text
    )


def test_settings_read_the_environment_the_agent_reads_and_refuse_bad_numbers(monkeypatch: Any) -> None:
    from botline.bot import settings_from_env

    monkeypatch.setenv("BOTLINE_BOT_NAME", "py-env")
    monkeypatch.setenv("BOTLINE_HEARTBEAT_INTERVAL_MS", "1500")
    monkeypatch.setenv("BOTLINE_BOT_SYSTEMS", "payroll, noop")
    monkeypatch.setenv("BOTLINE_SLOTS", "8")
    settings = settings_from_env()
    assert (settings.name, settings.heartbeat_interval, settings.slots) == ("py-env", 1.5, 8)
    assert settings.systems == ["payroll", "noop"]
    assert settings_from_env(name="py-given", slots=2).slots == 2
    monkeypatch.setenv("BOTLINE_SLOTS", "many")
    with pytest.raises(ValueError, match="slots 'many' is not a number"):
        settings_from_env()
    monkeypatch.setenv("BOTLINE_SLOTS", "1")
    monkeypatch.setenv("BOTLINE_HEARTBEAT_INTERVAL_MS", "0")
    with pytest.raises(ValueError, match="heartbeat_interval must be above 0"):
        settings_from_env()


def test_an_acceptance_is_dropped_only_when_its_own_attempts_end_travels_with_it() -> None:
    from botline.bot import implied_acceptances_dropped

    other = TaskRef(REF.task_id, 3)
    accepted = contract.task_event("task.accepted", "py-1", REF)
    accepted_other = contract.task_event("task.accepted", "py-1", other)
    done = contract.task_event("task.completed", "py-1", REF, rows=[], output=None)
    failed = contract.task_event("task.failed", "py-1", REF, rows=[], error="x", retryable=False)
    progress = contract.task_event("task.progress", "py-1", REF, rows=[])
    assert implied_acceptances_dropped([accepted, done]) == [done]
    assert implied_acceptances_dropped([accepted, failed]) == [failed]
    assert implied_acceptances_dropped([accepted, progress]) == [accepted, progress]
    assert implied_acceptances_dropped([accepted_other, done]) == [accepted_other, done], "another attempt"


def test_formats_and_bounds_are_checked_as_the_receiver_checks_them() -> None:
    good = contract.task_event("task.accepted", "py-1", REF)
    contract.validate({"v": 1, **good})
    for broken, why in [
        ({**good, "task_id": "not-a-uuid"}, "uuid"),
        ({**good, "attempt": 2**40}, "maximum"),
        ({**good, "at": "yesterday"}, "date-time"),
    ]:
        with pytest.raises(MalformedMessage, match=why):
            contract.validate({"v": 1, **broken})
    with pytest.raises(ValueError):
        contract.dumps({"output": float("nan")})
    report = Report(Task("t", 1, "X", "", None, None, 0))
    with pytest.raises(ValueError, match="row number"):
        report.row(2**32)
