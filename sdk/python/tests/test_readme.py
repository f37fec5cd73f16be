"""The README's ten-line bot and five-line submitter, taken from the README as written, run against
a real Botline: what a new Python user copies must work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT, until


def readme_examples() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    bot = re.search(r"save this as `payroll_bot.py`:\n\n```python\n(.*?)```", text, re.S)
    submitter = re.search(r"<<'PY'\n(.*?)\nPY\n", text, re.S)
    assert bot and submitter, "the README's Python bot and submitter are not where this test looks"
    return bot.group(1), submitter.group(1)


def test_the_readmes_bot_and_submitter_work_as_written(make_world: Any, tmp_path: Path) -> None:
    bot_code, submitter = readme_examples()
    world = make_world()
    (tmp_path / "payroll_bot.py").write_text(bot_code)
    env = {**os.environ, "BOTLINE_AMQP_URL": world.amqp_url}
    log = (tmp_path / "bot.log").open("w")
    bot = subprocess.Popen(
        [sys.executable, "-m", "botline.bot", "--name", "py-1", "payroll_bot"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        until("the README's bot to come online", lambda: world.find_bot("py-1"), 20)
        submitted = subprocess.run(
            [sys.executable, "-"],
            input=submitter.replace("http://127.0.0.1:8080", world.api),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.strip() == "COMPLETE", submitted.stdout
        (task,) = world.get("/tasks", params={"system": "PAYROLL"})["items"]
        assert task["result"]["rows"] == [{"row": 1, "status": "DONE", "message": "paid ana"}], task
    finally:
        bot.terminate()
        try:
            bot.wait(timeout=20)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait(timeout=20)
        log.close()
    output = (tmp_path / "bot.log").read_text()
    assert bot.returncode == 0, f"the bot did not stop cleanly on SIGTERM:\n{output}"
