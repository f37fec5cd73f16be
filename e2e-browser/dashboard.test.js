// The dashboard in a real browser: the real orchestrator, the Vivo360 portal stand-in and a real
// bot agent (the workspace's debug binaries), a RabbitMQ vhost and a SQLite file of the test's
// own, and Debian's headless Chromium driven by playwright-core. Screenshots go to
// target/dashboard/ (CI keeps them).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(process.env.CARGO_TARGET_DIR || join(ROOT, "target"), "debug");
const SHOTS = join(ROOT, "target", "dashboard");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const MANAGEMENT = process.env.BOTLINE_TEST_RABBITMQ_API || "http://127.0.0.1:15672/api";
const AMQP = process.env.BOTLINE_TEST_AMQP_SERVER || "amqp://guest:guest@127.0.0.1:5672";
const AUTH = "Basic " + Buffer.from("guest:guest").toString("base64");

const children = [];
let workdir, vhost, api, portal, browser;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
    server.on("error", fail);
  });
}

function run(binary, args, env = {}) {
  const path = join(BIN, binary);
  assert.ok(existsSync(path), `${path} is missing: build the workspace first (cargo build --workspace)`);
  const child = spawn(path, args, { env: { ...process.env, RUST_LOG: "warn", ...env }, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (chunk) => { log = (log + chunk).slice(-20000); });
  child.log = () => log;
  children.push(child);
  return child;
}

async function until(what, check, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    try { if (await check()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function management(method, path, body) {
  const response = await fetch(`${MANAGEMENT}${path}`, {
    method, headers: { authorization: AUTH, "content-type": "application/json" }, body: body && JSON.stringify(body),
  });
  assert.ok(response.ok, `management API ${method} ${path}: ${response.status}`);
}

before(async () => {
  workdir = mkdtempSync(join(tmpdir(), "botline-browser-"));
  mkdirSync(SHOTS, { recursive: true });
  vhost = `botline-test-browser-${process.pid}-${Date.now()}`;
  await management("PUT", `/vhosts/${vhost}`);
  await management("PUT", `/permissions/${vhost}/guest`, { configure: ".*", write: ".*", read: ".*" });
  const [apiPort, portalPort] = [await freePort(), await freePort()];
  api = `http://127.0.0.1:${apiPort}`;
  portal = `http://127.0.0.1:${portalPort}`;
  run("simulators", ["vivo360", "--listen", `127.0.0.1:${portalPort}`, "--delay-ms", "150"]);
  run("orchestrator", [], {
    BOTLINE_LISTEN: `127.0.0.1:${apiPort}`,
    BOTLINE_DATABASE_URL: `sqlite://${join(workdir, "botline.db")}?mode=rwc`,
    BOTLINE_AMQP_URL: `${AMQP}/${vhost}`,
    BOTLINE_HEARTBEAT_INTERVAL: "1",
    BOTLINE_SWEEP_INTERVAL: "1",
    BOTLINE_HTTP_BOT_NETWORKS: "127.0.0.0/8,::1/128",
    BOTLINE_RABBITMQ_UI_URL: "http://127.0.0.1:15672/#/queues",
  });
  await until("the orchestrator is ready", async () => (await fetch(`${api}/readyz`)).ok);
  await until("the portal answers", async () => (await fetch(`${portal}/_control`)).ok);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill("SIGTERM");
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r() : c.on("exit", r)))));
  if (vhost) await management("DELETE", `/vhosts/${vhost}`).catch(() => {});
  if (workdir) rmSync(workdir, { recursive: true, force: true });
});

