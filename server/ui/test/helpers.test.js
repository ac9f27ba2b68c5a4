// Unit tests of the dashboard's pure helpers: each exported function is one test (test/run.js
// runs them in the browser; shell/tests/browser/dashboard.py checks that every one passed).

import { h } from "../lib/dom.js";
import { lit, ident, objects, reviveFloats } from "../lib/sql.js";
import { fmtTime, fmtDur, fmtBytes, fmtNum, badge } from "../lib/format.js";
import { parseHash, href, matchRoute, mlflowLink } from "../lib/route.js";
import { splitEvents } from "../lib/events.js";
import { tableFrom, tableOf } from "../lib/table.js";
import { splitCsv } from "../lib/artifacts.js";
import { plugin, plugins } from "../lib/plugins.js";
import { defaultKeys, nestedOrder } from "../views/runs.js";
import "../views/optuna.js";
import "../views/rl.js";
import "../views/llm.js";
import { spanTree } from "../views/traces.js";

function eq(actual, expected, what = "") {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what ? `${what}: ` : ""}got ${a}, expected ${e}`);
}

export function fmtTimeIsLocalDateAndTime() {
  eq(fmtTime(new Date(2024, 2, 5, 7, 8, 9).toISOString()), "2024-03-05 07:08:09");
  eq(fmtTime(new Date(1999, 11, 31, 23, 59, 0).getTime()), "1999-12-31 23:59:00");
  eq(fmtTime(null), "");
  eq(fmtTime(""), "");
  eq(fmtTime("not a date"), "not a date");
}

export function fmtDurInSecondsMinutesHours() {
  eq(fmtDur(0), "0.0s");
  eq(fmtDur(5), "5.0s");
  eq(fmtDur(59.94), "59.9s");
  eq(fmtDur(65), "1m 5s");
  eq(fmtDur(3599), "59m 59s");
  eq(fmtDur(3720), "1h 2m");
  eq(fmtDur(null), "");
  eq(fmtDur(undefined), "");
  eq(fmtDur(NaN), "");
}

export function fmtBytesInBinaryUnits() {
  eq(fmtBytes(0), "0 B");
  eq(fmtBytes(512), "512 B");
  eq(fmtBytes(1536), "1.5 KiB");
  eq(fmtBytes(5 * 1024 * 1024), "5.0 MiB");
  eq(fmtBytes(2 ** 50 * 3), "3072.0 TiB");
  eq(fmtBytes(NaN), "");
  eq(fmtBytes(undefined), "");
}

export function fmtNumKeepsFiveDigits() {
  eq(fmtNum(null), "");
  eq(fmtNum(undefined), "");
  eq(fmtNum("text"), "text");
  eq(fmtNum(0), "0");
  eq(fmtNum(42), "42");
  eq(fmtNum(-3.14159265), "-3.1416");
  eq(fmtNum(0.001), "0.001");
  eq(fmtNum(0.0001234), "1.234e-4");
  eq(fmtNum(1234567), "1.235e+6");
  eq(fmtNum(Infinity), "Infinity");
  eq(fmtNum(NaN), "NaN");
}

export function badgeNamesTheStatus() {
  const b = badge("crashed");
  eq([b.tagName, b.className, b.textContent], ["SPAN", "badge crashed", "crashed"]);
  eq(b.title, "its writer stopped sending heartbeats");
  eq(badge("running").hasAttribute("title"), false);
}

export function hSetsAttributesAndChildren() {
  let clicked = 0;
  const el = h("a", { href: "#/x", class: "c", dataset: { runId: "r1" }, hidden: false, title: null, disabled: true, onclick: () => clicked++ },
    "a", ["b", null, "c"], h("b", {}, 1), false, undefined);
  eq(el.getAttribute("href"), "#/x");
  eq(el.className, "c");
  eq(el.dataset.runId, "r1");
  eq([el.hasAttribute("hidden"), el.hasAttribute("title"), el.getAttribute("disabled")], [false, false, ""]);
  eq(el.textContent, "abc1");
  el.click();
  eq(clicked, 1);
  eq(h("input", { type: "checkbox", checked: true }).checked, true);
}

export function litAndIdentQuote() {
  eq(lit("plain"), "'plain'");
  eq(lit("it's"), "'it''s'");
  eq(lit(3), "'3'");
  eq(ident("lr"), '"lr"');
  eq(ident("val/acc"), '"val/acc"');
  eq(ident('say "hi"'), '"say ""hi"""');
}

export function objectsKeyRowsByColumnName() {
  const t = { columns: [{ name: "run_id", type: "Utf8" }, { name: "n", type: "Int64" }], rows: [["a", 1], ["b", null]] };
  eq(objects(t), [{ run_id: "a", n: 1 }, { run_id: "b", n: null }]);
  eq(objects({ columns: [{ name: "x" }], rows: [] }), []);
}

export function reviveFloatsTurnsNonFiniteStringsIntoNumbers() {
  const t = reviveFloats({
    columns: [{ name: "v", type: "Float64" }, { name: "s", type: "Utf8" }],
    rows: [["NaN", "NaN"], ["Infinity", "x"], ["-Infinity", null], [1.5, "1.5"]],
  });
  eq(Number.isNaN(t.rows[0][0]), true);
  eq([t.rows[1][0], t.rows[2][0], t.rows[3][0]].map((v) => `${typeof v} ${v}`), ["number Infinity", "number -Infinity", "number 1.5"]);
  eq([t.rows[0][1], t.rows[3][1]], ["NaN", "1.5"]);
}

export function parseHashReadsSegmentsAndParams() {
  eq(parseHash(""), { segs: [], params: {} });
  eq(parseHash("#/"), { segs: [], params: {} });
  eq(parseHash("#/p/my%20proj/run/abc?tab=metrics&x=time"), { segs: ["p", "my proj", "run", "abc"], params: { tab: "metrics", x: "time" } });
  eq(parseHash("#/sql?q=SELECT%201"), { segs: ["sql"], params: { q: "SELECT 1" } });
}

export function hrefRoundTripsThroughParseHash() {
  const segs = ["p", "a/b c", "run", "ü"];
  const params = { filter: `params.lr >= 0.01 AND metrics."val/acc" > 0.9 & x=y`, sel: "a,b", q: "#?/" };
  eq(parseHash(href(segs, params)), { segs, params });
  eq(href(["p", "x"], { a: "", b: null, c: undefined, d: "0" }), "#/p/x?d=0");
  eq(href([]), "#/");
}

export function matchRouteTakesTheFirstMatchingPath() {
  const routes = [
    { path: "sql" },
    { path: "p/:project/run/:runId" },
    { path: "p/:project/:schema", when: ({ schema }) => schema === "optuna" },
    { path: "p/:project" },
    { path: "" },
  ];
  const m = (segs) => { const r = matchRoute(routes, segs); return [r.route.path, r.args]; };
  eq(m([]), ["", {}]);
  eq(m(["sql", "extra"]), ["sql", {}]);
  eq(m(["p"]), ["", {}]);
  eq(m(["p", "x"]), ["p/:project", { project: "x" }]);
  eq(m(["p", "x", "run"]), ["p/:project", { project: "x" }]);
  eq(m(["p", "x", "run", "r1"]), ["p/:project/run/:runId", { project: "x", runId: "r1" }]);
  eq(m(["p", "x", "optuna"]), ["p/:project/:schema", { project: "x", schema: "optuna" }]);
  eq(m(["p", "x", "other"]), ["p/:project", { project: "x" }]);
  eq(matchRoute([{ path: "sql" }], ["x"]), null);
}

export function splitEventsKeepsTheIncompleteRest() {
  const { events, rest } = splitEvents('event: run\ndata: {"a":\ndata: 1}\n\n: comment\n\nevent: lagged\ndata:\n\nevent: run\ndata: {"b"');
  eq(events, [{ event: "run", data: '{"a":1}' }, { event: "message", data: "" }, { event: "lagged", data: "" }]);
  eq(rest, 'event: run\ndata: {"b"');
  eq(splitEvents(""), { events: [], rest: "" });
}

export function tableFromReadsObjectsByColumn() {
  const t = tableFrom([{ name: "key" }, { name: "n", type: "Int64" }, { name: "twice", get: (o) => o.n * 2 }], [{ key: "a", n: 1, extra: 0 }, { key: "b", n: 2 }]);
  eq(t.rows, [["a", 1, 2], ["b", 2, 4]]);
  eq(t.columns.map((c) => c.name), ["key", "n", "twice"]);
}

export function tableOfFormatsByColumnType() {
  const when = new Date(2024, 0, 2, 3, 4, 5).toISOString();
  const clicked = [];
  const el = tableOf({ columns: [{ name: "v", type: "Float64" }, { name: "t", type: "Timestamp(Microsecond, None)" }, { name: "s", type: "Utf8" }], rows: [[3.14159265, when, null]] },
    { onRow: (k) => clicked.push(k) });
  eq([...el.querySelectorAll("th")].map((th) => [th.textContent, th.className]), [["v", "num"], ["t", ""], ["s", ""]]);
  eq([...el.querySelectorAll("td")].map((td) => td.textContent), ["3.1416", "2024-01-02 03:04:05", ""]);
  el.querySelector("tbody tr").click();
  eq(clicked, [0]);
  eq(tableOf({ columns: [{ name: "x" }], rows: [] }, { empty: "Nothing." }).textContent, "Nothing.");
}

export function splitCsvHandlesQuotes() {
  eq(splitCsv("a,b,c", ","), ["a", "b", "c"]);
  eq(splitCsv('"x, y",2,"say ""hi"""', ","), ["x, y", "2", 'say "hi"']);
  eq(splitCsv(",,", ","), ["", "", ""]);
  eq(splitCsv("a\tb,c", "\t"), ["a", "b,c"]);
  eq(splitCsv("", ","), [""]);
}

export function pluginViewsRegisterThemselves() {
  eq(plugins().map((p) => [p.schema, p.label, p.table]), [["optuna", "Optuna study", "trials"], ["rl", "RL episodes", "episodes"], ["llm", "LLM calls", "calls"], ["mlflow", "Traces", "traces"]]);
  eq(typeof plugin("rl").view, "function");
  eq(plugin("run"), null);
}

export function mlflowLinksOpenTheRunOrTheProject() {
  eq(mlflowLink(parseHash("#/experiments/vision/runs/0123abcd").segs), ["p", "vision", "run", "0123abcd"]);
  eq(mlflowLink(parseHash("#/experiments/0/runs/ff").segs), ["p", "Default", "run", "ff"]);
  eq(mlflowLink(parseHash("#/experiments/my%20exp").segs), ["p", "my exp"]);
  eq(mlflowLink(parseHash("#/experiments/~626572742d76312e35/runs/ff").segs), ["p", "bert-v1.5", "run", "ff"]);
  eq(mlflowLink(parseHash("#/experiments/~zz").segs), ["p", "~zz"]);
  eq(mlflowLink(parseHash("#/experiments").segs), null);
  eq(mlflowLink(parseHash("#/p/vision").segs), null);
}

export function defaultColumnsAreTheKeysMostRunsHave() {
  const keys = [
    { key: "a_parent_only", runs: 1 }, { key: "value", runs: 40 }, { key: "lr", runs: 40 },
    { key: "mlflow.note", runs: 41 }, { key: "zeta", runs: 2 },
  ];
  eq(defaultKeys(keys, 3).map((k) => k.key), ["lr", "value", "zeta"]);
  eq(defaultKeys([], 3), []);
}

export function spanTreePutsChildrenUnderTheirParentInTimeOrder() {
  const spans = [
    { span_id: "c2", parent_span_id: "r", start_ms: 30 },
    { span_id: "r", parent_span_id: null, start_ms: 0 },
    { span_id: "g", parent_span_id: "c1", start_ms: 15 },
    { span_id: "c1", parent_span_id: "r", start_ms: 10 },
    { span_id: "orphan", parent_span_id: "elsewhere", start_ms: 5 },
  ];
  eq(spanTree(spans).map(({ span, depth }) => `${span.span_id}:${depth}`), ["r:0", "c1:1", "g:2", "c2:1", "orphan:0"]);
}

export function nestedOrderSortsChildrenByTheirParent() {
  const o = nestedOrder(true);
  eq(o.startsWith("CASE WHEN p.__run_id IS NULL THEN b.__s ELSE p.__s END DESC NULLS LAST"), true, o);
  eq(o.endsWith("b.__run_id"), true, o);
}
