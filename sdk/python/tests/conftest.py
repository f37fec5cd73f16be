"""The world these tests drive: the real orchestrator and Vivo360 portal stand-in (the workspace's
debug binaries), a RabbitMQ vhost and a database of the test's own (a SQLite file, or a fresh
PostgreSQL database), and bots of this package run as real processes (`python -m botline.bot`).

Every wait is bounded and says what it waited for when it gives up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
TESTS = Path(__file__).resolve().parent
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
MANAGEMENT = os.environ.get("BOTLINE_TEST_RABBITMQ_API", "http://127.0.0.1:15672/api")
AMQP = os.environ.get("BOTLINE_TEST_AMQP_SERVER", "amqp://guest:guest@127.0.0.1:5672")
POSTGRES = os.environ.get("BOTLINE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
GUEST = ("guest", "guest")
ADMIN_TOKEN = "admin-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"

# Short timings, so that every bounded failure ends within seconds.
TIMINGS = {
    "BOTLINE_OFFER_TIMEOUT": "3",
    "BOTLINE_SWEEP_INTERVAL": "0.5",
    "BOTLINE_HEARTBEAT_INTERVAL": "1",
    "BOTLINE_RETRY_BASE": "0.2",
    "BOTLINE_MAX_UNANSWERED_OFFERS": "3",
}


def rows_done(process: Process, task_id: str) -> list[int]:
    """The rows a bot of tests/bots/faults_bot.py says it did for `task_id`, in order."""
    prefix = f"did {task_id} row "
    return [int(line[len(prefix) :]) for line in process.output(None).splitlines() if line.startswith(prefix)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def until(what: str, check: Callable[[], Any], seconds: float = 30.0, every: float = 0.1) -> Any:
    """Calls `check` until it returns something truthy, which it returns; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError as error:
            last = error
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds}s waiting for: {what} (last: {last!r})")


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.child = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self, last: int | None = 4000) -> str:
        """The process's output: its last `last` characters, or all of it with None."""
        self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if last is None else text[-last:]

    def signal(self, number: int) -> None:
        self.child.send_signal(number)

    def wait(self, seconds: float = 30.0) -> int:
        return self.child.wait(timeout=seconds)

    def stop(self) -> None:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(timeout=10)
        self.log.close()


class World:
    """One orchestrator, one Vivo360 portal, the bots a test starts, and the API."""

    def __init__(self, database: str, log_dir: Path, extra_env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self.vhost = f"botline-test-sdk-{uuid.uuid4().hex[:12]}"
        httpx.put(f"{MANAGEMENT}/vhosts/{self.vhost}", auth=GUEST, timeout=10).raise_for_status()
        httpx.put(
            f"{MANAGEMENT}/permissions/{self.vhost}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            auth=GUEST,
            timeout=10,
        ).raise_for_status()
        self.amqp_url = f"{AMQP}/{self.vhost}"
        self.pg_database: str | None = None
        if database == "postgres":
            self.pg_database = f"botline_test_{uuid.uuid4().hex[:12]}"
            psql(f"create database {self.pg_database}")
            database_url = f"{POSTGRES}/{self.pg_database}"
        else:
            database_url = f"sqlite://{log_dir / 'botline.db'}?mode=rwc"
        portal_port, api_port = free_port(), free_port()
        self.portal = f"http://127.0.0.1:{portal_port}"
        self.api = f"http://127.0.0.1:{api_port}"
        self.token: str | None = extra_env.get("BOTLINE_ADMIN_TOKEN")
        self.start("portal", [str(BIN / "simulators"), "vivo360", "--listen", f"127.0.0.1:{portal_port}"])
        self.orchestrator = self.start(
            "orchestrator",
            [str(BIN / "orchestrator")],
            {
                "RUST_LOG": "info",
                "BOTLINE_LISTEN": f"127.0.0.1:{api_port}",
                "BOTLINE_DATABASE_URL": database_url,
                "BOTLINE_AMQP_URL": self.amqp_url,
                **TIMINGS,
                **extra_env,
            },
        )
        until(
            "the orchestrator to answer /healthz",
            lambda: httpx.get(f"{self.api}/healthz", timeout=2).is_success,
        )
        until("the portal to answer", lambda: httpx.get(f"{self.portal}/login", timeout=2).is_success)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        binary = args[0]
        if binary.startswith(str(BIN)) and not Path(binary).exists():
            raise AssertionError(
                f"{binary} is missing: build the workspace first (cargo build --workspace --bins)"
            )
        process = Process(name, args, env or {}, self.log_dir)
        self.processes.append(process)
        return process

    def bot(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Process:
        """Starts a bot of this package, `python -m botline.bot --name NAME … MODULE`, whose
        automations are in tests/bots/MODULE.py; returns once the orchestrator lists it."""
        command = [
            sys.executable,
            "-m",
            "botline.bot",
            "--name",
            name,
            "--amqp-url",
            self.amqp_url,
            "--heartbeat-interval",
            "0.5",
            # Every message sent and received checked against the contract's schema.
            "--validate",
            *args,
            module,
        ]
        path = os.pathsep.join(p for p in (str(TESTS / "bots"), os.environ.get("PYTHONPATH")) if p)
        bot_env = {"PYTHONPATH": path, "PORTAL_URL": self.portal, **(env or {})}
        process = self.start(name, command, bot_env)
        until(f"bot {name} to come online", lambda: self.find_bot(name), 20)
        return process

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def find_bot(self, name: str) -> dict[str, Any] | None:
        items: list[dict[str, Any]] = self.get("/bots", params={"name": name})["items"]
        return items[0] if items else None

    def url(self, path: str) -> str:
        return f"{self.api}/api/v1{path}"

    def get(self, path: str, **kwargs: Any) -> Any:
        answer = httpx.get(self.url(path), timeout=10, headers=self.headers(), **kwargs)
        assert answer.is_success, f"GET {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def post(self, path: str, body: Any) -> Any:
        answer = httpx.post(self.url(path), json=body, timeout=10, headers=self.headers())
        assert answer.is_success, f"POST {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def kinds(self, task_id: str) -> list[str]:
        return [event["kind"] for event in self.get(f"/tasks/{task_id}/events")]

    def wait_task(self, task_id: str, statuses: set[str], seconds: float = 40.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            task: dict[str, Any] = self.get(f"/tasks/{task_id}")
            return task if task["status"] in statuses else None

        try:
            found: dict[str, Any] = until(f"task {task_id} to be {sorted(statuses)}", check, seconds, 0.1)
            return found
        except AssertionError as error:
            bots = "\n".join(f"--- {p.name}\n{p.output(2000)}" for p in self.processes if p.name != "portal")
            raise AssertionError(f"{error}\nhistory: {self.kinds(task_id)}\n{bots}") from None

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        httpx.delete(f"{MANAGEMENT}/vhosts/{self.vhost}", auth=GUEST, timeout=10)
        if self.pg_database:
            psql(f"drop database if exists {self.pg_database} with (force)")


def psql(statement: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atqc", statement],
        check=True,
        capture_output=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    """Makes a world on a database ('sqlite' or 'postgres') with extra orchestrator settings."""
    worlds: list[World] = []

    def make(database: str = "sqlite", **extra_env: str) -> World:
        log_dir = Path(tempfile.mkdtemp(prefix="botline-sdk-"))
        world = World(database, log_dir, extra_env)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()