/** A page that records console errors and uncaught exceptions. */
async function openPage(viewport = { width: 1366, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.problems = [];
  page.on("console", (m) => { if (m.type() === "error") page.problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => page.problems.push(`page error: ${e.message}`));
  await page.goto(api + "/");
  await page.locator("#live.on").waitFor({ timeout: 15000 });
  return page;
}

/** Waits until the new-task form offers `system` (the choices come from /api/v1/systems). */
async function systemOffered(page, system) {
  await page.locator(`#task-system option[value="${system}"]`).waitFor({ state: "attached" });
}

async function chooseCsv(page, name, csv) {
  const path = join(workdir, name);
  writeFileSync(path, csv);
  await page.locator("#task-file").setInputFiles(path);
}

test("a CSV task uploaded through the page goes WAITING, RUNNING, COMPLETE live, and its detail shows every row", async () => {
  const page = await openPage();
  await page.evaluate(() => { window.notReloaded = true; });
  await page.locator("#new-task summary").click();

  // A file without the columns VIVO360 needs: the preview warns, and the API's error shows
  // next to the file field.
  await page.locator("#task-description").fill("Bad file");
  await systemOffered(page, "VIVO360");
  await page.locator("#task-system").selectOption("VIVO360");
  await chooseCsv(page, "bad.csv", "name,mail\nAna,ana@example.com\n");
  await page.locator("#columns-hint.bad").waitFor();
  assert.match(await page.locator("#columns-hint").textContent(), /Missing column\(s\) email, login, profile/);
  await page.locator("#task-submit").click();
  const fieldError = page.locator('[data-error-for="attachment"]');
  await fieldError.filter({ hasText: "lacks the column(s)" }).waitFor();
  assert.match(await fieldError.textContent(), /attachment lacks the column\(s\) email, login, profile that VIVO360 needs/);
  assert.equal(await page.locator("#task-file").getAttribute("aria-invalid"), "true");
  assert.equal((await (await fetch(`${api}/api/v1/tasks`)).json()).total, 0, "the bad file created nothing");

  // A good file, submitted while no bot runs: the task waits, visibly.
  const csv = "name,email,login,profile\nAna Souza,ana@example.com,ana.souza,agent\n" +
    "Bruno Lima,bruno@example,bruno.lima,agent\nCarla Dias,carla@example.com,carla.dias,supervisor\n";
  await page.locator("#task-description").fill("March hires");
  await chooseCsv(page, "users.csv", csv);
  await page.locator("#columns-hint.ok").waitFor();
  assert.equal(await page.locator("#csv-preview tbody tr").count(), 3, "the preview shows the rows");
  await page.locator("#task-submit").click();
  const row = page.locator("#tasks-body tr", { hasText: "March hires" });
  await row.locator(".badge.WAITING").waitFor();
  await page.screenshot({ path: join(SHOTS, "dashboard-waiting.png"), fullPage: true });

  // A bot starts: the page shows it, and the task running then complete, without a reload.
  const bot = run("bot-agent", ["--name", "browser-bot", "--systems", "vivo360"], {
    BOTLINE_AMQP_URL: `${AMQP}/${vhost}`, BOTLINE_VIVO360_URL: portal, BOTLINE_BOT_IP: "127.0.0.1",
    BOTLINE_HEARTBEAT_INTERVAL_MS: "500",
  });
  await page.locator('#bots-body tr[data-bot="browser-bot"]').waitFor({ timeout: 20000 });
  await row.locator(".badge.RUNNING").waitFor({ timeout: 20000 });
  await page.screenshot({ path: join(SHOTS, "dashboard-running.png"), fullPage: true });
  await row.locator(".badge.COMPLETE").waitFor({ timeout: 30000 });
  assert.equal(await page.evaluate(() => window.notReloaded), true, "the page updated itself, no reload");
  assert.match(await page.locator('#counters [data-status="COMPLETE"]').textContent(), /COMPLETE\s*1/);
  // One row of three was refused: the list says so beside the bar, unlike a clean COMPLETE.
  assert.equal(await row.locator(".bar.partial .rows-failed").textContent(), "1 failed");
  await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });

  // The detail: fields, timeline, rows with the rejected one highlighted, the CSV download.
  await row.locator("a").click();
  await page.locator("#task-status .badge.COMPLETE").waitFor();
  assert.equal(await page.locator("#view-home").isVisible(), false, "the detail replaces the lists");
  const timeline = await page.locator("#timeline li strong").allTextContents();
  for (const kind of ["created", "assigned", "accepted", "completed"]) {
    assert.ok(timeline.includes(kind), `timeline has ${kind}: ${timeline}`);
  }
  assert.match(await page.locator("#timeline").textContent(), /browser-bot/);
  // Offers and failed runs are counted apart.
  const fields = await page.locator("dl.fields").textContent();
  assert.match(fields, /Offers\s*1 \(0 unanswered\)/);
  assert.match(fields, /Failed runs\s*0 of 3/);
  assert.equal(await page.locator("#rows-table tbody tr").count(), 3);
  assert.equal(await page.locator("#rows-table tbody tr.failed").count(), 1);
  assert.match(await page.locator('#rows-table tr[data-row="2"]').textContent(), /REJECTED.*email: not a valid e-mail address/);
  const download = await (await fetch(api + (await page.locator('a[download]').getAttribute("href")))).text();
  assert.equal(download, csv);
  await page.screenshot({ path: join(SHOTS, "task-detail.png"), fullPage: true });

  // "Retry failed rows only": a new task from the rejected row alone.
  await page.locator("#retry-failed-rows").click();
  await page.locator("#task-title", { hasText: "Retry of failed rows" }).waitFor();
  await page.locator("#task-status .badge.COMPLETE").waitFor({ timeout: 30000 });
  assert.equal(await page.locator("#rows-table tbody tr").count(), 1);
  const retried = (await (await fetch(`${api}/api/v1/tasks?limit=1`)).json()).items[0];
  assert.equal(retried.progress.total, 1);

  // An operator takes the bot out of rotation and back, from its row.
  await page.goto(api + "/");
  const botRow = page.locator('#bots-body tr[data-bot="browser-bot"]');
  await botRow.getByRole("button", { name: "Pause browser-bot" }).click();
  await botRow.locator(".badge.PAUSED").waitFor();
  const paused = (await (await fetch(`${api}/api/v1/bots?name=browser-bot`)).json()).items[0];
  assert.equal(paused.paused, true);
  await botRow.getByRole("button", { name: "Resume browser-bot" }).click();
  await botRow.locator(".badge.PAUSED").waitFor({ state: "detached" });
  assert.equal((await (await fetch(`${api}/api/v1/bots?name=browser-bot`)).json()).items[0].paused, false);

  // Chromium logs every 4xx response in the console; the one deliberate bad upload is the only one.
  const deliberate = /Failed to load resource: the server responded with a status of 422/;
  assert.equal(page.problems.filter((p) => deliberate.test(p)).length, 1, page.problems.join("\n"));
  assert.deepEqual(page.problems.filter((p) => !deliberate.test(p)), [], "no other console errors");
  bot.kill("SIGTERM");
});

