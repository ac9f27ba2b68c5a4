// Comparing runs (#/p/<project>/compare?runs=…): overlaid learning curves, params and metrics
// side by side, parallel coordinates.

import { h, crumbs, debounce } from "../lib/dom.js";
import { sqlObjects, lit } from "../lib/sql.js";
import { fmtNum } from "../lib/format.js";
import { href, setParams } from "../lib/route.js";
import { subscribe } from "../lib/events.js";
import { chartPanel } from "../lib/curves.js";
import { ParallelChart, color } from "../lib/chart.js";

export async function compareView({ main, project, params, onCleanup }) {
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
    onCleanup(() => { stop(); panel.stop(); });
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
