"""The benchmark's Python bot: NOOP tasks with this repository's `botline` package, as a plain
function (what most automations are: it runs in a thread of its own, like a Selenium script)."""

import time

from botline import Bot, Report, Task

bot = Bot()


@bot.automation("NOOP")
def noop(task: Task, report: Report) -> None:
    milliseconds = (task.payload or {}).get("duration_ms", 0)
    if milliseconds:
        time.sleep(milliseconds / 1000)
