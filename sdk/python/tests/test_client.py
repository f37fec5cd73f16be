"""The REST client (`botline.Client`, `botline.AsyncClient`) against the real orchestrator.

No bot runs in most tests, so tasks stay WAITING; one test starts the workspace's bot agent to
see a CSV task end with its rows. Errors: every class a client can provoke through this client.
`UnsupportedMediaType` (415) is not among them: the client always sends JSON with its content
type, so no call of it can send another media type.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN, BIN, READ_TOKEN, ROOT, World

from botline import (
    ApiError,
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    TimeoutExpired,
    Unauthorized,
    ValidationError,
)

USERS_CSV = ROOT / "examples" / "vivo360-users.csv"
NOOP: dict[str, Any] = {"duration_ms": 1}


def noop(client: Client, description: str = "a test task", **fields: Any) -> dict[str, Any]:
    return client.submit("NOOP", payload=NOOP, description=description, **fields)


def kinds(client: Client, task_id: str) -> list[str]:
    return [event["kind"] for event in client.task_history(task_id)]


def test_submit_json_and_read_it_back(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        task = client.submit(
            "noop", payload=NOOP, description="ping", priority=5, max_attempts=2, max_run_seconds=60
        )
        assert task["status"] == "WAITING"
        assert (task["system"], task["payload"], task["priority"]) == ("NOOP", NOOP, 5)
        assert (task["max_attempts"], task["max_run_seconds"], task["has_attachment"]) == (2, 60, False)
        assert client.get_task(task["id"]) == task
        assert kinds(client, task["id"]) == ["created"]
        assert client.task_rows(task["id"]) == []
        assert client.task_stats()["WAITING"] == 1
        with pytest.raises(NotFound):
            client.task_attachment(task["id"])
        for not_before in ("2099-01-01T00:00:00Z", datetime(2099, 1, 1, tzinfo=timezone.utc)):
            later = client.submit("NOOP", description="later", not_before=not_before)
            assert later["not_before"].startswith("2099-01-01T00:00:00")


def test_submit_csv_from_a_path_bytes_or_text(make_world: Any, database: str) -> None:
    world: World = make_world(database)
    data = USERS_CSV.read_bytes()
    with Client(world.api) as client:
        for csv in (str(USERS_CSV), USERS_CSV, data, data.decode()):
            task = client.submit("VIVO360", csv=csv, description=f"hires from {type(csv).__name__}")
            assert task["has_attachment"] is True
            assert task["progress"] == {"done": 0, "total": 5}
            assert client.task_attachment(task["id"]) == data
            assert client.task_rows(task["id"]) == []
        assert client.task_stats()["WAITING"] == 4


def test_submit_bulk_all_in_order(make_world: Any, database: str) -> None:
    world: World = make_world(database)
    data = USERS_CSV.read_bytes()
    with Client(world.api) as client:
        created = client.submit_bulk(
            [
                {"system": "NOOP", "description": "first", "payload": NOOP},
                {"system": "VIVO360", "description": "second", "attachment": data},
                {"system": "noop", "description": "third", "priority": 3},
            ]
        )
        assert [task["description"] for task in created] == ["first", "second", "third"]
        assert all(task["status"] == "WAITING" for task in created)
        assert client.task_attachment(created[1]["id"]) == data
        assert created[2]["priority"] == 3


def test_a_bad_task_in_a_bulk_refuses_them_all(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        good = {"system": "NOOP", "description": "fine", "payload": NOOP}
        with pytest.raises(ValidationError) as refused:
            client.submit_bulk([good, {"system": "VIVO360", "description": "no csv"}, good])
        assert refused.value.status == 422
        assert refused.value.field is not None and refused.value.field.startswith("tasks[1].")
        with pytest.raises(ValidationError) as refused:
            client.submit_bulk([good, {**good, "description": ""}])
        assert refused.value.field == "tasks[1].description"
        assert list(client.tasks()) == []
        assert sum(client.task_stats().values()) == 0


def test_paging_follows_next_cursor_over_every_page(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        created = client.submit_bulk(
            [{"system": "NOOP", "description": f"task {n}", "payload": NOOP} for n in range(120)]
        )
        ids = [task["id"] for task in created]
        newest_first = [task["id"] for task in client.tasks(page_size=50)]
        assert newest_first == ids[::-1]
        assert [task["id"] for task in client.tasks(order="oldest", page_size=50)] == ids
        first = client.tasks_page(order="oldest", page_size=50)
        assert (first["total"], len(first["items"]), first["limit"]) == (120, 50, 50)
        second = client.tasks_page(order="oldest", page_size=50, cursor=first["next_cursor"])
        third = client.tasks_page(order="oldest", page_size=50, cursor=second["next_cursor"])
        assert [len(second["items"]), len(third["items"])] == [50, 20]
        assert third.get("next_cursor") is None
        assert [t["id"] for t in first["items"] + second["items"] + third["items"]] == ids


def test_filters(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        a, b = noop(client, "a"), noop(client, "b")
        hires = client.submit("VIVO360", csv=USERS_CSV, description="hires")
        client.cancel(b["id"])

        def ids(**filters: Any) -> set[str]:
            return {task["id"] for task in client.tasks(**filters)}

        assert ids(status="CANCELLED") == {b["id"]}
        assert ids(status="waiting") == {a["id"], hires["id"]}
        assert ids(status=["WAITING", "CANCELLED"]) == {a["id"], b["id"], hires["id"]}
        assert ids(system="Vivo360") == {hires["id"]}
        assert ids(system=("NOOP", "VIVO360"), status="WAITING") == {a["id"], hires["id"]}
        assert ids(bot_id=str(uuid.uuid4())) == set()
        assert client.tasks_page(system="NOOP")["total"] == 2


def test_cancel_and_retry(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        task = noop(client)
        cancelled = client.cancel(task["id"])
        assert cancelled["status"] == "CANCELLED" and cancelled["finished_at"]
        retried = client.retry(task["id"])
        assert retried["status"] == "WAITING" and retried["finished_at"] is None
        assert kinds(client, task["id"]) == ["created", "cancelled", "retried"]
        assert client.task_stats()["WAITING"] == 1


def test_wait_returns_once_another_client_cancels_the_task(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        task = noop(client)

        def cancel_later() -> None:
            time.sleep(0.5)
            with Client(world.api) as other:
                other.cancel(task["id"])

        canceller = threading.Thread(target=cancel_later)
        started = time.monotonic()
        canceller.start()
        ended = client.wait(task["id"], timeout=30)
        took = time.monotonic() - started
        canceller.join()
        assert ended["status"] == "CANCELLED"
        assert 0.5 <= took < 5, took
        # An ended task is returned at once; so is one already in a status asked for.
        assert client.wait(task["id"], timeout=5)["status"] == "CANCELLED"
        assert client.wait(noop(client)["id"], timeout=5, statuses=["WAITING"])["status"] == "WAITING"


def test_wait_times_out_when_nothing_happens(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        task = noop(client)
        started = time.monotonic()
        with pytest.raises(TimeoutExpired) as expired:
            client.wait(task["id"], timeout=1.0)
        took = time.monotonic() - started
        # At least the timeout; the upper bound only catches a wait that ignores it (a loaded
        # machine is slow, so it is loose).
        assert 1.0 <= took < 15, took
        assert expired.value.last is not None and expired.value.last["status"] == "WAITING"
        assert expired.value.last["id"] == task["id"]
        with pytest.raises(NotFound):
            client.wait(str(uuid.uuid4()), timeout=5)


def test_a_csv_task_run_by_a_bot_ends_with_its_rows(make_world: Any) -> None:
    """The workspace's bot agent runs the VIVO360 automation against the portal stand-in."""
    world: World = make_world()
    world.start(
        "bot-agent",
        [str(BIN / "bot-agent"), "--name", "client-test-bot", "--systems", "vivo360"],
        {
            "BOTLINE_AMQP_URL": world.amqp_url,
            "BOTLINE_VIVO360_URL": world.portal,
            "BOTLINE_HEARTBEAT_INTERVAL_MS": "200",
            "BOTLINE_PROGRESS_INTERVAL_MS": "100",
        },
    )
    with Client(world.api) as client:
        task = client.submit("VIVO360", csv=USERS_CSV, description="hires run by a bot")
        ended = client.wait(task["id"], timeout=60)
        assert ended["status"] == "COMPLETE", ended
        rows = client.task_rows(task["id"])
        assert [row["row"] for row in rows] == [1, 2, 3, 4, 5]
        assert all(row["status"] == "CREATED" and row["message"] for row in rows), rows
        assert "completed" in kinds(client, task["id"])
        # An ended task is neither cancelled nor retried: a conflict naming the status.
        for change in (client.cancel, client.retry):
            with pytest.raises(Conflict) as conflict:
                change(task["id"])
            assert (conflict.value.code, conflict.value.field) == ("invalid_transition", "status")
        assert [bot["name"] for bot in client.bots(system="VIVO360")] == ["client-test-bot"]


