// Botline dashboard: plain JavaScript over the public REST API and the /api/v1/events stream.
// No framework and nothing fetched from the internet. Views re-fetch what they show when the
// server announces a change (debounced), so the page is always the server's truth.
"use strict";

const STATUSES = ["WAITING", "ASSIGNED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED"];
const FINAL = new Set(["COMPLETE", "FAILED", "CANCELLED"]);
const PAGE_SIZE = 20;
// Longest system description shown in the new-task form's choices (the full text is the title).
const OPTION_DESCRIPTION_CHARS = 60;

const state = {
  filters: { status: "", system: "", bot_id: "" },
  offset: 0,
  total: 0,
  bots: new Map(),      // id -> bot, for names and the bot filter
  systems: [],          // every registered system (SystemView), by name, from /api/v1/systems
  systemsLoaded: false,
  taskId: null,         // the task open in the detail view
  systemName: null,     // the system open in the system view
  csvFile: null,
};

const $ = (selector, root = document) => root.querySelector(selector);

// ---------- API ----------

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.field = error.field ?? null;
  }
}

// ---------- the API token ----------
// An orchestrator with tokens answers 401 without one: the page then asks for a token (once for
// all the requests that were refused together), keeps it for this tab in sessionStorage and sends
// it as "Authorization: Bearer". Without tokens (on loopback) nothing is asked.

const TOKEN_KEY = "botline.token";
let tokenPrompt = null; // the question being asked, shared by every request waiting for it

function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

function withToken(options) {
  const token = storedToken();
  if (!token) return options;
  const headers = new Headers(options.headers || {});
  headers.set("authorization", `Bearer ${token}`);
  return { ...options, headers };
}

// Resolves once there is a token other than `refused` to try.
function askToken(refused) {
  if (tokenPrompt) return tokenPrompt;
  const current = storedToken();
  if (current && current !== refused) return Promise.resolve();
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* private mode */ }
  const dialog = $("#token-dialog");
  const form = $("#token-form");
  $("#token-error").textContent = refused ? "That token was refused; enter another." : "";
  tokenPrompt = new Promise((done) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      const token = form.elements.token.value.trim();
      if (!token) return;
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* kept for this request only */ }
      form.reset();
      dialog.close();
      $("#forget-token").hidden = false;
      tokenPrompt = null;
      done();
    };
  });
  dialog.showModal();
  form.elements.token.focus();
  return tokenPrompt;
}

// fetch() with the token; a 401 asks for one and tries again.
async function authorizedFetch(path, options = {}) {
  for (;;) {
    const sent = storedToken();
    const response = await fetch(path, withToken(options));
    if (response.status !== 401) return response;
    await askToken(sent);
  }
}

async function api(path, options = {}) {
  const response = await authorizedFetch(path, options);
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

const sendJson = (method, path, value) =>
  api(path, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(value) });

// ---------- small helpers ----------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const badge = (status) => el("span", { class: `badge ${status}` }, status);

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const shortId = (id) => (id ? id.slice(-8) : "");
const botName = (id) => (id && state.bots.get(id) ? state.bots.get(id).name : shortId(id));

function notify(message, bad = false) {
  const notice = $("#notice");
  notice.textContent = message;
  notice.className = bad ? "notice bad" : "notice";
  notice.hidden = !message;
}

// The field itself, then what contains it: "payload.lines[0].amount", "payload.lines[0]",
// "payload.lines", "payload".
function fieldAndParents(field) {
  const names = [];
  for (let name = field; name; name = name.replace(/(\[\d+\]|\.[^.[\]]*)$/, "")) {
    names.push(name);
    if (!/(\[\d+\]|\.[^.[\]]*)$/.test(name)) break;
  }
  return names;
}

function showErrors(form, error) {
  for (const p of form.querySelectorAll("[data-error-for]")) p.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  if (!error) return;
  const names = error.field ? fieldAndParents(String(error.field)) : [];
  const find = (make) => names.map((name) => form.querySelector(make(CSS.escape(name)))).find(Boolean);
  const target = find((name) => `[data-error-for="${name}"]`) || form.querySelector('[data-error-for=""]');
  target.textContent = error.message;
  const input = find((name) => `[name="${name}"]`);
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

// ---------- CSV (preview, column check, retry of failed rows) ----------

function parseCsv(text) {
  text = text.replace(/^\uFEFF/, "");
  const firstLine = text.split(/\r?\n/, 1)[0] || "";
  const delimiter = !firstLine.includes(",") && firstLine.includes(";") ? ";" : ",";
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === delimiter) { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); field = "";
      if (row.length > 1 || row[0] !== "") rows.push(row);
      row = [];
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return { delimiter, header: rows[0] || [], rows: rows.slice(1) };
}