test("a phone-sized screen shows everything without sideways scrolling, and the ops link is configured", async () => {
  const page = await openPage({ width: 390, height: 844 });
  // Its security headers: the strict content policy holds (a violation would be a console error,
  // which the first test counts), and no other site may frame it.
  const headers = (await fetch(api + "/")).headers;
  assert.match(headers.get("content-security-policy"), /frame-ancestors 'none'/);
  assert.equal(headers.get("x-frame-options"), "DENY");
  assert.equal(headers.get("x-content-type-options"), "nosniff");
  assert.equal(headers.get("referrer-policy"), "no-referrer");
  await page.locator("#tasks-body tr").first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than the screen`);
  assert.equal(await page.locator("#rabbitmq-link").getAttribute("href"), "http://127.0.0.1:15672/#/queues");
  // Keyboard: the first tab stop is the skip link, and the counters are real buttons.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  assert.equal(await page.locator("#counters button").count(), 6);
  await page.screenshot({ path: join(SHOTS, "dashboard-phone.png"), fullPage: true });
  assert.deepEqual(page.problems, [], "no console errors");
});

test("a system registered through the API is offered by the page, its CSV columns are checked, and it has a page", async () => {
  const response = await fetch(`${api}/api/v1/systems`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "PAYROLL", description: "Payroll entries", input: { kind: "csv", columns: ["employee", "amount"] } }),
  });
  const registered = await response.json();
  assert.equal(response.status, 201, JSON.stringify(registered));
  assert.equal(registered.name, "PAYROLL");
  assert.deepEqual(registered.input, { kind: "csv", columns: ["employee", "amount"] });

  const page = await openPage();
  await page.locator("#new-task summary").click();
  const system = page.locator("#task-system");
  await systemOffered(page, "PAYROLL");
  assert.equal(await system.locator('option[value="PAYROLL"]').textContent(), "PAYROLL — Payroll entries");
  // The choices are the registered systems, the built-ins among them, and nothing else.
  const listed = (await (await fetch(`${api}/api/v1/systems`)).json()).systems.map((s) => s.name);
  assert.deepEqual(await system.locator("option").evaluateAll((options) => options.map((o) => o.value)), listed);
  for (const builtin of ["VIVO360", "CPE", "NOTIFY", "NOOP", "PAYROLL"]) assert.ok(listed.includes(builtin), `${builtin} in ${listed}`);

  // The column check follows the chosen system's contract.
  await system.selectOption("PAYROLL");
  assert.match(await page.locator("#columns-hint").textContent(), /CSV file is needed, with the columns employee, amount/);
  await page.locator("#task-description").fill("Payroll of March");
  await chooseCsv(page, "payroll-bad.csv", "employee,total\nAna Souza,1200\n");
  await page.locator("#columns-hint.bad").waitFor();
  assert.match(await page.locator("#columns-hint").textContent(), /Missing column\(s\) amount \(needs employee, amount\)/);
  await chooseCsv(page, "payroll.csv", "Employee,Amount\nAna Souza,1200.50\nBruno Lima,980\n");
  await page.locator("#columns-hint.ok").waitFor();
  assert.equal(await page.locator("#csv-preview tbody tr").count(), 2);
  await page.locator("#task-submit").click();

  // No bot runs PAYROLL: the task waits.
  const row = page.locator("#tasks-body tr", { hasText: "Payroll of March" });
  await row.locator(".badge.WAITING").waitFor();
  assert.equal((await row.locator("td").nth(1).textContent()).trim(), "PAYROLL");
  const tasks = (await (await fetch(`${api}/api/v1/tasks?system=PAYROLL`)).json()).items;
  assert.equal(tasks.length, 1);
  assert.equal(tasks[0].status, "WAITING");
  assert.equal(tasks[0].progress.total, 2);
  assert.equal(await system.inputValue(), "PAYROLL", "the form keeps the system for the next task");
  const filterChoices = await page.locator("#filter-system option").allTextContents();
  assert.ok(filterChoices.includes("PAYROLL"), `the task filter offers PAYROLL: ${filterChoices}`);
  await page.locator("#filter-system").selectOption("PAYROLL");
  await until("the list shows PAYROLL's task alone", async () =>
    (await page.locator("#tasks-body tr").allTextContents()).join("|") === (await row.textContent()));
  await page.locator("#filter-system").selectOption("");
  await page.locator("#tasks-body tr", { hasText: "March hires" }).first().waitFor();

  // A JSON system: the payload must meet its schema, which its page shows.
  await system.selectOption("CPE");
  assert.match(await page.locator("#payload-hint").textContent(), /JSON Schema/);
  assert.equal(await page.locator("#payload-hint a").getAttribute("href"), "#/systems/CPE");
  assert.match(await page.locator("#columns-hint").textContent(), /no CSV file/);

  // The Systems panel links to each system's page.
  const systemRow = page.locator('#systems-body tr[data-system="PAYROLL"]');
  assert.match(await systemRow.textContent(), /PAYROLL.*Payroll entries.*csv/);
  await systemRow.getByRole("link", { name: "PAYROLL" }).click();
  await page.locator("#system-columns").waitFor();
  assert.equal(await page.evaluate(() => location.hash), "#/systems/PAYROLL");
  assert.equal(await page.locator("#view-home").isVisible(), false, "the system page replaces the lists");
  assert.equal(await page.locator("#system-title").textContent(), "PAYROLL");
  assert.deepEqual(await page.locator("#system-columns li").allTextContents(), ["employee", "amount"]);
  assert.equal(await page.locator("#system-builtin").textContent(), "no");
  assert.equal(await page.locator("#system-defaults dd", { hasText: "orchestrator default" }).count(), 4);
  assert.match(await page.locator("#system-no-bots").textContent(), /No bot runs PAYROLL/);
  await page.screenshot({ path: join(SHOTS, "system.png"), fullPage: true });

  // A built-in with a schema, and the bots that run it (the first test's bot, now stopped).
  await page.evaluate(() => { location.hash = "#/systems/cpe"; });
  await page.locator("#system-schema-text").waitFor();
  assert.equal(await page.locator("#system-title").textContent(), "CPE");
  const schema = JSON.parse(await page.locator("#system-schema-text").textContent());
  assert.ok(schema.required.includes("equipment_id"), JSON.stringify(schema));
  assert.match(await page.locator("#system-builtin").textContent(), /yes/);
  await page.evaluate(() => { location.hash = "#/systems/VIVO360"; });
  await page.locator('#system-bots tr[data-bot="browser-bot"]').waitFor();
  await page.screenshot({ path: join(SHOTS, "system-vivo360.png"), fullPage: true });

  // Back home; then a system registered with the page's own form.
  await page.getByRole("link", { name: "← Home" }).click();
  await page.locator("#view-home").waitFor();
  await row.locator(".badge.WAITING").waitFor();
  await page.locator("#add-system").click();
  const form = page.locator("#system-form");
  await form.locator("#new-system-name").fill("payroll");
  await form.locator("#new-system-columns").fill("employee, amount");
  await form.locator("#new-system-submit").click();
  await form.locator('[data-error-for="name"]').filter({ hasText: /PAYROLL/ }).waitFor();
  await form.locator("#new-system-name").fill("refunds");
  await form.locator("#new-system-description").fill("Refunds to customers");
  await form.locator("#new-system-kind").selectOption("json");
  await form.locator("#new-system-schema").fill("{not json");
  await form.locator("#new-system-submit").click();
  await form.locator('[data-error-for="input.schema"]').filter({ hasText: "not JSON" }).waitFor();
  await form.locator("#new-system-schema").fill('{"type": "object", "required": ["amount"]}');
  await form.locator("#new-system-submit").click();
  await form.waitFor({ state: "hidden" });
  await page.locator('#systems-body tr[data-system="REFUNDS"]').waitFor();
  await systemOffered(page, "REFUNDS");
  const refunds = await (await fetch(`${api}/api/v1/systems/REFUNDS`)).json();
  assert.deepEqual(refunds.input, { kind: "json", schema: { type: "object", required: ["amount"] } });
  assert.equal(refunds.description, "Refunds to customers");

  // A bot with a program for PAYROLL (no Rust): the waiting task runs, and its page shows the
  // run's log, the program's stderr and log lines.
  const script = join(workdir, "payroll.sh");
  writeFileSync(script, [
    "cat > /dev/null",
    'echo "paying $(($(wc -l < "$BOTLINE_ATTACHMENT") - 1)) employee(s)" >&2',
    'echo \'{"row": 1, "status": "DONE", "message": "paid"}\'',
    'echo \'{"row": 2, "status": "DONE", "message": "paid"}\'',
    'echo \'{"log": "payroll closed"}\'',
  ].join("\n") + "\n");
  run("bot-agent", ["--name", "payroll-bot", "--automation", `PAYROLL=sh ${script}`], {
    BOTLINE_AMQP_URL: `${AMQP}/${vhost}`, BOTLINE_BOT_IP: "127.0.0.1", BOTLINE_HEARTBEAT_INTERVAL_MS: "500",
  });
  await row.locator(".badge.COMPLETE").waitFor({ timeout: 30000 });
  await row.getByRole("link").first().click();
  const runLog = page.locator(".run-log");
  await runLog.locator("summary").click();
  const logText = await runLog.locator("pre").textContent();
  assert.match(logText, /paying 2 employee\(s\)/);
  assert.match(logText, /payroll closed/);
  assert.equal(await page.locator("#rows-table tbody tr").count(), 2);
  await page.screenshot({ path: join(SHOTS, "task-run-log.png"), fullPage: true });

  // Chromium logs every 4xx response; the one deliberate duplicate registration is the only one.
  const deliberate = /Failed to load resource: the server responded with a status of 409/;
  assert.equal(page.problems.filter((p) => deliberate.test(p)).length, 1, page.problems.join("\n"));
  assert.deepEqual(page.problems.filter((p) => !deliberate.test(p)), [], "no other console errors");
});
