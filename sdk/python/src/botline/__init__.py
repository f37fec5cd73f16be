"""Botline from Python: submit work with `Client` (or `AsyncClient`), and write bots with `Bot`.

from botline import Client
with Client("http://127.0.0.1:8080", token="…") as botline:
    task = botline.submit("VIVO360", csv="users.csv", description="October hires")
    print(botline.wait(task["id"])["status"])

from botline import Bot, Retryable
bot = Bot()

@bot.automation("PAYROLL")
def pay(task, report):
    for n, row in task.rows():
        report.row(n, "DONE", f"paid {row['employee']}")
"""

from botline.bot import Bot, Report, Task
from botline.client import AsyncClient, Client
from botline.errors import (
    ApiError,
    BadRequest,
    BotlineError,
    Cancelled,
    Conflict,
    Fatal,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Retryable,
    TimeoutExpired,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationError,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Bot",
    "BotlineError",
    "Cancelled",
    "Client",
    "Conflict",
    "Fatal",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Report",
    "Retryable",
    "Task",
    "TimeoutExpired",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationError",
]
__version__ = "0.1.0"
