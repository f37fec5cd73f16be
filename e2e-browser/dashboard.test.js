// The dashboard in a real browser: the real orchestrator, the Vivo360 portal stand-in and a real
// bot agent (the workspace's debug binaries), a RabbitMQ vhost and a SQLite file of the test's
// own, and Debian's headless Chromium driven by playwright-core. Screenshots go to
// target/dashboard/ (CI keeps them). Each view is also checked with axe-core against the WCAG 2
// A and AA rules, in the light and the dark colour scheme.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
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
const AXE = readFileSync(join(import.meta.dirname, "node_modules", "axe-core", "axe.min.js"), "utf8");

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

/** GET `path` of the API, as JSON. */
async function getJson(path) {
  const response = await fetch(api + path);
  assert.ok(response.ok, `GET ${path}: ${response.status}`);
  return response.json();
}

/** POST `body` to `path` of the API; answers the status and the JSON body. */
async function postJson(path, body) {
  const response = await fetch(api + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/**
 * Fails on any violation of axe-core's WCAG 2 A and AA rules on the page as it is now, in the
 * light and then the dark colour scheme. axe goes in through the debugging protocol: the page's
 * content policy refuses inline scripts (page.addScriptTag would be one).
 */
async function assertAccessible(page, view) {
  for (const colorScheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme });
    if (!(await page.evaluate(() => typeof window.axe === "object"))) await page.evaluate(AXE);
    const { violations } = await page.evaluate(() => window.axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa"] }, resultTypes: ["violations"],
    }));
    const found = violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
    assert.deepEqual(found, [], `${view}, ${colorScheme} scheme: WCAG A/AA violations`);
  }
  await page.emulateMedia({ colorScheme: "light" });
}

