// The worker's page: reads the worker's own JSON endpoints (the numbers are theirs, only
// formatted here) and redraws every REFRESH_MS. No framework, no build step; charts are uPlot.
"use strict";

const REFRESH_MS = 5000;
const COHORT_CURVES = 8; // LTV/ROAS: the latest cohorts drawn
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#17becf"];
const charts = {};
let catalogue = null; // the figures the page shows, from /retention/figures
let figureOf = {};
const $ = (id) => document.getElementById(id);

// ---- state in the URL, so a view can be linked (and tested) --------------------------------
const params = new URLSearchParams(location.search);
const state = {
  app: params.get("app") || "",
  where: params.get("where") || "",
  kind: params.get("kind") || "classic",
  granularity: params.get("granularity") || "week",
  window: params.get("window") || "calendar", // "24h": windows from each user's first event
  period: params.get("period") || "week",
};

function saveState() {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v) q.set(k, v);
  history.replaceState(null, "", "?" + q.toString());
}

function query(extra) {
  const q = new URLSearchParams({ app: state.app, ...extra });
  if (state.where) q.append("where", state.where);
  return q.toString();
}

const TOKEN_KEY = "retention-api-token";

// With API_TOKEN set on the worker, the API answers 401 until the page sends the token:
// asked once, kept for this tab only (sessionStorage).
async function getJson(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, token ? { headers: { Authorization: "Bearer " + token } } : {});
  if (response.status === 401) {
    const given = window.prompt("This tracker's API needs its token (API_TOKEN):");
    if (given && given.trim()) {
      sessionStorage.setItem(TOKEN_KEY, given.trim());
      return getJson(path);
    }
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// ---- formatting (the text people read; raw numbers stay in data-value) -----------------------
const pct = (v) => (v === null || v === undefined ? "-" : (v * 100).toFixed(1) + "%");
const share = (v, whole) => (whole ? pct(v) : "-"); // 0 of 0 is no rate
const int = (v) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US"));
const amount = (v, places = 2) => (v === null || v === undefined ? "-"
  : Number(v).toLocaleString("en-US", { minimumFractionDigits: places,
    maximumFractionDigits: places }));

// A figure of a row (a day's, a period's KPI) as its unit says: a share as % ('-' when its
// whole in the row is 0), money one line per currency (so that money columns fit), users.
function shown(f, row) {
  const v = row[f.key];
  if (f.unit === "share") return f.whole ? share(v, row[f.whole]) : pct(v);
  if (f.unit === "money") {
    return Object.entries(v).map(([c, a]) => `${amount(a)} ${c}`).join("\n") || "0";
  }
  return int(v);
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function table(target, columns, rows) {
  // rows: arrays of cells, a cell is text or {text, attrs}
  const t = typeof target === "string" ? $(target) : target;
  t.replaceChildren();
  const head = el("tr");
  // a column is its heading, or {text, title}: the title shown on hovering it
  for (const c of columns) head.append(typeof c === "string" ? el("th", {}, c)
    : el("th", { title: c.title }, c.text));
  t.append(el("thead"), el("tbody"));
  t.tHead.append(head);
  for (const row of rows) {
    const tr = el("tr", row.attrs || {});
    for (const cell of row.cells) {
      const c = typeof cell === "object" && cell !== null ? cell : { text: cell };
      tr.append(el("td", c.attrs || {}, c.text === undefined ? "" : String(c.text)));
    }
    t.tBodies[0].append(tr);
  }
  return t;
}

// ---- charts ---------------------------------------------------------------------------------
function draw(id, series, data, opts = {}) {
  const target = $(id);
  const width = Math.max(280, target.clientWidth || 420);
  const key = series.map((s) => s.label).join("|");
  // which series have a live (not yet ended) point: for readers of the DOM (and tests)
  target.dataset.live = series.filter((s) => s.live && data[series.indexOf(s) + 1]
    .some((v) => v !== null)).map((s) => s.live).join("|");
  const old = charts[id];
  if (old && old.key === key) {
    old.plot.setData(data);
    return;
  }
  if (old) old.plot.destroy();
  const plot = new uPlot({
    width, height: 220, series: [{}, ...series], legend: { live: false },
    scales: opts.scales || { x: { time: opts.time !== false } },
    axes: opts.axes || [{}, { size: 60 }],
  }, data, target);
  target.dataset.width = width; // the width it is drawn at: for readers of the DOM (and tests)
  // a live part shares its series' legend entry: its own is hidden
  const entries = plot.root.querySelectorAll(".u-legend .u-series");
  series.forEach((s, i) => { if (s.live && entries[i]) entries[i].style.display = "none"; });
  charts[id] = { key, plot };
}

const line = (label, i, extra = {}) => ({ label, stroke: COLOURS[i % COLOURS.length], width: 2,
  ...extra });

// A series whose last points are live (their day or period has not ended) as two: the
// ended points as a solid line, the live ones dashed from the last ended point, with hollow
// markers, so a day that is still filling up does not read as a drop.
function withLive(def, ys, complete) {
  const solid = ys.map((v, n) => (complete[n] ? v : null));
  const live = ys.map((v, n) => (!complete[n] || complete[n + 1] === false ? v : null));
  const liveDef = { ...def, label: def.label + " (live)", live: def.label, dash: [5, 4],
    points: { show: true, size: 7, width: 2, fill: "#fff" } };
  return [[def, liveDef], [solid, live]];
}

function drawLive(id, defs, xs, columns, complete, opts) {
  const pairs = defs.map((d, i) => withLive(d, columns[i], complete));
  draw(id, pairs.flatMap((p) => p[0]), [xs, ...pairs.flatMap((p) => p[1])], opts);
}

// The daily charts the catalogue (/retention/figures) declares for the page: one figure per
// chart, series labelled and formatted as the catalogue says, some against a right axis.
function drawDaily(doc) {
  const days = doc.days;
  const xs = days.map((d) => Date.parse(d.date + "T12:00:00Z") / 1000);
  const complete = days.map((d) => d.complete);
  const box = $("daily-charts");
  // every chart's place first: a chart's width is its grid cell's when it is drawn, and
  // the grid shares the row among the cells it holds then
  for (const chart of catalogue.charts) {
    const id = "chart-" + chart.id;
    if (!$(id)) {
      const right = chart.right.map((k) => figureOf[k].label).join(", ");
      const figure = el("figure");
      figure.append(el("figcaption", {},
        chart.title + (right ? ` (right axis: ${right})` : "") + ", by day"), el("div", { id }));
      box.append(figure);
    }
  }
  for (const chart of catalogue.charts) {
    const id = "chart-" + chart.id;
    const fmt = chart.unit === "share" ? { value: (u, v) => pct(v) } : {};
    const series = chart.series.map((k, i) => line(figureOf[k].label, i,
      { scale: chart.right.includes(k) ? "right" : "left", ...fmt }));
    const axis = chart.unit === "share" ? { values: (u, vals) => vals.map((v) => pct(v)) } : {};
    const axes = [{}, { scale: "left", size: 60, ...axis }];
    if (chart.right.length) axes.push({ scale: "right", side: 1, grid: { show: false } });
    drawLive(id, series, xs, chart.series.map((k) => days.map((d) => d[k])), complete,
      { scales: { x: { time: true } }, axes });
  }
}

function drawCurves(id, doc) {
  const rows = doc.cohorts.slice(-COHORT_CURVES);
  const width = Math.max(1, ...rows.map((r) => r.values.length));
  const xs = Array.from({ length: width }, (_, n) => n);
  const pairs = rows.map((r, i) => withLive(line(r.cohort, i),
    xs.map((n) => (n < r.values.length ? r.values[n] : null)),
    xs.map((n) => (n < r.complete.length ? r.complete[n] : true))));
  // offsets are whole periods: ticks at whole steps only, from +0 to the widest row
  draw(id, pairs.flatMap((p) => p[0]), [xs, ...pairs.flatMap((p) => p[1])], {
    scales: { x: { time: false, range: (u, lo, hi) => [0, Math.max(1, hi)] } },
    axes: [{ label: "periods since install", incrs: [1, 2, 5, 10, 20, 50],
      values: (u, v) => { $(id).dataset.ticks = v.join(","); return v.map((n) => "+" + n); } },
    { size: 60 }] });
}

// ---- panels ---------------------------------------------------------------------------------
function renderSummary(s) {
  $("today").textContent = s.date + (s.complete ? "" : " (day not ended: live)");
  const stats = catalogue.daily.filter((f) => !f.money).map((f) => [f.key, f.label,
    shown(f, s)]);
  $("stats").replaceChildren(...stats.map(([key, label, text]) => {
    const box = el("div", { class: "stat", id: "stat-" + key, "data-value": s[key] });
    box.append(el("span", { class: "value" }, text), el("span", { class: "label" }, label));
    return box;
  }));
  const [revenue, ...divided] = catalogue.currency;
  const money = Object.keys(s[revenue.key]).map((cur) => ({ attrs: { "data-currency": cur },
    cells: [cur, { text: amount(s[revenue.key][cur]),
      attrs: { "data-value": s[revenue.key][cur] } },
    ...divided.map((f) => amount(s[f.key][cur], 4))] }));
  const box = $("money-today");
  const counts = catalogue.daily.filter((f) => f.money).flatMap((f, i) => [i ? ", " : "",
    el("span", { id: f.key, "data-value": s[f.key] }, int(s[f.key])), " " + f.label]);
  const line = el("p");
  line.append("today: ", ...counts, money.length ? "" : ", no revenue");
  box.replaceChildren(line);
  if (money.length) box.append(table(el("table", { id: revenue.key }),
    ["currency", ...catalogue.currency.map((f) => f.label)], money));
  renderWinback(s);
}

function renderWinback(s) {
  if (!s.winback) {
    $("winback-as-of").textContent = "(per app only: not kept per segment)";
    $("winback-table").replaceChildren();
    return;
  }
  $("winback-as-of").textContent = "live totals as of " + s.winback_as_of;
  const rows = [];
  for (const [days, f] of Object.entries(s.winback)) {
    rows.push({ attrs: { "data-threshold": days, "data-segment": "all" }, cells: [days + "d",
      "all", int(f.inactive), int(f.notified), int(f.reactivated),
      share(f.back_within_7d_share, f.notified)] });
    for (const [seg, g] of Object.entries(f.by_segment)) {
      rows.push({ attrs: { "data-threshold": days, "data-segment": seg }, cells: ["", seg, "",
        int(g.notified), int(g.reactivated), share(g.back_within_7d_share, g.notified)] });
    }
  }
  table("winback-table", ["threshold", "segment", "inactive now", "notified", "reactivated",
    "back within 7 days"], rows);
}

// METRICS.md §9: the users the model holds at risk beside those inactive 2 days, as shares of
// the users with activity (all users only: the model is fitted per app).
async function renderAtRisk(summary) {
  const inactive = summary.winback && summary.winback["2"];
  let doc;
  try {
    doc = await getJson("/retention/at-risk?" + new URLSearchParams({ app: state.app }));
  } catch (err) {
    $("at-risk-as-of").textContent = "(no model: " + (err.message || err) + ")";
    $("at-risk-table").replaceChildren();
    return;
  }
  $("at-risk-as-of").textContent = `${doc.model} fitted ${doc.as_of} over ${int(doc.users)} ` +
    `users; P(alive) below ${doc.threshold} as of ${doc.now}`;
  const row = (flag, label, users) => ({ attrs: { "data-flag": flag, "data-users": users,
    "data-value": doc.users_now ? users / doc.users_now : null },
    cells: [label, int(users), share(doc.users_now ? users / doc.users_now : null,
      doc.users_now)] });
  table("at-risk-table", ["flag", "users", "share of users"], [
    row("at_risk", "at risk (" + doc.model + ")", doc.at_risk),
    ...(inactive ? [row("inactive_2d", "inactive 2 days", inactive.inactive)] : []),
  ]);
}

function renderHeadline(doc) {
  const h = doc.headline;
  $("headline").replaceChildren(...[1, 7, 30].map((n) => {
    const latest = h["d" + n], mean = h[`d${n}_mean7`];
    const box = el("div", { class: "stat", id: `headline-d${n}`, "data-value": latest,
      "data-mean7": mean });
    const delta = latest === null || mean === null ? "" : (latest >= mean ? " ▲" : " ▼");
    box.append(el("span", { class: "value" }, pct(latest) + delta),
      el("span", { class: "label" }, `D${n}, latest complete cohort; 7-cohort mean ${pct(mean)}`));
    return box;
  }));
}

function heat(value, top) {
  const a = top > 0 ? Math.min(1, value / top) : 0;
  return `background: rgba(33, 113, 181, ${(0.08 + 0.85 * a).toFixed(3)});` +
    (a > 0.55 ? " color: #fff;" : "");
}

function renderCohorts(doc) {
  const rows = doc.cohorts;
  const width = Math.max(0, ...rows.map((r) => r.values.length));
  const top = Math.max(0, ...rows.flatMap((r) => r.values.slice(1)));
  const columns = ["cohort", "size", ...Array.from({ length: width }, (_, n) => "+" + n)];
  table("cohorts", columns, rows.map((r) => ({ attrs: { "data-cohort": r.cohort }, cells: [
    r.cohort, { text: int(r.size), attrs: { class: "size", "data-size": r.size } },
    ...r.values.map((v, n) => ({ text: pct(v) + (r.complete[n] ? "" : "~"), attrs: {
      class: "cell" + (r.complete[n] ? "" : " incomplete"), "data-offset": n, "data-value": v,
      "data-count": r.counts[n], style: n === 0 ? "" : heat(v, top),
      title: `${r.cohort} +${n}: ${int(r.counts[n])} of ${int(r.size)}` } })),
  ] })));
}

// The period KPIs the catalogue declares (/retention/figures), in row order: a cell each,
// its key in data-field and its raw value in data-value (money: its amounts as JSON).
function renderKpis(doc) {
  const cell = (f, p) => ({ text: shown(f, p), attrs: { "data-field": f.key,
    "data-value": f.unit === "money" ? JSON.stringify(p[f.key]) : p[f.key],
    class: f.unit === "money" ? "money" : undefined } });
  table("kpis", ["period", ...catalogue.kpis.map((f) => ({ text: f.label, title: f.help }))],
    doc.periods.map((p) => ({
      attrs: { "data-period": p.period, "data-complete": p.complete,
        class: p.complete ? "" : "live" },
      cells: [p.period + (p.complete ? "" : " ~ not ended"),
        ...catalogue.kpis.map((f) => cell(f, p))],
    })));
}

function renderNps(doc) {
  table("nps", ["period", "answers", "promoters", "passives", "detractors", "NPS"],
    doc.rows.map((r) => {
      const live = r.period === doc.live_period;
      return { attrs: { "data-nps-period": r.period, class: live ? "live" : "" }, cells: [
        r.period + (live ? " ~ not ended" : ""), int(r.answers), int(r.promoters),
        int(r.passives), int(r.detractors),
        { text: r.nps === null ? "-" : r.nps.toFixed(1), attrs: { "data-value": r.nps } }] };
    }));
  $("nps-empty").hidden = doc.rows.length > 0;
}

function renderPipeline(doc) {
  const box = $("pipeline-tables");
  $("pipeline-as-of").textContent = "as of " + doc.as_of;
  const pairs = (o) => Object.entries(o).map(([k, v]) => ({ attrs: { "data-key": k },
    cells: [k, { text: int(v), attrs: { "data-value": v } }] }));
  const accepted = Object.entries(doc.accepted).flatMap(([app, types]) =>
    Object.entries(types).map(([type, n]) => ({ cells: [app, type, int(n)] })));
  box.replaceChildren(
    table(el("table", { id: "lag" }), ["partition (this worker)", "lag"], pairs(doc.lag)),
    table(el("table", { id: "rejects" }), ["rejected: reason", "events"], pairs(doc.rejected)),
    table(el("table", { id: "duplicates" }), ["duplicates: app", "events"],
      pairs(doc.duplicates)),
    table(el("table", { id: "accepted" }), ["app", "type", "accepted"], accepted),
    table(el("table", { id: "watermarks" }), ["partition", "event-time watermark"],
      Object.entries(doc.watermarks).map(([k, v]) => ({ cells: [k, v] }))));
}

// ---- the loop -------------------------------------------------------------------------------
async function loadApps() {
  const doc = await getJson("/retention/apps");
  const select = $("app");
  select.replaceChildren(...doc.apps.map((a) => el("option", { value: a.app },
    `${a.app} (${a.timezone})`)));
  const names = doc.apps.map((a) => a.app);
  if (state.app && !names.includes(state.app)) {  // a link to an app with no data
    select.value = "";
    throw new Error(`no such app: '${state.app}' (apps with data: ${names.join(", ") || "none yet"})`);
  }
  state.app = state.app || names[0] || "";
  select.value = state.app;
  const chosen = doc.apps.find((a) => a.app === state.app);
  doc.appCurrency = (chosen && chosen.currency) || doc.currency;  // APP_CURRENCIES
  $("money-currency").textContent = "(" + doc.appCurrency + ", the currency of install costs)";
  return doc;
}

async function refresh() {
  try {
    if (!catalogue) {
      catalogue = await getJson("/retention/figures");
      figureOf = Object.fromEntries(catalogue.daily.map((f) => [f.key, f]));
    }
    const apps = await loadApps();
    if (!state.app) throw new Error("no data yet: no app has sent an event");
    const money = { granularity: "week", currency: apps.appCurrency };
    const [summary, daily, headline, cohorts, kpis, ltv, roas, pipeline, nps] = await Promise.all([
      getJson("/retention/summary?" + query()),
      getJson("/retention/daily?" + query()),
      getJson("/retention/headline?" + query()),
      getJson("/retention/cohorts?" + query({ kind: state.kind, window: state.window,
        granularity: state.window === "24h" ? "day" : state.granularity })),
      getJson("/retention/kpis?" + query({ period: state.period })),
      getJson("/retention/cohorts?" + query({ kind: "ltv", ...money })),
      getJson("/retention/cohorts?" + query({ kind: "roas", ...money })),
      getJson("/retention/pipeline"),
      getJson("/retention/nps?" + query({ period: state.period })),
    ]);
    renderSummary(summary);
    renderHeadline(headline);
    renderCohorts(cohorts);
    renderKpis(kpis);
    renderNps(nps);
    renderPipeline(pipeline);
    await renderAtRisk(summary);
    drawDaily(daily);
    drawCurves("chart-ltv", ltv);
    drawCurves("chart-roas", roas);
    $("status").textContent = "as of " + cohorts.as_of + ", refreshed every " +
      REFRESH_MS / 1000 + " s";
    $("status").className = "status";
    document.body.dataset.ready = "1";
  } catch (err) {
    $("status").textContent = String(err.message || err);
    $("status").className = "status error";
    document.body.dataset.error = String(err.message || err);
  }
}

function bind(id, key) {
  const input = $(id);
  input.value = state[key];
  input.addEventListener("change", () => { state[key] = input.value.trim(); saveState(); refresh(); });
}

for (const [id, key] of [["app", "app"], ["where", "where"], ["kind", "kind"],
  ["granularity", "granularity"], ["window", "window"], ["period", "period"]]) bind(id, key);
refresh();
setInterval(refresh, REFRESH_MS);
