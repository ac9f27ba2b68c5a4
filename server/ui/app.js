// runql's dashboard: one page, every view's state in the URL fragment, every question asked
// with SQL through POST /api/sql. Plain ES modules, no build step, no network but this server.

import { h, banner, crumbs, debounce } from "./lib/dom.js";
import { sql, sqlObjects, lit, ident, authHeaders } from "./lib/sql.js";
import { fmtTime, fmtDur, fmtBytes, fmtNum, badge } from "./lib/format.js";
import { parseHash, href, setParams } from "./lib/route.js";
import { subscribe } from "./lib/events.js";
import { tableOf } from "./lib/table.js";
import { LineChart, ParallelChart, color } from "./lib/chart.js";

const $main = () => document.getElementById("main");

let cleanup = () => {};

async function route() {
  cleanup();
  cleanup = () => {};
  banner(null);
  const { segs, params } = parseHash();
  const main = $main();
  main.replaceChildren();
  document.title = "runql";
  try {
    if (segs[0] === "sql") return await sqlView(main, params);
    if (segs[0] === "p" && segs[1]) {
      const project = segs[1];
      if (segs[2] === "run" && segs[3]) return await runView(main, project, segs[3], params);
      if (segs[2] === "compare") return await compareView(main, project, params);
      if (segs[2] === "optuna") return await optunaView(main, project, params);
      if (segs[2] === "rl") return await rlView(main, project, params);
      if (segs[2] === "llm") return await llmView(main, project, params);
      return await runsView(main, project, params);
    }
    return await projectsView(main);
  } catch (e) {
    main.append(h("p", { class: "error" }, e.message || String(e)));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
window.addEventListener("unhandledrejection", (e) => banner(String(e.reason && e.reason.message || e.reason)));

// ---------------------------------------------------------------- projects

async function projectsView(main) {
  crumbs(["projects", "#/"]);
  main.append(h("h1", {}, "Projects"));
  const rows = await sqlObjects(`SELECT project, count(*) AS runs,
      sum(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running,
      sum(CASE WHEN status IN ('crashed', 'failed') THEN 1 ELSE 0 END) AS failed,
      max(created) AS last_run
    FROM runs WHERE NOT deleted GROUP BY project ORDER BY last_run DESC`);
  if (!rows.length) {
    main.append(h("p", { class: "muted" }, "No runs yet. Log one (docs/guide.md), or fill a demo store with `runql demo`."));
    return;
  }
  const cards = h("div", { class: "cards" });
  for (const r of rows) {
    cards.append(h("a", { class: "card", href: href(["p", r.project]), dataset: { project: r.project } },
      h("h3", {}, r.project),
      h("div", {}, `${r.runs} runs`, r.running ? h("span", {}, " · ", badge("running"), ` ${r.running}`) : null,
        r.failed ? h("span", {}, " · ", badge("crashed"), ` ${r.failed}`) : null),
      h("div", { class: "muted" }, `last run ${fmtTime(r.last_run)}`)));
  }
  main.append(cards);
  // Redrawn when a run starts, ends or crashes (not on every flush of a live run).
  const seen = new Map((await sqlObjects(`SELECT project, run_id FROM runs WHERE status = 'running'`))
    .map((r) => [`${r.project}/${r.run_id}`, "running"]));
  const redraw = debounce(() => { if (parseHash().segs.length === 0) route(); }, 1000);
  cleanup = subscribe(null, (ev) => {
    if (!ev) return redraw();
    const key = `${ev.project}/${ev.run_id}`;
    if (seen.get(key) !== ev.status) redraw();
    seen.set(key, ev.status);
  });
}

// ---------------------------------------------------------------- runs table

const BASE_COLS = {
  name: { label: "name", expr: "r.name", width: 220 },
  status: { label: "status", expr: "r.status", width: 90 },
  created: { label: "created", expr: "r.created", width: 160 },
  duration: { label: "duration", expr: "(date_part('epoch', COALESCE(r.ended, r.heartbeat, r.started)) - date_part('epoch', r.started))", width: 90, num: true },
  git_commit: { label: "git commit", expr: "r.git_commit", width: 90 },
  username: { label: "user", expr: "r.username", width: 90 },
  hostname: { label: "host", expr: "r.hostname", width: 110 },
  run_group: { label: "group", expr: "r.run_group", width: 100 },
  parent_run_id: { label: "parent", expr: "r.parent_run_id", width: 90 },
  run_id: { label: "run id", expr: "r.run_id", width: 120 },
};

// The keys of a project's params, metrics and tags.
async function projectKeys(project) {
  const rows = await sqlObjects(`
    SELECT 'params' AS kind, key, count(value_num) = count(*) AS numeric FROM params WHERE project = ${lit(project)} GROUP BY key
    UNION ALL SELECT 'metrics' AS kind, key, true AS numeric FROM metric_summary WHERE project = ${lit(project)} GROUP BY key
    UNION ALL SELECT 'tags' AS kind, key, false AS numeric FROM tags WHERE project = ${lit(project)} GROUP BY key
    ORDER BY kind, key`);
  const keys = { params: [], metrics: [], tags: [] };
  for (const r of rows) keys[r.kind].push({ key: r.key, numeric: r.numeric });
  return keys;
}

// Column id → {label, expr, width, num}.
function columnOf(id, keys) {
  if (BASE_COLS[id]) return BASE_COLS[id];
  const dot = id.indexOf(".");
  const kind = id.slice(0, dot), key = id.slice(dot + 1);
  const k = (keys[kind] || []).find((x) => x.key === key);
  if (!k) return null;
  const width = Math.max(90, Math.min(240, Math.round(id.length * 7.8) + 24));
  return { label: id, expr: `${kind}.${ident(key)}`, width, num: k.numeric };
}

// The FROM … WHERE of the runs table: runs joined with one column per param, metric (last
// value) and tag key, so that a filter can say `params.lr > 0.01 AND metrics."val/acc" > 0.9`.
function runsFrom(project, keys, filter) {
  const pivot = (table, list, value) => {
    const cols = list.map((k) => `, max(CASE WHEN key = ${lit(k.key)} THEN ${value(k)} END) AS ${ident(k.key)}`).join("");
    return `(SELECT run_id AS __id${cols} FROM ${table} WHERE project = ${lit(project)} GROUP BY run_id)`;
  };
  return `FROM runs r
    LEFT JOIN ${pivot("params", keys.params, (k) => (k.numeric ? "value_num" : "value"))} params ON params.__id = r.run_id
    LEFT JOIN ${pivot("metric_summary", keys.metrics, () => "last_value")} metrics ON metrics.__id = r.run_id
    LEFT JOIN ${pivot("tags", keys.tags, () => "value")} tags ON tags.__id = r.run_id
    WHERE r.project = ${lit(project)} AND NOT r.deleted${filter.trim() ? ` AND (${filter})` : ""}`;
}

async function pluginsOf(project) {
  const have = await sqlObjects(`SELECT table_schema AS s, table_name AS t FROM information_schema.tables
    WHERE (table_schema, table_name) IN (('optuna', 'trials'), ('rl', 'episodes'), ('llm', 'calls'))`).catch(() => []);
  const out = [];
  for (const { s, t } of have) {
    const [{ n }] = await sqlObjects(`SELECT count(*) AS n FROM ${s}.${t} WHERE project = ${lit(project)}`);
    if (n > 0) out.push(s);
  }
  return out;
}

const PLUGIN_LABEL = { optuna: "Optuna study", rl: "RL episodes", llm: "LLM calls" };

async function runsView(main, project, params) {
  crumbs(["projects", "#/"], [project, null]);
  document.title = `${project} · runql`;
  const keys = await projectKeys(project);
  const state = {
    filter: params.filter || "",
    sort: params.sort || "created",
    desc: params.desc !== undefined ? params.desc === "1" : true,
    group: params.group || "",
    sel: new Set((params.sel || "").split(",").filter(Boolean)),
    cols: params.cols ? params.cols.split(",").filter(Boolean)
      : ["name", "status", "created", "duration", ...keys.params.slice(0, 4).map((k) => `params.${k.key}`), ...keys.metrics.slice(0, 3).map((k) => `metrics.${k.key}`)],
  };
  state.cols = state.cols.filter((c) => columnOf(c, keys));
  if (!state.cols.includes("name")) state.cols.unshift("name");

  const filterBox = h("input", { class: "filter", value: state.filter, placeholder: `SQL WHERE clause, e.g. status = 'finished' AND params.lr >= 0.01 AND metrics."val/acc" > 0.9`, "aria-label": "filter" });
  const err = h("div", { class: "error", role: "alert" });
  const count = h("span", { class: "muted", dataset: { role: "count" } });
  const compareBtn = h("button", { class: "primary", disabled: true }, "Compare");
  const groupSel = h("select", { "aria-label": "group by" }, h("option", { value: "" }, "no grouping"),
    ...["status", "run_group", "username"].map((c) => h("option", { value: c }, BASE_COLS[c].label)),
    ...keys.params.map((k) => h("option", { value: `params.${k.key}` }, `params.${k.key}`)),
    ...keys.tags.map((k) => h("option", { value: `tags.${k.key}` }, `tags.${k.key}`)));
  groupSel.value = state.group;
  const colsBtn = h("button", {}, "Columns");
  const plugins = await pluginsOf(project);
  const toolbar = h("div", { class: "toolbar" },
    filterBox, h("button", { onclick: () => apply() }, "Filter"), colsBtn,
    h("label", {}, "group by", groupSel), compareBtn, count,
    ...plugins.map((p) => h("a", { href: href(["p", project, p]), class: "navlink" }, PLUGIN_LABEL[p])));
  const groups = h("div", { class: "groups" });
  const vt = h("div", { class: "vt", role: "table" });
  main.append(toolbar, err, groups, vt);

  const ROW = 28, PAGE = 100;
  let total = 0, pages = new Map(), generation = 0;
  let cols = [];

  const selectSql = () => {
    const parts = ["r.run_id AS __run_id", "r.status AS __status", "r.name AS __name"];
    for (const c of cols) parts.push(`${c.expr} AS ${ident(c.id)}`);
    if (state.group) parts.push(`${columnOf(state.group, keys).expr} AS __group`);
    return parts.join(", ");
  };
  const orderSql = () => {
    const s = columnOf(state.sort, keys) || BASE_COLS.created;
    const o = [];
    if (state.group) o.push(`${columnOf(state.group, keys).expr} NULLS LAST`);
    o.push(`${s.expr} ${state.desc ? "DESC" : "ASC"} NULLS LAST`, "r.created DESC", "r.run_id");
    return o.join(", ");
  };

  function header() {
    const hdr = h("div", { class: "hdr", role: "row" }, h("div", { class: "cell" }, ""));
    for (const c of cols) {
      const cell = h("div", { class: `cell${c.num ? " num" : ""}${state.sort === c.id ? " sorted" : ""}${state.sort === c.id && state.desc ? " desc" : ""}`, role: "columnheader", dataset: { col: c.id }, title: `sort by ${c.label}` }, c.label);
      cell.addEventListener("click", () => {
        if (state.sort === c.id) state.desc = !state.desc; else { state.sort = c.id; state.desc = !!c.num || c.id === "created"; }
        setParams({ sort: state.sort, desc: state.desc ? "1" : "0" });
        reload();
      });
      hdr.append(cell);
    }
    return hdr;
  }

  const template = () => `28px ${cols.map((c) => `${c.width}px`).join(" ")}`;
  const spacer = h("div");
  let hdrEl = null;

  function layout() {
    cols = state.cols.map((id) => ({ id, ...columnOf(id, keys) }));
    hdrEl = header();
    hdrEl.style.gridTemplateColumns = template();
    vt.replaceChildren(hdrEl, spacer);
  }

  function cellText(c, v) {
    if (v === null || v === undefined) return "";
    if (c.id === "created") return fmtTime(v);
    if (c.id === "duration") return fmtDur(v);
    if (c.id === "git_commit" || c.id === "parent_run_id") return String(v).slice(0, 8);
    if (typeof v === "number") return fmtNum(v);
    return String(v);
  }

  function rowEl(i, r) {
    const id = r[0];
    const el = h("div", { class: `row${state.sel.has(id) ? " sel" : ""}`, role: "row", dataset: { runId: id, index: String(i) }, style: `top:${ROW + i * ROW}px; grid-template-columns:${template()}` });
    const box = h("input", { type: "checkbox", checked: state.sel.has(id), "aria-label": `select ${r[2] || id}` });
    box.addEventListener("change", () => {
      if (box.checked) state.sel.add(id); else state.sel.delete(id);
      el.classList.toggle("sel", box.checked);
      setParams({ sel: [...state.sel].join(",") });
      updateCompare();
    });
    el.append(h("div", { class: "cell" }, box));
    const groupVal = state.group ? r[3 + cols.length] : undefined;
    const prev = pageRow(i - 1);
    const gstart = state.group && (i === 0 || (prev && prev[3 + cols.length] !== groupVal));
    if (gstart) el.classList.add("gstart");
    cols.forEach((c, j) => {
      const v = r[3 + j];
      let content;
      if (c.id === "name") {
        content = [gstart ? h("span", { class: "glabel" }, `${state.group} = ${groupVal ?? "∅"}`) : null,
          h("a", { href: href(["p", project, "run", id]) }, v || id.slice(0, 12))];
      } else if (c.id === "status") content = badge(v);
      else if (c.id === "parent_run_id" && v) content = h("a", { href: href(["p", project, "run", v]) }, cellText(c, v));
      else content = cellText(c, v);
      el.append(h("div", { class: `cell${c.num ? " num" : ""}`, title: v === null || v === undefined ? "" : String(v) }, content));
    });
    return el;
  }

  const pageRow = (i) => {
    if (i < 0) return null;
    const p = pages.get(Math.floor(i / PAGE));
    return p && p !== "loading" ? p[i % PAGE] : null;
  };

  async function loadPage(p) {
    if (pages.has(p)) return;
    pages.set(p, "loading");
    const gen = generation;
    try {
      const t = await sql(`SELECT ${selectSql()} ${runsFrom(project, keys, state.filter)} ORDER BY ${orderSql()} LIMIT ${PAGE} OFFSET ${p * PAGE}`);
      if (gen !== generation) return;
      pages.set(p, t.rows);
      render();
    } catch (e) {
      if (gen === generation) { pages.delete(p); err.textContent = e.message; }
    }
  }

  function render() {
    spacer.style.height = `${total * ROW}px`;
    const top = Math.max(0, Math.floor(vt.scrollTop / ROW) - 10);
    const bottom = Math.min(total, Math.ceil((vt.scrollTop + vt.clientHeight) / ROW) + 10);
    for (const el of [...vt.querySelectorAll(".row")]) el.remove();
    for (let p = Math.floor(top / PAGE); p <= Math.floor(Math.max(top, bottom - 1) / PAGE) && p * PAGE < total; p++) loadPage(p);
    const frag = document.createDocumentFragment();
    for (let i = top; i < bottom; i++) {
      const r = pageRow(i);
      if (r) frag.append(rowEl(i, r));
    }
    vt.append(frag);
  }

  function updateCompare() {
    compareBtn.disabled = state.sel.size < 1;
    compareBtn.textContent = `Compare${state.sel.size ? ` (${state.sel.size})` : ""}`;
  }
  compareBtn.addEventListener("click", () => { location.hash = href(["p", project, "compare"], { runs: [...state.sel].join(",") }); });

  async function reload({ keepScroll = false } = {}) {
    generation++;
    pages = new Map();
    err.textContent = "";
    layout();
    if (!keepScroll) vt.scrollTop = 0;
    try {
      const from = runsFrom(project, keys, state.filter);
      const [{ n }] = await sqlObjects(`SELECT count(*) AS n ${from}`);
      total = n;
      count.textContent = `${n} run${n === 1 ? "" : "s"}`;
      groups.replaceChildren();
      if (state.group) {
        const g = await sql(`SELECT ${columnOf(state.group, keys).expr} AS g, count(*) AS n ${from} GROUP BY 1 ORDER BY 1 NULLS LAST`);
        for (const [v, k] of g.rows) groups.append(h("span", {}, `${state.group} = ${v ?? "∅"}: ${k}`));
      }
    } catch (e) {
      total = 0;
      count.textContent = "";
      err.textContent = e.message;
    }
    render();
  }

  function apply() {
    state.filter = filterBox.value;
    setParams({ filter: state.filter });
    reload();
  }
  filterBox.addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
  groupSel.addEventListener("change", () => { state.group = groupSel.value; setParams({ group: state.group }); reload(); });
  vt.addEventListener("scroll", () => render());

  colsBtn.addEventListener("click", (ev) => {
    ev.stopPropagation();
    const old = document.querySelector(".colchooser");
    if (old) { old.remove(); return; }
    const pop = h("div", { class: "colchooser", role: "dialog", "aria-label": "columns" });
    const opt = (id) => {
      const box = h("input", { type: "checkbox", checked: state.cols.includes(id), dataset: { col: id } });
      box.addEventListener("change", () => {
        state.cols = box.checked ? [...state.cols, id] : state.cols.filter((c) => c !== id);
        setParams({ cols: state.cols.join(",") });
        reload({ keepScroll: true });
      });
      return h("label", {}, box, " ", columnOf(id, keys).label);
    };
    pop.append(h("h3", {}, "run"), ...Object.keys(BASE_COLS).filter((c) => c !== "name").map(opt));
    for (const kind of ["params", "metrics", "tags"]) {
      if (keys[kind].length) pop.append(h("h3", {}, kind), ...keys[kind].map((k) => opt(`${kind}.${k.key}`)));
    }
    const r = colsBtn.getBoundingClientRect();
    pop.style.left = `${r.left + window.scrollX}px`;
    pop.style.top = `${r.bottom + window.scrollY + 4}px`;
    pop.addEventListener("click", (e) => e.stopPropagation());
    document.body.append(pop);
    const close = () => { pop.remove(); document.removeEventListener("click", close); };
    document.addEventListener("click", close);
  });

  updateCompare();
  await reload();
  const stop = subscribe(project, debounce(() => reload({ keepScroll: true }), 800));
  cleanup = () => { stop(); document.querySelector(".colchooser")?.remove(); };
}

// ---------------------------------------------------------------- curves

// Downsampled series of some runs' metrics: curves(n) keeps first, last, min and max of each
// step bucket; a step range reads that range at full resolution.
async function fetchCurves(project, runIds, key, { range = null, points = 1000, system = false } = {}) {
  const ids = runIds.map(lit).join(", ");
  if (system) {
    return sqlObjects(`SELECT run_id, key, ts, value FROM system_metrics
      WHERE project = ${lit(project)} AND run_id IN (${ids}) AND key = ${lit(key)} ORDER BY run_id, ts`, { maxRows: 200000 });
  }
  const where = range ? ` AND step BETWEEN ${Math.floor(range[0])} AND ${Math.ceil(range[1])}` : "";
  return sqlObjects(`SELECT run_id, step, ts, value FROM curves(${points})
    WHERE project = ${lit(project)} AND run_id IN (${ids}) AND key = ${lit(key)}${where} ORDER BY run_id, step, ts`, { maxRows: 500000 });
}

// A group of charts with shared controls (x axis, log scale, smoothing), one chart per key,
// each loaded when it scrolls into view.
function chartPanel(parent, { project, runs, keys, keysFn = null, params, system = false }) {
  const state = { x: system ? "time" : params.x || "step", log: params.log === "1", smooth: Number(params.smooth || 0), keyFilter: params.keys || "" };
  const controls = h("div", { class: "toolbar" });
  const keyBox = h("input", { placeholder: "filter charts by key", value: state.keyFilter, "aria-label": "chart filter" });
  const xSel = h("select", { "aria-label": "x axis" }, h("option", { value: "step" }, "x: step"), h("option", { value: "time" }, "x: time"));
  xSel.value = state.x;
  const logBox = h("input", { type: "checkbox", checked: state.log, "aria-label": "log scale" });
  const smoothIn = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(state.smooth), "aria-label": "smoothing" });
  const smoothVal = h("span", { class: "muted" }, state.smooth.toFixed(2));
  controls.append(...[keyBox, system ? null : xSel, h("label", {}, logBox, "log scale"), h("label", {}, "smoothing", smoothIn, smoothVal)].filter(Boolean));
  const legend = h("div", { class: "legend" });
  for (const [i, r] of runs.entries()) legend.append(h("span", {}, h("span", { class: "sw", style: `background:${color(i)}` }), r.name || r.run_id.slice(0, 8)));
  const grid = h("div", { class: "charts" });
  parent.append(...[controls, runs.length > 1 ? legend : null, grid].filter(Boolean));
  const charts = [];
  const startOf = new Map(runs.map((r) => [r.run_id, r.started ? Date.parse(r.started) : null]));

  const toSeries = (rows) => runs.map((r, i) => {
    const mine = rows.filter((p) => p.run_id === r.run_id);
    const t0 = startOf.get(r.run_id) ?? (mine.length ? Date.parse(mine[0].ts) : 0);
    return {
      name: r.name || r.run_id.slice(0, 8),
      color: color(i),
      xs: mine.map((p) => (state.x === "time" ? (Date.parse(p.ts) - t0) / 1000 : p.step)),
      ys: mine.map((p) => p.value),
    };
  }).filter((s) => s.xs.length);

  async function load(c, range = null) {
    try {
      const rows = await fetchCurves(project, runs.map((r) => r.run_id), c.key, { range: state.x === "step" ? range : null, system });
      c.chart.setData(toSeries(rows));
      c.loaded = true;
    } catch (e) { c.chart.titleEl.append(h("span", { class: "error" }, e.message)); }
  }

  const io = new IntersectionObserver((entries) => {
    for (const en of entries) {
      const c = charts.find((x) => x.chart.el === en.target);
      if (en.isIntersecting && c && !c.loaded && !c.loading) { c.loading = true; load(c).finally(() => { c.loading = false; }); }
    }
  }, { rootMargin: "200px" });

  function build() {
    for (const c of charts) { io.unobserve(c.chart.el); c.chart.destroy(); }
    charts.length = 0;
    grid.replaceChildren();
    const f = state.keyFilter.toLowerCase();
    for (const key of keys.filter((k) => k.toLowerCase().includes(f))) {
      const c = { key, loaded: false };
      c.chart = new LineChart(grid, { title: key, onZoom: (range) => { if (state.x === "step") load(c, range); } });
      c.chart.el.dataset.key = key;
      c.chart.setOptions({ logY: state.log, smoothing: state.smooth, xKind: state.x });
      charts.push(c);
      io.observe(c.chart.el);
    }
    if (!charts.length) grid.append(h("p", { class: "muted" }, keys.length ? "No chart matches the filter." : "Nothing logged yet."));
  }

  keyBox.addEventListener("input", debounce(() => { state.keyFilter = keyBox.value; setParams({ keys: state.keyFilter }); build(); }, 250));
  xSel.addEventListener("change", () => { state.x = xSel.value; setParams({ x: state.x }); build(); });
  logBox.addEventListener("change", () => { state.log = logBox.checked; setParams({ log: state.log ? "1" : "" }); charts.forEach((c) => c.chart.setOptions({ logY: state.log })); });
  smoothIn.addEventListener("input", () => {
    state.smooth = Number(smoothIn.value);
    smoothVal.textContent = state.smooth.toFixed(2);
    setParams({ smooth: state.smooth ? String(state.smooth) : "" });
    charts.forEach((c) => c.chart.setOptions({ smoothing: state.smooth }));
  });
  build();
  return {
    // New data arrived: new keys get charts; the charts already shown reload (unless zoomed).
    async refresh() {
      if (keysFn) {
        const now = await keysFn().catch(() => keys);
        if (now.join("\u0000") !== keys.join("\u0000")) { keys = now; build(); return; }
      }
      for (const c of charts) if (c.loaded && !c.chart.view) load(c);
    },
    stop() { io.disconnect(); },
  };
}

