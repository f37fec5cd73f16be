"""Sends COUNT no-op tasks; with --wait, waits for every result (the rpc:// backend)."""
import sys
import time

from botbench import noop

count, wait = int(sys.argv[1]), len(sys.argv) > 2 and sys.argv[2] == "--wait"
results = [noop.delay(time.time()) for _ in range(count)]
if wait:
    for result in results:
        result.get(timeout=600)