function toCsv(header, rows, delimiter = ",") {
  const quote = (value) => (/[",;\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value);
  return [header, ...rows].map((r) => r.map(quote).join(delimiter)).join("\n") + "\n";
}

// The columns a system's CSV needs (the server checks them too; this is the early warning), or
// null when it asks for none in particular.
function requiredColumns(system) {
  return system && system.input && system.input.kind === "csv" ? system.input.columns || [] : null;
}

function checkColumns(system, header) {
  const required = requiredColumns(system);
  const name = system ? system.name : $("#task-system").value;
  if (!required) return { ok: true, text: `${name} takes no CSV columns in particular` };
  const have = header.map((h) => h.trim().toLowerCase());
  const missing = required.filter((c) => !have.includes(c.toLowerCase()));
  return missing.length
    ? { ok: false, text: `Missing column(s) ${missing.join(", ")} (needs ${required.join(", ")})` }
    : { ok: true, text: `Columns OK: ${required.join(", ")}` };
}

const systemLink = (name, text = name) => el("a", { href: `#/systems/${encodeURIComponent(name)}` }, text);

// What the chosen system asks of a task, under the system, the file and the payload fields.
function renderContractHints(system) {
  const systemHint = $("#system-hint");
  const payloadHint = $("#payload-hint");
  systemHint.replaceChildren();
  payloadHint.replaceChildren();
  if (!system) {
    if (state.systemsLoaded && !state.systems.length) systemHint.append("No system is registered yet.");
    return;
  }
  systemHint.append(system.description ? `${system.description} ` : "", systemLink(system.name, `About ${system.name}`));
  const kind = system.input && system.input.kind;
  if (kind === "json") {
    payloadHint.append(`Required: a JSON object that meets ${system.name}'s JSON Schema (`,
      systemLink(system.name, "see the schema"), ").");
  } else if (kind === "csv") {
    payloadHint.append(`Optional: ${system.name} takes its items from the CSV file.`);
  } else {
    payloadHint.append(`Optional: any JSON object.`);
  }
}

function renderPreview() {
  const preview = $("#csv-preview");
  const hint = $("#columns-hint");
  preview.replaceChildren();
  hint.textContent = "";
  hint.className = "hint";
  const system = systemByName($("#task-system").value);
  renderContractHints(system);
  const kind = system && system.input ? system.input.kind : null;
  if (!state.csvFile) {
    const required = requiredColumns(system);
    if (required) hint.textContent = `A CSV file is needed, with the columns ${required.join(", ")}`;
    else if (kind === "json") hint.textContent = `${system.name} takes a JSON payload (below), no CSV file`;
    else if (kind === "none") hint.textContent = "A CSV file is optional";
    return;
  }
  const { header, rows } = state.csvFile.parsed;
  const check = checkColumns(system, header);
  hint.textContent = `${state.csvFile.name}: ${rows.length} row(s). ${check.text}`;
  hint.className = check.ok ? "hint ok" : "hint bad";
  const table = el("table", {},
    el("caption", { class: "sr-only" }, "First rows of the file"),
    el("thead", {}, el("tr", {}, header.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.slice(0, 5).map((r) => el("tr", {}, r.map((v) => el("td", {}, v))))));
  preview.append(table);
  if (rows.length > 5) preview.append(el("p", { class: "hint" }, `…and ${rows.length - 5} more`));
}

async function useFile(file) {
  if (!file) { state.csvFile = null; renderPreview(); return; }
  const text = await file.text();
  state.csvFile = { name: file.name, file, parsed: parseCsv(text) };
  renderPreview();
}

// ---------- lists ----------

function taskQuery() {
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset, order: "newest" });
  for (const [key, value] of Object.entries(state.filters)) if (value) params.set(key, value);
  return params.toString();
}

async function refreshCounters() {
  const stats = await api("/api/v1/tasks/stats");
  const nav = $("#counters");
  nav.replaceChildren(...STATUSES.map((status) =>
    el("button", {
      type: "button", class: "counter", "data-status": status,
      "aria-pressed": String(state.filters.status === status),
      onclick: () => setFilter("status", state.filters.status === status ? "" : status),
    }, status, el("b", {}, stats[status] ?? 0))));
}

async function refreshTasks() {
  const page = await api(`/api/v1/tasks?${taskQuery()}`);
  state.total = page.total;
  const body = $("#tasks-body");
  if (!page.items.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No tasks.")));
  } else {
    body.replaceChildren(...page.items.map((task) => el("tr", { "data-task-id": task.id, "data-status": task.status },
      el("td", {}, el("a", { href: `#/tasks/${task.id}` }, task.description)),
      el("td", {}, task.system),
      el("td", {}, badge(task.status)),
      el("td", {}, progressOf(task)),
      el("td", {}, botName(task.bot_id) || "—"),
      el("td", { class: "num", title: offersTitle(task) }, `${task.attempt} · ${task.failures}/${task.max_attempts}`),
      el("td", {}, when(task.created_at)))));
  }
  const last = Math.min(state.offset + PAGE_SIZE, state.total);
  $("#page-info").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : "";
  $("#prev-page").disabled = state.offset === 0;
  $("#next-page").disabled = last >= state.total;
}

// Offers (every offer, answered or not: the attempt number), failed runs (bounded by
// max_attempts) and unanswered offers are three different counts.
function offersTitle(task) {
  return `${task.attempt} offer(s), ${task.unanswered_offers} unanswered; ${task.failures} of ${task.max_attempts} runs failed`;
}

// A CSV task's rows done; those that failed or were refused (a COMPLETE task can hold some) are
// counted beside the bar, which turns amber, so it does not read as a clean success.
function progressOf(task) {
  const { done, total } = task.progress;
  if (total === null || total === undefined) return task.status === "COMPLETE" ? "done" : "—";
  const failed = Number(task.result?.rows_failed) || 0;
  return el("span", { class: failed ? "bar partial" : "bar" },
    el("progress", { max: total || 1, value: done, "aria-label": `${done} of ${total} rows` }),
    el("span", { class: "num" }, `${done}/${total}`),
    failed ? el("span", { class: "rows-failed", title: `${failed} of ${total} rows failed or were refused` }, `${failed} failed`) : null);
}

async function refreshBots() {
  const page = await api("/api/v1/bots?limit=500&order=oldest");
  state.bots = new Map(page.items.map((bot) => [bot.id, bot]));
  const body = $("#bots-body");
  body.replaceChildren(...(page.items.length ? page.items.map((bot) => el("tr", { "data-bot": bot.name },
    el("td", {}, bot.name, bot.delivery === "http" ? el("span", { class: "muted" }, ` (http :${bot.http_port})`) : null),
    el("td", {}, badge(bot.status), bot.paused ? [" ", badge("PAUSED")] : null,
      backingOff(bot) ? el("span", { class: "muted", title: `no offer before ${bot.offers_paused_until}` }, ` (${bot.unanswered_offers} unanswered)`) : null),
    el("td", {}, systemLinks(bot.systems)),
    el("td", {}, bot.ip_address),
    el("td", { title: bot.last_heartbeat_at || "" }, ago(bot.last_heartbeat_at)),
    el("td", {}, heldTasks(bot)),
    el("td", {},
      el("button", { type: "button", onclick: () => openBotForm(bot), "aria-label": `Edit ${bot.name}` }, "Edit"), " ",
      el("button", { type: "button", onclick: () => pauseBot(bot, !bot.paused), "aria-label": `${bot.paused ? "Resume" : "Pause"} ${bot.name}` }, bot.paused ? "Resume" : "Pause"), " ",
      el("button", { type: "button", class: "danger", onclick: () => deleteBot(bot), "aria-label": `Delete ${bot.name}` }, "Delete"))))
    : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No bots yet: start one, or register it here."))]));
  const select = $("#filter-bot");
  const chosen = state.filters.bot_id;
  select.replaceChildren(el("option", { value: "" }, "any"),
    ...page.items.map((bot) => el("option", { value: bot.id, selected: bot.id === chosen }, bot.name)));
  renderSystemsTable();
}

// What a bot holds: "used/total" slots when it has more than one, then its first tasks.
function heldTasks(bot) {
  const ids = bot.task_ids || [];
  const shown = ids.slice(0, 3).flatMap((id, i) => [i ? ", " : "", el("a", { href: `#/tasks/${id}` }, shortId(id))]);
  const more = ids.length > 3 ? el("span", { class: "muted" }, ` +${ids.length - 3} more`) : null;
  const slots = bot.slots > 1 ? el("span", { class: "slots", title: `${bot.slots_used} of ${bot.slots} slots used` }, `${bot.slots_used}/${bot.slots} `) : null;
  if (!ids.length && !slots) return "—";
  return [slots, ...shown, more];
}

const systemLinks = (names) => names.flatMap((name, i) => (i ? [", ", systemLink(name)] : [systemLink(name)]));

// ---------- systems ----------

const systemByName = (name) => state.systems.find((system) => system.name === name) || null;

function kindOf(system) {
  return (system && system.input && system.input.kind) || "none";
}

function shorten(text, max) {
  const flat = String(text || "").replace(/\s+/g, " ").trim();
  if (flat.length <= max) return flat;
  const cut = flat.slice(0, max - 1);
  const space = cut.lastIndexOf(" ");
  return `${(space > max / 2 ? cut.slice(0, space) : cut).replace(/[\s,;:.—-]+$/, "")}…`;
}

// Reloads the systems and redraws what lists them: the new-task choice, the task filter, the bot
// form's checkboxes and the Systems panel. Each keeps what was chosen in it.
async function refreshSystems() {
  const { systems } = await api("/api/v1/systems");
  const changed = JSON.stringify(systems) !== JSON.stringify(state.systems);
  state.systems = systems;
  state.systemsLoaded = true;
  if (changed || !$("#task-system").options.length) {
    fillTaskSystems();
    fillFilterSystems();
    fillBotSystems();
  }
  renderSystemsTable();
  renderPreview();
}

// Replaces a select's options (built by `option(name)`), keeping the chosen value: one that
// went away stays, marked, rather than silently becoming another.
function fillSelect(select, first, names, option, fallback) {
  const chosen = select.value || fallback;
  const all = chosen && !names.includes(chosen) ? [...names, chosen] : names;
  select.replaceChildren(...first, ...all.map((name) => option(name, name === chosen)));
  if (chosen) select.value = chosen;
}

function fillTaskSystems() {
  const select = $("#task-system");
  const names = state.systems.map((system) => system.name);
  fillSelect(select, [], names, (name, selected) => {
    const system = systemByName(name);
    const text = !system ? `${name} (no longer registered)`
      : system.description ? `${name} — ${shorten(system.description, OPTION_DESCRIPTION_CHARS)}` : name;
    return el("option", { value: name, selected, title: system ? system.description : null }, text);
  });
}

function fillFilterSystems() {
  const names = state.systems.map((system) => system.name);
  fillSelect($("#filter-system"), [el("option", { value: "" }, "any")], names,
    (name, selected) => el("option", { value: name, selected }, name), state.filters.system);
}

function fillBotSystems() {
  const box = $("#bot-systems");
  const checked = new Set([...box.querySelectorAll('[name="systems"]:checked')].map((b) => b.value));
  const names = state.systems.map((system) => system.name);
  for (const name of checked) if (!names.includes(name)) names.push(name);
  box.replaceChildren(...(names.length
    ? names.map((name) => {
      const input = el("input", { type: "checkbox", name: "systems", value: name });
      input.checked = checked.has(name); // the state, not the default a form reset goes back to
      return el("label", {}, input, ` ${name}`);
    })
    : [el("span", { class: "muted" }, "No system is registered.")]));
}

function renderSystemsTable() {
  if (!state.systemsLoaded) return;
  const bots = [...state.bots.values()];
  const body = $("#systems-body");
  body.replaceChildren(...(state.systems.length ? state.systems.map((system) => el("tr", { "data-system": system.name },
    el("td", {}, systemLink(system.name), system.builtin ? el("span", { class: "muted" }, " (built-in)") : null),
    el("td", {}, shorten(system.description, 120) || el("span", { class: "muted" }, "—")),
    el("td", {}, kindOf(system)),
    el("td", { class: "num" }, bots.filter((bot) => bot.systems.includes(system.name)).length)))
    : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No systems."))]));
}

function openSystemForm() {
  const form = $("#system-form");
  form.reset();
  showErrors(form, null);
  form.hidden = false;
  showKindFields();
  form.elements.name.focus();
}

function showKindFields() {
  const kind = $("#new-system-kind").value;
  $("#new-system-columns-field").hidden = kind !== "csv";
  $("#new-system-schema-field").hidden = kind !== "json";
}

async function saveSystem(event) {
  event.preventDefault();
  const form = event.target;
  showErrors(form, null);
  const kind = form.elements["input.kind"].value;
  const input = { kind };
  if (kind === "csv") {
    input.columns = form.elements["input.columns"].value.split(/[,;\n]/).map((c) => c.trim()).filter(Boolean);
  } else if (kind === "json") {
    try {
      input.schema = JSON.parse(form.elements["input.schema"].value || "{}");
    } catch (error) {
      showErrors(form, { field: "input.schema", message: `This is not JSON: ${error.message}` });
      return;
    }
  }
  const body = { name: form.elements.name.value.trim(), description: form.elements.description.value.trim(), input };
  const button = $("#new-system-submit");
  button.disabled = true;
  try {
    const system = await sendJson("POST", "/api/v1/systems", body);
    form.hidden = true;
    notify(`System ${system.name} registered.`);
    await refreshSystems();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showErrors(form, error);
  } finally {
    button.disabled = false;
  }
}

// ---------- system page ----------

const orDefault = (value, unit = "") => (value === null || value === undefined
  ? el("span", { class: "muted" }, "orchestrator default")
  : `${value}${unit}`);

async function showSystem(name) {
  const [system, bots] = await Promise.all([
    api(`/api/v1/systems/${encodeURIComponent(name)}`),
    api(`/api/v1/bots?${new URLSearchParams({ system: name, limit: 100 })}`),
  ]);
  if (state.systemName !== name) return; // navigated away meanwhile
  const input = system.input || { kind: "none" };
  const defaults = system.defaults || {};
  let contract;
  if (input.kind === "csv") {
    contract = [el("p", {}, "A CSV file, one item per row, whose header has at least these columns (any case, any order):"),
      el("ul", { id: "system-columns", class: "columns" }, (input.columns || []).map((column) => el("li", {}, el("code", {}, column))))];
  } else if (input.kind === "json") {
    contract = [el("p", {}, "A JSON payload that meets this JSON Schema:"),
      el("pre", { id: "system-schema-text", class: "schema" }, JSON.stringify(input.schema, null, 2))];
  } else {
    contract = [el("p", { id: "system-anything" }, "Anything: an optional CSV file with any header, an optional JSON object.")];
  }
  $("#system-title").textContent = system.name;
  $("#system-detail").replaceChildren(
    el("dl", { class: "fields" },
      el("dt", {}, "Description"), el("dd", { id: "system-description-text" }, system.description || el("span", { class: "muted" }, "—")),
      el("dt", {}, "Built-in"), el("dd", { id: "system-builtin" }, system.builtin ? "yes (cannot be deleted)" : "no"),
      el("dt", {}, "Input"), el("dd", { id: "system-kind-text" }, input.kind),
      el("dt", {}, "Registered"), el("dd", {}, when(system.created_at)),
      el("dt", {}, "Changed"), el("dd", {}, when(system.updated_at))),
    el("div", { class: "detail-actions" },
      el("a", { href: "#/", id: "new-system-task", onclick: () => startTaskFor(system.name) }, `New ${system.name} task`),
      system.builtin ? null : el("button", { type: "button", class: "danger", id: "delete-system", onclick: () => deleteSystem(system) }, "Delete system")),
    el("div", { class: "detail-grid" },
      el("section", { "aria-labelledby": "contract-title" },
        el("h3", { id: "contract-title" }, "What its tasks carry"), contract,
        el("h3", { id: "defaults-title" }, "Defaults for its tasks"),
        el("dl", { class: "fields", id: "system-defaults" },
          el("dt", {}, "Max attempts"), el("dd", {}, orDefault(defaults.max_attempts)),
          el("dt", {}, "Offer timeout"), el("dd", {}, orDefault(defaults.offer_timeout_seconds, " s")),
          el("dt", {}, "Max run time"), el("dd", {}, orDefault(defaults.max_run_seconds, " s")),
          el("dt", {}, "Priority"), el("dd", {}, orDefault(defaults.priority)))),
      el("section", { "aria-labelledby": "system-bots-title" },
        el("h3", { id: "system-bots-title" }, `Bots that run it (${bots.total ?? bots.items.length})`),
        bots.items.length
          ? el("div", { class: "table-wrap" }, el("table", { id: "system-bots" },
              el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Bot"), el("th", { scope: "col" }, "Status"), el("th", { scope: "col" }, "Last heartbeat"))),
              el("tbody", {}, bots.items.map((bot) => el("tr", { "data-bot": bot.name },
                el("td", {}, bot.name),
                el("td", {}, badge(bot.status), bot.paused ? [" ", badge("PAUSED")] : null),
                el("td", { title: bot.last_heartbeat_at || "" }, ago(bot.last_heartbeat_at)))))))
          : el("p", { class: "muted", id: "system-no-bots" }, `No bot runs ${system.name}: its tasks wait until one does.`))));
}

// Opens the new-task form on the home view with this system chosen (the link then goes home).
function startTaskFor(name) {
  const select = $("#task-system");
  if (![...select.options].some((option) => option.value === name)) return;
  select.value = name;
  $("#new-task").open = true;
  renderPreview();
}

async function deleteSystem(system) {
  if (!confirm(`Delete system ${system.name}?`)) return;
  try {
    await api(`/api/v1/systems/${encodeURIComponent(system.name)}`, { method: "DELETE" });
    notify(`System ${system.name} deleted.`);
    location.hash = "#/";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
}

function setFilter(name, value) {
  state.filters[name] = value;
  state.offset = 0;
  const select = $(`#filter-${name === "bot_id" ? "bot" : name}`);
  if (select) select.value = value;
  refreshHome().catch(reportFailure);
}

// ---------- bots: register, edit, delete ----------

function openBotForm(bot) {
  const form = $("#bot-form");
  form.reset();
  showErrors(form, null);
  form.hidden = false;
  $("#bot-form-title").textContent = bot ? `Edit ${bot.name}` : "Register a bot";
  form.elements.id.value = bot ? bot.id : "";
  if (bot) {
    form.elements.name.value = bot.name;
    form.elements.ip_address.value = bot.ip_address;
    const known = [...form.querySelectorAll('[name="systems"]')].map((box) => box.value);
    for (const name of bot.systems.filter((n) => !known.includes(n))) {
      $("#bot-systems").append(el("label", {}, el("input", { type: "checkbox", name: "systems", value: name }), ` ${name}`));
    }
    for (const box of form.querySelectorAll('[name="systems"]')) box.checked = bot.systems.includes(box.value);
    form.elements.delivery.value = bot.delivery;
    form.elements.http_port.value = bot.http_port ?? "";
    form.elements.slots.value = bot.slots ?? 1;
  }
  form.elements.name.focus();
}

async function saveBot(event) {
  event.preventDefault();
  const form = event.target;
  const body = {
    name: form.elements.name.value.trim(),
    ip_address: form.elements.ip_address.value.trim(),
    systems: [...form.querySelectorAll('[name="systems"]:checked')].map((b) => b.value),
    delivery: form.elements.delivery.value,
    slots: Number(form.elements.slots.value) || 1,
  };
  if (body.delivery === "http" || form.elements.http_port.value) body.http_port = Number(form.elements.http_port.value) || null;
  const id = form.elements.id.value;
  try {
    await (id ? sendJson("PATCH", `/api/v1/bots/${id}`, body) : sendJson("POST", "/api/v1/bots", body));
    form.hidden = true;
    notify(id ? `Bot ${body.name} saved.` : `Bot ${body.name} registered.`);
    await refreshBots();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showErrors(form, error);
  }
}

function backingOff(bot) {
  return bot.offers_paused_until && Date.parse(bot.offers_paused_until) > Date.now();
}

// A paused bot is offered nothing, whatever it reports, until resumed; it keeps what it holds.
async function pauseBot(bot, paused) {
  try {
    await sendJson("PATCH", `/api/v1/bots/${bot.id}`, { paused });
    notify(paused ? `Bot ${bot.name} paused: it gets no new task.` : `Bot ${bot.name} resumed.`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
  await refreshBots();
}

async function deleteBot(bot) {
  if (!confirm(`Delete bot ${bot.name}?`)) return;
  try {
    await api(`/api/v1/bots/${bot.id}`, { method: "DELETE" });
    notify(`Bot ${bot.name} deleted.`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
  await refreshBots();
}

// ---------- tasks: submit ----------

async function submitTask(event) {
  event.preventDefault();
  const form = event.target;
  showErrors(form, null);
  const data = new FormData();
  data.set("description", form.elements.description.value);
  data.set("system", form.elements.system.value);
  data.set("priority", form.elements.priority.value || "0");
  if (form.elements.payload.value.trim()) data.set("payload", form.elements.payload.value.trim());
  if (state.csvFile) data.set("attachment", state.csvFile.file, state.csvFile.name);
  const button = $("#task-submit");
  button.disabled = true;
  try {
    const task = await api("/api/v1/tasks", { method: "POST", body: data });
    const system = form.elements.system.value;
    form.reset();
    form.elements.system.value = system; // the next task is likely for the same system
    state.csvFile = null;
    renderPreview();
    notify(`Task submitted: ${task.description}`);
    await refreshHome();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showErrors(form, error);
  } finally {
    button.disabled = false;
  }
}

// ---------- task detail ----------

async function showTask(id) {
  const [task, events] = await Promise.all([api(`/api/v1/tasks/${id}`), api(`/api/v1/tasks/${id}/events`)]);
  if (state.taskId !== id) return; // navigated away meanwhile
  $("#task-title").textContent = task.description;
  const rows = (task.result && Array.isArray(task.result.rows)) ? task.result.rows : [];
  const failedRows = rows.filter((r) => r.status === "REJECTED" || r.status === "FAILED");
  const detail = $("#task-detail");
  detail.replaceChildren(
    el("dl", { class: "fields" },
      el("dt", {}, "Status"), el("dd", { id: "task-status" }, badge(task.status)),
      el("dt", {}, "Progress"), el("dd", {}, progressOf(task)),
      el("dt", {}, "System"), el("dd", {}, systemLink(task.system)),
      el("dt", {}, "Bot"), el("dd", {}, botName(task.bot_id) || "—"),
      el("dt", {}, "Offers"), el("dd", {}, `${task.attempt} (${task.unanswered_offers} unanswered)`),
      el("dt", {}, "Failed runs"), el("dd", {}, `${task.failures} of ${task.max_attempts}`),
      el("dt", {}, "Priority"), el("dd", {}, task.priority),
      el("dt", {}, "Created"), el("dd", {}, when(task.created_at)),
      el("dt", {}, "Started"), el("dd", {}, when(task.started_at)),
      el("dt", {}, "Finished"), el("dd", {}, when(task.finished_at)),
      task.error ? [el("dt", {}, "Error"), el("dd", { class: "error" }, task.error)] : null,
      task.payload ? [el("dt", {}, "Payload"), el("dd", {}, el("code", {}, JSON.stringify(task.payload)))] : null,
      task.result && !rows.length ? [el("dt", {}, "Result"), el("dd", {}, el("code", {}, JSON.stringify(task.result)))] : null,
      el("dt", {}, "Id"), el("dd", {}, el("code", {}, task.id))),
    el("div", { class: "detail-actions" },
      task.has_attachment ? el("a", { href: `/api/v1/tasks/${task.id}/attachment`, download: `task-${task.id}.csv`, onclick: downloadWithToken }, "Download CSV") : null,
      el("button", { type: "button", id: "cancel-task", disabled: FINAL.has(task.status), onclick: () => act(task, "cancel") }, "Cancel"),
      el("button", { type: "button", id: "retry-task", disabled: !["FAILED", "CANCELLED"].includes(task.status), onclick: () => act(task, "retry") }, "Retry"),
      el("button", { type: "button", id: "retry-failed-rows", disabled: !(task.has_attachment && failedRows.length), onclick: () => retryFailedRows(task, failedRows) },
        `Retry failed rows only (${failedRows.length})`)),
    el("div", { class: "detail-grid" },
      el("section", { "aria-labelledby": "timeline-title" },
        el("h3", { id: "timeline-title" }, "Timeline"),
        el("ol", { class: "timeline", id: "timeline" }, events.map((event) => el("li", {
            class: ["failed", "bot_lost", "offer_expired", "rejected", "stale_event", "offer_undeliverable"].includes(event.kind) ? "bad" : (event.kind === "completed" ? "good" : ""),
          },
          el("strong", {}, event.kind.replace(/_/g, " ")),
          event.attempt ? ` · attempt ${event.attempt}` : "",
          event.bot_id ? ` · ${botName(event.bot_id)}` : "",
          el("div", { class: "when" }, when(event.at), describe(event)),
          runLog(event))))),
      el("section", { "aria-labelledby": "rows-title" },
        el("h3", { id: "rows-title" }, `Rows (${rows.length}${task.progress.total ? ` of ${task.progress.total}` : ""})`),
        rows.length
          ? el("div", { class: "table-wrap" }, el("table", { id: "rows-table" },
              el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Row"), el("th", { scope: "col" }, "Outcome"), el("th", { scope: "col" }, "Message"))),
              el("tbody", {}, rows.map((r) => el("tr", { class: (r.status === "REJECTED" || r.status === "FAILED") ? "failed" : "", "data-row": r.row },
                el("td", { class: "num" }, r.row), el("td", {}, badge(r.status)), el("td", {}, r.message))))))
          : el("p", { class: "muted" }, "No row outcomes yet."))));
}

// The end of a run's log (an external program's stderr and log lines), folded.
function runLog(event) {
  const log = event.detail && event.detail.log;
  if (!log) return null;
  return el("details", { class: "run-log" },
    el("summary", {}, `Log of attempt ${event.attempt ?? ""}`.trim()),
    el("pre", {}, log));
}

function describe(event) {
  const detail = event.detail || {};
  const parts = [];
  if (detail.reason) parts.push(detail.reason);
  if (detail.error) parts.push(detail.error);
  if (detail.rows) parts.push(`${detail.rows} row(s)`);
  if (detail.resume_after_row) parts.push(`resumes after row ${detail.resume_after_row}`);
  if (detail.retry_at) parts.push(`retry at ${when(detail.retry_at)}`);
  return parts.length ? ` — ${parts.join("; ")}` : "";
}

async function act(task, action) {
  try {
    await api(`/api/v1/tasks/${task.id}/${action}`, { method: "POST" });
    notify(action === "cancel" ? "Task cancelled." : "Task sent back to WAITING.");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
  await showTask(task.id);
}

// A link cannot send a header: with a token, the file is fetched, then saved from memory.
async function downloadWithToken(event) {
  if (!storedToken()) return;
  event.preventDefault();
  const link = event.currentTarget;
  const response = await authorizedFetch(link.getAttribute("href"));
  if (!response.ok) { notify("The attachment could not be read.", true); return; }
  const url = URL.createObjectURL(await response.blob());
  const save = el("a", { href: url, download: link.getAttribute("download") });
  document.body.append(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function retryFailedRows(task, failedRows) {
  const response = await authorizedFetch(`/api/v1/tasks/${task.id}/attachment`);
  if (!response.ok) { notify("The attachment could not be read.", true); return; }
  const { header, rows, delimiter } = parseCsv(await response.text());
  const wanted = new Set(failedRows.map((r) => r.row));
  const subset = rows.filter((_, index) => wanted.has(index + 1));
  const data = new FormData();
  data.set("description", `Retry of failed rows: ${task.description}`.slice(0, 2000));
  data.set("system", task.system);
  data.set("attachment", new Blob([toCsv(header, subset, delimiter)], { type: "text/csv" }), "failed-rows.csv");
  try {
    const created = await api("/api/v1/tasks", { method: "POST", body: data });
    notify(`New task with ${subset.length} row(s) submitted.`);
    location.hash = `#/tasks/${created.id}`;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
}

// ---------- routing and live updates ----------

async function refreshHome() {
  await Promise.all([refreshCounters(), refreshBots(), refreshSystems()]);
  await refreshTasks();
}

function reportFailure(error) {
  console.warn("refresh failed", error);
  notify(`Could not reach the server: ${error.message}`, true);
}

// "#/tasks/ID" is a task, "#/systems/NAME" a system, anything else the home view.
function parseRoute(hash) {
  const task = hash.match(/^#\/tasks\/([0-9a-f-]{36})$/);
  if (task) return { view: "task", id: task[1] };
  const system = hash.match(/^#\/systems\/([^/]+)$/);
  if (system) {
    let name;
    try { name = decodeURIComponent(system[1]); } catch { name = ""; }
    if (/^[A-Za-z0-9_-]{1,64}$/.test(name)) return { view: "system", name: name.toUpperCase() };
  }
  return { view: "home" };
}

async function route() {
  const where = parseRoute(location.hash);
  state.taskId = where.view === "task" ? where.id : null;
  state.systemName = where.view === "system" ? where.name : null;
  $("#view-home").hidden = where.view !== "home";
  $("#view-task").hidden = where.view !== "task";
  $("#view-system").hidden = where.view !== "system";
  try {
    if (where.view === "task") {
      if (!state.bots.size) await refreshBots();
      await showTask(where.id);
    } else if (where.view === "system") {
      $("#system-title").textContent = where.name;
      $("#system-detail").replaceChildren(el("p", { class: "muted" }, "Loading…"));
      await showSystem(where.name);
    } else {
      await refreshHome();
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      if (where.view === "system") {
        $("#system-detail").replaceChildren(el("p", { class: "error" }, `There is no system ${where.name} (any more).`));
        notify(`There is no system ${where.name} (any more).`, true);
      } else {
        notify("That task does not exist (any more).", true);
      }
    } else reportFailure(error);
  }
}

let pending = null;
let changedTasks = new Set();
function scheduleRefresh(change) {
  if (change && change.type === "task") changedTasks.add(change.id);
  if (pending) return;
  // Coalesce bursts (a busy pipeline sends many notices) into one refresh every 300 ms.
  pending = setTimeout(() => {
    pending = null;
    const touched = changedTasks;
    changedTasks = new Set();
    if (state.taskId) {
      if (!touched.size || touched.has(state.taskId)) showTask(state.taskId).catch(reportFailure);
    } else if (state.systemName) {
      // Its bots' statuses change; the system itself may have changed too.
      showSystem(state.systemName).catch((error) => {
        if (!(error instanceof ApiError && error.status === 404)) reportFailure(error);
      });
    } else {
      refreshHome().catch(reportFailure);
    }
  }, 300);
}

// The change stream is read with fetch rather than EventSource, which cannot send the token
// header; the token never goes into a URL (where logs and the browser's history would keep it).
// Reconnects by itself, waiting longer after each failure (up to 10 s).
async function connectLive() {
  const live = $("#live");
  let delay = 1000;
  for (;;) {
    try {
      const response = await authorizedFetch("/api/v1/events", { headers: { accept: "text/event-stream" }, cache: "no-store" });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      live.textContent = "live";
      live.className = "live on";
      delay = 1000;
      await readEvents(response.body, onLiveEvent);
    } catch (error) {
      console.warn("live updates interrupted", error);
    }
    live.textContent = "reconnecting…";
    live.className = "live";
    await new Promise((resume) => setTimeout(resume, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// "hello" arrives on every (re)connection, "resync" after missed notices: reload then.
function onLiveEvent(type, data) {
  if (type === "hello" || type === "resync") scheduleRefresh(null);
  else if (type === "change") {
    try { scheduleRefresh(JSON.parse(data)); } catch { scheduleRefresh(null); }
  }
}

// Reads server-sent events (the server ends lines with \n) until the stream ends.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // ":" starts a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(type, data.join("\n"));
    }
  }
}

function wireUp() {
  $("#task-form").addEventListener("submit", (e) => submitTask(e).catch(reportFailure));
  $("#task-system").addEventListener("change", renderPreview);
  $("#task-file").addEventListener("change", (e) => useFile(e.target.files[0]).catch(reportFailure));
  const drop = $("#drop-zone");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (!file) return;
    const transfer = new DataTransfer();
    transfer.items.add(file);
    $("#task-file").files = transfer.files;
    useFile(file).catch(reportFailure);
  });
  $("#filters").addEventListener("change", (e) => setFilter(e.target.name, e.target.value));
  $("#prev-page").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); refreshTasks().catch(reportFailure); });
  $("#next-page").addEventListener("click", () => { state.offset += PAGE_SIZE; refreshTasks().catch(reportFailure); });
  $("#add-bot").addEventListener("click", () => openBotForm(null));
  $("#bot-cancel").addEventListener("click", () => { $("#bot-form").hidden = true; });
  $("#bot-form").addEventListener("submit", (e) => saveBot(e).catch(reportFailure));
  $("#add-system").addEventListener("click", openSystemForm);
  $("#new-system-cancel").addEventListener("click", () => { $("#system-form").hidden = true; });
  $("#new-system-kind").addEventListener("change", showKindFields);
  $("#system-form").addEventListener("submit", (e) => saveSystem(e).catch(reportFailure));
  // The token question cannot be dismissed: without a token there is nothing to show.
  $("#token-dialog").addEventListener("cancel", (e) => e.preventDefault());
  $("#forget-token").hidden = !storedToken();
  $("#forget-token").addEventListener("click", () => {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
    location.reload();
  });
  window.addEventListener("hashchange", () => route());
  // Heartbeat ages drift while nothing changes: redraw them now and then.
  setInterval(() => { if (!state.taskId && !state.systemName) refreshBots().catch(() => {}); }, 15000);
  renderPreview();
  route();
  connectLive();
}

document.addEventListener("DOMContentLoaded", wireUp);