// ---------------------------------------------------------------- one run

async function runView(main, project, runId, params) {
  crumbs(["projects", "#/"], [project, href(["p", project])], [runId.slice(0, 12), null]);
  const P = lit(project), R = lit(runId);
  const [run] = await sqlObjects(`SELECT *, date_part('epoch', COALESCE(ended, heartbeat, started)) - date_part('epoch', started) AS duration_s FROM runs WHERE project = ${P} AND run_id = ${R}`);
  if (!run) { main.append(h("p", { class: "error" }, `No run ${runId} in project ${project}.`)); return; }
  document.title = `${run.name || runId} · ${project} · runql`;
  const tab = params.tab || "overview";
  const tabs = [["overview", "Overview"], ["metrics", "Metrics"], ["system", "System"], ["artifacts", "Artifacts"], ["logs", "Logs"], ["inputs", "Inputs"]];
  const statusEl = badge(run.status);
  statusEl.dataset.role = "status";
  let panel = null;
  const stopLive = subscribe(project, debounce((ev) => {
    if (ev && ev.run_id !== runId) return;
    if (ev && ev.status) { statusEl.textContent = ev.status; statusEl.className = `badge ${ev.status}`; }
    if (panel) panel.refresh();
  }, 500));
  cleanup = () => { stopLive(); if (panel) panel.stop(); };
  main.append(h("h1", {}, run.name || runId, " ", statusEl),
    h("nav", { class: "tabs" }, ...tabs.map(([id, label]) => h("a", { href: href(["p", project, "run", runId], { tab: id }), class: id === tab ? "on" : null, dataset: { tab: id } }, label))));
  const body = h("div");
  main.append(body);

  if (tab === "overview") {
    const dl = h("dl", { class: "kv" });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(h("dt", {}, k), h("dd", {}, v)); };
    add("run id", h("code", {}, run.run_id));
    add("status", badge(run.status));
    add("parent", run.parent_run_id ? h("a", { href: href(["p", project, "run", run.parent_run_id]) }, run.parent_run_id) : null);
    add("group", run.run_group);
    add("user", run.username);
    add("host", run.hostname);
    add("command", run.command ? h("code", {}, run.command) : null);
    add("git", run.git_commit ? `${run.git_commit}${run.git_branch ? ` (${run.git_branch})` : ""}${run.git_dirty ? " + uncommitted changes" : ""}` : null);
    add("created", fmtTime(run.created));
    add("started", fmtTime(run.started));
    add("ended", fmtTime(run.ended));
    add("last heartbeat", fmtTime(run.heartbeat));
    add("duration", fmtDur(run.duration_s));
    body.append(dl);
    const [paramsRows, tagRows, arts] = await Promise.all([
      sql(`SELECT key, value FROM params WHERE project = ${P} AND run_id = ${R} ORDER BY key`),
      sqlObjects(`SELECT key, value FROM tags WHERE project = ${P} AND run_id = ${R} ORDER BY key`),
      sqlObjects(`SELECT path, size FROM artifacts WHERE project = ${P} AND run_id = ${R} AND (path = 'git/diff.patch' OR path LIKE 'env/%') ORDER BY path`),
    ]);
    const note = tagRows.find((t) => t.key === "mlflow.note.content");
    if (note) body.append(h("h2", {}, "Notes"), h("pre", { class: "note" }, note.value));
    body.append(h("h2", {}, "Params"), tableOf(paramsRows, { empty: "No params." }));
    const userTags = tagRows.filter((t) => !t.key.startsWith("mlflow.") && !t.key.startsWith("runql."));
    body.append(h("h2", {}, "Tags"), tableOf({ columns: [{ name: "key" }, { name: "value" }], rows: userTags.map((t) => [t.key, t.value]) }, { empty: "No tags." }));
    for (const a of arts) {
      const pre = h("pre", {}, "…");
      body.append(h("h2", {}, a.path === "git/diff.patch" ? "Uncommitted changes (git diff)" : `Environment: ${a.path.slice(4)}`), pre);
      artifactText(runId, a.path).then((t) => { pre.textContent = t; }, (e) => { pre.textContent = e.message; });
    }
  } else if (tab === "metrics" || tab === "system") {
    const system = tab === "system";
    const keysFn = async () => (await sqlObjects(system
      ? `SELECT DISTINCT key FROM system_metrics WHERE project = ${P} AND run_id = ${R} ORDER BY key`
      : `SELECT key FROM metric_summary WHERE project = ${P} AND run_id = ${R} ORDER BY key`)).map((r) => r.key);
    panel = chartPanel(body, { project, runs: [run], keys: await keysFn(), keysFn, params, system });
  } else if (tab === "artifacts") {
    const arts = await sqlObjects(`SELECT path, size, media_type, digest FROM artifacts WHERE project = ${P} AND run_id = ${R} ORDER BY path`);
    const latest = new Map(arts.map((a) => [a.path, a]));
    const list = h("div", { class: "list card" });
    const view = h("div", { class: "preview" });
    body.append(h("div", { class: "split" }, list, view));
    if (!latest.size) list.append(h("p", { class: "muted" }, "No artifacts."));
    const show = (a) => {
      setParams({ art: a.path });
      for (const el of list.querySelectorAll("a")) el.classList.toggle("on", el.dataset.path === a.path);
      view.replaceChildren(h("h2", {}, a.path, " ", h("a", { href: artifactUrl(runId, a.path, true), download: a.path.split("/").pop() }, "download")),
        h("p", { class: "muted" }, `${fmtBytes(a.size)} · ${a.media_type || "unknown type"} · sha256 ${a.digest.slice(0, 16)}…`));
      preview(view, runId, a);
    };
    for (const a of latest.values()) {
      list.append(h("a", { href: "#", dataset: { path: a.path }, onclick: (e) => { e.preventDefault(); show(a); } }, a.path, h("span", { class: "muted" }, ` ${fmtBytes(a.size)}`)));
    }
    const first = latest.get(params.art) || null;
    if (first) show(first);
  } else if (tab === "logs") {
    const t = await sqlObjects(`SELECT ts, stream, line FROM logs WHERE project = ${P} AND run_id = ${R} ORDER BY ts DESC LIMIT 5000`);
    t.reverse();
    const grep = h("input", { placeholder: "filter lines", value: params.grep || "", "aria-label": "filter lines" });
    const pre = h("pre", { class: "logs" });
    const draw = () => {
      const g = grep.value.toLowerCase();
      pre.replaceChildren(...t.filter((l) => !g || l.line.toLowerCase().includes(g)).map((l) => h("div", { class: l.stream }, l.line)));
    };
    grep.addEventListener("input", debounce(() => { setParams({ grep: grep.value }); draw(); }, 200));
    body.append(h("div", { class: "toolbar" }, grep, h("span", { class: "muted" }, t.length === 5000 ? "last 5000 lines" : `${t.length} lines`)), pre);
    draw();
  } else if (tab === "inputs") {
    body.append(tableOf(await sql(`SELECT name, uri, digest, role, ts FROM inputs WHERE project = ${P} AND run_id = ${R} ORDER BY ts`), { empty: "No inputs logged." }));
  }
}

