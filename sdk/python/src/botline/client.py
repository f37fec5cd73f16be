"""The REST client: `Client` (blocking, on `httpx.Client`) and `AsyncClient` (asyncio, on
`httpx.AsyncClient`), with the same methods.

    with Client("http://127.0.0.1:8080", token="…") as botline:
        task = botline.submit("VIVO360", csv="users.csv", description="October hires")
        done = botline.wait(task["id"])
        for row in botline.task_rows(done["id"]):
            print(row["row"], row["status"], row["message"])

Results are the API's JSON as plain dicts and lists (the shapes are in `GET /api/v1/openapi.json`).

Errors: every answer that is not a 2xx raises the `botline.errors` class of its status
(`NotFound`, `ValidationError` with its `field`, …; see `botline.errors.api_error`). Network
failures (refused connections, timeouts) are left as they are: `httpx.TransportError` and its
subclasses. Nothing is retried inside the client; `wait()` alone reconnects its event stream.

Both clients share everything but the I/O: each operation is a function that describes its
request and how to read the answer (a `_Call`), and each client only sends it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypeVar, cast
from urllib.parse import quote

import httpx

from botline.errors import TimeoutExpired, api_error

__all__ = ["FINAL_STATUSES", "AsyncClient", "Client"]

T = TypeVar("T")

#: The statuses a task ends in: what `wait()` waits for by default.
FINAL_STATUSES: tuple[str, ...] = ("COMPLETE", "FAILED", "CANCELLED")

#: A CSV: a file's path, its bytes, or its text (a `str` with a line break is text).
Csv: TypeAlias = "str | os.PathLike[str] | bytes"
#: A filter of one value or several (sent comma separated: `status=WAITING,RUNNING`).
Filter: TypeAlias = "str | Iterable[str] | None"

_PREFIX = "/api/v1"
# How often wait() reads the task when the event stream cannot be opened at all.
_POLL_INTERVAL = 0.5
# The orchestrator writes a comment on its event stream every 15 s: a stream silent for this
# long is dead (a peer gone without closing), and wait() opens another.
_STREAM_IDLE = 45.0
_SSE_HEADERS = {"accept": "text/event-stream", "cache-control": "no-cache"}


# --- What every operation shares: the request, and how to read its answer --------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request to the API and how to read a successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    body: Any = None

    def answer(self, response: httpx.Response) -> T:
        """The parsed answer, or the `botline.errors` exception of an error status."""
        if not response.is_success:
            raise _error(response)
        return self.parse(response)


def _error(response: httpx.Response) -> Exception:
    """The exception for an answer that is not a 2xx (its body already read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return api_error(response.status_code, body)


def _object(response: httpx.Response) -> dict[str, Any]:
    return cast("dict[str, Any]", response.json())


def _objects(response: httpx.Response) -> list[dict[str, Any]]:
    return cast("list[dict[str, Any]]", response.json())


def _list_in(key: str) -> Callable[[httpx.Response], list[dict[str, Any]]]:
    """Reads the list under `key` of an object answer (`{"tasks": [...]}`)."""
    return lambda response: cast("list[dict[str, Any]]", response.json()[key])


def _counts(response: httpx.Response) -> dict[str, int]:
    return cast("dict[str, int]", response.json())


def _content(response: httpx.Response) -> bytes:
    return response.content


def _rows(response: httpx.Response) -> list[dict[str, Any]]:
    """A CSV task's row outcomes, from the task: `result.rows`, each `{"row", "status",
    "message"}` (rows numbered from 1 after the header); empty until a bot reports one."""
    result = response.json().get("result")
    rows = result.get("rows") if isinstance(result, dict) else None
    return cast("list[dict[str, Any]]", rows) if isinstance(rows, list) else []


def _path(*parts: str) -> str:
    """A path under /api/v1 with each variable part escaped (an id cannot reach another route)."""
    return "/".join(quote(str(part), safe="") for part in parts)


def _params(**values: object) -> dict[str, str]:
    """Query parameters: absent ones left out, lists comma separated, dates as ISO 8601."""
    params: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (date, datetime)):
            params[name] = value.isoformat()
        elif isinstance(value, str) or not isinstance(value, Iterable):
            params[name] = str(value)
        else:
            params[name] = ",".join(str(item) for item in value)
    return params


