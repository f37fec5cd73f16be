"""What can go wrong, as exceptions: the API's errors (each carries the API's code, message and
field) and what an automation raises to end its attempt."""

from __future__ import annotations

from typing import Any


class BotlineError(Exception):
    """Everything this package raises on purpose."""


class ApiError(BotlineError):
    """The API answered with an error: `{"error": {"code", "message", "field"}}`.

    `status` is the HTTP status, `code` the API's error code (`invalid_field`, `not_found`, …),
    `field` the field at fault when there is one (`attachment`, `tasks[3].payload`).
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        where = f" ({field})" if field else ""
        super().__init__(f"{status} {code}: {message}{where}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class BadRequest(ApiError):
    """400: a broken body or a bad parameter."""


class Unauthorized(ApiError):
    """401: no token, or a wrong one."""


class Forbidden(ApiError):
    """403: the token may not do this (a read token writing)."""


class NotFound(ApiError):
    """404: no such task, bot, system or incident."""


class Conflict(ApiError):
    """409: a name taken, a task held by a bot, a system with unfinished tasks."""


class PayloadTooLarge(ApiError):
    """413: the body is over the size limit."""


class UnsupportedMediaType(ApiError):
    """415: the body is not JSON (or multipart, for tasks)."""


class ValidationError(ApiError):
    """422: a field is wrong (unknown, missing, a bad value); `field` names it."""


class Unavailable(ApiError):
    """503: the database (or the broker) does not answer."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    503: Unavailable,
}


def api_error(status: int, body: Any) -> ApiError:
    """The exception for an error answer: its status's class, with the API's code, message and
    field (or what could be read of a body that is not the API's error shape)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", "error"))
        message = str(error.get("message", ""))
        field = error.get("field")
        field = str(field) if field is not None else None
    else:
        code, message, field = "http_error", str(body)[:500] if body else f"HTTP {status}", None
    return _BY_STATUS.get(status, ApiError)(status, code, message, field)


class TimeoutExpired(BotlineError):
    """A wait (for a task to end) ran out of time; `last` is what was seen last."""

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


class Retryable(BotlineError):
    """Raised by an automation: this attempt failed, but another may succeed (a portal that is
    down). The task is offered again while it has attempts left."""


class Fatal(BotlineError):
    """Raised by an automation: this task cannot succeed (bad input); it is not tried again.
    Any exception other than `Retryable` counts the same; this one says it on purpose."""


class Cancelled(BotlineError):
    """Raised inside an automation by `report.row()` and `report.check()` once its task was
    cancelled, or the bot is stopping: let it propagate, the runtime knows what to tell."""