function artifactUrl(runId, path, download = false) {
  return `/api/artifacts/${runId}/${path.split("/").map(encodeURIComponent).join("/")}${download ? "?download=1" : ""}`;
}

async function artifactText(runId, path, limit = 2 << 20) {
  const r = await fetch(artifactUrl(runId, path), { headers: authHeaders() });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  const b = await r.blob();
  return (await b.slice(0, limit).text()) + (b.size > limit ? `\n… (${fmtBytes(b.size)} in all)` : "");
}

async function preview(view, runId, a) {
  const ext = a.path.toLowerCase().split(".").pop();
  const media = a.media_type || "";
  try {
    if (media.startsWith("image/") && ext !== "svg") {
      const r = await fetch(artifactUrl(runId, a.path), { headers: authHeaders() });
      const url = URL.createObjectURL(await r.blob());
      view.append(h("img", { src: url, alt: a.path }));
    } else if (ext === "csv" || ext === "tsv") {
      const text = await artifactText(runId, a.path, 1 << 20);
      const sep = ext === "tsv" ? "\t" : ",";
      const lines = text.split(/\r?\n/).filter(Boolean).slice(0, 501);
      const cells = lines.map((l) => splitCsv(l, sep));
      view.append(tableOf({ columns: cells[0].map((name) => ({ name })), rows: cells.slice(1) }, { scroll: true }));
    } else if (ext === "json" || media === "application/json") {
      const text = await artifactText(runId, a.path);
      let pretty = text;
      try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch { /* show as is */ }
      view.append(h("pre", {}, pretty));
    } else if (media.startsWith("text/") || ["txt", "log", "md", "py", "rs", "yaml", "yml", "toml", "patch", "diff", "lock", "cfg", "ini", "sh", "jsonl"].includes(ext) || a.size < 64 * 1024) {
      const text = await artifactText(runId, a.path);
      // Binary content is not shown as text.
      if (/[\x00-\x08\x0e-\x1f]/.test(text.slice(0, 4096))) view.append(h("p", { class: "muted" }, "Binary file: download it to open."));
      else view.append(h("pre", {}, text));
    } else {
      view.append(h("p", { class: "muted" }, "No preview for this type: download it to open."));
    }
  } catch (e) { view.append(h("p", { class: "error" }, e.message)); }
}

