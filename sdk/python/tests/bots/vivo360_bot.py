"""A bot of the original Vivo360 work, written with this package: each CSV row is a user created
in the Vivo360 portal (the workspace's stand-in), driven as a person would: log in, open the form,
fill each field, submit."""

from __future__ import annotations

import os
import re

import httpx

from botline import Bot, Report, Retryable, Task

bot = Bot()
PORTAL = os.environ.get("PORTAL_URL", "http://127.0.0.1:8091")
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


@bot.automation("VIVO360")
def create_users(task: Task, report: Report) -> None:
    with httpx.Client(base_url=PORTAL, timeout=10) as portal:
        login = portal.post("/login", data={"username": "botline", "password": "botline"})
        if login.status_code not in (200, 303):
            raise Retryable(f"portal login refused: {login.status_code}")
        for n, user in task.rows():
            form = portal.get("/users/new")
            token = FORM_TOKEN.search(form.text)
            if token is None:
                raise Retryable(f"the portal's form did not open ({form.status_code})")
            for field in ("name", "email", "login", "profile"):
                portal.post(
                    f"/users/fields/{field}",
                    data={"form_token": token.group(1), "value": user.get(field, "")},
                )
            done = portal.post("/users", data={"form_token": token.group(1)})
            message = " ".join(re.sub(r"<[^>]+>", " ", done.text).split())[:200]
            if done.status_code == 201:
                report.row(n, "CREATED", message)
            elif done.status_code >= 500:
                report.row(n, "FAILED", message)
            else:
                report.row(n, "REJECTED", message)
