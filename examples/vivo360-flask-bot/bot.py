"""A Vivo360 bot written to the original proof of concept's contract, and to nothing else.

The original text: a bot has id, name, ip_address and status (AVAILABLE, UNAVAILABLE, BUSY); the
orchestrator POSTs a JSON of the task to be executed to the bot's address on route /tasks; the bot
(Flask) reads the attachment (a CSV in base64), routes by the key ``system``, sends a PUT to the
task and to the bot to update their status (it finds itself by ip), fills the fields, and at the
end sends a request to update the status in the orchestrator.

That is all this bot does. It speaks no AMQP, sends no heartbeat and knows nothing of attempts,
offers or leases: Botline reads its plain writes as the reports they stand for.

    pip install -r requirements.txt
    python bot.py --name seed-1 --port 5000 --api http://127.0.0.1:8080 --portal http://127.0.0.1:8091

``--fault`` makes it misbehave, for Botline's tests of the bot boundary: ``answer-500`` (every
POST /tasks fails), ``silent`` (takes the task and never reports), ``die-after-running`` (reports
RUNNING, then the process dies).
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import logging
import os
import re
import threading

import requests
from flask import Flask, jsonify, request

log = logging.getLogger("seed-bot")

FORM_TOKEN = re.compile(r'name="form_token"\s+value="([^"]+)"')


class Portal:
    """The Vivo360 portal, driven as a person would: log in, open the form, fill each field."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.username = username
        self.password = password

    def log_in(self) -> None:
        answer = self.session.post(
            f"{self.url}/login",
            data={"username": self.username, "password": self.password},
            allow_redirects=False,
            timeout=10,
        )
        if answer.status_code not in (200, 303):
            raise RuntimeError(f"portal login refused: {answer.status_code}")

    def create_user(self, user: dict[str, str]) -> tuple[str, str]:
        """Fills the new-user form field by field and submits it: (row status, message)."""
        form = self.session.get(f"{self.url}/users/new", timeout=10)
        if form.status_code in (401, 403) or "form_token" not in form.text:
            self.log_in()
            form = self.session.get(f"{self.url}/users/new", timeout=10)
        token = FORM_TOKEN.search(form.text)
        if token is None:
            return "FAILED", f"the portal's form did not open ({form.status_code})"
        for field in ("name", "email", "login", "profile"):
            self.session.post(
                f"{self.url}/users/fields/{field}",
                data={"form_token": token.group(1), "value": user.get(field, "")},
                timeout=10,
            )
        done = self.session.post(f"{self.url}/users", data={"form_token": token.group(1)}, timeout=10)
        message = re.sub(r"<[^>]+>", " ", done.text)
        message = " ".join(message.split())[:200]
        if done.status_code == 201:
            return "CREATED", message
        if done.status_code >= 500:
            return "FAILED", message
        return "REJECTED", message


def build_app(args: argparse.Namespace) -> Flask:
    app = Flask(__name__)
    api = args.api.rstrip("/") + "/api/v1"
    portal = Portal(args.portal, args.portal_user, args.portal_password)
    me: dict[str, str] = {}

    def put(path: str, body: dict) -> None:
        answer = requests.put(f"{api}{path}", json=body, timeout=10)
        if answer.status_code >= 400:
            log.warning("PUT %s %s: %s %s", path, body.get("status"), answer.status_code, answer.text)

    def find_myself() -> str:
        # It finds itself by ip (and, on a machine with several bots, by name).
        answer = requests.get(f"{api}/bots", params={"ip_address": args.ip}, timeout=10)
        answer.raise_for_status()
        for bot in answer.json()["items"]:
            if bot["name"] == args.name:
                return bot["id"]
        raise RuntimeError(f"no bot named {args.name} at {args.ip}")

    def create_users(task: dict) -> list[dict]:
        text = base64.b64decode(task["attachment"]).decode("utf-8")
        rows = []
        for number, user in enumerate(csv.DictReader(io.StringIO(text)), start=1):
            status, message = portal.create_user(user)
            rows.append({"row": number, "status": status, "message": message})
        return rows

    systems = {"VIVO360": create_users}

    def run(task: dict) -> None:
        bot_id = me.get("id") or find_myself()
        put(f"/tasks/{task['id']}", {"status": "RUNNING"})
        put(f"/bots/{bot_id}", {"status": "BUSY"})
        if args.fault == "die-after-running":
            log.warning("dying with task %s", task["id"])
            os._exit(3)
        work = systems.get(task["system"].upper())
        if work is None:
            put(f"/tasks/{task['id']}", {"status": "FAILED", "error": f"this bot cannot run {task['system']}"})
        else:
            try:
                rows = work(task)
            except Exception as error:  # the orchestrator hears of it rather than waiting
                put(f"/tasks/{task['id']}", {"status": "FAILED", "error": str(error)})
            else:
                put(f"/tasks/{task['id']}", {"status": "COMPLETE", "result": {"rows": rows}})
        put(f"/bots/{bot_id}", {"status": "AVAILABLE"})

    @app.post("/tasks")
    def receive_task():
        task = request.get_json(force=True)
        if args.fault == "answer-500":
            return jsonify({"error": "broken on purpose"}), 500
        log.info("task %s for %s", task.get("id"), task.get("system"))
        if args.fault != "silent":
            threading.Thread(target=run, args=(task,), daemon=True).start()
        return jsonify({"received": task.get("id")}), 200

    def register() -> None:
        body = {"name": args.name, "ip_address": args.ip, "http_port": args.port}
        answer = requests.post(f"{api}/bots", json=body, timeout=10)
        if answer.status_code == 201:
            me["id"] = answer.json()["id"]
        elif answer.status_code == 409:
            me["id"] = find_myself()
        else:
            raise RuntimeError(f"registration refused: {answer.status_code} {answer.text}")
        log.info("registered as %s (%s)", args.name, me["id"])

    app.config["register"] = register
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument("--name", default=env("BOT_NAME", "seed-1"))
    parser.add_argument("--ip", default=env("BOT_IP", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("BOT_PORT", "5000")))
    parser.add_argument("--api", default=env("BOTLINE_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--portal", default=env("VIVO360_URL", "http://127.0.0.1:8091"))
    parser.add_argument("--portal-user", default=env("VIVO360_USERNAME", "botline"))
    parser.add_argument("--portal-password", default=env("VIVO360_PASSWORD", "botline"))
    parser.add_argument("--fault", choices=["answer-500", "silent", "die-after-running"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = build_app(args)
    app.config["register"]()
    app.run(host=args.ip, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
