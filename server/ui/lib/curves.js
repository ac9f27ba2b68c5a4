// Metric curves of some runs, shared by the run page and Compare: the downsampled series
// (curves(n), or system_metrics) and a panel of charts with shared controls.

import { h, debounce } from "./dom.js";
import { sqlObjects, lit } from "./sql.js";
import { setParams } from "./route.js";
import { LineChart, color } from "./chart.js";

// Downsampled series of some runs' metrics: curves(n) keeps first, last, min and max of each
// step bucket; a step range reads that range at full resolution.
export async function fetchCurves(project, runIds, key, { range = null, points = 1000, system = false } = {}) {
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
export function chartPanel(parent, { project, runs, keys, keysFn = null, params, system = false }) {
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