function splitCsv(line, sep) {
  const out = [];
  let cur = "", q = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) {
      if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (c === '"') q = false; else cur += c;
    } else if (c === '"') q = true;
    else if (c === sep) { out.push(cur); cur = ""; } else cur += c;
  }
  out.push(cur);
  return out;
}

// ---------------------------------------------------------------- compare

async function compareView(main, project, params) {
  const ids = (params.runs || "").split(",").filter((s) => /^[0-9a-f]{32}$/.test(s));
  crumbs(["projects", "#/"], [project, href(["p", project], { sel: ids.join(",") })], ["compare", null]);
  document.title = `compare · ${project} · runql`;
  if (!ids.length) { main.append(h("p", { class: "muted" }, "Select runs in the runs table, then Compare.")); return; }
  const P = lit(project), IN = ids.map(lit).join(", ");
  const runs = await sqlObjects(`SELECT run_id, name, status, started FROM runs WHERE project = ${P} AND run_id IN (${IN})`);
  runs.sort((a, b) => ids.indexOf(a.run_id) - ids.indexOf(b.run_id));
  main.append(h("h1", {}, `Comparing ${runs.length} runs`));
  const [params_, metrics] = await Promise.all([
    sqlObjects(`SELECT run_id, key, value, value_num FROM params WHERE project = ${P} AND run_id IN (${IN})`),
    sqlObjects(`SELECT run_id, key, last_value, min, max FROM metric_summary WHERE project = ${P} AND run_id IN (${IN})`),
  ]);
  const metricKeys = [...new Set(metrics.map((m) => m.key))].sort();
  const view = params.view || "curves";
  const tabs = [["curves", "Learning curves"], ["diff", "Params & metrics"], ["parallel", "Parallel coordinates"]];
  main.append(h("nav", { class: "tabs" }, ...tabs.map(([id, label]) => h("a", { href: href(["p", project, "compare"], { ...params, view: id }), class: id === view ? "on" : null, dataset: { tab: id } }, label))));
  const body = h("div");
  main.append(body);

  if (view === "curves") {
    const keysFn = async () => (await sqlObjects(`SELECT DISTINCT key FROM metric_summary WHERE project = ${P} AND run_id IN (${IN}) ORDER BY key`)).map((r) => r.key);
    const panel = chartPanel(body, { project, runs, keys: metricKeys, keysFn, params });
    const stop = subscribe(project, debounce((ev) => { if (!ev || ids.includes(ev.run_id)) panel.refresh(); }, 500));
    cleanup = () => { stop(); panel.stop(); };
  } else if (view === "diff") {
    const only = h("input", { type: "checkbox", checked: params.only === "1", "aria-label": "only differences" });
    const holder = h("div");
    body.append(h("div", { class: "toolbar" }, h("label", {}, only, "only what differs")), holder);
    const pv = new Map(params_.map((p) => [`${p.run_id}\u0000${p.key}`, p.value]));
    const mv = new Map(metrics.map((m) => [`${m.run_id}\u0000${m.key}`, m.last_value]));
    const draw = () => {
      const rows = [];
      const add = (kind, keys, map) => {
        for (const k of keys) {
          const vals = runs.map((r) => map.get(`${r.run_id}\u0000${k}`));
          const differs = new Set(vals.map((v) => (v === undefined ? "\u0000none" : String(v)))).size > 1;
          if (only.checked && !differs) continue;
          rows.push(h("tr", { class: differs ? "diff" : null, dataset: { key: `${kind}.${k}` } }, h("td", {}, h("span", { class: "muted" }, `${kind}.`), k),
            ...vals.map((v) => h("td", { class: typeof v === "number" ? "num" : null }, v === undefined ? "" : typeof v === "number" ? fmtNum(v) : v))));
        }
      };
      add("params", [...new Set(params_.map((p) => p.key))].sort(), pv);
      add("metrics", metricKeys, mv);
      holder.replaceChildren(h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, h("th", {}, "key"), ...runs.map((r, i) => h("th", {}, h("span", { class: "sw", style: `display:inline-block;width:8px;height:8px;margin-right:4px;background:${color(i)}` }), h("a", { href: href(["p", project, "run", r.run_id]) }, r.name || r.run_id.slice(0, 8)))))),
        h("tbody", {}, rows)));
    };
    only.addEventListener("change", () => { setParams({ only: only.checked ? "1" : "" }); draw(); });
    draw();
  } else {
    parallelOf(body, runs, params_, metrics, metricKeys, params);
  }
}

