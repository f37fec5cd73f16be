"""A Botline bot in Python, speaking the broker contract over RabbitMQ.

    from botline import Bot, Retryable

    bot = Bot()

    @bot.automation("PAYROLL")
    def pay(task, report):
        for n, row in task.rows():          # the CSV's rows, after those an earlier attempt did
            report.row(n, "DONE", f"paid {row['employee']}")

    if __name__ == "__main__":
        bot.run(name="py-1")

or `python -m botline.bot --name py-1 --systems payroll mymodule`.

What the runtime does for an automation: it announces the bot (`bot.online`, with its systems
and slots), heartbeats from the event loop (automations run in threads of their own, or as
coroutines for `async def` ones, so a busy automation does not starve it), judges each offer as
Botline's own agent does (expired, already running here, left behind by a previous run, busy,
stopping, a system it cannot run) and answers it before the offer is acknowledged, echoes the
attempt in every event so a stale run is fenced by the orchestrator, streams the rows an
automation reports as `task.progress`, and ends the attempt with `task.completed` (the
function's return value is the output) or `task.failed` (`Retryable` may succeed next time;
any other exception is fatal). It reconnects after the broker goes away, stops on SIGTERM or
Ctrl-C (running tasks get `shutdown_grace` seconds to finish, then are handed back with
`task.released` and their rows), and stops a task the orchestrator cancels (`report.row()` and
`report.check()` raise `Cancelled` in a thread; a coroutine is cancelled).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import importlib
import inspect
import io
import json
import logging
import os
import queue
import random
import signal
import socket
import sys
import threading
import traceback
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aio_pika
import aio_pika.abc

from botline import contract
from botline.contract import Cancel, Json, MalformedMessage, Offer, TaskRef
from botline.errors import Cancelled, Retryable

log = logging.getLogger("botline.bot")

#: What an offer left unacknowledged by a previous run of the bot gets (as Botline's agent says).
LEFT_BEHIND_REASON = "redelivered from a previous run of this bot, which died holding it: not run again"
#: Why a task is handed back, or an offer turned down, while the bot stops.
RELEASE_REASON = "bot shutting down"
#: How long an offer's answer may wait for the broker's confirm before the offer is requeued.
ANSWER_DEADLINE = 8.0
#: The most events, and bytes of them, in one message (as Botline's agent sends).
BATCH_EVENTS = 200
BATCH_BYTES = 256 * 1024
#: The largest output a task may end with, as JSON (its end event must fit a message).
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
#: How long an acceptance waits for its task's end to replace it (a quick task: one event).
ACCEPTANCE_WINDOW = 0.002
#: How long a stopping bot waits for its handed-back tasks and last events.
STOP_WAIT = 10.0
#: The most of an attempt's log kept and sent with its end (as Botline's agent keeps).
MAX_LOG_BYTES = 64 * 1024
#: The longest wait between two connection attempts.
MAX_BACKOFF = 5.0

Automation = Callable[["Task", "Report"], Any]


@dataclass(frozen=True)
class Task:
    """What an automation is given: one attempt of a task."""

    #: The task's id.
    id: str
    #: This attempt (every event about it echoes it, so a stale run is fenced).
    attempt: int
    #: The system it is for (uppercase).
    system: str
    #: What it is for.
    description: str
    #: Its JSON input, for systems that take one.
    payload: Any
    #: Its CSV, decoded from base64, for systems that take one.
    attachment: bytes | None
    #: Rows an earlier attempt already did: rows 1 to this are skipped by `rows()`.
    resume_after_row: int

    def text(self) -> str:
        """The attachment as text (UTF-8, a byte-order mark dropped); empty without one."""
        return (self.attachment or b"").decode("utf-8-sig")

    def all_rows(self) -> list[dict[str, str]]:
        """Every row of the CSV attachment as a dict by column (the header's names)."""
        return list(csv.DictReader(io.StringIO(self.text())))

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """The CSV's rows still to do, each with its number (1-based, not counting the header):
        those after `resume_after_row`. Report each with `report.row(n, …)`."""
        for n, row in enumerate(self.all_rows(), start=1):
            if n > self.resume_after_row:
                yield n, row


class Report:
    """How an automation says what it did. Thread-safe: an automation may report from threads of
    its own. Rows are sent in `task.progress` events a few times a second, and what is left with
    the attempt's end."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._lock = threading.Lock()
        self._rows: list[Json] = []
        self._log: deque[str] = deque()
        self._log_bytes = 0
        self._stop = threading.Event()
        self._why = ""

    def row(self, n: int, status: str = "DONE", message: str = "") -> None:
        """Records row `n`'s outcome: `CREATED`, `DONE` (succeeded), `REJECTED` (the target system
        refused it) or `FAILED`. Raises `Cancelled` once the task is cancelled or the bot stops."""
        self.check()
        status = status.upper()
        if status not in contract.ROW_STATUSES:
            raise ValueError(f"row status {status!r} is not one of {', '.join(contract.ROW_STATUSES)}")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= contract.MAX_ROW:
            raise ValueError(f"row {n!r} is not a row number (1-based)")
        with self._lock:
            self._rows.append(contract.row(n, status, str(message)))

    def log(self, line: str) -> None:
        """Keeps a line in the attempt's log (its last 64 KiB are stored with the attempt)."""
        text = line if line.endswith("\n") else line + "\n"
        with self._lock:
            self._log.append(text)
            self._log_bytes += len(text.encode())
            while self._log_bytes > MAX_LOG_BYTES and len(self._log) > 1:
                self._log_bytes -= len(self._log.popleft().encode())

    @property
    def cancelled(self) -> bool:
        """Whether the automation should stop: the task was cancelled, or the bot is stopping."""
        return self._stop.is_set()

    def check(self) -> None:
        """Raises `Cancelled` if the automation should stop (call it between steps)."""
        if self._stop.is_set():
            raise Cancelled(self._why)

    def _cancel(self, why: str) -> None:
        self._why = why
        self._stop.set()

    def _take_rows(self) -> list[Json]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def _log_text(self) -> str | None:
        with self._lock:
            text = "".join(self._log)
        return text[-MAX_LOG_BYTES:] or None


