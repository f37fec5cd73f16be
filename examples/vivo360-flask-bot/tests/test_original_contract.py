"""A bot written to the original Vivo360 contract, driven against the real orchestrator: it works
unchanged, and every way it can misbehave ends in a bounded, explained state.

The orchestrator runs with --max-unanswered-offers 3 and short timings (conftest.TIMINGS).
"""

from __future__ import annotations

import base64
import time

import requests

from conftest import free_port, until

USERS = (
    "name,email,login,profile\n"
    "Ana Lima,ana@example.com,ana.lima,agent\n"
    "Bruno Dias,bruno@example.com,bruno.dias,supervisor\n"
    "Carla Reis,not-an-email,carla.reis,agent\n"
)


def vivo360_task(world, description: str = "March hires", csv: str = USERS) -> dict:
    # Spelled as the original contract spells it: "Vivo360".
    body = {"description": description, "system": "Vivo360", "attachment": base64.b64encode(csv.encode()).decode()}
    answer = requests.post(world.url("/tasks"), json=body, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_bot_of_the_original_contract_completes_a_vivo360_task(make_world, database):
    world = make_world(database)
    world.bot("seed-1")
    task = vivo360_task(world)
    done = world.wait_task(task["id"], {"COMPLETE", "FAILED"})
    assert done["status"] == "COMPLETE", done
    rows = {row["row"]: row["status"] for row in done["result"]["rows"]}
    assert rows == {1: "CREATED", 2: "CREATED", 3: "REJECTED"}, done["result"]
    assert done["progress"] == {"done": 3, "total": 3}
    assert (done["attempt"], done["failures"], done["unanswered_offers"]) == (1, 0, 0)
    kinds = world.kinds(task["id"])
    assert kinds == ["created", "assigned", "accepted", "completed"], kinds
    # Each user was submitted to the portal exactly once.
    report = requests.get(f"{world.portal}/_control/users", timeout=10).json()
    assert sorted(user["login"] for user in report["users"]) == ["ana.lima", "bruno.dias"]
    assert report["submissions"] == {"ana.lima": 1, "bruno.dias": 1, "carla.reis": 1}, report
    until("the bot to be AVAILABLE again", lambda: world.find_bot("seed-1")["status"] == "AVAILABLE", 10)
    bot = world.find_bot("seed-1")
    assert bot["current_task_id"] is None and bot["delivery"] == "http"


def test_the_offer_carries_the_task_as_the_crud_api_shows_it(make_world):
    """The POST to the bot is a superset: the CRUD view plus the offer's fields."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import json
    import threading

    world = make_world()
    received: list[dict] = []

    class Bot(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the standard library's name)
            length = int(self.headers["content-length"])
            received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Bot)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        answer = requests.post(world.url("/bots"), json={"name": "listener", "ip_address": "127.0.0.1", "http_port": port}, timeout=10)
        assert answer.status_code == 201, answer.text
        task = vivo360_task(world)
        until("the offer to reach the bot", lambda: received, 20)
        offer = received[0]
        assert offer["path"] == "/tasks"
        body = offer["body"]
        for field in ("id", "description", "system", "status", "attachment", "created_at"):
            assert field in body, f"{field} missing from {sorted(body)}"
        for field in ("task_id", "attempt", "offer_expires_at", "resume_after_row"):
            assert field in body, f"{field} missing from {sorted(body)}"
        assert body["id"] == body["task_id"] == task["id"]
        assert base64.b64decode(body["attachment"]).decode() == USERS
        assert body["system"] == "VIVO360" and body["type"] == "task.assign"
        # A bot may send the offer back as it got it, with a new status: a plain write.
        running = requests.put(world.url(f"/tasks/{task['id']}"), json=dict(body, status="RUNNING"), timeout=10)
        assert running.status_code == 200 and running.json()["status"] == "RUNNING", running.text
        rows = [{"row": n, "status": "DONE", "message": "ok"} for n in (1, 2, 3)]
        done = requests.put(world.url(f"/tasks/{task['id']}"), json=dict(body, status="COMPLETE", result={"rows": rows}), timeout=10)
        assert done.status_code == 200 and done.json()["progress"] == {"done": 3, "total": 3}, done.text
    finally:
        server.shutdown()


def test_a_bot_answering_500_is_offered_a_bounded_number_of_times(make_world, database):
    world = make_world(database)
    world.bot("broken", fault="answer-500")
    task = vivo360_task(world)
    failed = world.wait_task(task["id"], {"FAILED", "COMPLETE"}, 60)
    assert failed["status"] == "FAILED"
    assert "offered 3 times without an answer" in failed["error"], failed["error"]
    assert failed["unanswered_offers"] == 3 and failed["failures"] == 0
    assert failed["attempt"] <= failed["unanswered_offers"]
    # Bounded: nothing more happens to it.
    count = len(world.history(task["id"]))
    time.sleep(3)
    assert len(world.history(task["id"])) == count
    assert world.kinds(task["id"]).count("assigned") == 3
    assert world.find_bot("broken")["current_task_id"] is None


def test_a_bot_that_takes_the_task_and_never_reports_is_bounded(make_world):
    world = make_world()
    world.bot("silent", fault="silent")
    task = vivo360_task(world)
    failed = world.wait_task(task["id"], {"FAILED", "COMPLETE"}, 90)
    assert failed["status"] == "FAILED" and "without an answer" in failed["error"], failed
    kinds = world.kinds(task["id"])
    assert kinds.count("assigned") == 3 and kinds.count("offer_expired") == 3, kinds
    bot = world.find_bot("silent")
    assert bot["unanswered_offers"] == 3 and bot["offers_paused_until"] is not None, bot
    assert requests.get(f"{world.portal}/_control/users", timeout=10).json()["users"] == []


def test_a_bot_that_is_not_listening_yet_gets_its_task_once_it_listens(make_world):
    world = make_world()
    port = free_port()
    # register(), and no app.run() yet.
    answer = requests.post(world.url("/bots"), json={"name": "late", "ip_address": "127.0.0.1", "http_port": port}, timeout=10)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "UNAVAILABLE"
    task = vivo360_task(world)
    time.sleep(2)
    waiting = world.get(f"/tasks/{task['id']}")
    assert waiting["status"] == "WAITING" and waiting["attempt"] == 0, "nothing offered to a bot whose address does not answer"
    # Now it listens (the same bot: bot.py finds its registration by name).
    world.bot("late", port=port)
    done = world.wait_task(task["id"], {"COMPLETE", "FAILED"})
    assert done["status"] == "COMPLETE", done


def test_a_bot_that_dies_after_accepting_loses_nothing(make_world, database):
    world = make_world(database)
    world.bot("doomed", fault="die-after-running")
    task = vivo360_task(world)
    until("the doomed bot to accept", lambda: "accepted" in world.kinds(task["id"]), 30)
    world.bot("healthy")
    done = world.wait_task(task["id"], {"COMPLETE", "FAILED"}, 60)
    assert done["status"] == "COMPLETE", done
    assert done["failures"] == 1, "the lost run counts once"
    assert "bot_lost" in world.kinds(task["id"])
    report = requests.get(f"{world.portal}/_control/users", timeout=10).json()
    assert report["submissions"] == {"ana.lima": 1, "bruno.dias": 1, "carla.reis": 1}
    assert world.find_bot("doomed")["status"] == "UNAVAILABLE"


def test_no_write_reports_on_another_bots_task_or_frees_a_busy_bot(make_world):
    world = make_world()
    # A slow portal keeps the task RUNNING while the test writes.
    requests.put(f"{world.portal}/_control", json={"delay_ms": 400}, timeout=10).raise_for_status()
    world.bot("worker")
    other = requests.post(world.url("/bots"), json={"name": "other", "ip_address": "127.0.0.2"}, timeout=10).json()
    task = vivo360_task(world)
    until("the task to run", lambda: world.get(f"/tasks/{task['id']}")["status"] == "RUNNING", 30)
    worker = world.find_bot("worker")
    before = len(world.history(task["id"]))

    # Another bot's report is refused and changes nothing.
    stolen = requests.put(world.url(f"/tasks/{task['id']}"), json={"status": "COMPLETE", "bot_id": other["id"]}, timeout=10)
    assert stolen.status_code == 409 and stolen.json()["error"]["code"] == "task_held_by_another_bot", stolen.text
    stale = requests.patch(world.url(f"/tasks/{task['id']}"), json={"status": "COMPLETE", "attempt": 7}, timeout=10)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_attempt", stale.text

    # A bot holding a running task cannot be made AVAILABLE, by PATCH or by PUT of what was read.
    freed = requests.patch(world.url(f"/bots/{worker['id']}"), json={"status": "AVAILABLE"}, timeout=10)
    assert freed.status_code == 409 and task["id"] in freed.json()["error"]["message"], freed.text
    whole = dict(worker, status="AVAILABLE", current_task_id=None)
    assert requests.put(world.url(f"/bots/{worker['id']}"), json=whole, timeout=10).status_code == 409
    # The same object with its status as it is, is accepted (nothing read-only changed).
    same = requests.put(world.url(f"/bots/{worker['id']}"), json=dict(worker, current_task_id=None), timeout=10)
    assert same.status_code == 200 and same.json()["current_task_id"] == task["id"], same.text

    assert world.get(f"/tasks/{task['id']}")["status"] == "RUNNING"
    assert len(world.history(task["id"])) == before
    done = world.wait_task(task["id"], {"COMPLETE", "FAILED"}, 60)
    assert done["status"] == "COMPLETE" and done["bot_id"] == worker["id"]


def test_a_paused_bot_is_offered_nothing_until_resumed(make_world):
    world = make_world()
    world.bot("pausable")
    bot = world.find_bot("pausable")
    until("the bot to be AVAILABLE", lambda: world.find_bot("pausable")["status"] == "AVAILABLE", 20)
    paused = requests.patch(world.url(f"/bots/{bot['id']}"), json={"paused": True}, timeout=10)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    task = vivo360_task(world)
    time.sleep(2)
    assert world.get(f"/tasks/{task['id']}")["status"] == "WAITING"
    # The bot's own status write does not undo the pause, nor a PUT of the bot read before it.
    requests.put(world.url(f"/bots/{bot['id']}"), json={"status": "AVAILABLE"}, timeout=10)
    stale = dict(bot, paused=False, current_task_id=None)
    assert requests.put(world.url(f"/bots/{bot['id']}"), json=stale, timeout=10).json()["paused"] is True
    time.sleep(1.5)
    assert world.get(f"/tasks/{task['id']}")["status"] == "WAITING"
    requests.patch(world.url(f"/bots/{bot['id']}"), json={"paused": False}, timeout=10).raise_for_status()
    assert world.wait_task(task["id"], {"COMPLETE", "FAILED"})["status"] == "COMPLETE"


def test_a_late_report_after_a_cancel_changes_nothing(make_world):
    world = make_world()
    requests.put(f"{world.portal}/_control", json={"delay_ms": 300}, timeout=10).raise_for_status()
    world.bot("slow")
    task = vivo360_task(world)
    until("the task to run", lambda: world.get(f"/tasks/{task['id']}")["status"] == "RUNNING", 30)
    cancelled = requests.post(world.url(f"/tasks/{task['id']}/cancel"), timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    # The bot finishes its rows and reports COMPLETE: refused, and nothing loops.
    until("the bot to be free", lambda: world.find_bot("slow")["current_task_id"] is None, 20)
    time.sleep(3)
    count = len(world.history(task["id"]))
    late = requests.put(world.url(f"/tasks/{task['id']}"), json={"status": "COMPLETE"}, timeout=10)
    assert late.status_code == 409 and late.json()["error"]["code"] == "task_not_held", late.text
    time.sleep(1.5)
    assert len(world.history(task["id"])) == count
    assert world.get(f"/tasks/{task['id']}")["status"] == "CANCELLED"


def test_a_frontend_on_another_origin_uses_the_crud_api(make_world):
    frontend = "http://127.0.0.1:5173"
    world = make_world(BOTLINE_CORS_ORIGINS=frontend)
    headers = {"Origin": frontend}

    preflight = requests.options(
        world.url("/bots"),
        headers={**headers, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,authorization"},
        timeout=10,
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == frontend
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers

    def call(method: str, path: str, **kwargs):
        answer = requests.request(method, world.url(path), headers=headers, timeout=10, **kwargs)
        assert answer.headers.get("access-control-allow-origin") == frontend, (method, path, answer.headers)
        return answer

    # Every CRUD call a client of the original would make.
    bot = call("POST", "/bots", json={"name": "frontend-bot", "ip_address": "127.0.0.3", "status": "UNAVAILABLE"})
    assert bot.status_code == 201, bot.text
    bot = bot.json()
    assert bot["delivery"] == "http" and bot["http_port"] == 5000 and len(bot["systems"]) >= 1
    assert call("GET", "/bots").status_code == 200
    assert call("GET", f"/bots/{bot['id']}").json()["name"] == "frontend-bot"
    renamed = call("PUT", f"/bots/{bot['id']}", json=dict(bot, name="frontend-bot-2"))
    assert renamed.status_code == 200 and renamed.json()["delivery"] == "http", renamed.text
    task = call("POST", "/tasks", json={"description": "from the frontend", "system": "vivo360", "attachment": base64.b64encode(USERS.encode()).decode()})
    assert task.status_code == 201, task.text
    task = task.json()
    assert call("GET", "/tasks").json()["items"][0]["id"] == task["id"]
    edited = call("PUT", f"/tasks/{task['id']}", json=dict(task, description="edited"))
    assert edited.status_code == 200 and edited.json()["description"] == "edited", edited.text
    assert call("PATCH", f"/tasks/{task['id']}", json={"status": "CANCELLED"}).json()["status"] == "CANCELLED"
    assert call("DELETE", f"/tasks/{task['id']}").status_code == 204
    assert call("DELETE", f"/bots/{bot['id']}").status_code == 204

    # Another origin gets no CORS grant.
    stranger = requests.get(world.url("/bots"), headers={"Origin": "http://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in stranger.headers


def test_no_secret_sent_to_the_api_reaches_its_log(make_world):
    world = make_world()
    secret = "s3cret-token-that-must-not-be-logged"
    requests.get(world.url("/tasks"), params={"access_token": secret}, timeout=10)
    requests.get(world.url("/tasks"), headers={"Authorization": f"Bearer {secret}", "X-Api-Key": secret}, timeout=10)
    requests.post(world.url("/bots"), params={"token": secret}, json={"name": "x", "ip_address": "127.0.0.1"}, timeout=10)
    # The requests are in the log (so the scan reads the right file), their secrets are not.
    until("the requests to be logged", lambda: world.orchestrator.output(None).count("/api/v1/tasks") >= 2, 10)
    log = world.orchestrator.output(None)
    assert secret not in log, "a secret reached the orchestrator's log"


def test_the_dashboard_is_served_with_its_security_headers(make_world):
    world = make_world()
    page = requests.get(f"{world.api}/", timeout=10)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_redirect_from_a_bot_is_not_followed(make_world):
    """A bot (or whatever answers on its address) cannot send the orchestrator's POST elsewhere."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import threading

    world = make_world()
    hits: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    elsewhere = HTTPServer(("127.0.0.1", 0), Elsewhere)
    target = f"http://127.0.0.1:{elsewhere.server_address[1]}/stolen"

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(307)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *args):
            pass

    redirecting = HTTPServer(("127.0.0.1", 0), Redirecting)
    for server in (elsewhere, redirecting):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = redirecting.server_address[1]
        body = {"name": "redirector", "ip_address": "127.0.0.1", "http_port": port, "status": "AVAILABLE"}
        assert requests.post(world.url("/bots"), json=body, timeout=10).status_code == 201
        task = vivo360_task(world)
        until("the offer to be taken back", lambda: "offer_undeliverable" in world.kinds(task["id"]), 20)
        undeliverable = [e for e in world.history(task["id"]) if e["kind"] == "offer_undeliverable"][0]
        assert "HTTP 307" in undeliverable["detail"]["reason"], undeliverable
        assert hits == [], "the POST followed the redirect"
    finally:
        elsewhere.shutdown()
        redirecting.shutdown()


