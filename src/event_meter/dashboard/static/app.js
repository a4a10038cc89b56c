// event-meter dashboard: reads /api/* and renders with DOM methods only
// (createElement, textContent, setAttribute). Stored names and values never
// become markup, and the page's Content-Security-Policy forbids inline code.

import { renderChart } from "./chart.js";
import { BUCKET_MS, el, floorTo, formatChange, formatNumber, isoTime, parseTime } from "./format.js";

const MAX_CHART_BUCKETS = { minute: 360, hour: 336 };
const TILES = [
  // [summary field, label, extra class, shown only when the summary has the field]
  ["count", "events", "", false],
  ["success_count", "success", "success", false],
  ["failure_count", "failure", "failure", false],
  ["skipped_count", "skipped", "", false],
  ["per_minute", "per minute", "", false],
  ["duration_ms_avg", "avg duration ms", "", false],
  ["duration_ms_p95", "p95 duration ms", "", true],
  ["duration_ms_max", "max duration ms", "", false],
];
const INTERVAL_TILES = [
  ["interval_ms_count", "intervals", "", false],
  ["interval_ms_avg", "avg interval ms", "", false],
];
const COMPARE_KEYS = [
  "count",
  "success_count",
  "failure_count",
  "skipped_count",
  "per_minute",
  "duration_ms_avg",
  "interval_ms_avg",
];

const state = { report: null, definition: null, every: "minute", generation: 0, compares: 0 };
const $ = (id) => document.getElementById(id);

