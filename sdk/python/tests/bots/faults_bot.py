"""Automations the fault tests drive: slow CSV rows, failures of either kind, and slow coroutines."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from botline import Bot, Report, Retryable, Task

bot = Bot()
ROW_SECONDS = float(os.environ.get("ROW_SECONDS", "0.1"))


@bot.automation("ROWS")
def rows(task: Task, report: Report) -> dict[str, Any]:
    """Each row takes ROW_SECONDS and is reported DONE with the attempt that did it."""
    done = 0
    for n, _row in task.rows():
        time.sleep(ROW_SECONDS)
        report.row(n, "DONE", f"attempt {task.attempt}")
        # What this bot did, for the tests to read in its log.
        print(f"did {task.id} row {n}", flush=True)
        done += 1
    return {"rows_done_here": done, "resumed_after": task.resume_after_row}


@bot.automation("FLAKY")
def flaky(task: Task, report: Report) -> None:
    """Fails as its payload says: `retryable`, or anything else (fatal)."""
    kind = (task.payload or {}).get("fail")
    report.log(f"failing on purpose: {kind}")
    if kind == "retryable":
        raise Retryable("the portal is down")
    raise KeyError("no such customer")


@bot.automation("NAP")
async def nap(task: Task, report: Report) -> dict[str, Any]:
    """Sleeps the payload's seconds on the event loop: many at once in one bot."""
    seconds = float((task.payload or {}).get("seconds", 0))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@bot.automation("NOOP")
def noop(task: Task, report: Report) -> None:
    """Nothing, at once (the benchmark's work)."""


@bot.automation("BUSY")
def busy(task: Task, report: Report) -> None:
    """Spins the CPU in Python for the payload's seconds, never yielding on purpose."""
    end = time.monotonic() + float((task.payload or {}).get("seconds", 0))
    spins = 0
    while time.monotonic() < end:
        spins += 1
