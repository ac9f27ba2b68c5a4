// The SQL page (#/sql?q=…): any read-only query, its rows, and a chart of its numeric columns.

import { h, crumbs } from "../lib/dom.js";
import { sql } from "../lib/sql.js";
import { setParams } from "../lib/route.js";
import { tableOf } from "../lib/table.js";
import { LineChart, color } from "../lib/chart.js";

export async function sqlView({ main, params }) {
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

// Chart any numeric column of a result against another. The one place that reads rows by
// position: the columns are the user's, picked from the result, and their names need not be
// unique (a join's r.run_id and p.run_id both come back as run_id).
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