// Parallel coordinates of runs: the params that vary, then one metric (colouring the lines).
function parallelOf(body, runs, params_, metrics, metricKeys, params) {
  const sel = h("select", { "aria-label": "metric" }, ...metricKeys.map((k) => h("option", { value: k }, k)));
  if (params.metric && metricKeys.includes(params.metric)) sel.value = params.metric;
  const holder = h("div");
  body.append(h("div", { class: "toolbar" }, h("label", {}, "colour by metric", sel)), holder);
  const chart = new ParallelChart(holder, { title: "params → metric" });
  const draw = () => {
    const byKey = new Map();
    for (const p of params_) {
      if (!byKey.has(p.key)) byKey.set(p.key, new Map());
      byKey.get(p.key).set(p.run_id, p.value_num ?? p.value);
    }
    const dims = [];
    for (const [k, m] of [...byKey.entries()].sort()) {
      const vals = runs.map((r) => m.get(r.run_id) ?? null);
      if (new Set(vals.map(String)).size > 1) dims.push({ name: k, values: vals });
    }
    const mk = sel.value;
    if (mk) {
      const mv = new Map(metrics.filter((m) => m.key === mk).map((m) => [m.run_id, m.last_value]));
      dims.push({ name: mk, values: runs.map((r) => mv.get(r.run_id) ?? null) });
    }
    chart.setData(dims, runs.map((r) => r.name || r.run_id));
  };
  sel.addEventListener("change", () => { setParams({ metric: sel.value }); draw(); });
  draw();
}

