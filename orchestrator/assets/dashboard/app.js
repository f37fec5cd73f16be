// Botline dashboard: plain JavaScript over the public REST API and the /api/v1/events stream.
// No framework and nothing fetched from the internet. Views re-fetch what they show when the
// server announces a change (debounced), so the page is always the server's truth.
"use strict";

const STATUSES = ["WAITING", "ASSIGNED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED"];
const FINAL = new Set(["COMPLETE", "FAILED", "CANCELLED"]);
const PAGE_SIZE = 20;
// The most tasks one bulk cancel or retry sends (the API's bound per request).
const BULK_LIMIT = 500;
// Resolved incidents shown under the open ones.
const RECENT_INCIDENTS = 20;
// The monitoring view's window, in minutes, and the dead letters listed at most.
const MONITOR_MINUTES = 60;
const DEAD_LETTER_LIMIT = 100;
// How long the search box waits for typing to pause before it filters.
const SEARCH_PAUSE_MS = 300;
// Longest system description shown in the new-task form's choices (the full text is the title).
const OPTION_DESCRIPTION_CHARS = 60;

const state = {
  // The task list's filters, as the API names them; created_after and created_before hold the
  // inputs' local times (sent as instants).
  filters: { q: "", status: "", system: "", bot_id: "", created_after: "", created_before: "", sort: "created", rows_failed: "" },
  offset: 0,
  total: 0,
  bots: new Map(),      // id -> bot, for names and the bot filter
  systems: [],          // every registered system (SystemView), by name, from /api/v1/systems
  systemsLoaded: false,
  view: "home",         // the view shown (see parseRoute)
  taskId: null,         // the task open in the detail view
  systemName: null,     // the system open in the system view
  incidentId: null,     // the incident open in the incident view
  csvFile: null,
  failedRowsOnly: false, // the task page shows only its failed or refused rows
  openGroups: new Set(), // the task page's folded progress lines the user opened, by first event id
  actions: new Map(),   // id -> incident action, for incidents' names
  deadLetters: [],      // the dead letters listed
  deadLettersShown: "", // what they were when last drawn (a poll that changes nothing redraws nothing)
  selectedDeadLetters: new Set(), // ids ticked in the dead letters view
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
const th = (text) => el("th", { scope: "col" }, text);

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

// Shows `error` next to the field it names (or at the form's foot), marks that field invalid and,
// unless told not to (a refresh in the background must not move the focus), focuses it.
function showErrors(form, error, focus = true) {
  for (const p of form.querySelectorAll("[data-error-for]")) p.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  if (!error) return;
  const names = error.field ? fieldAndParents(String(error.field)) : [];
  const find = (make) => names.map((name) => form.querySelector(make(CSS.escape(name)))).find(Boolean);
  const target = find((name) => `[data-error-for="${name}"]`) || form.querySelector('[data-error-for=""]');
  target.textContent = error.message;
  const input = find((name) => `[name="${name}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    if (focus) input.focus();
  }
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

const RANGE_FILTERS = new Set(["created_after", "created_before"]);

// A datetime-local input's value (local time) as an RFC 3339 instant; what cannot be read goes
// as typed, for the API to refuse naming the field.
function instant(local) {
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? local : date.toISOString();
}

// The task list's filters as query parameters (the default sort is left out).
function filterParams() {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state.filters)) {
    if (!value || (key === "sort" && value === "created")) continue;
    params.set(key, RANGE_FILTERS.has(key) ? instant(value) : value);
  }
  return params;
}

// One page of the list. Offsets, not cursors: a cursor only follows the sort by creation.
function taskQuery(limit = PAGE_SIZE, offset = state.offset) {
  const params = filterParams();
  params.set("limit", limit);
  params.set("offset", offset);
  params.set("order", "newest");
  return params.toString();
}

const filtering = () => Object.entries(state.filters).some(([key, value]) => value && !(key === "sort" && value === "created"));

const SORT_CAPTIONS = { created: "newest first", finished: "latest finished first", duration: "longest run first" };

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
  const filters = $("#filters");
  const body = $("#tasks-body");
  let page;
  try {
    page = await api(`/api/v1/tasks?${taskQuery()}`);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 400) throw error;
    // A filter the API refuses (a range that ends before it starts…): said next to the filters.
    showErrors(filters, error, false);
    body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No tasks: a filter is not valid.")));
    $("#page-info").textContent = "";
    return;
  }
  showErrors(filters, null);
  state.total = page.total;
  $("#tasks-table caption").textContent = `Tasks, ${SORT_CAPTIONS[state.filters.sort] || SORT_CAPTIONS.created}`;
  if (!page.items.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted" }, filtering() ? "No task matches these filters." : "No tasks.")));
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
  const failed = Number(task.rows_failed ?? task.result?.rows_failed) || 0;
  return el("span", { class: failed ? "bar partial" : "bar" },
    el("progress", { max: total || 1, value: done, "aria-label": `${done} of ${total} rows` }),
    el("span", { class: "num" }, `${done}/${total}`),
    failed ? el("span", { class: "rows-failed", title: `${failed} of ${total} rows failed or were refused` }, `${failed} failed`) : null);
}

async function refreshBots() {
  const page = await api("/api/v1/bots?limit=500&order=oldest");
  state.bots = new Map(page.items.map((bot) => [bot.id, bot]));
  const body = $("#bots-body");
  // Five columns, the address under the name and the heartbeat under the status, so that the
  // table fits its column at 1366 px with its buttons in view (seven did not).
  body.replaceChildren(...(page.items.length ? page.items.map((bot) => el("tr", { "data-bot": bot.name },
    el("td", {}, bot.name, bot.delivery === "http" ? el("span", { class: "muted" }, ` (http :${bot.http_port})`) : null,
      el("div", { class: "sub" }, bot.ip_address)),
    el("td", {}, badge(bot.status), bot.paused ? [" ", badge("PAUSED")] : null,
      backingOff(bot) ? el("span", { class: "muted", title: `no offer before ${bot.offers_paused_until}` }, ` (${bot.unanswered_offers} unanswered)`) : null,
      el("div", { class: "sub", title: bot.last_heartbeat_at ? `last heartbeat ${bot.last_heartbeat_at}` : "no heartbeat yet" }, ago(bot.last_heartbeat_at))),
    el("td", {}, systemLinks(bot.systems)),
    el("td", {}, heldTasks(bot)),
    el("td", {}, el("div", { class: "row-actions" },
      el("button", { type: "button", onclick: () => openBotForm(bot), "aria-label": `Edit ${bot.name}` }, "Edit"),
      el("button", { type: "button", onclick: () => pauseBot(bot, !bot.paused), "aria-label": `${bot.paused ? "Resume" : "Pause"} ${bot.name}` }, bot.paused ? "Resume" : "Pause"),
      el("button", { type: "button", class: "danger", onclick: () => deleteBot(bot), "aria-label": `Delete ${bot.name}` }, "Delete")))))
    : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No bots yet: start one, or register it here."))]));
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

// Sets one filter of the task list (from its control, or a status counter in the header, which
// may be clicked on any view: it then leads home).
function setFilter(name, value) {
  state.filters[name] = value;
  state.offset = 0;
  const select = $(`#filter-${name === "bot_id" ? "bot" : name}`);
  if (select && select.tagName === "SELECT") select.value = value;
  if (state.view !== "home") location.hash = "#/";
  else refreshHome().catch(reportFailure);
}

// A filter control's value as state.filters holds it.
const filterValue = (control) => (control.type === "checkbox" ? (control.checked ? "true" : "") : control.value);

// Bulk cancel or retry of what the filters select: the ids of the first tasks listed under
// them, each then handled as its own cancel or retry would be (one refused stops no other).
async function bulkAct(action) {
  let page;
  try {
    page = await api(`/api/v1/tasks?${taskQuery(BULK_LIMIT, 0)}`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
    return;
  }
  const ids = page.items.map((task) => task.id);
  if (!ids.length) { notify("No task is listed under these filters.", true); return; }
  const some = page.total > ids.length ? ` (the first ${ids.length} of ${page.total})` : "";
  if (!confirm(`${action === "cancel" ? "Cancel" : "Retry"} the ${ids.length} task(s) listed${some}?`)) return;
  try {
    const outcome = await sendJson("POST", `/api/v1/tasks/${action}`, { ids });
    notify(bulkSummary(action, outcome), !outcome.done.length && outcome.refused.length > 0);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
  await refreshHome();
}

function bulkSummary(action, { done, refused }) {
  const did = action === "cancel" ? "cancelled" : "sent back to WAITING";
  const example = refused.length ? ` (${refused[0].message}${refused.length > 1 ? ", …" : ""})` : "";
  return `${done.length} task(s) ${did}; ${refused.length} refused${example}.`;
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
  const failedRows = rows.filter(isFailedRow);
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
        el("ol", { class: "timeline", id: "timeline" }, timelineItems(events))),
      el("section", { "aria-labelledby": "rows-title" },
        el("h3", { id: "rows-title" }, `Rows (${rows.length}${task.progress.total ? ` of ${task.progress.total}` : ""})`),
        rowsSection(task, rows, failedRows))));
}

const BAD_EVENTS = new Set(["failed", "bot_lost", "offer_expired", "rejected", "stale_event", "offer_undeliverable"]);

function timelineEntry(event) {
  return el("li", { class: BAD_EVENTS.has(event.kind) ? "bad" : (event.kind === "completed" ? "good" : "") },
    el("strong", {}, event.kind.replace(/_/g, " ")),
    event.attempt ? ` · attempt ${event.attempt}` : "",
    event.bot_id ? ` · ${botName(event.bot_id)}` : "",
    el("div", { class: "when" }, when(event.at), describe(event)),
    runLog(event));
}

// The timeline, with each run of consecutive progress events (a long CSV task sends one per
// batch of rows, hundreds of lines) folded into one line that opens to show them.
function timelineItems(events) {
  const runs = [];
  for (const event of events) {
    const last = runs[runs.length - 1];
    if (event.kind === "progress" && last && last[0].kind === "progress") last.push(event);
    else runs.push([event]);
  }
  return runs.map((run) => (run.length > 1 ? progressGroup(run) : timelineEntry(run[0])));
}

function progressGroup(events) {
  const first = events[0];
  const last = events[events.length - 1];
  const rows = events.reduce((sum, event) => sum + (Number(event.detail?.rows) || 0), 0);
  const group = el("details", {
    class: "progress-group",
    // The page redraws at every change: an opened group stays open.
    ontoggle: (e) => (e.currentTarget.open ? state.openGroups.add(first.id) : state.openGroups.delete(first.id)),
  },
  el("summary", {}, el("strong", {}, "progress"), ` × ${events.length} · ${rows} row(s)`,
    el("span", { class: "when" }, `${when(first.at)} – ${when(last.at)}`)),
  el("ol", { class: "timeline" }, events.map(timelineEntry)));
  group.open = state.openGroups.has(first.id);
  return el("li", { class: "grouped" }, group);
}

const isFailedRow = (row) => row.status === "REJECTED" || row.status === "FAILED";

// The row outcomes: their totals, the table (all rows or the failed ones only) and the download.
function rowsSection(task, rows, failedRows) {
  if (!rows.length) return el("p", { class: "muted" }, "No row outcomes yet.");
  const total = task.progress.total ?? rows.length;
  const done = rows.length - failedRows.length;
  const totals = el("p", { id: "row-totals", class: "totals" },
    el("span", { "data-count": "done" }, el("b", {}, done), " done"), " · ",
    el("span", { "data-count": "failed", class: failedRows.length ? "rows-failed" : null }, el("b", {}, failedRows.length), " failed or refused"), " · ",
    el("span", { "data-count": "total" }, el("b", {}, total), " total"),
    total > rows.length ? el("span", { class: "muted" }, ` · ${total - rows.length} to go`) : null);
  const body = el("tbody");
  const fill = () => {
    const shown = state.failedRowsOnly ? failedRows : rows;
    body.replaceChildren(...(shown.length ? shown.map(rowLine)
      : [el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No row failed."))]));
  };
  const only = el("input", { type: "checkbox", id: "failed-rows-only", onchange: (event) => { state.failedRowsOnly = event.target.checked; fill(); } });
  only.checked = state.failedRowsOnly;
  fill();
  return [totals,
    el("div", { class: "detail-actions" },
      el("label", { class: "check" }, only, " Failed rows only"),
      el("button", { type: "button", id: "download-results", onclick: () => downloadResults(task, rows) }, "Download results (CSV)")),
    el("div", { class: "table-wrap" }, el("table", { id: "rows-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Row"), el("th", { scope: "col" }, "Outcome"), el("th", { scope: "col" }, "Message"))),
      body))];
}

const rowLine = (r) => el("tr", { class: isFailedRow(r) ? "failed" : "", "data-row": r.row },
  el("td", { class: "num" }, r.row), el("td", {}, badge(r.status)), el("td", {}, r.message));

// The row outcomes as a CSV file, made here from the task's result (nothing is asked of the server).
// Messages come from bots and the systems they drive: one that starts like a formula is quoted
// with a leading apostrophe, so a spreadsheet shows it rather than runs it.
const inert = (text) => (/^[=+\-@\t\r]/.test(text) ? `'${text}` : text);
function downloadResults(task, rows) {
  const csv = toCsv(["row", "status", "message"], rows.map((r) => [String(r.row), String(r.status), inert(String(r.message ?? ""))]));
  saveFile(new Blob([csv], { type: "text/csv" }), `task-${task.id}-results.csv`);
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
  saveFile(await response.blob(), link.getAttribute("download"));
}

// Saves what is in memory as a file (through a link to it, clicked and dropped).
function saveFile(blob, name) {
  const url = URL.createObjectURL(blob);
  const save = el("a", { href: url, download: name });
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

// ---------- incidents ----------

// An incident's action by name, else by code (an action deleted since), else its id.
function actionLabel(incident) {
  const action = state.actions.get(incident.action_id);
  return action ? action.name : incident.action_code || shortId(incident.action_id);
}

async function showIncidents() {
  const [open, resolved, actions] = await Promise.all([
    api("/api/v1/incidents?status=OPEN&limit=100"),
    api(`/api/v1/incidents?status=RESOLVED&limit=${RECENT_INCIDENTS}`),
    api("/api/v1/actions"),
  ]);
  if (state.view !== "incidents") return; // navigated away meanwhile
  state.actions = new Map(actions.map((action) => [action.id, action]));
  $("#open-incidents").replaceChildren(incidentTable("open-incidents-table", open.items, "No incident is open."));
  $("#resolved-incidents").replaceChildren(incidentTable("resolved-incidents-table", resolved.items, "No incident was resolved yet."));
  $("#actions-list").replaceChildren(actionsTable(actions));
}

function incidentTable(id, incidents, empty) {
  if (!incidents.length) return el("p", { class: "muted", id }, empty);
  return el("table", { id },
    el("thead", {}, el("tr", {}, th("Action"), th("Status"), th("Occurrences"), th("Opened"), th("Last occurrence"), th("Resolved"))),
    el("tbody", {}, incidents.map((incident) => el("tr", { "data-incident": incident.id },
      el("td", {}, el("a", { href: `#/incidents/${incident.id}` }, actionLabel(incident))),
      el("td", {}, badge(incident.status)),
      el("td", { class: "num" }, incident.occurrences),
      el("td", {}, when(incident.opened_at)),
      el("td", { title: incident.last_occurrence_at }, ago(incident.last_occurrence_at)),
      el("td", {}, when(incident.resolved_at))))));
}

const teams = (who) => (Array.isArray(who) ? who.join(", ") : who);

// A level in words: "at 10 occurrences or after 5 min: Analyst N1".
function levelText(level) {
  const thresholds = [level.volume ? `at ${level.volume} occurrences` : null, level.minutes ? `after ${level.minutes} min` : null];
  return `${thresholds.filter(Boolean).join(" or ")}: ${teams(level.who)}`;
}

function externalText(external) {
  if (!external) return el("span", { class: "muted" }, "not told");
  return `after ${external.min_occurrences}, by ${external.channel}${external.language ? ` (${external.language})` : ""}`;
}

function actionsTable(actions) {
  if (!actions.length) return el("p", { class: "muted", id: "actions-table" }, "No action yet: reports match nothing until one is registered.");
  return el("table", { id: "actions-table" },
    el("thead", {}, el("tr", {}, th("Action"), th("Triggers"), th("Customers"), th("Levels"), el("th", { scope: "col" }, el("span", { class: "sr-only" }, "Actions")))),
    el("tbody", {}, actions.map((action) => el("tr", { "data-action": action.code },
      el("td", {}, action.name, el("div", { class: "sub" }, action.code)),
      el("td", {}, action.triggers.map((t) => `${t.service}/${t.status}`).join(", ")),
      el("td", {}, action.customers_group, el("div", { class: "sub" }, externalText(action.external))),
      el("td", {}, action.levels.length ? el("ol", { class: "levels" }, action.levels.map((level) => el("li", {}, levelText(level)))) : el("span", { class: "muted" }, "—")),
      el("td", {}, el("div", { class: "row-actions" },
        el("button", { type: "button", onclick: () => openActionForm(action), "aria-label": `Edit ${action.name}` }, "Edit"),
        el("button", { type: "button", class: "danger", onclick: () => deleteAction(action), "aria-label": `Delete ${action.name}` }, "Delete")))))));
}

async function showIncident(id) {
  const incident = await api(`/api/v1/incidents/${id}`);
  // The action and the delivery tasks are context: one deleted since leaves its place blank.
  const [action, tasks] = await Promise.all([
    api(`/api/v1/actions/${incident.action_id}`).catch(() => null),
    Promise.all(incident.communications.map((c) => api(`/api/v1/tasks/${c.task_id}`).catch(() => null))),
  ]);
  if (state.incidentId !== id) return; // navigated away meanwhile
  const name = action ? action.name : incident.action_code || "Incident";
  const levels = action ? action.levels : [];
  $("#incident-title").textContent = name;
  $("#incident-detail").replaceChildren(
    el("dl", { class: "fields" },
      el("dt", {}, "Status"), el("dd", { id: "incident-status" }, badge(incident.status)),
      el("dt", {}, "Action"), el("dd", {}, action ? `${action.name} (${action.code})` : incident.action_code || shortId(incident.action_id)),
      action ? [el("dt", {}, "Triggers"), el("dd", {}, action.triggers.map((t) => `${t.service}/${t.status}`).join(", "))] : null,
      el("dt", {}, "Occurrences"), el("dd", { id: "incident-occurrences" }, incident.occurrences),
      el("dt", {}, "First occurrence"), el("dd", {}, when(incident.opened_at)),
      el("dt", {}, "Last occurrence"), el("dd", {}, when(incident.last_occurrence_at)),
      el("dt", {}, "Resolved"), el("dd", {}, when(incident.resolved_at)),
      el("dt", {}, "Customers told"), el("dd", {}, incident.external_sent_at ? when(incident.external_sent_at) : "no"),
      el("dt", {}, "Levels alerted"), el("dd", {}, incident.levels_notified.length
        ? incident.levels_notified.map((index) => (levels[index] ? teams(levels[index].who) : `level ${index + 1}`)).join("; ")
        : "none"),
      el("dt", {}, "Id"), el("dd", {}, el("code", {}, incident.id))),
    el("div", { class: "detail-actions" },
      el("button", { type: "button", id: "resolve-incident", disabled: incident.status !== "OPEN", onclick: () => resolveIncident(incident) }, "Resolve")),
    el("h2", { id: "communications-title" }, `Communications (${incident.communications.length})`),
    incident.communications.length
      ? el("div", { class: "table-wrap" }, el("table", { id: "communications", "aria-labelledby": "communications-title" },
          el("thead", {}, el("tr", {}, th("Kind"), th("Channel"), th("To"), th("Message"), th("Sent"), th("Delivery"))),
          el("tbody", {}, incident.communications.map((c, i) => el("tr", { "data-kind": c.kind },
            el("td", {}, c.kind),
            el("td", {}, c.channel),
            el("td", {}, c.recipient),
            el("td", {}, c.message),
            el("td", {}, when(c.sent_at)),
            el("td", {}, el("a", { href: `#/tasks/${c.task_id}`, "aria-label": `Delivery task ${shortId(c.task_id)}` }, shortId(c.task_id)),
              tasks[i] ? [" ", badge(tasks[i].status)] : null))))))
      : el("p", { class: "muted", id: "communications" }, "Nothing sent yet."));
}

async function resolveIncident(incident) {
  if (!confirm("Resolve this incident? Customers who were told it was down are told it is back.")) return;
  try {
    await api(`/api/v1/incidents/${incident.id}/resolve`, { method: "POST" });
    notify("Incident resolved.");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
  await showIncident(incident.id);
}

// ---------- incident actions: create, edit, delete ----------

// The rows of a repeated group (triggers, levels) are renumbered after each change, so that their
// inputs are named as the API names its fields ("levels[1].volume") and its errors land on them.
function renumber(container, prefix, noun) {
  [...container.children].forEach((row, index) => {
    row.setAttribute("aria-label", `${noun} ${index + 1}`);
    for (const input of row.querySelectorAll("[data-part]")) input.name = `${prefix}[${index}].${input.dataset.part}`;
    row.querySelector("[data-error-for]").dataset.errorFor = `${prefix}[${index}]`;
    row.querySelector("button").setAttribute("aria-label", `Remove ${noun.toLowerCase()} ${index + 1}`);
  });
}

function repeatRow(container, prefix, noun, parts) {
  const row = el("div", { class: "repeat-row", role: "group" },
    parts,
    el("button", { type: "button", onclick: () => { row.remove(); renumber(container, prefix, noun); } }, "Remove"),
    el("p", { class: "error", "data-error-for": "" }));
  container.append(row);
  renumber(container, prefix, noun);
}

function part(label, name, value, attributes = {}) {
  const input = el("input", { "data-part": name, autocomplete: "off", ...attributes });
  input.value = value ?? "";
  return el("label", {}, `${label} `, input);
}

function addTrigger(trigger = {}) {
  repeatRow($("#action-triggers"), "triggers", "Trigger", [
    part("Service", "service", trigger.service, { placeholder: "login" }),
    part("Status", "status", trigger.status, { placeholder: "503", size: 8 }),
  ]);
}

function addLevel(level = {}) {
  repeatRow($("#action-levels"), "levels", "Level", [
    part("Occurrences", "volume", level.volume, { type: "number", min: 1, step: 1 }),
    part("Minutes", "minutes", level.minutes, { type: "number", min: 1, step: 1 }),
    part("Teams", "who", level.who ? teams(level.who) : "", { placeholder: "Analyst N1, Infrastructure" }),
  ]);
}

function openActionForm(action) {
  const form = $("#action-form");
  form.reset();
  showErrors(form, null);
  form.hidden = false;
  $("#action-form-title").textContent = action ? `Edit ${action.name}` : "New action";
  form.elements.id.value = action ? action.id : "";
  $("#action-triggers").replaceChildren();
  $("#action-levels").replaceChildren();
  if (action) {
    form.elements.name.value = action.name;
    form.elements.code.value = action.code;
    form.elements.customers_group.value = action.customers_group;
    action.triggers.forEach(addTrigger);
    action.levels.forEach(addLevel);
    const external = action.external;
    $("#action-external-on").checked = Boolean(external);
    if (external) {
      form.elements["external.min_occurrences"].value = external.min_occurrences;
      form.elements["external.channel"].value = external.channel;
      form.elements["external.language"].value = external.language ?? "";
      form.elements["external.message"].value = external.message;
      form.elements["external.restored_message"].value = external.restored_message ?? "";
    }
  } else {
    addTrigger();
  }
  showExternalFields();
  form.elements.name.focus();
}

function showExternalFields() {
  $("#action-external").hidden = !$("#action-external-on").checked;
}

// A number input's value, or null when empty (the API then says what is missing).
const numberOrNull = (text) => (String(text).trim() === "" ? null : Number(text));

// The action as the API takes it, from the form as typed (the API trims and checks).
function actionBody(form) {
  const value = (name) => form.elements[name].value;
  const rows = (selector) => [...$(selector).children].map((row) => (name) => row.querySelector(`[data-part="${name}"]`).value);
  const body = {
    name: value("name"),
    code: value("code"),
    customers_group: value("customers_group"),
    triggers: rows("#action-triggers").map((get) => ({ service: get("service"), status: get("status") })),
    levels: rows("#action-levels").map((get) => {
      const named = get("who").split(",").map((team) => team.trim()).filter(Boolean);
      return { volume: numberOrNull(get("volume")), minutes: numberOrNull(get("minutes")), who: named.length > 1 ? named : (named[0] ?? "") };
    }),
    external: null,
  };
  if ($("#action-external-on").checked) {
    body.external = {
      min_occurrences: numberOrNull(value("external.min_occurrences")),
      channel: value("external.channel"),
      message: value("external.message"),
      // Empty: the default sentence, or no language named (English).
      restored_message: value("external.restored_message").trim() || undefined,
      language: value("external.language").trim() || undefined,
    };
  }
  return body;
}

async function saveAction(event) {
  event.preventDefault();
  const form = event.target;
  showErrors(form, null);
  const id = form.elements.id.value;
  const body = actionBody(form);
  const button = $("#action-submit");
  button.disabled = true;
  try {
    const saved = await (id ? sendJson("PUT", `/api/v1/actions/${id}`, body) : sendJson("POST", "/api/v1/actions", body));
    form.hidden = true;
    notify(id ? `Action ${saved.name} saved.` : `Action ${saved.name} created.`);
    await showIncidents();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showErrors(form, error);
  } finally {
    button.disabled = false;
  }
}

async function deleteAction(action) {
  if (!confirm(`Delete action ${action.name}, with its resolved incidents?`)) return;
  try {
    await api(`/api/v1/actions/${action.id}`, { method: "DELETE" });
    notify(`Action ${action.name} deleted.`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
  await showIncidents();
}

// ---------- monitoring ----------

const SVG = "http://www.w3.org/2000/svg";

// el() for SVG elements (they need their namespace).
function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) if (value !== null && value !== undefined) node.setAttribute(key, value);
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

async function showMonitoring() {
  const data = await api(`/api/v1/monitoring?minutes=${MONITOR_MINUTES}`);
  if (state.view !== "monitoring") return; // navigated away meanwhile
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  $("#monitoring-window").textContent = `The last ${data.minutes} minutes, ${clock(data.since)} to ${clock(data.until)}`;
  $("#throughput").replaceChildren(...throughputView(data.throughput, clock));
  $("#waiting").replaceChildren(waitingTable(data.waiting));
  $("#timings").replaceChildren(timingsTable(data.timings));
  $("#bot-usage").replaceChildren(botUsageTable(data.bots));
  $("#monitor-dead-letters").replaceChildren(...deadLetterCount(data.dead_letters));
}

const CHART_HEIGHT = 160;

// Tasks completed and failed per minute as stacked bars. Positions across are percentages, so the
// chart takes the panel's width while its text keeps its size; the numbers are also a table.
function throughputView(minutes, clock) {
  const completed = minutes.reduce((sum, m) => sum + m.completed, 0);
  const failed = minutes.reduce((sum, m) => sum + m.failed, 0);
  const busiest = Math.max(0, ...minutes.map((m) => m.completed + m.failed));
  const peak = Math.max(1, busiest); // the scale's top
  const top = 18;                       // room for the scale's label
  const bottom = CHART_HEIGHT - 20;     // room for the times
  const scale = (count) => (count / peak) * (bottom - top);
  const width = 100 / Math.max(1, minutes.length);
  const summary = `${completed} completed and ${failed} failed in the last ${minutes.length} minutes; at most ${busiest} in a minute.`;
  const bars = minutes.map((m, i) => {
    const x = `${(i * width).toFixed(3)}%`;
    const w = `${(width * 0.8).toFixed(3)}%`;
    const done = scale(m.completed);
    const bad = scale(m.failed);
    return svg("g", { "data-minute": m.minute },
      svg("title", {}, `${clock(m.minute)}: ${m.completed} completed, ${m.failed} failed`),
      // The whole column answers the pointer, so an empty minute has a tooltip too.
      svg("rect", { class: "hit", x, y: top, width: `${width.toFixed(3)}%`, height: bottom - top }),
      m.completed ? svg("rect", { class: "completed", x, y: bottom - done, width: w, height: done }) : null,
      m.failed ? svg("rect", { class: "failed", x, y: bottom - done - bad, width: w, height: bad }) : null);
  });
  // A time under every tenth minute, and the last at the right edge.
  const last = minutes.length - 1;
  const ticks = minutes.map((m, i) => [m, i]).filter(([, i]) => (i % 10 === 0 && last - i >= 5) || i === last)
    .map(([m, i]) => svg("text", { x: i === last ? "100%" : `${(i * width).toFixed(3)}%`, y: CHART_HEIGHT - 4, class: i === last ? "tick last" : "tick" }, clock(m.minute)));
  const chart = svg("svg", { class: "chart", id: "throughput-chart", role: "img", width: "100%", height: CHART_HEIGHT, "aria-labelledby": "throughput-chart-title throughput-chart-desc" },
    svg("title", { id: "throughput-chart-title" }, "Tasks finished per minute"),
    svg("desc", { id: "throughput-chart-desc" }, summary),
    svg("line", { class: "axis", x1: "0", x2: "100%", y1: top, y2: top }),
    svg("text", { x: "0", y: top - 5, class: "tick" }, `${peak} per minute`),
    svg("line", { class: "axis", x1: "0", x2: "100%", y1: bottom, y2: bottom }),
    bars, ticks);
  const busy = minutes.filter((m) => m.completed || m.failed);
  return [
    el("p", { class: "legend" },
      el("span", { class: "key completed" }, "completed"), " ", el("span", { class: "key failed" }, "failed")),
    chart,
    el("p", { id: "throughput-summary" }, summary),
    el("details", {},
      el("summary", {}, "As a table"),
      busy.length
        ? el("table", { id: "throughput-table" },
            el("thead", {}, el("tr", {}, th("Minute"), th("Completed"), th("Failed"))),
            el("tbody", {}, busy.map((m) => el("tr", {}, el("td", {}, clock(m.minute)), el("td", { class: "num" }, m.completed), el("td", { class: "num" }, m.failed)))))
        : el("p", { class: "muted" }, "No task finished in this window.")),
  ];
}

function waitingTable(waiting) {
  const systems = Object.entries(waiting).sort(([a, x], [b, y]) => y - x || a.localeCompare(b));
  if (!systems.length) return el("p", { class: "muted" }, "No system.");
  return el("table", { id: "waiting-table" },
    el("thead", {}, el("tr", {}, th("System"), th("Waiting"))),
    el("tbody", {}, systems.map(([name, count]) => el("tr", { "data-system": name },
      el("td", {}, systemLink(name)), el("td", { class: count ? "num" : "num muted" }, count)))));
}

// Seconds as people read them: "40 ms", "1.4 s", "12 s", "3 min 5 s", "2 h 10 min".
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${Number(seconds.toFixed(1))} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function timingsTable(timings) {
  if (!timings.length) return el("p", { class: "muted", id: "timings-table" }, "No task was accepted or finished in this window.");
  return el("table", { id: "timings-table" },
    el("thead", {}, el("tr", {}, th("System"), th("Runs"),
      el("th", { scope: "col", title: "created → accepted" }, "Wait p50"), th("Wait p95"),
      el("th", { scope: "col", title: "accepted → finished" }, "Run p50"), th("Run p95"))),
    el("tbody", {}, timings.map((t) => el("tr", { "data-system": t.system },
      el("td", {}, systemLink(t.system)), el("td", { class: "num" }, t.runs),
      el("td", { class: "num" }, duration(t.wait_p50_seconds)), el("td", { class: "num" }, duration(t.wait_p95_seconds)),
      el("td", { class: "num" }, duration(t.run_p50_seconds)), el("td", { class: "num" }, duration(t.run_p95_seconds))))));
}

// A share as a percentage; a little above nothing reads "<1%", not "0%".
function percent(share) {
  if (share === null || share === undefined) return "—";
  return share > 0 && share < 0.005 ? "<1%" : `${Math.round(share * 100)}%`;
}

function botUsageTable(bots) {
  if (!bots.length) return el("p", { class: "muted", id: "bot-usage-table" }, "No bot.");
  return el("table", { id: "bot-usage-table" },
    el("thead", {}, el("tr", {}, th("Bot"), th("Completed"), th("Failed"), th("Utilisation"), th("Success"))),
    el("tbody", {}, bots.map((bot) => el("tr", { "data-bot": bot.name },
      el("td", {}, bot.name),
      el("td", { class: "num" }, bot.completed),
      el("td", { class: "num" }, bot.failed),
      el("td", { title: `busy ${duration(bot.busy_seconds)}` }, el("span", { class: "bar" },
        el("progress", { max: 1, value: bot.utilisation ?? 0, "aria-label": `${bot.name} busy ${percent(bot.utilisation)} of the window` }),
        el("span", { class: "num" }, percent(bot.utilisation)))),
      el("td", { class: "num" }, percent(bot.success_rate))))));
}

function deadLetterCount(count) {
  if (count === null || count === undefined) return [el("span", { class: "muted", id: "dead-letter-count" }, "The broker could not be asked.")];
  return [el("b", { id: "dead-letter-count", class: count ? "rows-failed" : null }, count),
    ` message(s) in botline.dead. `, el("a", { href: "#/dead-letters" }, "See them")];
}

// ---------- dead letters ----------

// Polls only the count: reading the list takes its messages out of the queue for a moment and
// puts them back, which a quorum queue may count as a delivery (and drop a message past its
// limit). The list is read again when the count changes, or on Refresh.
async function refreshDeadLetters() {
  const { total } = await api("/api/v1/dead-letters?limit=0");
  if (state.view === "dead-letters" && total !== state.deadLetterTotal) await showDeadLetters();
}

async function showDeadLetters() {
  const data = await api(`/api/v1/dead-letters?limit=${DEAD_LETTER_LIMIT}`);
  if (state.view !== "dead-letters") return; // navigated away meanwhile
  // A poll that finds the same messages redraws nothing (ticks and focus stay as they are).
  const shown = JSON.stringify(data);
  if (shown === state.deadLettersShown) return;
  state.deadLettersShown = shown;
  state.deadLetterTotal = data.total;
  state.deadLetters = data.items;
  const present = new Set(data.items.map((m) => m.id));
  for (const id of [...state.selectedDeadLetters]) if (!present.has(id)) state.selectedDeadLetters.delete(id);
  const count = el("p", { id: "dead-letter-total" }, `${data.total} message(s) in botline.dead`,
    data.total > data.items.length ? `; the first ${data.items.length} are listed.` : ".");
  if (!data.items.length) {
    $("#dead-letters").replaceChildren(count);
    showSelection();
    return;
  }
  const all = el("input", { type: "checkbox", id: "select-all-dead-letters", "aria-label": "Select every message listed", onchange: (e) => {
    for (const m of data.items) (e.target.checked ? state.selectedDeadLetters.add(m.id) : state.selectedDeadLetters.delete(m.id));
    for (const box of document.querySelectorAll("#dead-letters-table tbody input")) box.checked = e.target.checked;
    showSelection();
  } });
  $("#dead-letters").replaceChildren(count, el("table", { id: "dead-letters-table" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, all), th("Failed on"), th("Reason"), th("Routing key · publisher"), th("Failures"), th("Body"))),
    el("tbody", {}, data.items.map((m, i) => {
      const box = el("input", { type: "checkbox", value: m.id, "aria-label": `Select message ${i + 1}`, onchange: (e) => {
        if (e.target.checked) state.selectedDeadLetters.add(m.id); else state.selectedDeadLetters.delete(m.id);
        showSelection();
      } });
      box.checked = state.selectedDeadLetters.has(m.id);
      return el("tr", { "data-dead-letter": m.id },
        el("td", {}, box),
        el("td", {}, m.queue ?? el("span", { class: "muted" }, "unknown (cannot be replayed)")),
        el("td", { class: "reason" }, m.reason ?? el("span", { class: "muted" }, "—")),
        el("td", {}, el("code", {}, m.routing_key), m.publisher ? el("div", { class: "sub" }, m.publisher) : null),
        el("td", { class: "num" }, m.failures ?? "—", m.copies > 1 ? el("div", { class: "sub" }, `${m.copies} copies`) : null),
        el("td", {}, el("pre", { class: "body-preview" }, m.body_preview), el("div", { class: "sub" }, `${m.body_bytes} bytes`)));
    }))));
  showSelection();
}

function showSelection() {
  const count = state.selectedDeadLetters.size;
  $("#dead-letters-selected").textContent = count ? `${count} selected` : "";
  $("#replay-dead-letters").disabled = !count;
  $("#discard-dead-letters").disabled = !count;
  const all = $("#select-all-dead-letters");
  if (all) all.checked = count > 0 && state.deadLetters.every((m) => state.selectedDeadLetters.has(m.id));
}

// Replays or discards the ticked messages, after asking. A message whose queue is unknown
// cannot go back: it is left out of a replay, and said so.
async function actOnDeadLetters(action) {
  const chosen = state.deadLetters.filter((m) => state.selectedDeadLetters.has(m.id));
  const ids = chosen.filter((m) => action === "discard" || m.replayable).map((m) => m.id);
  const skipped = chosen.length - ids.length;
  if (!ids.length) { notify("None of these can be replayed: the queue they failed on is unknown.", true); return; }
  const question = action === "replay"
    ? `Replay ${ids.length} message(s), each to the end of the queue it failed on?`
    : `Discard ${ids.length} message(s) for good?`;
  if (!confirm(question)) return;
  try {
    // Each message is handled on its own: some may be refused (gone meanwhile: "not_found").
    const { done, refused } = await sendJson("POST", `/api/v1/dead-letters/${action}`, { ids });
    const parts = [`${done.length} ${action === "replay" ? "replayed" : "discarded"}`];
    if (refused.length) parts.push(`${refused.length} refused (${refused[0].message}${refused.length > 1 ? ", …" : ""})`);
    if (skipped) parts.push(`${skipped} left: the queue they failed on is unknown`);
    notify(`${parts.join("; ")}.`, !done.length);
    for (const id of [...done, ...refused.map((r) => r.id)]) state.selectedDeadLetters.delete(id);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notify(error.message, true);
  }
  state.deadLettersShown = "";
  await showDeadLetters();
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

// "#/tasks/ID" is a task, "#/systems/NAME" a system, "#/incidents" the incidents and their
// actions, "#/incidents/ID" one incident, "#/monitoring" and "#/dead-letters" those views;
// anything else the home view.
function parseRoute(hash) {
  const task = hash.match(/^#\/tasks\/([0-9a-f-]{36})$/);
  if (task) return { view: "task", id: task[1] };
  const incident = hash.match(/^#\/incidents\/([0-9a-f-]{36})$/);
  if (incident) return { view: "incident", id: incident[1] };
  const system = hash.match(/^#\/systems\/([^/]+)$/);
  if (system) {
    let name;
    try { name = decodeURIComponent(system[1]); } catch { name = ""; }
    if (/^[A-Za-z0-9_-]{1,64}$/.test(name)) return { view: "system", name: name.toUpperCase() };
  }
  const named = { "#/incidents": "incidents", "#/monitoring": "monitoring", "#/dead-letters": "dead-letters" }[hash];
  return { view: named || "home" };
}

const VIEWS = ["home", "task", "system", "incidents", "incident", "monitoring", "dead-letters"];
const TITLES = { home: "Botline", task: "Task", system: "System", incidents: "Incidents", incident: "Incident", monitoring: "Monitoring", "dead-letters": "Dead letters" };

// Draws the view shown, from the server's current state.
function showView() {
  switch (state.view) {
    case "task": return showTask(state.taskId);
    case "system": return showSystem(state.systemName);
    case "incidents": return showIncidents();
    case "incident": return showIncident(state.incidentId);
    case "monitoring": return showMonitoring();
    case "dead-letters": return showDeadLetters();
    default: return refreshHome();
  }
}

async function route() {
  const where = parseRoute(location.hash);
  if (where.view !== "task" || where.id !== state.taskId) {
    // Another task: its rows and timeline start as they are by default.
    state.failedRowsOnly = false;
    state.openGroups.clear();
  }
  state.view = where.view;
  state.taskId = where.view === "task" ? where.id : null;
  state.systemName = where.view === "system" ? where.name : null;
  state.incidentId = where.view === "incident" ? where.id : null;
  state.deadLettersShown = ""; // drawn afresh on arrival
  for (const view of VIEWS) $(`#view-${view}`).hidden = view !== where.view;
  document.title = where.view === "home" ? TITLES.home : `${TITLES[where.view]} · Botline`;
  for (const link of document.querySelectorAll(".top-links a[href^='#/']")) {
    if (link.getAttribute("href") === location.hash) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (where.view === "task" && !state.bots.size) await refreshBots();
    if (where.view === "system") {
      $("#system-title").textContent = where.name;
      $("#system-detail").replaceChildren(el("p", { class: "muted" }, "Loading…"));
    }
    if (where.view !== "home") refreshCounters().catch(reportFailure);
    await showView();
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      if (where.view === "system") {
        $("#system-detail").replaceChildren(el("p", { class: "error" }, `There is no system ${where.name} (any more).`));
        notify(`There is no system ${where.name} (any more).`, true);
      } else if (where.view === "incident") {
        $("#incident-detail").replaceChildren(el("p", { class: "error" }, "There is no such incident (any more)."));
        notify("That incident does not exist (any more).", true);
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
    // The header's counters are on every view (the home view redraws them with its lists).
    if (state.view !== "home") refreshCounters().catch(reportFailure);
    if (state.view === "task") {
      if (!touched.size || touched.has(state.taskId)) showTask(state.taskId).catch(reportFailure);
    } else if (state.view === "system" || state.view === "incident") {
      // A system's bots change; an incident's delivery tasks do. Either may be gone meanwhile.
      showView().catch((error) => {
        if (!(error instanceof ApiError && error.status === 404)) reportFailure(error);
      });
    } else if (state.view !== "dead-letters") {
      // The dead letters are the broker's: no notice tells of them (they are polled).
      showView().catch(reportFailure);
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

// What changes with no notice on the stream is redrawn now and then: heartbeat ages (home), an
// incident's occurrences (a report that makes nothing due creates no task), the minute buckets
// (monitoring) and the dead-letter queue (the broker's, not the database's).
const POLL_MS = { home: 15000, incidents: 10000, incident: 10000, monitoring: 15000, "dead-letters": 5000 };
let lastPoll = { view: null, at: 0 };

function poll() {
  const every = POLL_MS[state.view];
  if (!every || document.hidden) return;
  if (lastPoll.view === state.view && Date.now() - lastPoll.at < every) return;
  const first = lastPoll.view !== state.view; // the view was just drawn on arrival
  lastPoll = { view: state.view, at: Date.now() };
  if (first) return;
  if (state.view === "home") refreshBots().catch(() => {});
  else if (state.view === "dead-letters") refreshDeadLetters().catch(() => {});
  else showView().catch(() => {});
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
  const filters = $("#filters");
  filters.addEventListener("submit", (e) => e.preventDefault());
  // The search box filters as one types (after a pause); the other controls when changed.
  filters.addEventListener("change", (e) => { if (e.target.name !== "q") setFilter(e.target.name, filterValue(e.target)); });
  let typing = null;
  $("#filter-q").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => setFilter("q", e.target.value.trim()), SEARCH_PAUSE_MS);
  });
  $("#bulk-cancel").addEventListener("click", () => bulkAct("cancel").catch(reportFailure));
  $("#bulk-retry").addEventListener("click", () => bulkAct("retry").catch(reportFailure));
  $("#prev-page").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); refreshTasks().catch(reportFailure); });
  $("#next-page").addEventListener("click", () => { state.offset += PAGE_SIZE; refreshTasks().catch(reportFailure); });
  $("#add-bot").addEventListener("click", () => openBotForm(null));
  $("#bot-cancel").addEventListener("click", () => { $("#bot-form").hidden = true; });
  $("#bot-form").addEventListener("submit", (e) => saveBot(e).catch(reportFailure));
  $("#add-system").addEventListener("click", openSystemForm);
  $("#new-system-cancel").addEventListener("click", () => { $("#system-form").hidden = true; });
  $("#new-system-kind").addEventListener("change", showKindFields);
  $("#system-form").addEventListener("submit", (e) => saveSystem(e).catch(reportFailure));
  $("#add-action").addEventListener("click", () => openActionForm(null));
  $("#action-cancel").addEventListener("click", () => { $("#action-form").hidden = true; });
  $("#action-external-on").addEventListener("change", showExternalFields);
  $("#add-trigger").addEventListener("click", () => addTrigger());
  $("#add-level").addEventListener("click", () => addLevel());
  $("#action-form").addEventListener("submit", (e) => saveAction(e).catch(reportFailure));
  $("#replay-dead-letters").addEventListener("click", () => actOnDeadLetters("replay").catch(reportFailure));
  $("#refresh-dead-letters").addEventListener("click", () => { state.deadLettersShown = null; showDeadLetters().catch(reportFailure); });
  $("#discard-dead-letters").addEventListener("click", () => actOnDeadLetters("discard").catch(reportFailure));
  // The token question cannot be dismissed: without a token there is nothing to show.
  $("#token-dialog").addEventListener("cancel", (e) => e.preventDefault());
  $("#forget-token").hidden = !storedToken();
  $("#forget-token").addEventListener("click", () => {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
    location.reload();
  });
  window.addEventListener("hashchange", () => route());
  setInterval(poll, 1000);
  renderPreview();
  route();
  connectLive();
}

document.addEventListener("DOMContentLoaded", wireUp);
