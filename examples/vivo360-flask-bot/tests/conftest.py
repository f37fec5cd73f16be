"""The world these tests drive: the real orchestrator and Vivo360 portal stand-in (the workspace's
debug binaries), a RabbitMQ vhost and a database of the test's own (a SQLite file, or a fresh
PostgreSQL database), and seed bots run as real processes of bot.py.

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
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]
BOT = Path(__file__).resolve().parents[1] / "bot.py"
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
MANAGEMENT = os.environ.get("BOTLINE_TEST_RABBITMQ_API", "http://127.0.0.1:15672/api")
AMQP = os.environ.get("BOTLINE_TEST_AMQP_SERVER", "amqp://guest:guest@127.0.0.1:5672")
POSTGRES = os.environ.get("BOTLINE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
GUEST = ("guest", "guest")

# Short timings, so that every bounded failure ends within seconds.
TIMINGS = {
    "BOTLINE_OFFER_TIMEOUT": "2",
    "BOTLINE_SWEEP_INTERVAL": "0.5",
    "BOTLINE_HEARTBEAT_INTERVAL": "1",
    "BOTLINE_RETRY_BASE": "0.5",
    "BOTLINE_MAX_UNANSWERED_OFFERS": "3",
    "BOTLINE_BOT_POST_TIMEOUT": "2",
    # No address a test registers is ever contacted off this machine.
    "BOTLINE_HTTP_BOT_NETWORKS": "127.0.0.0/8,::1/128",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def until(what: str, check, seconds: float = 30.0, every: float = 0.1):
    """Calls `check` until it returns something truthy, which it returns; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except requests.RequestException as error:
            last = error
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds}s waiting for: {what} (last: {last!r})")


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.child = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self, last: int | None = 4000) -> str:
        """The process's output: its last `last` characters, or all of it with None."""
        self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if last is None else text[-last:]

    def stop(self) -> None:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(timeout=10)
        self.log.close()


class World:
    """One orchestrator, one portal, the bots a test starts, and the API as a client sees it."""

    def __init__(self, database: str, log_dir: Path, extra_env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self.vhost = f"botline-test-py-{uuid.uuid4().hex[:12]}"
        requests.put(f"{MANAGEMENT}/vhosts/{self.vhost}", auth=GUEST, timeout=10).raise_for_status()
        requests.put(
            f"{MANAGEMENT}/permissions/{self.vhost}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            auth=GUEST,
            timeout=10,
        ).raise_for_status()
        self.pg_database = None
        if database == "postgres":
            self.pg_database = f"botline_test_{uuid.uuid4().hex[:12]}"
            psql(f"create database {self.pg_database}")
            database_url = f"{POSTGRES}/{self.pg_database}"
        else:
            database_url = f"sqlite://{log_dir / 'botline.db'}?mode=rwc"
        portal_port, api_port = free_port(), free_port()
        self.portal = f"http://127.0.0.1:{portal_port}"
        self.api = f"http://127.0.0.1:{api_port}"
        self.start("portal", [str(BIN / "simulators"), "vivo360", "--listen", f"127.0.0.1:{portal_port}"], {})
        self.orchestrator = self.start(
            "orchestrator",
            [str(BIN / "orchestrator")],
            {
                # The access log (one line a request, at DEBUG) is what the secrets test scans.
                "RUST_LOG": "info,tower_http=debug",
                "BOTLINE_LISTEN": f"127.0.0.1:{api_port}",
                "BOTLINE_DATABASE_URL": database_url,
                "BOTLINE_AMQP_URL": f"{AMQP}/{self.vhost}",
                **TIMINGS,
                **extra_env,
            },
        )
        until("the orchestrator to answer /healthz", lambda: requests.get(f"{self.api}/healthz", timeout=2).ok)
        until("the portal to answer", lambda: requests.get(f"{self.portal}/login", timeout=2).ok)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        for binary in args[:1]:
            if binary.startswith(str(BIN)) and not Path(binary).exists():
                raise AssertionError(f"{binary} is missing: build the workspace first (cargo build --workspace --bins)")
        process = Process(name, args, env, self.log_dir)
        self.processes.append(process)
        return process

    def bot(self, name: str, port: int | None = None, fault: str | None = None) -> tuple[Process, int]:
        """Starts a seed bot (it registers itself, then listens); returns it and its port."""
        port = port or free_port()
        args = [sys.executable, str(BOT), "--name", name, "--port", str(port), "--api", self.api, "--portal", self.portal]
        if fault:
            args += ["--fault", fault]
        process = self.start(name, args, {})
        until(f"bot {name} to register", lambda: self.find_bot(name), 20)
        return process, port

    def find_bot(self, name: str) -> dict | None:
        items = self.get("/bots", params={"name": name})["items"]
        return items[0] if items else None

    def url(self, path: str) -> str:
        return f"{self.api}/api/v1{path}"

    def get(self, path: str, **kwargs) -> dict:
        answer = requests.get(self.url(path), timeout=10, **kwargs)
        assert answer.ok, f"GET {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def history(self, task_id: str) -> list[dict]:
        return self.get(f"/tasks/{task_id}/events")

    def kinds(self, task_id: str) -> list[str]:
        return [event["kind"] for event in self.history(task_id)]

    def wait_task(self, task_id: str, statuses: set[str], seconds: float = 40.0) -> dict:
        def check():
            task = self.get(f"/tasks/{task_id}")
            return task if task["status"] in statuses else None

        try:
            return until(f"task {task_id} to be {sorted(statuses)}", check, seconds, 0.2)
        except AssertionError as error:
            raise AssertionError(f"{error}\nhistory: {self.kinds(task_id)}\norchestrator log:\n{self.orchestrator.output()}") from None

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        requests.delete(f"{MANAGEMENT}/vhosts/{self.vhost}", auth=GUEST, timeout=10)
        if self.pg_database:
            psql(f"drop database if exists {self.pg_database} with (force)")


def psql(statement: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atqc", statement],
        check=True,
        capture_output=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request) -> str:
    return request.param


@pytest.fixture
def make_world(request):
    """Makes a world on a database ('sqlite' or 'postgres') with extra orchestrator settings."""
    worlds: list[World] = []

    def make(database: str = "sqlite", **extra_env: str) -> World:
        log_dir = Path(tempfile.mkdtemp(prefix="botline-py-"))
        world = World(database, log_dir, extra_env)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()