// ---------------------------------------------------------------- SQL page

async function sqlView(main, params) {
  crumbs(["SQL", null]);
  document.title = "SQL · runql";
  const box = h("textarea", { rows: 6, "aria-label": "SQL", spellcheck: false }, params.q || "SELECT project, name, status, created FROM runs ORDER BY created DESC LIMIT 100");
  const runBtn = h("button", { class: "primary" }, "Run (Ctrl+Enter)");
  const info = h("span", { class: "muted" });
  const out = h("div");
  const chartBox = h("div");
  main.append(h("h1", {}, "SQL"), box, h("div", { class: "toolbar", style: "margin-top:6px" }, runBtn, info,
    h("span", { class: "muted" }, "Tables: runs, params, tags, metrics, system_metrics, artifacts, logs, inputs, metric_summary, params_wide, metrics_wide, curves(n) — docs/sql.md")), chartBox, out);
  async function run(first = false) {
    const q = box.value;
    if (!first) setParams({ q });
    out.replaceChildren();
    chartBox.replaceChildren();
    info.textContent = "running…";
    const t0 = performance.now();
    try {
      const t = await sql(q, { maxRows: 100000 });
      info.textContent = `${t.rows.length}${t.truncated ? "+ (truncated)" : ""} rows in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
      out.append(tableOf(t, { limit: 1000 }));
      plotControls(chartBox, t, params);
    } catch (e) {
      info.textContent = "";
      out.append(h("div", { class: "error", role: "alert" }, e.message));
    }
  }
  runBtn.addEventListener("click", () => run());
  box.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
  if (params.q) await run(true);
}

// Chart any numeric column of a result against another.
function plotControls(parent, t, params) {
  const numeric = t.columns.map((c, i) => [c, i]).filter(([c]) => /^(Float|Int|UInt|Decimal)/.test(c.type));
  const temporal = t.columns.map((c, i) => [c, i]).filter(([c]) => /^(Timestamp|Date)/.test(c.type));
  if (!numeric.length || !t.rows.length) return;
  const xs = [["(row)", -1], ...numeric.map(([c, i]) => [c.name, i]), ...temporal.map(([c, i]) => [c.name, i])];
  const xSel = h("select", { "aria-label": "chart x" }, ...xs.map(([n, i]) => h("option", { value: String(i) }, `x: ${n}`)));
  const ySel = h("select", { "aria-label": "chart y" }, h("option", { value: "" }, "chart: none"), ...numeric.map(([c, i]) => h("option", { value: String(i) }, `y: ${c.name}`)));
  const strings = t.columns.map((c, i) => [c, i]).filter(([c]) => /Utf8/.test(c.type));
  const bySel = h("select", { "aria-label": "chart series" }, h("option", { value: "" }, "one series"), ...strings.map(([c, i]) => h("option", { value: String(i) }, `series by ${c.name}`)));
  const find = (sel, name) => { const o = [...sel.options].find((o) => o.textContent.endsWith(`: ${name}`) || o.textContent.endsWith(` ${name}`)); if (o) sel.value = o.value; };
  if (params.x) find(xSel, params.x);
  if (params.y) find(ySel, params.y);
  if (params.by) find(bySel, params.by);
  const holder = h("div");
  parent.append(h("div", { class: "toolbar" }, ySel, xSel, bySel), holder);
  let chart = null;
  const draw = () => {
    holder.replaceChildren();
    chart = null;
    const yi = ySel.value === "" ? null : Number(ySel.value);
    const name = (sel) => (sel.value === "" || sel.value === "-1" ? "" : t.columns[Number(sel.value)].name);
    setParams({ y: name(ySel), x: name(xSel), by: name(bySel) });
    if (yi === null) return;
    const xi = Number(xSel.value), bi = bySel.value === "" ? null : Number(bySel.value);
    const xOf = (r, k) => (xi < 0 ? k : typeof r[xi] === "string" ? Date.parse(r[xi]) / 1000 : r[xi]);
    const groups = new Map();
    t.rows.forEach((r, k) => {
      const g = bi === null ? t.columns[yi].name : String(r[bi]);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push([xOf(r, k), r[yi]]);
    });
    chart = new LineChart(holder, { title: t.columns[yi].name, big: true });
    if (groups.size > 1) {
      holder.prepend(h("div", { class: "legend" }, ...[...groups.keys()].slice(0, 50).map((g, i) => h("span", {}, h("span", { class: "sw", style: `background:${color(i)}` }), g))));
    }
    chart.setData([...groups.entries()].slice(0, 50).map(([g, pts], i) => {
      pts.sort((a, b) => a[0] - b[0]);
      return { name: g, color: color(i), xs: pts.map((p) => p[0]), ys: pts.map((p) => p[1]) };
    }));
  };
  for (const s of [xSel, ySel, bySel]) s.addEventListener("change", draw);
  draw();
}

// ---------------------------------------------------------------- plugin views

async function optunaView(main, project, params) {
  crumbs(["projects", "#/"], [project, href(["p", project])], ["Optuna", null]);
  const P = lit(project);
  const studies = await sqlObjects(`SELECT study_name, directions, n_trials, best_trial, best_value FROM optuna.studies WHERE project = ${P} ORDER BY n_trials DESC, study_name`);
  if (!studies.length) { main.append(h("p", { class: "muted" }, "No Optuna study in this project: `runql ingest journal.log -p PROJECT`.")); return; }
  const study = studies.find((s) => s.study_name === params.study) || studies[0];
  const sel = h("select", { "aria-label": "study" }, ...studies.map((s) => h("option", { value: s.study_name }, s.study_name)));
  sel.value = study.study_name;
  sel.addEventListener("change", () => { location.hash = href(["p", project, "optuna"], { study: sel.value }); });
  main.append(h("h1", {}, "Optuna study"), h("div", { class: "toolbar" }, sel,
    h("span", { class: "muted" }, `${study.n_trials} trials · direction ${study.directions} · best trial #${study.best_trial ?? "–"} = ${fmtNum(study.best_value)}`)));
  const S = lit(study.study_name);
  const trials = await sqlObjects(`SELECT number, state, value, duration_s, run_key FROM optuna.trials WHERE project = ${P} AND study_name = ${S} ORDER BY number`);
  const minimize = !String(study.directions).toUpperCase().includes("MAXIMIZE");
  const done = trials.filter((t) => t.state === "COMPLETE" && Number.isFinite(t.value));
  let best = null;
  const bestXs = [], bestYs = [];
  for (const t of done) {
    if (best === null || (minimize ? t.value < best : t.value > best)) best = t.value;
    bestXs.push(t.number); bestYs.push(best);
  }
  const grid = h("div", { class: "charts" });
  main.append(h("h2", {}, "Optimization history"), grid);
  const hist = new LineChart(grid, { title: "objective value by trial" });
  hist.setData([
    { name: "trial value", color: color(0), xs: done.map((t) => t.number), ys: done.map((t) => t.value) },
    { name: "best so far", color: color(3), xs: bestXs, ys: bestYs },
  ]);
  const tp = await sqlObjects(`SELECT number, param, value, value_num FROM optuna.trial_params WHERE project = ${P} AND study_name = ${S}`);
  const names = [...new Set(tp.map((p) => p.param))].sort();
  const pv = new Map(tp.map((p) => [`${p.number}\u0000${p.param}`, p.value_num ?? p.value]));
  const pc = h("div");
  main.append(h("h2", {}, "Parameters → objective (parallel coordinates)"), pc);
  new ParallelChart(pc, { title: "" }).setData(
    [...names.map((n) => ({ name: n, values: done.map((t) => pv.get(`${t.number}\u0000${n}`) ?? null) })), { name: "objective", values: done.map((t) => t.value) }],
    done.map((t) => `#${t.number}`));
  main.append(h("h2", {}, "Trials"), tableOf({
    columns: [{ name: "number", type: "Int64" }, { name: "state" }, { name: "value", type: "Float64" }, { name: "duration_s", type: "Float64" }, ...names.map((n) => ({ name: n }))],
    rows: trials.map((t) => [t.number, t.state, t.value, t.duration_s, ...names.map((n) => pv.get(`${t.number}\u0000${n}`) ?? null)]),
  }));
}

async function rlView(main, project, params) {
  crumbs(["projects", "#/"], [project, href(["p", project])], ["RL episodes", null]);
  const P = lit(project);
  main.append(h("h1", {}, "RL episodes"));
  // At most ~1000 points per run: episodes averaged in buckets.
  const rows = await sqlObjects(`WITH m AS (SELECT run_id, max(episode) / 1000 + 1 AS b FROM rl.episodes WHERE project = ${P} GROUP BY run_id)
    SELECT e.run_id, min(e.episode) AS episode, avg(e."return") AS ret, avg(CAST(e.length AS DOUBLE)) AS len, count(*) AS n
    FROM rl.episodes e JOIN m ON e.run_id = m.run_id WHERE e.project = ${P}
    GROUP BY e.run_id, e.episode / m.b ORDER BY e.run_id, episode`, { maxRows: 500000 });
  const ids = [...new Set(rows.map((r) => r.run_id))];
  const names = new Map((await sqlObjects(`SELECT run_id, name FROM runs WHERE project = ${P} AND run_id IN (${ids.map(lit).join(", ") || "''"})`)).map((r) => [r.run_id, r.name]));
  const smoothIn = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: params.smooth || "0.6", "aria-label": "smoothing" });
  main.append(h("div", { class: "toolbar" }, h("label", {}, "smoothing", smoothIn)));
  const grid = h("div", { class: "charts" });
  main.append(grid);
  const series = (f) => ids.map((id, i) => {
    const mine = rows.filter((r) => r.run_id === id);
    return { name: names.get(id) || id.slice(0, 8), color: color(i), xs: mine.map((r) => r.episode), ys: mine.map(f) };
  });
  const ret = new LineChart(grid, { title: "episode return" });
  const len = new LineChart(grid, { title: "episode length" });
  ret.setData(series((r) => r.ret));
  len.setData(series((r) => r.len));
  const sm = () => { const s = Number(smoothIn.value); ret.setOptions({ smoothing: s }); len.setOptions({ smoothing: s }); };
  smoothIn.addEventListener("input", () => { setParams({ smooth: smoothIn.value }); sm(); });
  sm();
  main.append(h("h2", {}, "Per run"), tableOf(await sql(`SELECT r.name, e.env, count(*) AS episodes, avg(e."return") AS mean_return, max(e."return") AS best_return, avg(e.length) AS mean_length, max(e.cumulative_steps) AS steps
    FROM rl.episodes e LEFT JOIN runs r ON r.run_id = e.run_id WHERE e.project = ${P} GROUP BY r.name, e.env ORDER BY r.name`)));
}