def test_a_report_that_cannot_be_stored_as_sent_is_stored_marked_not_refused(make_world, database):
    """A NUL (PostgreSQL stores none) and a 3 MB message: the report is applied, the task ends."""
    world = make_world(database)
    world.bot("quiet", fault="silent")  # it takes the task; the test reports as it would
    task = vivo360_task(world)
    until("the offer", lambda: world.get(f"/tasks/{task['id']}")["status"] == "ASSIGNED", 20)
    assert requests.put(world.url(f"/tasks/{task['id']}"), json={"status": "RUNNING"}, timeout=10).status_code == 200
    rows = [
        {"row": 1, "status": "CREATED", "message": "success\u0000"},
        {"row": 2, "status": "REJECTED", "message": "x" * 3_000_000},
        {"row": 3, "status": "FAILED", "message": "portal down"},
    ]
    done = requests.put(world.url(f"/tasks/{task['id']}"), json={"status": "COMPLETE", "result": {"rows": rows}}, timeout=30)
    assert done.status_code == 200, done.text[:300]
    stored = {row["row"]: row["message"] for row in done.json()["result"]["rows"]}
    assert stored[1] == "success\ufffd [NUL characters replaced]"
    assert len(stored[2]) < 3_000 and stored[2].endswith("[truncated: 3000000 bytes in all]")
    assert done.json()["status"] == "COMPLETE"
    # An edit is still refused for a NUL: it would be stored as sent.
    edit = requests.put(world.url(f"/tasks/{task['id']}"), json={"description": "bad\u0000"}, timeout=10)
    assert edit.status_code == 422 and edit.json()["error"]["field"] == "description", edit.text
