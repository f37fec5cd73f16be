"""Bots written with this package, run as real processes against the real orchestrator and
RabbitMQ: CSV rows, failures of both kinds, kill -9 mid-task, connections closed by the broker,
fencing of a stale attempt, cancellation, SIGTERM, and many slow tasks in one bot."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import GUEST, MANAGEMENT, ROOT, World, rows_done, until

CSV_HEADER = "employee,amount\n"


def register(world: World, *systems: str) -> None:
    for name in systems:
        world.post("/systems", {"name": name, "description": f"{name} for tests", "input": {"kind": "none"}})


def submit(world: World, system: str, *, csv: str | None = None, **fields: Any) -> str:
    body: dict[str, Any] = {"system": system, "description": f"a {system} task", **fields}
    if csv is not None:
        body["attachment"] = base64.b64encode(csv.encode()).decode()
    task: dict[str, Any] = world.post("/tasks", body)
    return str(task["id"])


def rows_csv(count: int) -> str:
    return CSV_HEADER + "".join(f"employee-{n},{n}\n" for n in range(1, count + 1))


def rows_of(task: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (task.get("result") or {}).get("rows", [])
    return rows


def test_a_python_bot_creates_vivo360_users_row_by_row(make_world: Any, database: str) -> None:
    world = make_world(database)
    world.bot("py-vivo", "vivo360_bot")
    users = (ROOT / "examples" / "vivo360-users.csv").read_text()
    # The same users twice: the portal refuses a login already taken, row by row.
    task_id = submit(world, "VIVO360", csv=users + "".join(users.splitlines(keepends=True)[1:3]))
    task = world.wait_task(task_id, {"COMPLETE"})
    rows = rows_of(task)
    count = len(users.splitlines()) - 1
    assert [r["row"] for r in rows] == list(range(1, count + 3))
    assert [r["status"] for r in rows] == ["CREATED"] * count + ["REJECTED"] * 2, rows
    assert task["result"]["rows_ok"] == count and task["result"]["rows_failed"] == 2
    assert world.kinds(task_id).count("completed") == 1
    created = httpx.get(f"{world.portal}/_control/users", timeout=10).json()
    logins = sorted(str(user["login"]) for user in created["users"])
    assert logins == sorted(line.split(",")[2] for line in users.splitlines()[1:]), created
    bot = world.find_bot("py-vivo")
    assert bot is not None and bot["status"] == "AVAILABLE" and bot["systems"] == ["VIVO360"]


def test_retryable_failures_are_tried_again_and_fatal_ones_are_not(make_world: Any) -> None:
    world = make_world()
    register(world, "FLAKY")
    world.bot("py-flaky", "faults_bot", "--systems", "flaky")
    retryable = submit(world, "FLAKY", payload={"fail": "retryable"}, max_attempts=2)
    fatal = submit(world, "FLAKY", payload={"fail": "fatal"}, max_attempts=3)
    retried = world.wait_task(retryable, {"FAILED"})
    failed = world.wait_task(fatal, {"FAILED"})
    assert world.kinds(retryable).count("failed") == 2, world.kinds(retryable)
    assert retried["failures"] == 2 and "the portal is down" in retried["error"], retried
    assert world.kinds(fatal).count("failed") == 1, world.kinds(fatal)
    assert "KeyError" in failed["error"] and "no such customer" in failed["error"], failed
    history = world.get(f"/tasks/{fatal}/events")
    logs = [e.get("detail") for e in history if e["kind"] == "failed"]
    assert any("failing on purpose: fatal" in str(d) for d in logs), history


def test_kill_9_mid_task_resumes_after_the_last_row_and_completes_once(
    make_world: Any, database: str
) -> None:
    world = make_world(database)
    register(world, "ROWS")
    first = world.bot("py-a", "faults_bot", "--systems", "rows")
    task_id = submit(world, "ROWS", csv=rows_csv(40))
    until("rows reported by the first bot", lambda: len(rows_of(world.get(f"/tasks/{task_id}"))) >= 5, 20)
    first.signal(signal.SIGKILL)
    first.wait()
    second = world.bot("py-b", "faults_bot", "--systems", "rows")
    task = world.wait_task(task_id, {"COMPLETE"}, 60)
    rows = rows_of(task)
    assert [r["row"] for r in rows] == list(range(1, 41))
    kinds = world.kinds(task_id)
    assert kinds.count("completed") == 1 and "bot_lost" in kinds, kinds
    # The second bot started after the rows the first reported, and did each of the rest once.
    resumed = rows_done(second, task_id)
    assert resumed and resumed[0] > 5 and resumed == list(range(resumed[0], 41)), resumed
    by_attempt = [r["message"] == "attempt 1" for r in rows]
    assert by_attempt == [n < resumed[0] for n in range(1, 41)], rows


def test_connections_closed_by_the_broker_are_opened_again(make_world: Any) -> None:
    world = make_world()
    register(world, "ROWS")
    bot = world.bot("py-conn", "faults_bot", "--systems", "rows", env={"ROW_SECONDS": "0.05"})
    task_id = submit(world, "ROWS", csv=rows_csv(200))
    until("the task to run", lambda: rows_of(world.get(f"/tasks/{task_id}")), 20)

    def bot_connections() -> list[str]:
        answer = httpx.get(
            f"{MANAGEMENT}/vhosts/{quote(world.vhost, safe='')}/connections", auth=GUEST, timeout=10
        )
        names = [c["name"] for c in answer.json() if "py-conn" in str(c.get("client_properties", {}))]
        return names

    closed = until("the bot's connection to show in RabbitMQ", bot_connections, 20)
    for name in closed:
        httpx.delete(
            f"{MANAGEMENT}/connections/{quote(name, safe='')}",
            auth=GUEST,
            headers={"X-Reason": "closed by the test"},
            timeout=10,
        )
    until("the bot to connect again", lambda: set(bot_connections()) - set(closed), 20)
    assert world.get(f"/tasks/{task_id}")["status"] == "RUNNING", "closed mid-task"
    task = world.wait_task(task_id, {"COMPLETE"}, 60)
    assert [r["row"] for r in rows_of(task)] == list(range(1, 201))
    after = submit(world, "ROWS", csv=rows_csv(2))
    world.wait_task(after, {"COMPLETE"})
    assert "connecting again" in bot.output(None)


@pytest.mark.skipif(
    os.environ.get("BOTLINE_TEST_SERVICE_FAULTS") != "1",
    reason="restarts RabbitMQ (rabbitmqctl, root): alone, with BOTLINE_TEST_SERVICE_FAULTS=1 (scripts/test)",
)
def test_a_broker_restart_mid_task_is_ridden_out(make_world: Any) -> None:
    # A lease of 15 s, so the bot is not taken for lost while the broker is away.
    world = make_world(BOTLINE_HEARTBEAT_INTERVAL="5")
    register(world, "ROWS")
    bot = world.bot("py-restart", "faults_bot", "--systems", "rows", env={"ROW_SECONDS": "0.05"})
    task_id = submit(world, "ROWS", csv=rows_csv(120))
    until("rows reported", lambda: rows_of(world.get(f"/tasks/{task_id}")), 20)
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    try:
        time.sleep(1)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    task = world.wait_task(task_id, {"COMPLETE"}, 90)
    assert [r["row"] for r in rows_of(task)] == list(range(1, 121)), "each row once"
    assert world.kinds(task_id).count("completed") == 1, world.kinds(task_id)
    assert "connecting again" in bot.output(None)
    after = submit(world, "ROWS", csv=rows_csv(1))
    world.wait_task(after, {"COMPLETE"}, 30)


def test_a_stale_attempt_is_fenced_and_told_to_stop(make_world: Any) -> None:
    world = make_world()
    register(world, "ROWS")
    frozen = world.bot("py-frozen", "faults_bot", "--systems", "rows")
    task_id = submit(world, "ROWS", csv=rows_csv(30))
    until("the first attempt to report rows", lambda: rows_of(world.get(f"/tasks/{task_id}")), 20)
    frozen.signal(signal.SIGSTOP)
    until("the frozen bot's lease to lapse", lambda: "bot_lost" in world.kinds(task_id), 30)
    world.bot("py-live", "faults_bot", "--systems", "rows")
    frozen.signal(signal.SIGCONT)
    task = world.wait_task(task_id, {"COMPLETE"}, 60)
    # Back, the frozen bot heartbeats its old attempt and is told to stop it; whatever it reported
    # before it heard (progress of attempt 1, recorded as a stale event) changed nothing.
    until(
        "the frozen bot to be told its attempt is stale, and stop it",
        lambda: "cancelled: this attempt is no longer current" in frozen.output(None),
        20,
    )
    assert [r["row"] for r in rows_of(task)] == list(range(1, 31)), "each row once"
    kinds = world.kinds(task_id)
    assert kinds.count("completed") == 1 and kinds.count("accepted") == 2, kinds
    assert task["attempt"] == 2 and task["bot_id"] == world.find_bot("py-live")["id"], task


def test_a_cancelled_task_stops_at_its_next_row(make_world: Any) -> None:
    world = make_world()
    register(world, "ROWS")
    bot = world.bot("py-cancel", "faults_bot", "--systems", "rows")
    task_id = submit(world, "ROWS", csv=rows_csv(200))
    until("rows reported", lambda: rows_of(world.get(f"/tasks/{task_id}")), 20)
    world.post(f"/tasks/{task_id}/cancel", {})
    until(
        "the bot to be free again",
        lambda: (world.find_bot("py-cancel") or {}).get("status") == "AVAILABLE",
        20,
    )
    until(
        "the bot to say it stopped the task",
        lambda: f"task {task_id} attempt 1 cancelled" in bot.output(None),
        20,
    )
    # Its automation stopped at its next row: no row is done after the cancellation.
    done = rows_done(bot, task_id)
    time.sleep(1)
    assert rows_done(bot, task_id) == done and len(done) < 200, done
    after = submit(world, "ROWS", csv=rows_csv(1))
    world.wait_task(after, {"COMPLETE"})
    task = world.get(f"/tasks/{task_id}")
    assert task["status"] == "CANCELLED" and len(rows_of(task)) < 200


def test_sigterm_hands_a_running_task_back_and_another_bot_finishes_it(make_world: Any) -> None:
    world = make_world()
    register(world, "ROWS")
    leaving = world.bot("py-leaving", "faults_bot", "--systems", "rows", "--shutdown-grace", "0.3")
    task_id = submit(world, "ROWS", csv=rows_csv(60))
    until("rows reported", lambda: len(rows_of(world.get(f"/tasks/{task_id}"))) >= 3, 20)
    leaving.signal(signal.SIGTERM)
    assert leaving.wait(20) == 0, leaving.output()
    kinds = world.kinds(task_id)
    assert "released" in kinds and "failed" not in kinds, kinds
    left = world.find_bot("py-leaving")
    assert left is not None and left["status"] == "UNAVAILABLE", left
    world.bot("py-staying", "faults_bot", "--systems", "rows")
    task = world.wait_task(task_id, {"COMPLETE"}, 60)
    assert [r["row"] for r in rows_of(task)] == list(range(1, 61))
    assert task["failures"] == 0


def test_an_async_bot_holds_many_slow_tasks_at_once(make_world: Any) -> None:
    world = make_world()
    register(world, "NAP")
    world.bot("py-many", "faults_bot", "--systems", "nap", "--slots", "100")
    # Naps far longer than the test: all 100 must be held at once, then they are cancelled.
    tasks = world.post(
        "/tasks/bulk",
        {
            "tasks": [
                {"system": "NAP", "description": "a nap", "payload": {"seconds": 600}} for _ in range(100)
            ]
        },
    )
    ids = [t["id"] for t in tasks["tasks"]]

    def all_running() -> bool:
        stats: dict[str, int] = world.get("/tasks/stats")
        return stats.get("RUNNING", 0) == 100

    until("all 100 tasks to run at once in the one bot", all_running, 60, 0.1)
    for task_id in ids:
        world.post(f"/tasks/{task_id}/cancel", {})
    until(
        "the bot to hold no task after the cancellations",
        lambda: (world.find_bot("py-many") or {}).get("status") == "AVAILABLE",
        30,
    )
    short = submit(world, "NAP", payload={"seconds": 0.1})
    world.wait_task(short, {"COMPLETE"}, 30)


def test_a_busy_automation_does_not_starve_the_heartbeats(make_world: Any) -> None:
    # The orchestrator's lease is three heartbeat intervals (3 s here): a bot that stopped
    # heartbeating for the 6 s the automation spins would be taken for lost.
    world = make_world()
    register(world, "BUSY")
    world.bot("py-busy", "faults_bot", "--systems", "busy")
    task_id = submit(world, "BUSY", payload={"seconds": 6})
    world.wait_task(task_id, {"COMPLETE"}, 40)
    kinds = world.kinds(task_id)
    assert "bot_lost" not in kinds and kinds.count("accepted") == 1, kinds


def test_the_module_and_its_systems_are_checked_before_connecting(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import TESTS

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "botline.bot", *args],
            env={"PYTHONPATH": str(TESTS / "bots"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )

    unknown = run("--name", "py-x", "--systems", "payroll", "faults_bot")
    assert unknown.returncode == 2 and "no automation for PAYROLL" in unknown.stderr, unknown
    nameless = run("faults_bot")
    assert nameless.returncode == 2 and "needs a name" in nameless.stderr, nameless