Verdict = Literal["ignore", "again", "reject", "accept"]
Fate = Literal["offered", "ended", "cancelled"]


def judge(
    offer: Offer,
    *,
    now: datetime,
    redelivered: bool,
    running: Collection[TaskRef],
    fates: Mapping[TaskRef, Fate],
    slots: int,
    closing: bool,
    systems: set[str],
) -> tuple[Verdict, str]:
    """What to do with an offer, and why; pure. In this order: an offer that lapsed is ignored;
    one already running here is accepted again (a redelivery); an offer of an attempt that ended
    or was cancelled here is ignored, redelivered or not (a publisher that lost the broker's
    confirm in a restart publishes the offer again, and each attempt is offered once); a
    redelivery this run never had is turned down (a previous run died holding it, maybe because
    of it); then busy, stopping, and a system this bot cannot run are turned down; anything else
    is taken."""
    if offer.offer_expires_at <= now:
        return "ignore", "offer expired"
    if offer.ref in running:
        return "again", "already running here"
    fate = fates.get(offer.ref)
    if fate in ("ended", "cancelled"):
        return "ignore", f"offered again after it {fate} here"
    if redelivered and fate is None:
        return "reject", LEFT_BEHIND_REASON
    if len(running) >= slots:
        return "reject", "busy"
    if closing:
        return "reject", RELEASE_REASON
    if offer.system not in systems:
        return "reject", f"this bot cannot run {offer.system}"
    return "accept", ""


@dataclass
class Settings:
    """How a bot runs; every field has a flag of `python -m botline.bot` and an environment
    variable, named as Botline's own agent names them."""

    name: str
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2f"
    #: Tasks it runs at once (1 to 10,000).
    slots: int = 1
    #: Seconds between heartbeats (the orchestrator's lease is a few of them).
    heartbeat_interval: float = 5.0
    #: Least seconds between two `task.progress` events of a task.
    progress_interval: float = 0.25
    #: Seconds running tasks get to finish when the bot stops, before they are handed back.
    shutdown_grace: float = 10.0
    #: The address it announces; found from the route to the broker when absent.
    ip_address: str | None = None
    #: Only check that its queue exists (a least-privilege broker user may not declare).
    no_declare: bool = False
    #: `classic` or `quorum`: the type every Botline queue of the deployment has.
    queue_type: str = "classic"
    #: Check every message sent and received against the contract's JSON Schema (needs the
    #: `validate` extra; for tests and debugging).
    validate: bool = False
    #: The systems it announces; all of the bot's automations when empty.
    systems: list[str] = field(default_factory=list)


