#!/usr/bin/env python3
"""A Botline automation in Python: creates the users of a VIVO360 CSV in the Vivo360 portal.

It does what the bot agent's built-in VIVO360 automation does, with nothing but the standard
library, to show that an automation is any program (docs/systems.md):

    bot-agent --name py-1 --automation 'VIVO360=python3 examples/automations/vivo360_users.py'

The agent gives it the task on stdin and in BOTLINE_* variables, the CSV in the file
BOTLINE_ATTACHMENT names; it prints one JSON line per row done, which the agent reports as
progress, so a new attempt skips the rows up to BOTLINE_RESUME_AFTER_ROW. Exit 0: done; exit 75:
the portal is down, try again later; any other exit: this input will not work.

Settings (environment): VIVO360_URL (default http://127.0.0.1:8091, the stand-in's port),
VIVO360_USERNAME and VIVO360_PASSWORD (default botline / botline, as the bot agent's).
"""

import csv
import html
import http.cookiejar
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

EX_TEMPFAIL = 75
PORTAL = os.environ.get("VIVO360_URL", "http://127.0.0.1:8091").rstrip("/")
USERNAME = os.environ.get("VIVO360_USERNAME", "botline")
PASSWORD = os.environ.get("VIVO360_PASSWORD", "botline")
FIELDS = ("name", "email", "login", "profile")


class PortalDown(Exception):
    """The portal cannot be reached or says it is unavailable: another attempt may work."""


def emit(**line):
    print(json.dumps(line), flush=True)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def opener():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())


def call(client, path, form=None):
    """(status, body) of a GET, or a form POST when `form` is given."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with client.open(f"{PORTAL}{path}", data=data, timeout=15) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as answer:
        if answer.code == 503:
            raise PortalDown("the portal answered 503") from None
        return answer.code, answer.read().decode()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise PortalDown(f"the portal is unreachable: {error}") from None


def create_user(client, user):
    """('CREATED' | 'REJECTED' | 'FAILED', message) for one user."""
    status, page = call(client, "/users/new")
    token = re.search(r'name="form_token"[^>]*value="([^"]*)"', page)
    if status != 200 or not token:
        return "FAILED", f"the user form did not open ({status})"
    token = html.unescape(token.group(1))
    for field in FIELDS:
        status, body = call(client, f"/users/fields/{field}", {"form_token": token, "value": user[field]})
        check = json.loads(body) if status == 200 else {"valid": False, "message": f"HTTP {status}"}
        if not check.get("valid"):
            return "REJECTED", f"{field}: {check.get('message') or 'invalid'}"
    status, page = call(client, "/users", {"form_token": token})
    result = re.search(r'id="result"[^>]*>([^<]*)<', page)
    message = html.unescape(result.group(1).strip()) if result else f"HTTP {status}"
    if status == 201:
        return "CREATED", message
    if status in (409, 422):
        return "REJECTED", message
    return "FAILED", message


def main():
    task = json.load(sys.stdin)
    path = os.environ.get("BOTLINE_ATTACHMENT")
    if not path:
        print("a VIVO360 task needs a CSV attachment of users", file=sys.stderr)
        return 2
    resume_after = int(os.environ.get("BOTLINE_RESUME_AFTER_ROW", "0"))
    with open(path, newline="", encoding="utf-8-sig") as file:
        sample = file.readline()
        file.seek(0)
        delimiter = ";" if ";" in sample and "," not in sample else ","
        reader = csv.DictReader(file, delimiter=delimiter)
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    emit(log=f"task {task['task_id']} attempt {task['attempt']}: {len(rows)} user(s), resuming after row {resume_after}")
    client = opener()
    try:
        status, _ = call(client, "/login", {"username": USERNAME, "password": PASSWORD})
        if status == 401:
            print("the portal refused the bot's credentials", file=sys.stderr)
            return 1
        for number, user in enumerate(rows, start=1):
            if number <= resume_after:
                continue
            outcome, message = create_user(client, user)
            emit(row=number, status=outcome, message=message)
    except PortalDown as error:
        print(error, file=sys.stderr)
        return EX_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
