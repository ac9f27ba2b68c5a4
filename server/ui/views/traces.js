// MLflow traces (#/p/<project>/mlflow?run=…&trace=…&span=…) over mlflow.traces and
// mlflow.spans: the project's traces (or one run's), newest first, and a trace's span tree
// with each span's timing on the trace's timeline, then a span's inputs, outputs and
// attributes.

import { registerPlugin } from "../lib/plugins.js";
import { h, crumbs } from "../lib/dom.js";
import { sqlObjects, lit } from "../lib/sql.js";
import { fmtTime, fmtNum } from "../lib/format.js";
import { href, setParams } from "../lib/route.js";
import { tableOf, tableFrom } from "../lib/table.js";

registerPlugin("mlflow", { label: "Traces", table: "traces", view: tracesView });

// A span tree in display order: each span after its parent, siblings by start time, with its
// depth. Spans whose parent is not in the trace are roots.
export function spanTree(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const s of spans) {
    const p = s.parent_span_id && ids.has(s.parent_span_id) ? s.parent_span_id : null;
    if (!children.has(p)) children.set(p, []);
    children.get(p).push(s);
  }
  for (const list of children.values()) list.sort((a, b) => (a.start_ms ?? 0) - (b.start_ms ?? 0));
  const out = [];
  const walk = (parent, depth) => {
    for (const s of children.get(parent) || []) {
      out.push({ span: s, depth });
      walk(s.span_id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

// JSON text shown indented (as it came when it is not JSON).
const pretty = (text) => {
  if (text === null || text === undefined) return "";
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return String(text); }
};

async function tracesView({ main, project, params }) {
  crumbs(["projects", "#/"], [project, href(["p", project])], ["Traces", null]);
  document.title = `traces · ${project} · runql`;
  const P = lit(project);
  const run = params.run || "";
  main.append(h("h1", {}, "Traces", run ? h("span", { class: "muted" }, " of run ", h("a", { href: href(["p", project, "run", run]) }, run.slice(0, 12))) : null));
  const traces = await sqlObjects(`SELECT trace_id, run_id, request_time, execution_ms, state, request_preview, response_preview
    FROM mlflow.traces WHERE project = ${P}${run ? ` AND run_id = ${lit(run)}` : ""}
    ORDER BY request_time DESC NULLS LAST, trace_id LIMIT 1000`);
  const list = h("div");
  const detail = h("div", { dataset: { role: "trace" } });
  main.append(list, detail);
  const table = tableOf(tableFrom([
    { name: "time", get: (t) => fmtTime(t.request_time) },
    { name: "trace", get: (t) => t.trace_id },
    { name: "run", get: (t) => (t.run_id || "").slice(0, 12) },
    { name: "state", get: (t) => t.state },
    { name: "ms", get: (t) => t.execution_ms },
    { name: "request", get: (t) => (t.request_preview || "").slice(0, 120) },
    { name: "response", get: (t) => (t.response_preview || "").slice(0, 120) },
  ], traces), { empty: "No traces.", scroll: true, onRow: (k) => show(traces[k].trace_id) });
  table.dataset.role = "traces";
  list.append(table);

  async function show(traceId, spanId = null) {
    setParams({ trace: traceId, span: spanId || "" });
    const spans = await sqlObjects(`SELECT span_id, parent_span_id, name, span_type, status, status_message, model,
        total_tokens, duration_ms, date_part('epoch', start_time) * 1000 AS start_ms, inputs, outputs, attributes
      FROM mlflow.spans WHERE project = ${P} AND trace_id = ${lit(traceId)} ORDER BY start_time`);
    const t0 = Math.min(...spans.map((s) => s.start_ms ?? Infinity));
    const t1 = Math.max(...spans.map((s) => (s.start_ms ?? 0) + (s.duration_ms ?? 0)));
    const total = Math.max(t1 - t0, 1e-9);
    const info = h("div", { class: "spaninfo" });
    const rows = h("div", { class: "spans" });
    const pick = (s, el) => {
      for (const r of rows.querySelectorAll(".span")) r.classList.toggle("on", r === el);
      setParams({ trace: traceId, span: s.span_id });
      info.replaceChildren(h("h3", {}, s.name || s.span_id, " ", h("span", { class: "muted" }, s.span_type || "")),
        h("p", { class: "muted" }, `${fmtNum(s.duration_ms)} ms · ${s.status || ""}${s.status_message ? `: ${s.status_message}` : ""}${s.model ? ` · ${s.model}` : ""}${s.total_tokens ? ` · ${s.total_tokens} tokens` : ""}`),
        h("h4", {}, "Inputs"), h("pre", { dataset: { role: "inputs" } }, pretty(s.inputs)),
        h("h4", {}, "Outputs"), h("pre", { dataset: { role: "outputs" } }, pretty(s.outputs)),
        h("details", {}, h("summary", {}, "Attributes"), h("pre", {}, pretty(s.attributes))));
    };
    let chosen = null;
    for (const { span: s, depth } of spanTree(spans)) {
      const left = (((s.start_ms ?? t0) - t0) / total) * 100;
      const width = Math.max(((s.duration_ms ?? 0) / total) * 100, 0.5);
      const el = h("div", { class: "span", role: "button", tabindex: "0", dataset: { role: "span", spanId: s.span_id, depth: String(depth) } },
        h("span", { class: "sname", style: `padding-left:${depth * 16}px` }, s.name || s.span_id, s.span_type ? h("span", { class: "glabel" }, s.span_type) : null),
        h("span", { class: "num" }, `${fmtNum(s.duration_ms)} ms`),
        h("span", { class: "timeline" }, h("span", { class: `bar${s.status === "ERROR" ? " error" : ""}`, style: `left:${left}%;width:${width}%` })));
      el.addEventListener("click", () => pick(s, el));
      rows.append(el);
      if (s.span_id === spanId || (!chosen && !spanId)) chosen = [s, el];
    }
    detail.replaceChildren(h("h2", {}, `Trace ${traceId}`), spans.length ? h("div", { class: "tracesplit" }, rows, info) : h("p", { class: "muted" }, "No spans (yet)."));
    if (chosen) pick(...chosen);
  }
  if (params.trace) await show(params.trace, params.span || null);
  else if (traces.length) await show(traces[0].trace_id);
}