class Bot:
    """A bot: its automations, by system. `run()` (or `serve()`) connects it to Botline."""

    def __init__(self) -> None:
        self._automations: dict[str, Automation] = {}

    def automation(self, system: str) -> Callable[[Automation], Automation]:
        """Registers the decorated function as the automation of `system` (any case). It is
        called as `fn(task, report)` in a thread of its own, or awaited when it is `async def`;
        what it returns is the task's output (JSON), what it raises fails the attempt."""
        canonical = system.strip().upper()
        if not canonical:
            raise ValueError("a system needs a name")

        def register(fn: Automation) -> Automation:
            self._automations[canonical] = fn
            return fn

        return register

    @property
    def systems(self) -> list[str]:
        """The systems it has automations for."""
        return sorted(self._automations)

    def run(self, name: str | None = None, **settings: Any) -> int:
        """Runs the bot until SIGTERM or Ctrl-C; its exit code. `name` and `settings` override
        the environment (`BOTLINE_BOT_NAME`, `BOTLINE_AMQP_URL`, …: see `Settings`)."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        resolved = settings_from_env(name=name, **settings)
        return asyncio.run(self.serve(resolved))

    async def serve(self, settings: Settings, stop: asyncio.Event | None = None) -> int:
        """Runs the bot until `stop` is set, or SIGTERM or Ctrl-C when `stop` is None; its exit
        code (0 after a clean stop)."""
        systems = [s.upper() for s in settings.systems] or self.systems
        missing = [s for s in systems if s not in self._automations]
        if missing or not systems:
            raise ValueError(
                f"no automation for {', '.join(missing)}" if missing else "the bot has no automation"
            )
        if not contract.BOT_NAME.fullmatch(settings.name):
            raise ValueError(
                f"bot name {settings.name!r}: 1 to 64 lowercase letters, digits, '-', '_' and '.', "
                "starting with a letter or digit"
            )
        if not 1 <= settings.slots <= contract.MAX_SLOTS:
            raise ValueError(f"slots must be 1 to {contract.MAX_SLOTS}")
        if settings.queue_type not in ("classic", "quorum"):
            raise ValueError("queue_type is classic or quorum")
        runtime = _Runtime(settings, {s: self._automations[s] for s in systems})
        return await runtime.serve(stop)


def settings_from_env(name: str | None = None, **given: Any) -> Settings:
    """Settings from `given`, else the environment, else the defaults."""
    env = os.environ
    values: dict[str, Any] = {
        "name": name or env.get("BOTLINE_BOT_NAME"),
        "amqp_url": env.get("BOTLINE_AMQP_URL"),
        "slots": env.get("BOTLINE_SLOTS"),
        "heartbeat_interval": _seconds(env.get("BOTLINE_HEARTBEAT_INTERVAL_MS")),
        "progress_interval": _seconds(env.get("BOTLINE_PROGRESS_INTERVAL_MS")),
        "shutdown_grace": env.get("BOTLINE_SHUTDOWN_GRACE_SECS"),
        "ip_address": env.get("BOTLINE_BOT_IP"),
        "queue_type": env.get("BOTLINE_QUEUE_TYPE"),
    }
    if env.get("BOTLINE_BOT_SYSTEMS"):
        values["systems"] = [s.strip() for s in env["BOTLINE_BOT_SYSTEMS"].split(",") if s.strip()]
    if env.get("BOTLINE_BOT_NO_DECLARE", "").lower() in ("1", "true", "yes"):
        values["no_declare"] = True
    values.update(given)
    if not values["name"]:
        raise ValueError("the bot needs a name (name=…, --name or BOTLINE_BOT_NAME)")
    kinds = {"slots": int, "heartbeat_interval": float, "shutdown_grace": float, "progress_interval": float}
    for key, kind in kinds.items():
        if values.get(key) is not None:
            try:
                values[key] = kind(values[key])
            except ValueError:
                raise ValueError(f"{key} {values[key]!r} is not a number") from None
    for key in ("heartbeat_interval", "progress_interval"):
        if values.get(key) is not None and values[key] <= 0:
            raise ValueError(f"{key} must be above 0")
    return Settings(**{k: v for k, v in values.items() if v is not None})


def _seconds(milliseconds: str | None) -> float | None:
    return float(milliseconds) / 1000 if milliseconds else None


@dataclass
class _Run:
    """One attempt running here."""

    offer: Offer
    report: Report
    #: The coroutine running an `async def` automation (cancelled to stop it).
    inner: asyncio.Future[Any] | None = None
    #: The orchestrator cancelled it: nothing more is said about it.
    silenced: bool = False
    #: The bot is stopping: it is handed back.
    releasing: bool = False
    #: Why it cannot run (an attachment that is not base64): it fails at once.
    broken: str | None = None
    #: The runtime's task driving it.
    task: asyncio.Task[None] | None = None
    #: Its end is reported (or it was silenced).
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Pending:
    event: Json
    done: asyncio.Future[None]
    #: When it was queued (the loop's clock).
    queued_at: float
    #: It as JSON, encoded once (its length counts against a message's bytes).
    text: str


class _Runtime:
    """One run of a bot: its connection, its slots and what it remembers of its offers."""

    def __init__(self, settings: Settings, automations: dict[str, Automation]) -> None:
        self.settings = settings
        self.name = settings.name
        self.automations = automations
        self.session = str(uuid.uuid4())
        self.running: dict[TaskRef, _Run] = {}
        self.fates: OrderedDict[TaskRef, Fate] = OrderedDict()
        self.remembered = max(64, 4 * settings.slots)
        self.closing = False
        self.outbox: deque[_Pending] = deque()
        self.wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        # RabbitMQ checks `user-id` against the connection's user: guest when the URL names none.
        self.user_id = unquote(urlsplit(settings.amqp_url).username or "") or "guest"
        self.idle = asyncio.Event()
        self.idle.set()
        #: The bot's last events are out (or given up on): the connection may close.
        self.finished = asyncio.Event()
        #: The threads plain automations run in.
        self.workers = _Workers()
        #: Ends the process if a stop asked by a signal takes longer than it can.
        self.watchdog: threading.Timer | None = None

    # --- the run -------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event | None) -> int:
        own_stop = stop is None
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        if own_stop:
            for number in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(number, self._on_signal, stop, number)
        publisher = asyncio.create_task(self._publish_loop(), name="botline-publisher")
        connection = asyncio.create_task(self._connection_loop(stop), name="botline-connection")
        beats = asyncio.create_task(self._heartbeats(stop), name="botline-heartbeats")
        progress = asyncio.create_task(self._progress(stop), name="botline-progress")
        await stop.wait()
        log.info("stopping: no more offers; %d task(s) running", len(self.running))
        self.closing = True
        await self._shut_down()
        beats.cancel()
        self._submit(contract.event("bot.offline", self.name))
        await self._flush(STOP_WAIT)
        # The connection loop closes its connection and ends.
        self.finished.set()
        _, stuck = await asyncio.wait({connection}, timeout=STOP_WAIT)
        if stuck:
            log.warning("the connection to RabbitMQ did not close in %.0f s; leaving it", STOP_WAIT)
        for task in (progress, publisher, connection):
            task.cancel()
        await asyncio.wait({publisher, beats, progress}, timeout=1)
        if own_stop:
            for number in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(number)
        if self.watchdog is not None:
            self.watchdog.cancel()
        log.info("stopped")
        return 0

    def _on_signal(self, stop: asyncio.Event, number: int) -> None:
        if stop.is_set():
            log.warning("second signal: stopping at once")
            os._exit(130)
        log.info("%s: stopping gracefully (again to stop at once)", signal.Signals(number).name)
        stop.set()
        # The stop is bounded: the grace, the tasks handed back, the last events and the
        # connection's close each wait a bounded time; past their sum, the process leaves anyway.
        limit = self.settings.shutdown_grace + 3 * STOP_WAIT + 5
        self.watchdog = threading.Timer(limit, _stop_now, args=(limit,))
        self.watchdog.daemon = True
        self.watchdog.start()

    async def _connection_loop(self, stop: asyncio.Event) -> None:
        """Connects, declares, announces the bot once and consumes its queue; after the connection
        is lost, connects again with a growing, jittered delay. Retrying is bounded by the bot's
        end: a broker that never comes back keeps the bot waiting, saying so at each attempt.
        Once the bot stops, it consumes no more, and closes the connection when the last events
        are out (connecting again for them if it must)."""
        announced = False
        failures = 0
        while not self.finished.is_set():
            connection: aio_pika.abc.AbstractConnection | None = None
            try:
                connection = await aio_pika.connect(
                    self.settings.amqp_url,
                    timeout=10,
                    client_properties={"connection_name": f"botline-python {self.name}"},
                )
                lost = asyncio.Event()
                connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
                publishing = await connection.channel(publisher_confirms=True)
                publishing.close_callbacks.add(lambda *_, lost=lost: lost.set())
                await self._declare(publishing)
                self.exchange = await publishing.get_exchange(contract.EVENTS_EXCHANGE, ensure=False)
                self.connected.set()
                self.wake.set()
                if not announced and not stop.is_set():
                    # Queued first, so it goes before any answer; not awaited here, where a lost
                    # connection must be noticed.
                    self._announce()
                    announced = True
                failures = 0
                if not stop.is_set():
                    consuming = await connection.channel(publisher_confirms=False)
                    consuming.close_callbacks.add(lambda *_, lost=lost: lost.set())
                    await consuming.set_qos(prefetch_count=min(self.settings.slots, 65535))
                    own = await consuming.get_queue(contract.bot_queue(self.name), ensure=False)
                    tag = await own.consume(self._on_message)
                    log.info("consuming %s", contract.bot_queue(self.name))
                    await _first(stop.wait(), lost.wait())
                    if not lost.is_set():
                        # No more deliveries: what the broker holds goes to the next run.
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(own.cancel(tag), 5)
                if stop.is_set():
                    await _first(self.finished.wait(), lost.wait())
                if not self.finished.is_set():
                    log.warning("the connection to RabbitMQ was lost; connecting again")
            except asyncio.CancelledError:
                if connection is not None:
                    await _close_quietly(connection)
                raise
            except Exception as error:
                failures += 1
                log.warning("cannot use RabbitMQ (%s: %s); attempt %d", type(error).__name__, error, failures)
            self.connected.clear()
            self.exchange = None
            if connection is not None:
                await _close_quietly(connection)
            if not self.finished.is_set():
                delay = min(MAX_BACKOFF, 0.1 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                await _first(self.finished.wait(), asyncio.sleep(delay))

    async def _declare(self, channel: aio_pika.abc.AbstractChannel) -> None:
        """Declares the bot's exchanges and queue as Botline's topology has them, or with
        `no_declare` only checks they exist."""
        passive = self.settings.no_declare
        arguments: dict[str, Any] = {"x-dead-letter-exchange": contract.DEAD_LETTER_EXCHANGE}
        if self.settings.queue_type != "classic":
            arguments["x-queue-type"] = self.settings.queue_type
        kinds = [
            (contract.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT),
            (contract.TASKS_EXCHANGE, aio_pika.ExchangeType.DIRECT),
            (contract.EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC),
        ]
        for exchange, kind in kinds:
            await channel.declare_exchange(exchange, kind, durable=True, passive=passive)
        queue = await channel.declare_queue(
            contract.bot_queue(self.name),
            durable=True,
            passive=passive,
            arguments=None if passive else arguments,
        )
        if not passive:
            await queue.bind(contract.TASKS_EXCHANGE, routing_key=self.name)

    def _announce(self) -> None:
        address = self.settings.ip_address or _local_address(self.settings.amqp_url)
        online = contract.event(
            "bot.online",
            self.name,
            ip_address=address,
            systems=sorted(self.automations),
            session=self.session,
            slots=self.settings.slots,
            batches=True,
        )
        log.info(
            "bot %s online: %s, %d slot(s), at %s",
            self.name,
            ", ".join(sorted(self.automations)),
            self.settings.slots,
            address,
        )
        self._submit(online)

    # --- offers and cancels --------------------------------------------------------------------

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            commands = contract.decode_commands(message.body)
            if self.settings.validate:
                contract.validate(json.loads(message.body))
        except MalformedMessage as error:
            log.warning("dead-lettering a message that is not a command: %s", error)
            await _settle(message.reject(requeue=False))
            return
        answers: list[tuple[TaskRef, asyncio.Future[None]]] = []
        for command in commands:
            if isinstance(command, Cancel):
                self._cancel(command.ref, command.reason)
            else:
                answer = self._take_offer(command, bool(message.redelivered))
                if answer is not None:
                    answers.append((command.ref, answer))
        try:
            await asyncio.wait_for(asyncio.gather(*(a for _, a in answers)), ANSWER_DEADLINE)
        except (asyncio.TimeoutError, Exception) as error:
            log.warning(
                "an answer to an offer was not confirmed (%s); the offer goes back to the queue", error
            )
            for ref, answer in answers:
                if not answer.done():
                    self._unconfirmed(ref)
            await _settle(message.nack(requeue=True))
            return
        await _settle(message.ack())

    def _unconfirmed(self, ref: TaskRef) -> None:
        """The answer to the offer `ref` was not confirmed, and its offer goes back to the queue:
        a run it started stops silently and its acceptance is not sent, so the redelivery is
        judged as a new offer (taken again if it still stands) and no attempt runs unannounced
        after its offer lapsed, as with Botline's agent. A run that already ended has its end on
        the way, which implies the acceptance."""
        for pending in list(self.outbox):
            event = pending.event
            if event["type"] in ("task.accepted", "task.rejected") and (
                event["task_id"],
                event["attempt"],
            ) == (
                ref.task_id,
                ref.attempt,
            ):
                self.outbox.remove(pending)
                if not pending.done.done():
                    pending.done.cancel()
        run = self.running.pop(ref, None)
        if run is not None:
            log.warning("task %s attempt %d: stopped, its acceptance unconfirmed", ref.task_id, ref.attempt)
            run.silenced = True
            self._stop_run(run, "its acceptance was not confirmed")
            self._remember(ref, "offered")
            self._update_idle()

    def _take_offer(self, offer: Offer, redelivered: bool) -> asyncio.Future[None] | None:
        ref = offer.ref
        verdict, reason = judge(
            offer,
            now=datetime.now(timezone.utc),
            redelivered=redelivered,
            running=self.running.keys(),
            fates=self.fates,
            slots=self.settings.slots,
            closing=self.closing,
            systems=set(self.automations),
        )
        if verdict == "ignore":
            log.info("task %s attempt %d: %s; ignored", ref.task_id, ref.attempt, reason)
            return None
        if verdict == "reject":
            log.info("task %s attempt %d turned down: %s", ref.task_id, ref.attempt, reason)
            if ref not in self.fates:
                self._remember(ref, "offered")
            return self._submit(contract.task_event("task.rejected", self.name, ref, reason=reason))
        answer = self._submit(contract.task_event("task.accepted", self.name, ref))
        if verdict == "accept":
            self._remember(ref, "offered")
            self._start(offer)
        return answer

    def _remember(self, ref: TaskRef, fate: Fate) -> None:
        self.fates[ref] = fate
        self.fates.move_to_end(ref)
        while len(self.fates) > self.remembered:
            self.fates.popitem(last=False)

    def _cancel(self, ref: TaskRef, reason: str) -> None:
        """Stops `ref` if it runs here, saying nothing more about it; its slot is free at once."""
        self._remember(ref, "cancelled")
        run = self.running.pop(ref, None)
        if run is None:
            return
        log.info("task %s attempt %d cancelled: %s", ref.task_id, ref.attempt, reason)
        run.silenced = True
        self._stop_run(run, reason)
        self._update_idle()

    def _stop_run(self, run: _Run, why: str) -> None:
        run.report._cancel(why)
        if run.inner is not None:
            run.inner.cancel()

    # --- running -------------------------------------------------------------------------------

    def _start(self, offer: Offer) -> None:
        broken = None
        try:
            attachment = base64.b64decode(offer.attachment, validate=True) if offer.attachment else None
        except ValueError as error:
            attachment, broken = None, f"the attachment is not base64: {error}"
        task = Task(
            id=offer.ref.task_id,
            attempt=offer.ref.attempt,
            system=offer.system,
            description=offer.description,
            payload=offer.payload,
            attachment=attachment,
            resume_after_row=offer.resume_after_row,
        )
        run = _Run(offer=offer, report=Report(task), broken=broken)
        self.running[offer.ref] = run
        self.idle.clear()
        run.task = asyncio.create_task(self._execute(run), name=f"botline-task-{task.id}")

    async def _execute(self, run: _Run) -> None:
        task, report = run.report.task, run.report
        automation = self.automations[task.system]
        log.info("task %s attempt %d: running %s", task.id, task.attempt, task.system)
        end: Json
        try:
            # Cancelled (or stopping) before it started: it does not start.
            report.check()
            if run.broken:
                raise ValueError(run.broken)
            if inspect.iscoroutinefunction(automation):
                run.inner = asyncio.ensure_future(automation(task, report))
                output = await run.inner
            else:
                output = await self.workers.run(automation, task, report)
            end = self._completed(run, output)
        except (Cancelled, asyncio.CancelledError) as stopped:
            if run.silenced:
                run.ended.set()
                return
            if run.releasing:
                end = self._end(run, "task.released", reason=RELEASE_REASON)
            else:
                end = self._failed(run, f"the automation stopped itself: {stopped}", False)
        except Retryable as error:
            end = self._failed(run, str(error) or "retryable failure", True)
        except (Exception, SystemExit, KeyboardInterrupt) as error:
            # Whatever an automation raises ends its attempt, never the bot (sys.exit() too).
            report.log(traceback.format_exc())
            end = self._failed(run, f"{type(error).__name__}: {error}", False)
        if run.silenced:
            run.ended.set()
            return
        if self.running.get(run.offer.ref) is run:
            del self.running[run.offer.ref]
        self._remember(run.offer.ref, "ended")
        self._submit(end)
        log.info("task %s attempt %d: %s", task.id, task.attempt, end["type"])
        run.ended.set()
        self._update_idle()

    def _completed(self, run: _Run, output: Any) -> Json:
        try:
            size = len(contract.dumps(output))
        except (TypeError, ValueError) as error:
            return self._failed(run, f"the automation's output is not JSON: {error}", False)
        if size > MAX_OUTPUT_BYTES:
            return self._failed(
                run, f"the automation's output is {size} bytes of JSON, over {MAX_OUTPUT_BYTES}", False
            )
        return self._end(run, "task.completed", output=output)

    def _failed(self, run: _Run, error: str, retryable: bool) -> Json:
        return self._end(run, "task.failed", error=error, retryable=retryable)

    def _end(self, run: _Run, kind: str, **fields: Any) -> Json:
        fields["rows"] = run.report._take_rows()
        if kind != "task.released":
            text = run.report._log_text()
            if text:
                fields["log"] = text
        return contract.task_event(kind, self.name, run.offer.ref, **fields)

    def _update_idle(self) -> None:
        if not self.running:
            self.idle.set()

    async def _progress(self, stop: asyncio.Event) -> None:
        """Sends the rows each running task reported, every `progress_interval` at most."""
        while True:
            await asyncio.sleep(self.settings.progress_interval)
            for run in list(self.running.values()):
                rows = run.report._take_rows()
                if rows:
                    self._submit(contract.task_event("task.progress", self.name, run.offer.ref, rows=rows))

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        """A `bot.heartbeat` every `heartbeat_interval` while connected: its leases on its tasks."""
        while True:
            if self.connected.is_set():
                held = [ref.fields() for ref in self.running]
                beat = contract.event("bot.heartbeat", self.name, task=held[0] if held else None)
                if held:
                    beat["tasks"] = held
                self._submit(beat)
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _shut_down(self) -> None:
        """Lets running tasks finish for `shutdown_grace`, then hands back those still going."""
        if self.running:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.idle.wait(), self.settings.shutdown_grace)
        left = list(self.running.values())
        for run in left:
            log.info("task %s attempt %d: handed back", run.offer.ref.task_id, run.offer.ref.attempt)
            run.releasing = True
            self._stop_run(run, RELEASE_REASON)
        if not left:
            return
        waits = [asyncio.create_task(run.ended.wait()) for run in left]
        _, stuck = await asyncio.wait(waits, timeout=STOP_WAIT)
        for wait in stuck:
            wait.cancel()
        for run in left:
            if not run.ended.is_set():
                # An automation that ignores `report.cancelled`: handed back all the same.
                log.warning("task %s did not stop; handed back anyway", run.offer.ref.task_id)
                run.silenced = True
                self.running.pop(run.offer.ref, None)
                self._submit(self._end(run, "task.released", reason=RELEASE_REASON))

    # --- publishing ----------------------------------------------------------------------------

    def _submit(self, event: Json) -> asyncio.Future[None]:
        """Queues an event; the future resolves once the broker confirmed it."""
        if self.settings.validate:
            try:
                contract.validate({"v": contract.VERSION, **event})
            except MalformedMessage as error:
                log.error("not sending an event that breaks the contract: %s", error)
                raise
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        text = contract.dumps(event)
        self.outbox.append(_Pending(event, done, asyncio.get_running_loop().time(), text))
        self.wake.set()
        return done

    async def _publish_loop(self) -> None:
        """Publishes what is queued, everything queued at once (up to `MAX_BATCH` in one
        `bot.events` message), waiting for the broker's confirm; what could not be published is
        sent again once connected (until the bot stops)."""
        while True:
            if not self.outbox:
                self.wake.clear()
                await self.wake.wait()
                continue
            exchange = self.exchange
            if exchange is None:
                await self.connected.wait()
                continue
            batch = _next_batch(self.outbox)
            wait = _acceptance_wait(batch, asyncio.get_running_loop().time())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            kept = {id(event) for event in implied_acceptances_dropped([p.event for p in batch])}
            key, body = contract.frame_events(
                self.name, [(p.event["type"], p.text) for p in batch if id(p.event) in kept]
            )
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(uuid.uuid4()),
                user_id=self.user_id,
            )
            try:
                await exchange.publish(message, routing_key=key, timeout=ANSWER_DEADLINE)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "publishing %d event(s) failed (%s: %s); sent again once connected",
                    len(batch),
                    type(error).__name__,
                    error,
                )
                await asyncio.sleep(0.2)
                continue
            # The batch is what leads the queue, less what was taken out meanwhile (an acceptance
            # whose offer went back).
            sent = {id(p) for p in batch}
            while self.outbox and id(self.outbox[0]) in sent:
                pending = self.outbox.popleft()
                if not pending.done.done():
                    pending.done.set_result(None)

    async def _flush(self, seconds: float) -> None:
        """Waits up to `seconds` for the queued events to be confirmed."""
        waits = [p.done for p in self.outbox]
        if not waits:
            return
        _, unsent = await asyncio.wait(waits, timeout=seconds)
        if unsent:
            log.warning("%d event(s) could not be sent before stopping", len(unsent))


def _stop_now(limit: float) -> None:
    log.error("the bot did not stop within %.0f s of the signal; exiting now", limit)
    logging.shutdown()
    os._exit(1)


def implied_acceptances_dropped(events: list[Json]) -> list[Json]:
    """`events` without the acceptances whose attempt's completion or failure is among them: the
    end implies the acceptance (the orchestrator records it so), and a quick task costs one event
    instead of two, as with Botline's agent."""
    ended = {(e["task_id"], e["attempt"]) for e in events if e["type"] in ("task.completed", "task.failed")}
    return [e for e in events if e["type"] != "task.accepted" or (e["task_id"], e["attempt"]) not in ended]