// USD per million tokens (input, output) by model-name prefix; editable, kept in this browser.
const DEFAULT_PRICES = "gpt-4o-mini 0.15 0.6\ngpt-4o 2.5 10\ngpt-4.1-mini 0.4 1.6\ngpt-4.1 2 8\ngpt-3.5-turbo 0.5 1.5\nclaude-3-5-sonnet 3 15\nclaude-3-5-haiku 0.8 4";

async function llmView(main, project, params) {
  crumbs(["projects", "#/"], [project, href(["p", project])], ["LLM calls", null]);
  const P = lit(project);
  main.append(h("h1", {}, "LLM calls"));
  const models = (await sqlObjects(`SELECT model, count(*) AS n FROM llm.calls WHERE project = ${P} GROUP BY model ORDER BY n DESC`));
  const modelSel = h("select", { "aria-label": "model" }, h("option", { value: "" }, "every model"), ...models.map((m) => h("option", { value: m.model ?? "" }, `${m.model ?? "(none)"} (${m.n})`)));
  modelSel.value = params.model || "";
  const search = h("input", { placeholder: "search prompts and responses", value: params.q || "", "aria-label": "search" });
  const errorsOnly = h("input", { type: "checkbox", checked: params.errors === "1", "aria-label": "errors only" });
  const prices = h("textarea", { rows: 4, "aria-label": "prices", style: "width: 360px" }, localStorage.getItem("runql.llm.prices") || DEFAULT_PRICES);
  const summary = h("div", { class: "muted" });
  const out = h("div");
  main.append(h("div", { class: "toolbar" }, search, modelSel, h("label", {}, errorsOnly, "errors only")),
    h("details", {}, h("summary", {}, "Prices (USD per million tokens: model-prefix input output)"), prices), summary, out);
  const costExpr = () => {
    const lines = prices.value.split("\n").map((l) => l.trim().split(/\s+/)).filter((p) => p.length === 3 && Number.isFinite(+p[1]) && Number.isFinite(+p[2]));
    // Longest prefix first, so that gpt-4o-mini is not priced as gpt-4o.
    lines.sort((a, b) => b[0].length - a[0].length);
    if (!lines.length) return "CAST(NULL AS DOUBLE)";
    return `CASE ${lines.map(([m, i, o]) => `WHEN model LIKE ${lit(m.replace(/[%_]/g, "\\$&") + "%")} THEN (coalesce(tokens_in, 0) * ${+i} + coalesce(tokens_out, 0) * ${+o}) / 1e6`).join(" ")} END`;
  };
  async function load() {
    const where = [`project = ${P}`];
    if (modelSel.value) where.push(`model = ${lit(modelSel.value)}`);
    if (errorsOnly.checked) where.push("error IS NOT NULL");
    if (search.value.trim()) {
      const s = lit(`%${search.value.trim().replace(/[%_\\]/g, "\\$&")}%`);
      where.push(`(prompt ILIKE ${s} OR response ILIKE ${s})`);
    }
    setParams({ model: modelSel.value, q: search.value, errors: errorsOnly.checked ? "1" : "" });
    localStorage.setItem("runql.llm.prices", prices.value);
    const W = where.join(" AND ");
    try {
      const [s] = await sqlObjects(`SELECT count(*) AS calls, sum(tokens_in) AS tin, sum(tokens_out) AS tout, avg(latency_ms) AS lat, sum(${costExpr()}) AS cost, count(error) AS errors FROM llm.calls WHERE ${W}`);
      summary.textContent = `${s.calls} calls · ${s.tin ?? 0} tokens in · ${s.tout ?? 0} tokens out · mean latency ${fmtNum(s.lat)} ms · est. cost $${fmtNum(s.cost ?? 0)} · ${s.errors} errors`;
      const t = await sql(`SELECT call_id, to_timestamp_micros(start_us) AS time, model, substr(prompt, 1, 200) AS prompt, substr(response, 1, 200) AS response,
          tokens_in, tokens_out, latency_ms, ${costExpr()} AS cost_usd, finish_reason, error
        FROM llm.calls WHERE ${W} ORDER BY start_us DESC NULLS LAST LIMIT 1000`);
      out.replaceChildren(tableOf({ columns: t.columns.slice(1), rows: t.rows.map((r) => r.slice(1)) }, {
        onRow: (k, tr) => openCall(t.rows[k][0], tr),
      }));
    } catch (e) { out.replaceChildren(h("div", { class: "error" }, e.message)); }
  }
  async function openCall(callId, tr) {
    if (tr.nextSibling && tr.nextSibling.classList.contains("detail")) { tr.nextSibling.remove(); return; }
    const msgs = await sqlObjects(`SELECT direction, position, role, content FROM llm.messages WHERE project = ${P} AND call_id = ${lit(callId)} ORDER BY direction DESC, position`);
    const [c] = await sqlObjects(`SELECT prompt, response, tool_calls, error FROM llm.calls WHERE project = ${P} AND call_id = ${lit(callId)} LIMIT 1`);
    const cell = h("td", { colspan: String(tr.children.length), class: "wrap" });
    if (msgs.length) for (const m of msgs) cell.append(h("div", {}, h("b", {}, `${m.direction} ${m.role}: `), m.content ?? ""));
    else if (c) cell.append(h("div", {}, h("b", {}, "prompt: "), c.prompt ?? ""), h("div", {}, h("b", {}, "response: "), c.response ?? ""));
    if (c && c.tool_calls) cell.append(h("div", {}, h("b", {}, "tool calls: "), c.tool_calls));
    if (c && c.error) cell.append(h("div", { class: "error" }, c.error));
    tr.after(h("tr", { class: "detail" }, cell));
  }
  for (const el of [modelSel, errorsOnly]) el.addEventListener("change", load);
  search.addEventListener("input", debounce(load, 300));
  prices.addEventListener("change", load);
  await load();
}