/** Accepts the confirmations the page asks (Playwright dismisses them otherwise). */
function acceptDialogs(page) {
  page.on("dialog", (dialog) => dialog.accept());
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
  // Progress reported row by row (not batched), so the timeline has progress events to fold.
  const bot = run("bot-agent", ["--name", "browser-bot", "--systems", "vivo360"], {
    BOTLINE_AMQP_URL: `${AMQP}/${vhost}`, BOTLINE_VIVO360_URL: portal, BOTLINE_BOT_IP: "127.0.0.1",
    BOTLINE_HEARTBEAT_INTERVAL_MS: "500", BOTLINE_PROGRESS_INTERVAL_MS: "10",
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

  // Row totals, the failed rows alone, and the results as a CSV file made in the page.
  assert.equal((await page.locator("#row-totals").textContent()).replace(/\s+/g, " "), "2 done · 1 failed or refused · 3 total");
  await page.locator("#failed-rows-only").check();
  assert.deepEqual(await page.locator("#rows-table tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.row)), ["2"]);
  await page.locator("#failed-rows-only").uncheck();
  assert.equal(await page.locator("#rows-table tbody tr").count(), 3);
  const taskId = await page.evaluate(() => location.hash.split("/").pop());
  const [results] = await Promise.all([page.waitForEvent("download"), page.locator("#download-results").click()]);
  assert.equal(results.suggestedFilename(), `task-${taskId}-results.csv`);
  const rowsHeld = (await getJson(`/api/v1/tasks/${taskId}`)).result.rows;
  const quote = (value) => (/[",;\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value);
  assert.equal(readFileSync(await results.path(), "utf8"),
    ["row,status,message", ...rowsHeld.map((r) => [r.row, r.status, quote(r.message)].join(","))].join("\n") + "\n");
  assert.match(readFileSync(await results.path(), "utf8"), /^2,REJECTED,email: not a valid e-mail address$/m);

  // Consecutive progress events are one line, which opens to show them.
  const events = await getJson(`/api/v1/tasks/${taskId}/events`);
  const runs = [];
  for (const event of events) {
    if (event.kind === "progress" && runs.at(-1)?.[0].kind === "progress") runs.at(-1).push(event);
    else runs.push([event]);
  }
  const folded = runs.filter((r) => r.length > 1);
  assert.ok(folded.length >= 1, `the bot reported progress row by row: ${events.map((e) => e.kind)}`);
  assert.equal(await page.locator("#timeline > li").count(), runs.length, "one line per run of progress events");
  const group = page.locator("#timeline details.progress-group").first();
  assert.match(await group.locator("summary").textContent(), new RegExp(`progress × ${folded[0].length} · \\d+ row`));
  assert.equal(await group.locator("ol.timeline > li").first().isVisible(), false, "folded at first");
  await group.locator("summary").click();
  assert.equal(await group.locator("ol.timeline > li").count(), folded[0].length);
  await page.screenshot({ path: join(SHOTS, "task-detail.png"), fullPage: true });
  await assertAccessible(page, "task page");

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
  await assertAccessible(page, "system page");

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

/** The contrast ratio of two CSS rgb() colours (WCAG 2's formula). */
function contrast(a, b) {
  const luminance = (css) => {
    const [r, g, b] = css.match(/[\d.]+/g).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [light, dark] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (light + 0.05) / (dark + 0.05);
}

test("at 1366 px the bots table shows every button, a hovered counter stays readable, each view has one h1, and the scheme follows the system's", async () => {
  // A bot with a long name and every system: the widest row the table has to fit.
  const systems = (await getJson("/api/v1/systems")).systems.map((s) => s.name);
  const wide = await postJson("/api/v1/bots", { name: "warehouse-reconciler-02", ip_address: "10.0.0.42", delivery: "amqp", systems, slots: 4 });
  assert.equal(wide.status, 201, JSON.stringify(wide.body));

  const page = await openPage({ width: 1366, height: 900 });
  const rows = page.locator("#bots-body tr[data-bot]");
  await page.locator('#bots-body tr[data-bot="warehouse-reconciler-02"]').waitFor();
  assert.ok(await rows.count() >= 2, "more than one bot listed");
  const fit = await page.evaluate(() => {
    const wrap = document.querySelector("table.bots").closest(".table-wrap");
    const box = wrap.getBoundingClientRect();
    const buttons = [...wrap.querySelectorAll("tbody button")].map((b) => b.getBoundingClientRect());
    return { scroll: wrap.scrollWidth, client: wrap.clientWidth, right: box.right,
      buttons: buttons.length, outside: buttons.filter((b) => b.right > box.right + 0.5 || b.width === 0).length };
  });
  assert.ok(fit.scroll <= fit.client, `the bots table is ${fit.scroll - fit.client}px wider than its column`);
  assert.equal(fit.buttons, 3 * (await rows.count()), "Edit, Pause and Delete on every row");
  assert.equal(fit.outside, 0, "every button is inside the table's column");

  // The header: one link to each view and to the attendance report.
  assert.equal(await page.locator("#attendance-link").getAttribute("href"), "/reports/attendance");
  for (const [id, hash] of [["#monitoring-link", "#/monitoring"], ["#incidents-link", "#/incidents"], ["#dead-letters-link", "#/dead-letters"]]) {
    assert.equal(await page.locator(id).getAttribute("href"), hash);
  }

  for (const colorScheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme });
    // The page follows the scheme: a light or a dark background.
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const againstBlack = contrast(background, "rgb(0, 0, 0)");
    assert.ok(colorScheme === "light" ? againstBlack > 15 : againstBlack < 2, `${colorScheme} background ${background}`);
    // A hovered counter, pressed or not, keeps its text readable.
    for (const status of ["WAITING", "COMPLETE"]) {
      const counter = page.locator(`#counters [data-status="${status}"]`);
      if (status === "COMPLETE") await counter.click(); // pressed: the list filters on it
      await counter.hover();
      const [color, fill] = await counter.evaluate((b) => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]);
      assert.ok(contrast(color, fill) >= 4.5, `${status} counter hovered (${colorScheme}): ${color} on ${fill} is ${contrast(color, fill).toFixed(2)}:1`);
      if (status === "COMPLETE") {
        assert.equal(await counter.getAttribute("aria-pressed"), "true");
        await counter.click();
      }
    }
  }
  await page.mouse.move(0, 0);
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: join(SHOTS, "dashboard-dark.png"), fullPage: true });
  await page.emulateMedia({ colorScheme: "light" });
  await page.screenshot({ path: join(SHOTS, "dashboard-1366.png"), fullPage: true });
  await assertAccessible(page, "home");

  // One h1 on each view.
  const task = (await getJson("/api/v1/tasks?limit=1")).items[0];
  const views = [["#/tasks/" + task.id, "task"], ["#/systems/VIVO360", "system"], ["#/incidents", "incidents"],
    ["#/monitoring", "monitoring"], ["#/dead-letters", "dead-letters"], ["#/", "home"]];
  for (const [hash, view] of views) {
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.locator(`#view-${view}`).waitFor();
    const titles = await page.locator("h1").evaluateAll((all) => all.filter((h) => h.closest("[hidden]") === null).map((h) => h.textContent));
    assert.equal(titles.length, 1, `${hash}: ${JSON.stringify(titles)}`);
  }
  assert.equal(await page.locator("#task-title").evaluate((h) => h.tagName), "H1");

  // The attendance report, from the header.
  await page.locator("#attendance-link").click();
  await page.waitForURL(`${api}/reports/attendance`);
  assert.equal(await page.evaluate(() => document.readyState !== "loading" && document.body.textContent.length > 0), true);
  assert.deepEqual(page.problems, [], "no console errors");
  const deleted = await fetch(`${api}/api/v1/bots/${wide.body.id}`, { method: "DELETE" });
  assert.equal(deleted.status, 204);
});

test("incidents: an action made through the page with its errors shown by the fields, an incident with its communications and delivery tasks, resolved; the action edited and deleted", async () => {
  const page = await openPage();
  acceptDialogs(page);
  await page.locator("#incidents-link").click();
  await page.locator("#view-incidents h1", { hasText: "Incidents" }).waitFor();
  assert.equal(await page.evaluate(() => location.hash), "#/incidents");
  await page.locator("#open-incidents-table").waitFor();

  // A new action, first with two mistakes the API refuses, each shown next to its field.
  await page.locator("#add-action").click();
  const form = page.locator("#action-form");
  await form.locator("#action-name").fill("Login unavailable");
  await form.locator("#action-code").fill("LOGIN_DOWN");
  await form.locator('[name="triggers[0].service"]').fill("login");
  await form.locator('[name="triggers[0].status"]').fill("503");
  await form.locator("#add-trigger").click();
  await form.locator('[name="triggers[1].service"]').fill("login");
  await form.locator('[name="triggers[1].status"]').fill("503");
  await form.locator("#action-customers").fill("All app users");
  await form.locator("#action-external-on").check();
  await form.locator("#action-channel").fill("Push");
  await form.locator("#action-message").fill("Login is down; we are on it");
  await form.locator("#add-level").click();
  await form.locator('[name="levels[0].volume"]').fill("5");
  await form.locator('[name="levels[0].who"]').fill("Analyst N1");
  await form.locator("#add-level").click();
  await form.locator('[name="levels[1].volume"]').fill("3");
  await form.locator('[name="levels[1].who"]').fill("Coordination, Infrastructure");
  await form.locator("#action-submit").click();
  await form.locator('[data-error-for="triggers[1]"]').filter({ hasText: "listed twice" }).waitFor();
  await form.locator('[name="triggers[1].status"]').fill("404");
  await form.locator("#action-submit").click();
  await form.locator('[data-error-for="levels[1]"]').filter({ hasText: "levels must rise" }).waitFor();
  assert.equal(await form.locator('[name="levels[1].volume"]').getAttribute("aria-invalid"), "true");
  assert.equal(await form.locator('[data-error-for="triggers[1]"]').textContent(), "", "the first error is gone");
  assert.deepEqual(await getJson("/api/v1/actions"), [], "nothing was created");
  await assertAccessible(page, "incidents, the action form with an error");
  await form.locator('[name="levels[1].volume"]').fill("10");
  await form.locator("#action-submit").click();
  await form.waitFor({ state: "hidden" });
  await page.locator('#actions-table tr[data-action="LOGIN_DOWN"]').waitFor();
  const [action] = await getJson("/api/v1/actions");
  assert.equal(action.name, "Login unavailable");
  assert.deepEqual(action.triggers, [{ service: "login", status: "404" }, { service: "login", status: "503" }]);
  assert.deepEqual(action.external, { min_occurrences: 1, channel: "Push", message: "Login is down; we are on it" });
  assert.deepEqual(action.levels, [{ volume: 5, who: "Analyst N1" }, { volume: 10, who: ["Coordination", "Infrastructure"] }]);

  // Two reports open an incident (one occurrence each); customers are told at the first.
  for (let i = 0; i < 2; i++) {
    const reported = await postJson("/api/v1/incidents/triggers", { triggers: [{ service: "login", status: "503" }] });
    assert.equal(reported.status, 200, JSON.stringify(reported.body));
  }
  const [opened] = (await getJson("/api/v1/incidents?status=OPEN")).items;
  assert.equal(opened.occurrences, 2);
  const row = page.locator(`#open-incidents-table tr[data-incident="${opened.id}"]`);
  await row.waitFor({ timeout: 15000 }); // its NOTIFY task's notice redraws the view
  assert.match(await row.textContent(), /Login unavailable.*OPEN.*2/);

  // Its page: occurrences, the communication and the task delivering it.
  await row.getByRole("link").click();
  await page.locator("#incident-status .badge.OPEN").waitFor();
  assert.equal(await page.locator("#incident-title").textContent(), "Login unavailable");
  assert.equal(await page.locator("#incident-occurrences").textContent(), "2");
  const detail = await getJson(`/api/v1/incidents/${opened.id}`);
  assert.equal(detail.communications.length, 1);
  const told = page.locator('#communications tr[data-kind="external"]');
  assert.match(await told.textContent(), /external.*Push.*All app users.*Login is down; we are on it/);
  assert.equal(await told.getByRole("link").getAttribute("href"), `#/tasks/${detail.communications[0].task_id}`);
  await page.screenshot({ path: join(SHOTS, "incident.png"), fullPage: true });
  await assertAccessible(page, "incident page");

  // Resolved: customers are told it is back, by a second communication.
  await page.locator("#resolve-incident").click();
  await page.locator("#incident-status .badge.RESOLVED").waitFor();
  assert.equal(await page.locator("#resolve-incident").isDisabled(), true);
  await page.locator('#communications tr[data-kind="restored"]').waitFor();
  const resolved = await getJson(`/api/v1/incidents/${opened.id}`);
  assert.equal(resolved.status, "RESOLVED");
  assert.deepEqual(resolved.communications.map((c) => c.kind), ["external", "restored"]);

  // A delivery task's link leads to its task page.
  await page.locator('#communications tr[data-kind="restored"]').getByRole("link").click();
  await page.locator("#task-status .badge").waitFor();
  assert.equal(await page.evaluate(() => location.hash), `#/tasks/${resolved.communications[1].task_id}`);
  assert.match(await page.locator("#task-detail").textContent(), /NOTIFY/);

  // Back on the list: the incident is among the resolved; the action is edited, then deleted.
  await page.locator("#incidents-link").click();
  await page.locator(`#resolved-incidents-table tr[data-incident="${opened.id}"]`).waitFor();
  assert.equal(await page.locator("#open-incidents-table").textContent(), "No incident is open.");
  await page.getByRole("button", { name: "Edit Login unavailable" }).click();
  assert.equal(await form.locator("#action-name").inputValue(), "Login unavailable");
  assert.equal(await form.locator('[name="levels[1].who"]').inputValue(), "Coordination, Infrastructure");
  assert.equal(await form.locator("#action-external-on").isChecked(), true);
  await form.locator("#action-name").fill("Login down");
  await form.locator("#action-submit").click();
  await form.waitFor({ state: "hidden" });
  await page.locator('#actions-table tr[data-action="LOGIN_DOWN"]', { hasText: "Login down" }).waitFor();
  const edited = await getJson(`/api/v1/actions/${action.id}`);
  assert.equal(edited.name, "Login down");
  assert.deepEqual([edited.triggers, edited.external, edited.levels], [action.triggers, action.external, action.levels], "the rest kept");
  await page.screenshot({ path: join(SHOTS, "incidents.png"), fullPage: true });
  await assertAccessible(page, "incidents");
  await page.getByRole("button", { name: "Delete Login down" }).click();
  await page.locator("#actions-table", { hasText: "No action yet" }).waitFor();
  assert.deepEqual(await getJson("/api/v1/actions"), []);

  // Chromium logs every 4xx response; the two refused saves are the only ones.
  const deliberate = /Failed to load resource: the server responded with a status of 422/;
  assert.equal(page.problems.filter((p) => deliberate.test(p)).length, 2, page.problems.join("\n"));
  assert.deepEqual(page.problems.filter((p) => !deliberate.test(p)), [], "no other console errors");
});

/** Submits a task through the API (multipart, as the page does). */
async function submitTask(description, system, attachment) {
  const form = new FormData();
  form.set("description", description);
  form.set("system", system);
  if (attachment) form.set("attachment", new Blob([attachment], { type: "text/csv" }), "rows.csv");
  const response = await fetch(`${api}/api/v1/tasks`, { method: "POST", body: form });
  const body = await response.json();
  assert.equal(response.status, 201, JSON.stringify(body));
  return body;
}

/** The ids of the tasks the page lists, in order. */
const listedIds = (page) => page.locator("#tasks-body tr[data-task-id]").evaluateAll((rows) => rows.map((r) => r.dataset.taskId));

/** Waits until the page lists exactly `ids`, in that order. */
async function listed(page, ids, what) {
  await until(what, async () => JSON.stringify(await listedIds(page)) === JSON.stringify(ids), 15);
}

test("the task list: search, a created-between range, sort, the rows-failed filter, and bulk cancel and retry of what the filters select", async () => {
  // Three tasks no bot runs, made a second after every other task, so that a range singles them out.
  await new Promise((r) => setTimeout(r, 1100));
  const since = Math.floor(Date.now() / 1000) * 1000;
  const ours = [];
  for (const n of [1, 2, 3]) ours.push(await submitTask(`Nightly sweep ${n}`, "NOOP"));
  const newestFirst = ours.map((t) => t.id).reverse();

  const page = await openPage();
  acceptDialogs(page);
  await page.locator("#tasks-body tr[data-task-id]").first().waitFor();

  // Search: by words of the description (any case), then by a whole id.
  await page.locator("#filter-q").fill("NIGHTLY sweep");
  await listed(page, newestFirst, "the search lists the three sweeps");
  await page.locator("#filter-q").fill(ours[1].id);
  await listed(page, [ours[1].id], "the search by id lists that task alone");
  await page.locator("#filter-q").fill("");
  await until("the list is whole again", async () => (await listedIds(page)).length > 3, 15);

  // Created between: from `since`, only ours; up to `since`, none of ours.
  const local = await page.evaluate((ms) => {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }, since);
  await page.locator("#filter-created_after").fill(local);
  await listed(page, newestFirst, "from the instant they were made, only the sweeps");
  await page.locator("#filter-created_after").fill("");
  await page.locator("#filter-created_before").fill(local);
  await until("up to that instant, no sweep", async () => {
    const ids = await listedIds(page);
    return ids.length > 0 && !ids.some((id) => newestFirst.includes(id));
  }, 15);
  await page.locator("#filter-created_before").fill("");
  await listed(page, (await getJson("/api/v1/tasks?limit=20&order=newest")).items.map((t) => t.id), "the whole list, newest first");

  // Sorted by finish time: finished tasks first (the sweeps, newest created, have none), as the API orders them.
  for (const sort of ["finished", "duration"]) {
    await page.locator("#filter-sort").selectOption(sort);
    const expected = (await getJson(`/api/v1/tasks?limit=20&order=newest&sort=${sort}`)).items;
    await listed(page, expected.map((t) => t.id), `sorted by ${sort}`);
    assert.ok(expected[0].finished_at, `sorted by ${sort}, a finished task comes first`);
    assert.ok(!newestFirst.includes(expected[0].id));
  }
  await page.locator("#filter-sort").selectOption("created");

  // Rows failed: the CSV tasks with a failed or refused row (the first test's "March hires").
  await page.locator("#filter-rows_failed").check();
  const withFailures = (await getJson("/api/v1/tasks?limit=20&order=newest&rows_failed=true")).items;
  assert.ok(withFailures.length >= 1 && withFailures.every((t) => t.rows_failed > 0), JSON.stringify(withFailures.map((t) => t.rows_failed)));
  await listed(page, withFailures.map((t) => t.id), "the tasks with rows failed");
  assert.equal(await page.locator("#tasks-body tr .rows-failed").count(), withFailures.length);
  await page.locator("#filter-rows_failed").uncheck();

  // Bulk cancel, then retry, of what the search selects.
  await page.locator("#filter-q").fill("nightly sweep");
  await listed(page, newestFirst, "the search lists the three sweeps");
  await page.locator("#bulk-cancel").click();
  await page.locator("#notice", { hasText: "3 task(s) cancelled; 0 refused." }).waitFor();
  const statuses = async () => Promise.all(ours.map(async (t) => (await getJson(`/api/v1/tasks/${t.id}`)).status));
  assert.deepEqual(await statuses(), ["CANCELLED", "CANCELLED", "CANCELLED"]);
  await page.locator("#tasks-body .badge.CANCELLED").nth(2).waitFor();
  await page.locator("#bulk-retry").click();
  await page.locator("#notice", { hasText: "3 task(s) sent back to WAITING; 0 refused." }).waitFor();
  assert.deepEqual(await statuses(), ["WAITING", "WAITING", "WAITING"]);
  await page.locator("#tasks-body .badge.WAITING").nth(2).waitFor();

  // A complete task cannot be retried: each is refused, and says why.
  await page.locator("#filter-q").fill("march");
  await page.locator("#filter-status").selectOption("COMPLETE");
  const complete = (await getJson("/api/v1/tasks?q=march&status=COMPLETE&limit=500")).items;
  assert.ok(complete.length >= 1, "the earlier tests' March tasks are complete");
  await listed(page, complete.map((t) => t.id), "the complete March tasks");
  await page.locator("#bulk-retry").click();
  await page.locator("#notice", { hasText: `0 task(s) sent back to WAITING; ${complete.length} refused (` }).waitFor();
  for (const task of complete) assert.equal((await getJson(`/api/v1/tasks/${task.id}`)).status, "COMPLETE");
  await page.locator("#filter-status").selectOption("");
  await page.locator("#filter-q").fill("nightly sweep");
  await listed(page, newestFirst, "the search lists the three sweeps");
  await page.screenshot({ path: join(SHOTS, "task-list-filters.png"), fullPage: true });
  await assertAccessible(page, "home, filtered");
  assert.deepEqual(page.problems, [], "no console errors");
});

test("monitoring: tasks per minute, waiting per system, timings, bots and dead letters, as the API counts them, and live", async () => {
  const page = await openPage();
  await page.evaluate(() => { window.notReloaded = true; });
  await page.locator("#monitoring-link").click();
  await page.locator("#throughput-chart").waitFor();
  const data = await getJson("/api/v1/monitoring?minutes=60");
  const sum = (key) => data.throughput.reduce((total, m) => total + m[key], 0);
  const completed = sum("completed");
  assert.equal(data.throughput.length, 60);
  assert.ok(completed >= 2, `the earlier tests completed tasks: ${completed}`);
  assert.match(await page.locator("#throughput-summary").textContent(), new RegExp(`^${completed} completed and ${sum("failed")} failed in the last 60 minutes`));
  assert.equal(await page.locator("#throughput-chart rect.completed").count(), data.throughput.filter((m) => m.completed).length);
  assert.equal(await page.locator("#throughput-chart g[data-minute]").count(), 60);

  const cells = (selector) => page.locator(`${selector} tbody tr`).evaluateAll((rows) => rows.map((r) => [...r.cells].map((c) => c.textContent.trim())));
  const waiting = Object.fromEntries((await cells("#waiting-table")).map(([system, count]) => [system, Number(count)]));
  assert.deepEqual(waiting, data.waiting);
  assert.ok(data.waiting.NOOP >= 3, "the sweeps of the task-list test wait");
  assert.deepEqual((await cells("#timings-table")).map((row) => row[0]).sort(), data.timings.map((t) => t.system).sort());
  const bots = await cells("#bot-usage-table");
  assert.deepEqual(bots.map((row) => row[0]).sort(), data.bots.map((b) => b.name).sort());
  const payroll = data.bots.find((b) => b.name === "payroll-bot");
  assert.deepEqual(bots.find((row) => row[0] === "payroll-bot").slice(1, 3), [String(payroll.completed), String(payroll.failed)]);
  assert.equal(await page.locator("#dead-letter-count").textContent(), String(data.dead_letters));
  await page.screenshot({ path: join(SHOTS, "monitoring.png"), fullPage: true });
  await assertAccessible(page, "monitoring");

  // A task completes meanwhile: the view counts it without a reload.
  await submitTask("Payroll of April", "PAYROLL", "employee,amount\nAna Souza,1300\nBruno Lima,990\n");
  await page.locator("#throughput-summary", { hasText: `${completed + 1} completed` }).waitFor({ timeout: 30000 });
  await page.locator("#bot-usage-table tr[data-bot='payroll-bot'] td", { hasText: String(payroll.completed + 1) }).first().waitFor();
  assert.equal(await page.evaluate(() => window.notReloaded), true, "the page updated itself, no reload");
  assert.deepEqual(page.problems, [], "no console errors");
});

/** Publishes a message the orchestrator cannot read, which it dead-letters. */
async function publishMalformed(text) {
  const response = await fetch(`${MANAGEMENT}/exchanges/${encodeURIComponent(vhost)}/botline.events/publish`, {
    method: "POST", headers: { authorization: AUTH, "content-type": "application/json" },
    body: JSON.stringify({ properties: {}, routing_key: "task.status", payload: text, payload_encoding: "string" }),
  });
  assert.ok(response.ok, `publish: ${response.status}`);
  assert.equal((await response.json()).routed, true, "the exchange routed it");
}

test("dead letters: listed with their queue, reason and body; replayed and discarded, one or many, after a confirmation", async () => {
  await publishMalformed("not json (first)");
  await publishMalformed("not json (second)");
  await until("two dead letters", async () => (await getJson("/api/v1/dead-letters")).total === 2, 20);

  const page = await openPage();
  await page.locator("#dead-letters-link").click();
  const rows = page.locator("#dead-letters-table tbody tr");
  await rows.nth(1).waitFor();
  const held = (await getJson("/api/v1/dead-letters")).items;
  assert.equal(await rows.count(), 2);
  for (const item of held) {
    const row = page.locator(`#dead-letters-table tr[data-dead-letter="${item.id}"]`);
    assert.ok(item.queue && item.reason, JSON.stringify(item));
    assert.match(await row.locator("td").nth(1).textContent(), new RegExp(item.queue.replace(/\./g, "\\.")));
    assert.equal(await row.locator("td").nth(2).textContent(), item.reason);
    assert.equal(await row.locator("pre.body-preview").textContent(), item.body_preview);
  }
  assert.match(await page.locator("#dead-letter-total").textContent(), /^2 message\(s\) in botline\.dead/);
  await page.screenshot({ path: join(SHOTS, "dead-letters.png"), fullPage: true });
  await assertAccessible(page, "dead letters");

  // Asked, and answered no: nothing happens.
  const first = held.find((m) => m.body_preview.includes("first"));
  const firstRow = page.locator(`#dead-letters-table tr[data-dead-letter="${first.id}"]`);
  await firstRow.getByRole("checkbox").check();
  assert.equal(await page.locator("#dead-letters-selected").textContent(), "1 selected");
  page.once("dialog", (dialog) => dialog.dismiss());
  await page.locator("#discard-dead-letters").click();
  assert.equal((await getJson("/api/v1/dead-letters")).total, 2, "a refused confirmation changes nothing");

  // Replayed: it goes back to the queue it failed on and, still malformed, is dead-lettered
  // again (its id is the same; the time it was dead-lettered, to the second, is later).
  await until("a second has passed since it was dead-lettered", async () => Date.now() - Date.parse(first.dead_lettered_at) > 1000, 5);
  acceptDialogs(page);
  await page.locator("#replay-dead-letters").click();
  await page.locator("#notice", { hasText: "1 replayed." }).waitFor();
  await until("the replayed message is dead-lettered again", async () => {
    const items = (await getJson("/api/v1/dead-letters")).items;
    return items.length === 2 && items.some((m) => m.body_preview.includes("first") && m.dead_lettered_at !== first.dead_lettered_at);
  }, 20);

  // Both, discarded.
  await page.locator("#dead-letters-table tbody tr").nth(1).waitFor();
  await until("the page lists both again", async () => (await page.locator("#dead-letters-table tbody tr").count()) === 2, 15);
  await page.locator("#select-all-dead-letters").check();
  assert.equal(await page.locator("#dead-letters-selected").textContent(), "2 selected");
  await page.locator("#discard-dead-letters").click();
  await page.locator("#notice", { hasText: "2 discarded" }).waitFor();
  await page.locator("#dead-letter-total", { hasText: "0 message(s)" }).waitFor();
  assert.equal((await getJson("/api/v1/dead-letters")).total, 0);
  assert.deepEqual(page.problems, [], "no console errors");
});
