// The LLM plugin's view (#/p/<project>/llm) over llm.calls and llm.messages: the calls with
// search and filters, an estimated cost from an editable price list, a call's messages.

import { registerPlugin } from "../lib/plugins.js";
import { h, crumbs, debounce } from "../lib/dom.js";
import { sql, sqlObjects, objects, lit } from "../lib/sql.js";
import { fmtNum } from "../lib/format.js";
import { href, setParams } from "../lib/route.js";
import { tableOf, tableFrom } from "../lib/table.js";

// USD per million tokens (input, output) by model-name prefix; editable, kept in this browser.
const DEFAULT_PRICES = "gpt-4o-mini 0.15 0.6\ngpt-4o 2.5 10\ngpt-4.1-mini 0.4 1.6\ngpt-4.1 2 8\ngpt-3.5-turbo 0.5 1.5\nclaude-3-5-sonnet 3 15\nclaude-3-5-haiku 0.8 4";

registerPlugin("llm", { label: "LLM calls", table: "calls", view: llmView });

async function llmView({ main, project, params }) {
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
      const calls = objects(t);
      out.replaceChildren(tableOf(tableFrom(t.columns.filter((c) => c.name !== "call_id"), calls), {
        onRow: (k, tr) => openCall(calls[k].call_id, tr),
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
