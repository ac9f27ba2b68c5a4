// A project's runs (#/p/<project>): a virtual table paged, sorted, filtered and grouped by SQL
// on the server, a column chooser, selection for Compare, links to the plugin views. Child runs
// (MLflow's nested runs, a sweep's trials) are folded under their parent until it is opened.

import { h, crumbs, debounce } from "../lib/dom.js";
import { sqlObjects, lit, ident } from "../lib/sql.js";
import { fmtTime, fmtDur, fmtNum, badge } from "../lib/format.js";
import { href, setParams } from "../lib/route.js";
import { subscribe } from "../lib/events.js";
import { plugins } from "../lib/plugins.js";

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
    SELECT 'params' AS kind, key, count(value_num) = count(*) AS numeric, count(DISTINCT run_id) AS runs FROM params WHERE project = ${lit(project)} GROUP BY key
    UNION ALL SELECT 'metrics' AS kind, key, true AS numeric, count(DISTINCT run_id) AS runs FROM metric_summary WHERE project = ${lit(project)} GROUP BY key
    UNION ALL SELECT 'tags' AS kind, key, false AS numeric, count(DISTINCT run_id) AS runs FROM tags WHERE project = ${lit(project)} GROUP BY key
    ORDER BY kind, key`);
  const keys = { params: [], metrics: [], tags: [] };
  for (const r of rows) keys[r.kind].push({ key: r.key, numeric: r.numeric, runs: Number(r.runs) });
  return keys;
}

// The keys shown before the user chooses: those most runs have (a sweep's trials' metric, not
// its parent's), then by name; tools' own keys (mlflow.*, runql.*, system/*) last.
export function defaultKeys(list, n) {
  const tool = (k) => /^(mlflow\.|runql\.|system\/)/.test(k.key);
  return [...list]
    .sort((a, b) => (tool(a) - tool(b)) || (b.runs - a.runs) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .slice(0, n);
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
// With `nest`, a run whose parent is in the project shows only under an open parent (`open`),
// and each run carries its number of children (`kids.__n`).
export function runsFrom(project, keys, filter, nest = null) {
  const pivot = (table, list, value) => {
    const cols = list.map((k) => `, max(CASE WHEN key = ${lit(k.key)} THEN ${value(k)} END) AS ${ident(k.key)}`).join("");
    return `(SELECT run_id AS __id${cols} FROM ${table} WHERE project = ${lit(project)} GROUP BY run_id)`;
  };
  return `FROM runs r
    LEFT JOIN ${pivot("params", keys.params, (k) => (k.numeric ? "value_num" : "value"))} params ON params.__id = r.run_id
    LEFT JOIN ${pivot("metric_summary", keys.metrics, () => "last_value")} metrics ON metrics.__id = r.run_id
    LEFT JOIN ${pivot("tags", keys.tags, () => "value")} tags ON tags.__id = r.run_id${nest ? `
    LEFT JOIN (SELECT parent_run_id AS __pid, count(*) AS __n FROM runs WHERE project = ${lit(project)} AND NOT deleted AND parent_run_id IS NOT NULL GROUP BY parent_run_id) kids ON kids.__pid = r.run_id` : ""}
    WHERE r.project = ${lit(project)} AND NOT r.deleted${filter.trim() ? ` AND (${filter})` : ""}${nest ? ` AND (${nestedVisible(project, nest.open)})` : ""}`;
}

// Which runs a nested table shows: those without a parent in the project, and the children of
// the open parents.
function nestedVisible(project, open) {
  const parents = `SELECT run_id FROM runs WHERE project = ${lit(project)} AND NOT deleted`;
  const opened = open.size ? ` OR r.parent_run_id IN (${[...open].map(lit).join(", ")})` : "";
  return `r.parent_run_id IS NULL OR r.parent_run_id NOT IN (${parents})${opened}`;
}

// The ORDER BY that puts each open parent's children right after it: rows are ordered by their
// parent's sort values (their own for a top-level run), then parent first, then by their own.
// `sorted` is the column the base query names `__s`; `desc` its direction.
export function nestedOrder(desc) {
  const dir = desc ? "DESC" : "ASC";
  const top = (col) => `CASE WHEN p.__run_id IS NULL THEN b.${col} ELSE p.${col} END`;
  return [`${top("__s")} ${dir} NULLS LAST`, `${top("__c")} DESC`, "COALESCE(p.__run_id, b.__run_id)",
    "CASE WHEN p.__run_id IS NULL THEN 0 ELSE 1 END", `b.__s ${dir} NULLS LAST`, "b.__c DESC", "b.__run_id"].join(", ");
}

// The registered plugins (lib/plugins.js) whose table holds rows of the project.
async function pluginsOf(project) {
  const known = plugins();
  if (!known.length) return [];
  const pairs = known.map((p) => `(${lit(p.schema)}, ${lit(p.table)})`).join(", ");
  const have = new Set((await sqlObjects(`SELECT table_schema AS s, table_name AS t FROM information_schema.tables
    WHERE (table_schema, table_name) IN (${pairs})`).catch(() => [])).map((r) => r.s));
  const out = [];
  for (const p of known) {
    if (!have.has(p.schema)) continue;
    const [{ n }] = await sqlObjects(`SELECT count(*) AS n FROM ${ident(p.schema)}.${ident(p.table)} WHERE project = ${lit(project)}`);
    if (n > 0) out.push(p);
  }
  return out;
}

export async function runsView({ main, project, params, onCleanup }) {
  crumbs(["projects", "#/"], [project, null]);
  document.title = `${project} · runql`;
  // A renamed experiment (MLflow's experiments/update) is shown by its name; its id stays.
  let left = false;
  onCleanup(() => { left = true; });
  sqlObjects(`SELECT name FROM projects WHERE project = ${lit(project)}`).then(([named]) => {
    if (left || !named || named.name === project) return;
    crumbs(["projects", "#/"], [named.name, null]);
    document.title = `${named.name} · runql`;
  }).catch(() => { /* the id stays shown */ });
  const keys = await projectKeys(project);
  const state = {
    filter: params.filter || "",
    sort: params.sort || "created",
    desc: params.desc !== undefined ? params.desc === "1" : true,
    group: params.group || "",
    sel: new Set((params.sel || "").split(",").filter(Boolean)),
    flat: params.flat === "1",
    open: new Set((params.open || "").split(",").filter(Boolean)),
    cols: params.cols ? params.cols.split(",").filter(Boolean)
      : ["name", "status", "created", "duration", ...defaultKeys(keys.params, 4).map((k) => `params.${k.key}`), ...defaultKeys(keys.metrics, 3).map((k) => `metrics.${k.key}`)],
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
  const [{ n: childRuns }] = await sqlObjects(`SELECT count(*) AS n FROM runs WHERE project = ${lit(project)} AND parent_run_id IS NOT NULL AND NOT deleted`);
  const nestBox = h("input", { type: "checkbox", checked: !state.flat, "aria-label": "nest child runs" });
  nestBox.addEventListener("change", () => { state.flat = !nestBox.checked; setParams({ flat: state.flat ? "1" : "" }); reload(); });
  const shown = await pluginsOf(project);
  const toolbar = h("div", { class: "toolbar" },
    filterBox, h("button", { onclick: () => apply() }, "Filter"), colsBtn,
    h("label", {}, "group by", groupSel),
    childRuns > 0 ? h("label", { title: "show child runs (nested runs, trials) under their parent" }, nestBox, "nest child runs") : null,
    compareBtn, count,
    ...shown.map((p) => h("a", { href: href(["p", project, p.schema]), class: "navlink" }, p.label)));
  const groups = h("div", { class: "groups" });
  const vt = h("div", { class: "vt", role: "table" });
  main.append(toolbar, err, groups, vt);

  const ROW = 28, PAGE = 100;
  // `stale`: the pages shown before a live reload, drawn until their replacements arrive (no
  // blank table while new rows load).
  let total = 0, pages = new Map(), stale = null, generation = 0;
  let cols = [];

  // Nesting applies to the plain table: a filter or a grouping lists the runs it finds, flat.
  const nesting = () => (childRuns > 0 && !state.flat && !state.group && !state.filter.trim() ? { open: state.open } : null);
  const from = () => runsFrom(project, keys, state.filter, nesting());

  const selectSql = () => {
    const parts = ["r.run_id AS __run_id", "r.status AS __status", "r.name AS __name", "r.parent_run_id AS __parent"];
    if (nesting()) parts.push("COALESCE(kids.__n, 0) AS __children");
    for (const c of cols) parts.push(`${c.expr} AS ${ident(c.id)}`);
    if (state.group) parts.push(`${columnOf(state.group, keys).expr} AS __group`);
    return parts.join(", ");
  };
  const sortCol = () => columnOf(state.sort, keys) || BASE_COLS.created;
  // One page of rows: with open parents, their children placed right after each of them.
  const pageSql = (limit, offset) => {
    if (nesting() && state.open.size) {
      return `WITH base AS (SELECT ${selectSql()}, ${sortCol().expr} AS __s, r.created AS __c ${from()})
        SELECT b.* FROM base b LEFT JOIN base p ON p.__run_id = b.__parent
        ORDER BY ${nestedOrder(state.desc)} LIMIT ${limit} OFFSET ${offset}`;
    }
    return `SELECT ${selectSql()} ${from()} ORDER BY ${orderSql()} LIMIT ${limit} OFFSET ${offset}`;
  };
  const orderSql = () => {
    const s = sortCol();
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
    const id = r.__run_id;
    const child = !!(nesting() && r.__parent && state.open.has(r.__parent));
    const el = h("div", { class: `row${state.sel.has(id) ? " sel" : ""}${child ? " child" : ""}`, role: "row", dataset: { runId: id, index: String(i) }, style: `top:${ROW + i * ROW}px; grid-template-columns:${template()}` });
    const box = h("input", { type: "checkbox", checked: state.sel.has(id), "aria-label": `select ${r.__name || id}` });
    box.addEventListener("change", () => {
      if (box.checked) state.sel.add(id); else state.sel.delete(id);
      el.classList.toggle("sel", box.checked);
      setParams({ sel: [...state.sel].join(",") });
      updateCompare();
    });
    el.append(h("div", { class: "cell" }, box));
    const groupVal = state.group ? r.__group : undefined;
    const prev = pageRow(i - 1);
    const gstart = state.group && (i === 0 || (prev && prev.__group !== groupVal));
    if (gstart) el.classList.add("gstart");
    for (const c of cols) {
      const v = r[c.id];
      let content;
      if (c.id === "name") {
        const kids = Number(r.__children || 0);
        const open = state.open.has(id);
        const toggle = kids > 0 && !child
          ? h("button", { class: "tree", "aria-expanded": open ? "true" : "false", "aria-label": `${open ? "hide" : "show"} ${kids} child runs of ${v || id}`, dataset: { role: "children" },
            onclick: () => {
              if (open) state.open.delete(id); else state.open.add(id);
              setParams({ open: [...state.open].join(",") });
              reload({ keepScroll: true });
            } }, `${open ? "▾" : "▸"} ${kids}`)
          : null;
        content = [gstart ? h("span", { class: "glabel" }, `${state.group} = ${groupVal ?? "∅"}`) : null,
          toggle, h("a", { href: href(["p", project, "run", id]) }, v || id.slice(0, 12))];
      } else if (c.id === "status") content = badge(v);
      else if (c.id === "parent_run_id" && v) content = h("a", { href: href(["p", project, "run", v]) }, cellText(c, v));
      else content = cellText(c, v);
      el.append(h("div", { class: `cell${c.num ? " num" : ""}`, title: v === null || v === undefined ? "" : String(v) }, content));
    }
    return el;
  }

  const pageRow = (i) => {
    if (i < 0) return null;
    const p = pages.get(Math.floor(i / PAGE));
    if (p && p !== "loading") return p[i % PAGE];
    const q = stale && stale.get(Math.floor(i / PAGE));
    return q && q !== "loading" ? q[i % PAGE] ?? null : null;
  };

  async function loadPage(p) {
    if (pages.has(p)) return;
    pages.set(p, "loading");
    const gen = generation;
    try {
      const rows = await sqlObjects(pageSql(PAGE, p * PAGE));
      if (gen !== generation) return;
      pages.set(p, rows);
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
    stale = keepScroll ? pages : null;
    pages = new Map();
    err.textContent = "";
    layout();
    if (!keepScroll) vt.scrollTop = 0;
    try {
      const [{ n }] = await sqlObjects(`SELECT count(*) AS n ${from()}`);
      total = n;
      let folded = 0;
      if (nesting()) {
        const [{ n: all }] = await sqlObjects(`SELECT count(*) AS n FROM runs WHERE project = ${lit(project)} AND NOT deleted`);
        folded = Number(all) - Number(n);
      }
      count.textContent = `${n} run${n === 1 ? "" : "s"}${folded > 0 ? ` · ${folded} child run${folded === 1 ? "" : "s"} folded` : ""}`;
      groups.replaceChildren();
      if (state.group) {
        const counts = await sqlObjects(`SELECT ${columnOf(state.group, keys).expr} AS g, count(*) AS n ${from()} GROUP BY 1 ORDER BY 1 NULLS LAST`);
        for (const { g, n } of counts) groups.append(h("span", {}, `${state.group} = ${g ?? "∅"}: ${n}`));
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
  onCleanup(() => { stop(); document.querySelector(".colchooser")?.remove(); });
}