def _next_batch(outbox: deque[_Pending]) -> list[_Pending]:
    """The events at the head of `outbox` that go in the next message: up to `BATCH_EVENTS` of
    them and `BATCH_BYTES` (at least one), as Botline's agent batches, far below what the
    orchestrator takes in one message."""
    batch: list[_Pending] = []
    size = 0
    for pending in outbox:
        size += len(pending.text)
        if batch and (len(batch) >= BATCH_EVENTS or size > BATCH_BYTES):
            break
        batch.append(pending)
    return batch


def _acceptance_wait(batch: list[_Pending], now: float) -> float:
    """How long to hold `batch` before sending it: while it holds an acceptance queued less than
    `ACCEPTANCE_WINDOW` ago, a quick task's end may still join it and replace it."""
    queued = [p.queued_at for p in batch if p.event["type"] == "task.accepted"]
    return max(0.0, min(queued) + ACCEPTANCE_WINDOW - now) if queued else 0.0


class _Workers:
    """Daemon threads that run plain automations, so a busy one never holds up the event loop and
    its heartbeats. A thread is kept for the next task (starting one holds the loop up while it
    starts: a fifth of a one-slot bot's time), and one more is started whenever every thread is
    busy, so an automation that ignores its cancellation never holds another up. Daemon threads:
    a stuck automation does not keep the process from exiting."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def run(self, automation: Automation, task: Task, report: Report) -> asyncio.Future[Any]:
        """Runs `automation(task, report)` on a worker; the future of its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not future.done():
                outcome()

        def job() -> None:
            try:
                value = automation(task, report)
            except BaseException as error:
                failure = error
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(failure))
            else:
                loop.call_soon_threadsafe(settle, lambda: future.set_result(value))

        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._work, name="botline-automation", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._idle += 1