function setState(value) {
  document.body.dataset.state = value;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// -- API --------------------------------------------------------------------------------

async function api(endpoint, pairs = []) {
  const query = new URLSearchParams();
  for (const [key, value] of pairs) {
    if (value !== null && value !== undefined && value !== "") query.append(key, value);
  }
  const response = await fetch(`/api/${endpoint}?${query}`, {
    headers: { Accept: "application/json" },
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `HTTP ${response.status} from /api/${endpoint}`);
  }
  return body;
}

function reportParams() {
  return [
    ["name", state.report.name],
    ["version", String(state.report.version)],
  ];
}

function byParams() {
  const inputs = $("filter-values").querySelectorAll("input");
  return Array.from(inputs, (input) => ["by", `${input.dataset.param}=${input.value}`]);
}

// -- reports list and definition ----------------------------------------------------------

async function loadReports() {
  const data = await api("reports");
  $("namespace").textContent = data.namespace;
  const list = $("report-list");
  list.replaceChildren();
  for (const report of data.reports) {
    const button = el(
      "button",
      { type: "button", dataset: { name: report.name, version: String(report.version) } },
      [el("span", { class: "name", text: report.name }), el("span", { class: "version", text: `v${report.version}` })],
    );
    button.addEventListener("click", () => selectReport(report, button));
    list.append(el("li", {}, [button]));
  }
  $("reports-empty").hidden = data.reports.length > 0;
}

async function selectReport(report, button) {
  for (const other of document.querySelectorAll("#report-list button")) {
    other.setAttribute("aria-current", String(other === button));
  }
  const generation = ++state.generation;
  state.report = report;
  state.definition = null;
  setState("loading");
  clearError();
  $("placeholder").hidden = true;
  $("report").hidden = false;
  $("report-title").textContent = `${report.name} v${report.version}`;
  $("report-definition").textContent = "";
  hideCompare();
  try {
    const definition = await api("definition", reportParams());
    if (generation !== state.generation) return;
    state.definition = definition;
    renderDefinition(definition);
  } catch (error) {
    if (generation !== state.generation) return;
    clearResults();
    showError(error.message);
    setState("ready");
    return;
  }
  await refresh({ prefillCompare: true });
}

function renderDefinition(definition) {
  const indexes = definition.indexes.map((params) => (params.length ? params.join(" + ") : "all"));
  const intervals = definition.intervals.map((rule) =>
    rule.group_by.length ? `${rule.param} by ${rule.group_by.join(" + ")}` : rule.param,
  );
  let text = `indexes: ${indexes.join(" · ")}`;
  if (intervals.length) text += `; intervals: ${intervals.join(" · ")}`;
  $("report-definition").textContent = `${text}; fingerprint ${definition.fingerprint.slice(0, 12)}`;

  const select = $("index");
  select.replaceChildren(el("option", { value: "", text: "all events" }));
  definition.indexes.forEach((params, position) => {
    if (params.length) select.append(el("option", { value: String(position), text: params.join(" + ") }));
  });
  select.value = "";
  renderFilterInputs();
}

function renderFilterInputs() {
  const box = $("filter-values");
  box.replaceChildren();
  const position = $("index").value;
  if (position === "" || !state.definition) return;
  for (const param of state.definition.indexes[Number(position)]) {
    const input = el("input", { autocomplete: "off", dataset: { param } });
    box.append(el("label", {}, [`${param} = `, input]));
  }
}

// -- summary tiles and series chart -------------------------------------------------------

function clearResults() {
  $("tiles").replaceChildren();
  $("summary-note").textContent = "";
  $("chart").replaceChildren();
  $("chart-caption").textContent = "";
}

async function refresh({ prefillCompare = false } = {}) {
  if (!state.definition) return;
  const generation = ++state.generation;
  setState("loading");
  clearError();
  const start = $("start").value.trim();
  const end = $("end").value.trim();
  const common = [...reportParams(), ...byParams()];
  try {
    const summary = await api("summary", [...common, ["start", start], ["end", end]]);
    if (generation !== state.generation) return;
    renderTiles(summary, start, end);
    if (prefillCompare) prefillCompareWindows(summary);
    const range = chartRange(summary, start, end);
    const rows = await api("series", [
      ...common,
      ["every", state.every],
      ["start", range.start],
      ["end", range.end],
    ]);
    if (generation !== state.generation) return;
    renderChart($("chart"), $("chart-caption"), rows, state.every);
  } catch (error) {
    if (generation !== state.generation) return;
    clearResults();
    showError(error.message);
  }
  setState("ready");
}

function renderTiles(summary, start, end) {
  const all = state.definition.intervals.length ? [...TILES, ...INTERVAL_TILES] : TILES;
  const specs = all.filter(([key, , , optional]) => !optional || key in summary);
  $("tiles").replaceChildren(
    ...specs.map(([key, label, extra]) =>
      el("div", { class: `tile ${extra}`.trim(), dataset: { tile: key } }, [
        el("span", { class: "label", text: label }),
        el("span", { class: "value", text: formatNumber(summary[key]) }),
      ]),
    ),
  );
  let note = start && end ? `window ${start} → ${end}` : "every retained hour";
  if (summary.started_at_min) note += `; events from ${summary.started_at_min} to ${summary.started_at_max}`;
  $("summary-note").textContent = note;
}

// The chart's window: the one typed in, else the span of the data (at most
// MAX_CHART_BUCKETS buckets, ending with the last event), else the library's
// default (the hour up to now).
function chartRange(summary, start, end) {
  if (start || end) return { start, end };
  if (!summary.started_at_min) return { start: "", end: "" };
  const size = BUCKET_MS[state.every];
  const last = floorTo(parseTime(summary.started_at_max), size) + size;
  const first = Math.max(
    floorTo(parseTime(summary.started_at_min), size),
    last - MAX_CHART_BUCKETS[state.every] * size,
  );
  return { start: isoTime(first), end: isoTime(last) };
}

function setEvery(every) {
  state.every = every;
  for (const button of document.querySelectorAll(".toggle button")) {
    button.setAttribute("aria-pressed", String(button.dataset.every === every));
  }
  refresh();
}

// -- compare ---------------------------------------------------------------------------------

// Split the data's span in two halves of whole minutes: a starting point to edit.
function prefillCompareWindows(summary) {
  if (!summary.started_at_min) return;
  const minute = BUCKET_MS.minute;
  const first = floorTo(parseTime(summary.started_at_min), minute);
  let last = floorTo(parseTime(summary.started_at_max), minute) + minute;
  const middle = first + Math.max(1, Math.floor((last - first) / minute / 2)) * minute;
  if (middle >= last) last = middle + minute;
  $("before-start").value = isoTime(first);
  $("before-end").value = isoTime(middle);
  $("after-start").value = isoTime(middle);
  $("after-end").value = isoTime(last);
}

async function runCompare(event) {
  event.preventDefault();
  if (!state.definition) return;
  const generation = ++state.compares;
  setState("loading");
  clearError();
  const value = (id) => $(id).value.trim();
  try {
    const result = await api("compare", [
      ...reportParams(),
      ...byParams(),
      ["before", value("before-start")],
      ["before", value("before-end")],
      ["after", value("after-start")],
      ["after", value("after-end")],
    ]);
    if (generation !== state.compares) return;
    const filter = byParams().map(([, pair]) => pair).join(", ") || "all events";
    $("compare-caption").textContent =
      `${filter}: before ${value("before-start")} → ${value("before-end")}, ` +
      `after ${value("after-start")} → ${value("after-end")}`;
    renderCompare(result);
  } catch (error) {
    if (generation !== state.compares) return;
    hideCompare();
    showError(error.message);
  }
  setState("ready");
}

function renderCompare(result) {
  const rows = COMPARE_KEYS.map((key) => {
    const change = result.change[key];
    const ratio = change.ratio === null ? "–" : `×${formatNumber(change.ratio)}`;
    return el("tr", { dataset: { metric: key } }, [
      el("td", { text: key }),
      el("td", { class: "before", text: formatNumber(change.before) }),
      el("td", { class: "after", text: formatNumber(change.after) }),
      el("td", { class: "difference", text: formatChange(change.difference) }),
      el("td", { class: "ratio", text: ratio }),
    ]);
  });
  const table = $("compare-table");
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = false;
  $("compare-caption").hidden = false;
}

function hideCompare() {
  $("compare-table").hidden = true;
  $("compare-caption").hidden = true;
}

// -- start ------------------------------------------------------------------------------------

async function init() {
  $("query").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  $("index").addEventListener("change", renderFilterInputs);
  for (const button of document.querySelectorAll(".toggle button")) {
    button.addEventListener("click", () => setEvery(button.dataset.every));
  }
  $("compare").addEventListener("submit", runCompare);
  try {
    await loadReports();
  } catch (error) {
    showError(error.message);
  }
  setState("ready");
}

init();
