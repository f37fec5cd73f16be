"""The Celery side of Botline's benchmark: one no-op task on the same RabbitMQ.

Each worker process appends "<sent> <started>" (epoch seconds) per task to a file of its own,
so throughput and enqueue -> start latency come from the tasks themselves, with or without a
result backend.
"""
import os
import time

from celery import Celery

app = Celery("botbench", broker=os.environ["BENCH_BROKER"], backend=os.environ.get("BENCH_BACKEND") or None)
app.conf.update(worker_hijack_root_logger=False, task_ignore_result=not os.environ.get("BENCH_BACKEND"))

_log = None


def _out():
    global _log
    if _log is None:
        _log = open(os.path.join(os.environ["BENCH_OUT"], f"{os.getpid()}.log"), "a", buffering=1)
    return _log


@app.task(name="noop")
def noop(sent):
    _out().write(f"{sent} {time.time()}\n")
    return None