async def _settle(action: Awaitable[Any]) -> None:
    """Acks, nacks or rejects a delivery; on a channel that closed meanwhile the broker gives the
    message to the next consumer (or this one, redelivered), so there is nothing more to do."""
    try:
        await action
    except Exception as error:
        log.info("could not settle a delivery (%s); the broker will redeliver it", error)


async def _close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    """Closes a connection, waiting 5 s at most (and not for a close that will not end)."""
    closing = asyncio.ensure_future(connection.close())
    done, _ = await asyncio.wait({closing}, timeout=5)
    if not done:
        closing.cancel()
        log.warning("closing the connection to RabbitMQ took over 5 s; left to the broker")
    elif not closing.cancelled() and closing.exception() is not None:
        log.debug("closing the connection: %s", closing.exception())


async def _first(*waits: Awaitable[Any]) -> None:
    """Waits until the first of `waits` is done, and cancels the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _local_address(amqp_url: str) -> str:
    """This machine's address on the route to the broker (no packet is sent)."""
    host = urlsplit(amqp_url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            address: str = probe.getsockname()[0]
            return address
    except OSError:
        return "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    """`python -m botline.bot --name py-1 --systems payroll mymodule`: runs the `Bot` that
    `mymodule` defines (`mymodule:attribute` names it when the module has several)."""
    parser = argparse.ArgumentParser(prog="python -m botline.bot", description=main.__doc__)
    parser.add_argument("module", help="the module defining the bot (module or module:attribute)")
    parser.add_argument("--name", help="the bot's name (BOTLINE_BOT_NAME)")
    parser.add_argument(
        "--systems", help="the systems to announce, comma separated (default: all the bot has)"
    )
    parser.add_argument("--amqp-url", help="the broker (BOTLINE_AMQP_URL)")
    parser.add_argument("--slots", type=int, help="tasks run at once (BOTLINE_SLOTS, default 1)")
    parser.add_argument("--heartbeat-interval", type=float, help="seconds between heartbeats (default 5)")
    parser.add_argument(
        "--progress-interval", type=float, help="least seconds between progress events (0.25)"
    )
    parser.add_argument("--shutdown-grace", type=float, help="seconds tasks get to finish at a stop (10)")
    parser.add_argument("--ip-address", help="the address announced (default: the route to the broker)")
    parser.add_argument("--no-declare", action="store_true", default=None, help="only check the queue exists")
    parser.add_argument("--queue-type", choices=["classic", "quorum"], help="the deployment's queue type")
    parser.add_argument(
        "--validate", action="store_true", default=None, help="check every message (jsonschema)"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    bot = _load_bot(args.module)
    given = {
        key: value
        for key, value in vars(args).items()
        if key not in ("module", "name", "systems", "log_level") and value is not None
    }
    if args.systems:
        given["systems"] = [s.strip() for s in args.systems.split(",") if s.strip()]
    try:
        settings = settings_from_env(name=args.name, **given)
        return asyncio.run(bot.serve(settings))
    except ValueError as error:
        print(f"botline.bot: {error}", file=sys.stderr)
        return 2


def _load_bot(spec: str) -> Bot:
    module_name, _, attribute = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Bot):
            raise SystemExit(f"botline.bot: {spec} is not a botline.Bot")
        return found
    bots = [value for value in vars(module).values() if isinstance(value, Bot)]
    if len(bots) != 1:
        raise SystemExit(
            f"botline.bot: {module_name} defines {len(bots)} botline.Bot; name one as {module_name}:NAME"
        )
    return bots[0]
