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