def _csv_bytes(csv: Csv) -> bytes:
    """The CSV's bytes: `bytes` as they are, a `str` with a line break as UTF-8 text, any other
    `str` or path-like as a file to read."""
    if isinstance(csv, bytes):
        return csv
    if isinstance(csv, str) and ("\n" in csv or "\r" in csv):
        return csv.encode("utf-8")
    return Path(csv).read_bytes()


def _task_json(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task's JSON body: an `attachment` given as bytes is base64 encoded, a `not_before`
    given as a datetime written as RFC 3339 (give it a time zone)."""
    body = dict(task)
    attachment = body.get("attachment")
    if isinstance(attachment, (bytes, bytearray)):
        body["attachment"] = base64.b64encode(attachment).decode("ascii")
    not_before = body.get("not_before")
    if isinstance(not_before, datetime):
        body["not_before"] = not_before.isoformat()
    return body


def _submit(
    system: str,
    attachment: bytes | None,
    payload: Mapping[str, Any] | None,
    description: str,
    priority: int | None,
    max_attempts: int | None,
    not_before: datetime | str | None,
    fields: Mapping[str, Any],
) -> _Call[dict[str, Any]]:
    # JSON with the CSV in base64 rather than multipart: the body is the same one
    # `POST /tasks/bulk` takes for each task (one encoder for both, `_task_json`), values keep
    # their JSON types (a payload stays an object, a priority a number, where a form sends
    # text), and every field the API takes is reachable through `**fields`, where the form has
    # a fixed list. The cost, a third more bytes on the wire, is within what the API allows:
    # its body limit is the attachment limit in base64.
    task: dict[str, Any] = {"system": system, "description": description}
    optional = {
        "attachment": attachment,
        "payload": payload,
        "priority": priority,
        "max_attempts": max_attempts,
        "not_before": not_before,
    }
    task.update({name: value for name, value in optional.items() if value is not None})
    task.update(fields)
    return _Call("POST", "tasks", _object, body=_task_json(task))


def _submit_bulk(tasks: Sequence[Mapping[str, Any]]) -> _Call[list[dict[str, Any]]]:
    return _Call(
        "POST", _path("tasks", "bulk"), _list_in("tasks"), body={"tasks": [_task_json(t) for t in tasks]}
    )


def _page(
    path: str, filters: Mapping[str, object], page_size: int, cursor: str | None
) -> _Call[dict[str, Any]]:
    return _Call("GET", path, _object, params=_params(**filters, limit=page_size, cursor=cursor))


def _get(path: str) -> _Call[dict[str, Any]]:
    return _Call("GET", path, _object)


def _register_system(
    name: str, input: Mapping[str, Any] | None, description: str, defaults: Mapping[str, Any] | None
) -> _Call[dict[str, Any]]:
    body: dict[str, Any] = {"name": name, "description": description}
    if input is not None:
        body["input"] = dict(input)
    if defaults is not None:
        body["defaults"] = dict(defaults)
    return _Call("POST", "systems", _object, body=body)


def _report(
    from_: date | str | None, to: date | str | None, params: Mapping[str, Any]
) -> _Call[dict[str, Any]]:
    return _Call(
        "GET", _path("reports", "attendance"), _object, params=_params(**{"from": from_, "to": to, **params})
    )


def _settings(base_url: str, token: str | None) -> tuple[str, dict[str, str]]:
    """The httpx base URL (the API's root, `/api/v1/`) and the headers of every request."""
    root = base_url.rstrip("/")
    if not root.endswith(_PREFIX):
        root += _PREFIX
    headers = {"accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return root + "/", headers


# --- wait(): the event stream, and what both clients do with it ----------------------------


@dataclass(frozen=True)
class _Event:
    name: str
    data: str


class _SseParser:
    """Server-sent events from their lines (the `text/event-stream` format): `event:` names
    the event, `data:` lines are joined, a blank line dispatches, `:` starts a comment."""

    def __init__(self) -> None:
        self._name = ""
        self._data: list[str] = []

    def feed(self, line: str) -> _Event | None:
        if not line:
            event = _Event(self._name or "message", "\n".join(self._data)) if self._data else None
            self._name, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None


class _Waiting:
    """The state of one `wait()`: its deadline, the statuses it waits for, the task seen last."""

    def __init__(self, task_id: str, timeout: float, statuses: Iterable[str]) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.statuses = tuple(status.upper() for status in statuses)
        self.deadline = time.monotonic() + timeout
        self.last: dict[str, Any] | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def seen(self, task: dict[str, Any]) -> bool:
        """Records the task read; whether it is in one of the statuses awaited."""
        self.last = task
        return str(task.get("status", "")).upper() in self.statuses

    def concerns(self, event: _Event) -> bool:
        """Whether the event may mean the task changed: a `change` naming it, or a `resync`
        (the server dropped notices for a slow reader)."""
        if event.name == "resync":
            return True
        if event.name != "change":
            return False
        try:
            change = json.loads(event.data)
        except ValueError:
            return False
        return (
            isinstance(change, dict)
            and change.get("type") == "task"
            and str(change.get("id", "")).lower() == self.task_id.lower()
        )

    def stream_timeout(self, timeout: float) -> httpx.Timeout:
        """Timeouts for opening the stream, bounded by the time left; reading it may be silent
        up to `_STREAM_IDLE` (the server's comments come every 15 s)."""
        left = max(self.remaining(), 0.001)
        return httpx.Timeout(min(timeout, left), read=min(_STREAM_IDLE, left))

    def task(self) -> dict[str, Any]:
        assert self.last is not None
        return self.last

    def expired(self) -> TimeoutExpired:
        status = self.last.get("status") if self.last else None
        return TimeoutExpired(
            f"task {self.task_id} is not {' or '.join(self.statuses)} after {self.timeout:g}s"
            f" (last seen: {status or 'not read'})",
            last=self.last,
        )


def _is_event_stream(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return response.status_code == 200 and content_type.startswith("text/event-stream")


class _LineReader:
    """Reads a streaming response's lines in a thread of its own, so that the caller waits for
    the next line with a deadline of its own (httpx's read timeout is fixed per response). On
    exit the socket is shut down, which wakes the reading thread at once."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._lines: queue.Queue[str | Exception | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, name="botline-events", daemon=True)

    def _pump(self) -> None:
        try:
            for line in self._response.iter_lines():
                self._lines.put(line)
            self._lines.put(None)
        except Exception as error:  # handed to the caller, which decides
            self._lines.put(error)

    def __enter__(self) -> _LineReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=1.0)

    def events(self, remaining: Callable[[], float]) -> Iterator[_Event]:
        """The stream's events until it ends (returns), breaks (raises the httpx error) or the
        time left runs out (returns)."""
        parser = _SseParser()
        while (left := remaining()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                return
            if line is None:
                return
            if isinstance(line, Exception):
                raise line
            event = parser.feed(line)
            if event is not None:
                yield event


# --- The clients ----------------------------------------------------------------------------


class Client:
    """A blocking client of the Botline API.

    `base_url` is the orchestrator's root (`http://host:8080`; the routes are under `/api/v1`),
    `token` an API token sent as `Authorization: Bearer`, `timeout` the seconds any request may
    take (httpx's connect/read/write/pool timeout), `transport` an httpx transport to use
    instead of the network (tests, proxies). Use it as a context manager, or `close()` it.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root, headers = _settings(base_url, token)
        self._timeout = timeout
        self._http = httpx.Client(base_url=root, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, call: _Call[T]) -> T:
        response = self._http.request(call.method, call.path, params=call.params, json=call.body)
        return call.answer(response)

    def _all(self, path: str, filters: Mapping[str, object], page_size: int) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = self._send(_page(path, filters, page_size, cursor))
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # Tasks

    def submit(
        self,
        system: str,
        *,
        description: str,
        csv: Csv | None = None,
        payload: Mapping[str, Any] | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        not_before: datetime | str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Submits a task (`POST /api/v1/tasks`); returns it, WAITING.

        `csv` is the attachment: a file's path, its bytes, or its text (a `str` with a line
        break is text, any other `str` a path). `payload` is a JSON object for systems without
        a CSV. `description` says what it is for (1 to 2,000 characters; an empty one is a
        `ValidationError` on `description`). `not_before` takes a timezone-aware datetime or an
        RFC 3339 text. `**fields` are sent as they are (`max_run_seconds=600`).
        """
        attachment = None if csv is None else _csv_bytes(csv)
        return self._send(
            _submit(system, attachment, payload, description, priority, max_attempts, not_before, fields)
        )

    def submit_bulk(self, tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Submits 1 to 1,000 tasks at once, all or none (`POST /api/v1/tasks/bulk`); returns
        them in the order given. Each dict is a task's JSON body (`system`, `description`,
        `payload`, `attachment`, …); an `attachment` given as bytes is base64 encoded. A bad
        task refuses them all: `ValidationError` with `field` such as `tasks[3].payload`."""
        return self._send(_submit_bulk(tasks))

    def get_task(self, task_id: str) -> dict[str, Any]:
        """One task (`GET /api/v1/tasks/{id}`)."""
        return self._send(_get(_path("tasks", task_id)))

    def tasks(
        self,
        status: Filter = None,
        system: Filter = None,
        bot_id: str | None = None,
        order: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every task matching the filters (`GET /api/v1/tasks`), page after page following
        `next_cursor`; `status` and `system` take one value or several, `order` is `newest`
        (the API's default) or `oldest`. Lazy: each page is read when the iteration needs it."""
        return self._all(
            "tasks", {"status": status, "system": system, "bot_id": bot_id, "order": order}, page_size
        )

    def tasks_page(
        self,
        status: Filter = None,
        system: Filter = None,
        bot_id: str | None = None,
        order: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of tasks (`GET /api/v1/tasks`): `{"items", "total", "limit", "offset",
        "next_cursor"}`; pass its `next_cursor` as `cursor` for the next page."""
        filters = {"status": status, "system": system, "bot_id": bot_id, "order": order}
        return self._send(_page("tasks", filters, page_size, cursor))

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancels a task that has not ended (`POST /api/v1/tasks/{id}/cancel`); a bot running it
        is told to stop. Returns the task."""
        return self._send(_Call("POST", _path("tasks", task_id, "cancel"), _object))

    def retry(self, task_id: str) -> dict[str, Any]:
        """Sends a FAILED or CANCELLED task back to WAITING with a fresh budget of attempts
        (`POST /api/v1/tasks/{id}/retry`). Returns the task."""
        return self._send(_Call("POST", _path("tasks", task_id, "retry"), _object))

    def task_rows(self, task_id: str) -> list[dict[str, Any]]:
        """A CSV task's row outcomes, `{"row", "status", "message"}` by row number (the task's
        `result.rows`, read with `GET /api/v1/tasks/{id}`); empty until a bot reports a row."""
        return self._send(_Call("GET", _path("tasks", task_id), _rows))

    def task_history(self, task_id: str) -> list[dict[str, Any]]:
        """A task's history, oldest first (`GET /api/v1/tasks/{id}/events`): `kind`, `at`,
        `attempt`, `bot_id`, `detail`."""
        return self._send(_Call("GET", _path("tasks", task_id, "events"), _objects))

    def task_attachment(self, task_id: str) -> bytes:
        """A task's CSV, decoded (`GET /api/v1/tasks/{id}/attachment`); `NotFound` without one."""
        return self._send(_Call("GET", _path("tasks", task_id, "attachment"), _content))

    def task_stats(self) -> dict[str, int]:
        """How many tasks are in each status (`GET /api/v1/tasks/stats`)."""
        return self._send(_Call("GET", _path("tasks", "stats"), _counts))

    def wait(
        self, task_id: str, timeout: float = 300.0, statuses: Iterable[str] = FINAL_STATUSES
    ) -> dict[str, Any]:
        """Returns the task once its status is one of `statuses` (by default, once it ended).

        Follows the API's change stream (`GET /api/v1/events`) and reads the task
        (`GET /api/v1/tasks/{id}`) once the stream is open, then on every change of it. A
        stream that drops is opened again; one that cannot be opened at all (a proxy that
        refuses it) is replaced by reading the task every 0.5 s. Raises
        `botline.errors.TimeoutExpired`, its `last` the task as last read, after `timeout`
        seconds; API errors reading the task (`NotFound`, …) are raised as they come.
        """
        waiting = _Waiting(task_id, timeout, statuses)
        opened = False
        while waiting.remaining() > 0:
            try:
                with self._http.stream(
                    "GET", "events", headers=_SSE_HEADERS, timeout=waiting.stream_timeout(self._timeout)
                ) as response:
                    if not _is_event_stream(response):
                        break
                    opened = True
                    if waiting.seen(self.get_task(task_id)):
                        return waiting.task()
                    with _LineReader(response) as reader:
                        for event in reader.events(waiting.remaining):
                            if waiting.concerns(event) and waiting.seen(self.get_task(task_id)):
                                return waiting.task()
            except httpx.TransportError:
                if not opened:
                    break
                # The stream broke, or could not be opened again: a pause before reconnecting.
                time.sleep(min(_POLL_INTERVAL, waiting.remaining()))
        else:
            raise waiting.expired()
        while not waiting.seen(self.get_task(task_id)):
            if waiting.remaining() <= 0:
                raise waiting.expired()
            time.sleep(min(_POLL_INTERVAL, waiting.remaining()))
        return waiting.task()

    # Bots, systems, incidents, reports

    def bots(
        self,
        status: Filter = None,
        system: Filter = None,
        ip_address: str | None = None,
        name: str | None = None,
        order: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every bot matching the filters (`GET /api/v1/bots`), page after page."""
        filters = {"status": status, "system": system, "ip_address": ip_address, "name": name, "order": order}
        return self._all("bots", filters, page_size)

    def get_bot(self, bot_id: str) -> dict[str, Any]:
        """One bot (`GET /api/v1/bots/{id}`)."""
        return self._send(_get(_path("bots", bot_id)))

    def systems(self) -> list[dict[str, Any]]:
        """Every registered system, by name (`GET /api/v1/systems`, its `systems` list)."""
        return self._send(_Call("GET", "systems", _list_in("systems")))

    def get_system(self, name: str) -> dict[str, Any]:
        """One system, by name in any case (`GET /api/v1/systems/{name}`)."""
        return self._send(_get(_path("systems", name)))

    def register_system(
        self,
        name: str,
        input: Mapping[str, Any] | None = None,
        description: str = "",
        defaults: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Registers a system (`POST /api/v1/systems`; the admin token): `input` is its contract
        (`{"kind": "csv", "columns": [...]}`, `{"kind": "json", "schema": {...}}`, or the API's
        default `{"kind": "none"}`), `defaults` its tasks' (`max_attempts`, `priority`, …).
        A name taken is a `Conflict`."""
        return self._send(_register_system(name, input, description, defaults))

    def incidents(
        self,
        status: Filter = None,
        action_id: str | None = None,
        order: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every incident matching the filters (`GET /api/v1/incidents`), page after page."""
        return self._all("incidents", {"status": status, "action_id": action_id, "order": order}, page_size)

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with the communications it sent (`GET /api/v1/incidents/{id}`)."""
        return self._send(_get(_path("incidents", incident_id)))

    def attendance_report(
        self, *, from_: date | str | None = None, to: date | str | None = None, **params: Any
    ) -> dict[str, Any]:
        """The attendance report over the days `from_` to `to`, included, YYYY-MM-DD or dates,
        each optional (`GET /api/v1/reports/attendance?from=…&to=…`); `**params` are sent as
        they are."""
        return self._send(_report(from_, to, params))


class AsyncClient:
    """The asyncio client: `Client`'s methods as coroutines (and async iterators for the
    lists), on `httpx.AsyncClient`. Use it as an async context manager, or `await close()`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        root, headers = _settings(base_url, token)
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=root, headers=headers, timeout=timeout, transport=transport)

    async def close(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def _send(self, call: _Call[T]) -> T:
        response = await self._http.request(call.method, call.path, params=call.params, json=call.body)
        return call.answer(response)

    async def _all(
        self, path: str, filters: Mapping[str, object], page_size: int
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = await self._send(_page(path, filters, page_size, cursor))
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # Tasks

    async def submit(
        self,
        system: str,
        *,
        description: str,
        csv: Csv | None = None,
        payload: Mapping[str, Any] | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        not_before: datetime | str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """`Client.submit`: submits a task (`POST /api/v1/tasks`); a CSV file is read in a
        worker thread."""
        attachment = None if csv is None else await asyncio.to_thread(_csv_bytes, csv)
        return await self._send(
            _submit(system, attachment, payload, description, priority, max_attempts, not_before, fields)
        )

    async def submit_bulk(self, tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`Client.submit_bulk`: 1 to 1,000 tasks, all or none (`POST /api/v1/tasks/bulk`)."""
        return await self._send(_submit_bulk(tasks))

    async def get_task(self, task_id: str) -> dict[str, Any]:
        """One task (`GET /api/v1/tasks/{id}`)."""
        return await self._send(_get(_path("tasks", task_id)))

    def tasks(
        self,
        status: Filter = None,
        system: Filter = None,
        bot_id: str | None = None,
        order: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """`Client.tasks`, as an async iterator: every matching task (`GET /api/v1/tasks`),
        page after page."""
        return self._all(
            "tasks", {"status": status, "system": system, "bot_id": bot_id, "order": order}, page_size
        )

    async def tasks_page(
        self,
        status: Filter = None,
        system: Filter = None,
        bot_id: str | None = None,
        order: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of tasks (`GET /api/v1/tasks`); its `next_cursor` is the next's `cursor`."""
        filters = {"status": status, "system": system, "bot_id": bot_id, "order": order}
        return await self._send(_page("tasks", filters, page_size, cursor))

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancels a task (`POST /api/v1/tasks/{id}/cancel`)."""
        return await self._send(_Call("POST", _path("tasks", task_id, "cancel"), _object))

    async def retry(self, task_id: str) -> dict[str, Any]:
        """Retries a FAILED or CANCELLED task (`POST /api/v1/tasks/{id}/retry`)."""
        return await self._send(_Call("POST", _path("tasks", task_id, "retry"), _object))

    async def task_rows(self, task_id: str) -> list[dict[str, Any]]:
        """A CSV task's row outcomes (`result.rows` of `GET /api/v1/tasks/{id}`)."""
        return await self._send(_Call("GET", _path("tasks", task_id), _rows))

    async def task_history(self, task_id: str) -> list[dict[str, Any]]:
        """A task's history, oldest first (`GET /api/v1/tasks/{id}/events`)."""
        return await self._send(_Call("GET", _path("tasks", task_id, "events"), _objects))

    async def task_attachment(self, task_id: str) -> bytes:
        """A task's CSV, decoded (`GET /api/v1/tasks/{id}/attachment`)."""
        return await self._send(_Call("GET", _path("tasks", task_id, "attachment"), _content))

    async def task_stats(self) -> dict[str, int]:
        """How many tasks are in each status (`GET /api/v1/tasks/stats`)."""
        return await self._send(_Call("GET", _path("tasks", "stats"), _counts))

    async def wait(
        self, task_id: str, timeout: float = 300.0, statuses: Iterable[str] = FINAL_STATUSES
    ) -> dict[str, Any]:
        """`Client.wait`: the task once its status is one of `statuses`, following
        `GET /api/v1/events`; `TimeoutExpired` (with `last`) after `timeout` seconds."""
        waiting = _Waiting(task_id, timeout, statuses)
        try:
            return await asyncio.wait_for(self._wait(waiting), timeout=waiting.remaining())
        except asyncio.TimeoutError:
            raise waiting.expired() from None

    async def _wait(self, waiting: _Waiting) -> dict[str, Any]:
        opened = False
        while True:
            try:
                async with self._http.stream(
                    "GET", "events", headers=_SSE_HEADERS, timeout=waiting.stream_timeout(self._timeout)
                ) as response:
                    if not _is_event_stream(response):
                        break
                    opened = True
                    if waiting.seen(await self.get_task(waiting.task_id)):
                        return waiting.task()
                    parser = _SseParser()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if (
                            event
                            and waiting.concerns(event)
                            and waiting.seen(await self.get_task(waiting.task_id))
                        ):
                            return waiting.task()
            except httpx.TransportError:
                if not opened:
                    break
                await asyncio.sleep(_POLL_INTERVAL)
        while True:  # the stream cannot be opened: read the task every 0.5 s
            if waiting.seen(await self.get_task(waiting.task_id)):
                return waiting.task()
            await asyncio.sleep(_POLL_INTERVAL)

    # Bots, systems, incidents, reports

    def bots(
        self,
        status: Filter = None,
        system: Filter = None,
        ip_address: str | None = None,
        name: str | None = None,
        order: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every bot matching the filters (`GET /api/v1/bots`), as an async iterator."""
        filters = {"status": status, "system": system, "ip_address": ip_address, "name": name, "order": order}
        return self._all("bots", filters, page_size)

    async def get_bot(self, bot_id: str) -> dict[str, Any]:
        """One bot (`GET /api/v1/bots/{id}`)."""
        return await self._send(_get(_path("bots", bot_id)))

    async def systems(self) -> list[dict[str, Any]]:
        """Every registered system (`GET /api/v1/systems`)."""
        return await self._send(_Call("GET", "systems", _list_in("systems")))

    async def get_system(self, name: str) -> dict[str, Any]:
        """One system (`GET /api/v1/systems/{name}`)."""
        return await self._send(_get(_path("systems", name)))

    async def register_system(
        self,
        name: str,
        input: Mapping[str, Any] | None = None,
        description: str = "",
        defaults: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Registers a system (`POST /api/v1/systems`); see `Client.register_system`."""
        return await self._send(_register_system(name, input, description, defaults))

    def incidents(
        self,
        status: Filter = None,
        action_id: str | None = None,
        order: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every incident matching the filters (`GET /api/v1/incidents`), as an async iterator."""
        return self._all("incidents", {"status": status, "action_id": action_id, "order": order}, page_size)

    async def get_incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with its communications (`GET /api/v1/incidents/{id}`)."""
        return await self._send(_get(_path("incidents", incident_id)))

    async def attendance_report(
        self, *, from_: date | str | None = None, to: date | str | None = None, **params: Any
    ) -> dict[str, Any]:
        """The attendance report (`GET /api/v1/reports/attendance`); see
        `Client.attendance_report`."""
        return await self._send(_report(from_, to, params))
