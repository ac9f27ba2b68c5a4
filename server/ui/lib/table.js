// A plain table of a query result, formatted by column type.

import { h } from "./dom.js";
import { fmtNum, fmtTime } from "./format.js";

// A table {columns: [{name, type}], rows} of objects read by column: each column's value is
// get(object) when it has a `get`, else object[name].
export function tableFrom(columns, objects) {
  return { columns, rows: objects.map((o) => columns.map((c) => (c.get ? c.get(o) : o[c.name]))) };
}

// A table element of a result ({columns, rows}) as it came, in column order. onRow(k, tr)
// makes the rows clickable (k: the row's index in t.rows).
export function tableOf(t, { empty = "No rows.", scroll = false, limit = 2000, onRow = null } = {}) {
  if (!t.rows.length) return h("p", { class: "muted" }, empty);
  const num = t.columns.map((c) => /^(Float|Int|UInt|Decimal)/.test(c.type || ""));
  const time = t.columns.map((c) => /^Timestamp/.test(c.type || ""));
  const table = h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ...t.columns.map((c, i) => h("th", { class: num[i] ? "num" : null }, c.name)))),
    h("tbody", {}, ...t.rows.slice(0, limit).map((r, k) => {
      const tr = h("tr", {}, ...r.map((v, i) => h("td", { class: num[i] ? "num" : null, title: v === null ? "" : String(v) },
        typeof v === "number" ? fmtNum(v) : v === null ? "" : time[i] ? fmtTime(v) : String(v))));
      if (onRow) { tr.style.cursor = "pointer"; tr.addEventListener("click", () => onRow(k, tr)); }
      return tr;
    })));
  const wrap = h("div", { class: scroll || t.rows.length > 30 ? "scroll" : null }, table);
  if (t.rows.length > limit) wrap.append(h("p", { class: "muted" }, `first ${limit} of ${t.rows.length} rows`));
  return wrap;
}