def test_bad_requests(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        with pytest.raises(BadRequest) as bad:
            list(client.tasks(page_size=0))
        assert (bad.value.status, bad.value.code, bad.value.field) == (400, "invalid_parameter", "limit")
        with pytest.raises(BadRequest) as bad:
            client.tasks_page(page_size=501)
        assert bad.value.field == "limit"
        with pytest.raises(BadRequest) as bad:
            list(client.tasks(status="SLEEPING"))
        assert bad.value.field == "status" and "WAITING" in bad.value.message
        with pytest.raises(BadRequest):
            client.tasks_page(order="sideways")
        with pytest.raises(BadRequest) as bad:
            client.tasks_page(cursor="not-a-cursor")
        assert bad.value.field == "cursor"
        with pytest.raises(BadRequest) as bad:
            client.get_task("not-a-uuid")
        assert bad.value.field == "id"
        with pytest.raises(BadRequest) as bad:
            client.attendance_report(from_="2024-02-01", to="2024-01-01")
        assert bad.value.field == "to"


def test_not_found(make_world: Any) -> None:
    world: World = make_world()
    missing = str(uuid.uuid4())
    with Client(world.api) as client:
        for call in (
            lambda: client.get_task(missing),
            lambda: client.cancel(missing),
            lambda: client.retry(missing),
            lambda: client.task_history(missing),
            lambda: client.task_rows(missing),
            lambda: client.get_bot(missing),
            lambda: client.get_incident(missing),
            lambda: client.get_system("NOBODY"),
        ):
            with pytest.raises(NotFound) as absent:
                call()
            assert (absent.value.status, absent.value.code) == (404, "not_found")


def test_validation_errors_name_their_field(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:

        def field_of(**submission: Any) -> str | None:
            with pytest.raises(ValidationError) as invalid:
                client.submit(**submission)
            assert (invalid.value.status, invalid.value.code) == (422, "invalid_field")
            return invalid.value.field

        assert field_of(system="NOOP", payload=NOOP, description=" ") == "description"
        assert field_of(system="VIVO360", description="no csv") == "attachment"
        assert field_of(system="VIVO360", description="bad csv", csv=b"name,email\nAna,a@example.com\n") == (
            "attachment"
        )
        assert field_of(system="PAYROLL", description="unregistered") == "system"
        assert field_of(system="NOOP", description="x", max_attempts=0) == "max_attempts"
        assert field_of(system="NOOP", description="x", colour="blue") == "colour"
        with pytest.raises(ValidationError) as invalid:
            client.register_system("payroll", input={"kind": "csv"})
        assert invalid.value.field is not None and invalid.value.field.startswith("input")
        assert sum(client.task_stats().values()) == 0


def test_systems_register_read_and_conflict(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api) as client:
        assert {s["name"] for s in client.systems()} == {"CPE", "NOOP", "NOTIFY", "VIVO360"}
        payroll = client.register_system(
            "payroll",
            input={"kind": "csv", "columns": ["employee", "amount"]},
            description="Payroll entries",
            defaults={"max_attempts": 5},
        )
        assert (payroll["name"], payroll["builtin"], payroll["defaults"]["max_attempts"]) == (
            "PAYROLL",
            False,
            5,
        )
        assert client.get_system("Payroll")["input"] == {"kind": "csv", "columns": ["employee", "amount"]}
        assert "PAYROLL" in {s["name"] for s in client.systems()}
        task = client.submit("payroll", csv="employee,amount\nAna,10\n", description="October")
        assert (task["max_attempts"], task["progress"]["total"]) == (5, 1)
        with pytest.raises(Conflict) as taken:
            client.register_system("PAYROLL")
        assert taken.value.status == 409
        with pytest.raises(Conflict):
            client.register_system("noop")


def refused(
    world: World, token: str | None, write: Callable[[Client], object], kind: type[ApiError]
) -> ApiError:
    """The error of `write`, run on a client of its own."""
    with Client(world.api, token=token) as client, pytest.raises(kind) as error:
        write(client)
    return error.value


def test_tokens_unauthorized_and_forbidden(make_world: Any) -> None:
    world: World = make_world(BOTLINE_ADMIN_TOKEN=ADMIN_TOKEN, BOTLINE_READ_TOKEN=READ_TOKEN)
    with Client(world.api, token=ADMIN_TOKEN) as admin:
        task = noop(admin)
    for token in (None, "a-wrong-token-0123456789abcdef"):
        with Client(world.api, token=token) as stranger:
            with pytest.raises(Unauthorized) as unauthorized:
                stranger.get_task(task["id"])
            assert unauthorized.value.status == 401
            with pytest.raises(Unauthorized):
                list(stranger.tasks())
            # The event stream is refused too; wait() then reads the task, which says why.
            with pytest.raises(Unauthorized):
                stranger.wait(task["id"], timeout=5)
        assert refused(world, token, noop, Unauthorized).status == 401
    with Client(world.api, token=READ_TOKEN) as reader:
        assert reader.get_task(task["id"])["id"] == task["id"]
        assert [t["id"] for t in reader.tasks()] == [task["id"]]
        with pytest.raises(TimeoutExpired):
            reader.wait(task["id"], timeout=0.5)
    writes: list[Callable[[Client], object]] = [
        noop,
        lambda client: client.cancel(task["id"]),
        lambda client: client.submit_bulk([{"system": "NOOP", "description": "x"}]),
        lambda client: client.register_system("payroll"),
        # A body too large to be drained with the refusal.
        lambda client: client.submit("NOOP", description="big", payload={"blob": "y" * 200_000}),
    ]
    # One pooled client throughout: a write refused before its body was read leaves the body on
    # the connection, which the orchestrator then closes, saying so (`Connection: close`), so the
    # client's next request goes on a new connection.
    with Client(world.api, token=READ_TOKEN) as reader:
        for _ in range(10):
            for write in writes:
                with pytest.raises(Forbidden) as forbidden:
                    write(reader)
                assert forbidden.value.status == 403
                assert reader.get_task(task["id"])["status"] == "WAITING"


def test_payload_too_large(make_world: Any) -> None:
    world: World = make_world(BOTLINE_MAX_ATTACHMENT_BYTES="2048")
    rows = "".join(f"User {n},user{n}@example.com,user.{n},agent\n" for n in range(200))
    csv = "name,email,login,profile\n" + rows

    def big_csv(client: Client) -> object:
        return client.submit("VIVO360", csv=csv, description="too many")

    def big_body(client: Client) -> object:
        return client.submit_bulk(
            [{"system": "NOOP", "description": "big", "payload": {"blob": "y" * 100_000}}]
        )

    large = refused(world, None, big_csv, PayloadTooLarge)
    assert (large.status, large.code, large.field) == (413, "too_large", "attachment")
    large = refused(world, None, big_body, PayloadTooLarge)  # the body: 64 KiB over the limit
    assert (large.status, large.code) == (413, "too_large")
    with Client(world.api) as client:
        assert sum(client.task_stats().values()) == 0


def test_bots_incidents_and_report(make_world: Any) -> None:
    world: World = make_world()
    registered = [
        world.post(
            "/bots", {"name": f"bot-{n}", "ip_address": "127.0.0.1", "delivery": "amqp", "paused": True}
        )
        for n in range(3)
    ]
    with Client(world.api) as client:
        seen = list(client.bots(order="oldest", page_size=2))
        assert [bot["name"] for bot in seen] == ["bot-0", "bot-1", "bot-2"]
        assert client.get_bot(registered[1]["id"])["name"] == "bot-1"
        assert [bot["id"] for bot in client.bots(name="bot-2")] == [registered[2]["id"]]
        assert list(client.incidents(status="OPEN")) == []
        with pytest.raises(BadRequest):
            list(client.incidents(status="ASLEEP"))
        report = client.attendance_report(from_="2024-01-01", to="2024-01-31")
        assert (report["from"], report["to"], report["by_day"]) == ("2024-01-01", "2024-01-31", [])
        assert "by_channel" in client.attendance_report()


def test_the_base_url_may_name_the_api_and_a_transport_may_be_given(make_world: Any) -> None:
    world: World = make_world()
    with Client(world.api + "/api/v1/", transport=httpx.HTTPTransport(retries=0)) as client:
        assert noop(client)["status"] == "WAITING"
        assert client.task_stats()["WAITING"] == 1


def test_async_client(make_world: Any, tmp_path: Path) -> None:
    world: World = make_world()
    csv_file = tmp_path / "users.csv"
    csv_file.write_bytes(USERS_CSV.read_bytes())

    async def scenario() -> None:
        async with AsyncClient(world.api) as client:
            hires = await client.submit("VIVO360", csv=csv_file, description="async hires")
            assert await client.task_attachment(hires["id"]) == USERS_CSV.read_bytes()
            assert await client.task_rows(hires["id"]) == []
            bulk = await client.submit_bulk(
                [{"system": "NOOP", "description": f"async {n}", "payload": NOOP} for n in range(5)]
            )
            assert (await client.get_task(bulk[0]["id"]))["description"] == "async 0"
            everything = [task["id"] async for task in client.tasks(order="oldest", page_size=2)]
            assert everything == [hires["id"]] + [task["id"] for task in bulk]
            assert len([task async for task in client.tasks(system="NOOP", page_size=2)]) == 5
            assert (await client.tasks_page(page_size=2))["total"] == 6

            async def cancel_later() -> None:
                await asyncio.sleep(0.3)
                await client.cancel(bulk[0]["id"])

            canceller = asyncio.ensure_future(cancel_later())
            started = time.monotonic()
            assert (await client.wait(bulk[0]["id"], timeout=30))["status"] == "CANCELLED"
            assert time.monotonic() - started < 5
            await canceller
            assert (await client.retry(bulk[0]["id"]))["status"] == "WAITING"
            assert [e["kind"] for e in await client.task_history(bulk[0]["id"])] == [
                "created",
                "cancelled",
                "retried",
            ]
            with pytest.raises(TimeoutExpired) as expired:
                await client.wait(bulk[1]["id"], timeout=0.5)
            assert expired.value.last is not None and expired.value.last["status"] == "WAITING"
            assert (await client.task_stats())["WAITING"] == 6
            assert "NOOP" in {s["name"] for s in await client.systems()}
            assert (await client.get_system("noop"))["builtin"] is True
            with pytest.raises(NotFound):
                await client.get_task(str(uuid.uuid4()))
            with pytest.raises(BadRequest):
                await client.tasks_page(page_size=0)
            with pytest.raises(ValidationError) as invalid:
                await client.submit("NOOP", payload=NOOP, description="")
            assert invalid.value.field == "description"
            assert [bot async for bot in client.bots()] == []
            assert [incident async for incident in client.incidents()] == []
            assert "by_day" in await client.attendance_report(from_="2024-01-01")
            with pytest.raises(Conflict):
                await client.register_system("NOOP")

    asyncio.run(scenario())
