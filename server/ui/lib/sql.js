// The dashboard's one way to ask the server: SQL through POST /api/sql, answered as
// application/vnd.runql.table+json. Also the token (Authorization header, asked for on a 401)
// and the quoting of literals and identifiers.

import { h, banner } from "./dom.js";

// A SQL string literal, and a quoted identifier.
export const lit = (s) => `'${String(s).replace(/'/g, "''")}'`;
export const ident = (s) => `"${String(s).replace(/"/g, '""')}"`;

// The bearer token this browser keeps, as request headers.
export function authHeaders() {
  const t = localStorage.getItem("runql.token");
  return t ? { Authorization: `Bearer ${t}` } : {};
}

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function askToken() {
  const input = h("input", { type: "password", placeholder: "token", style: "margin: 0 8px" });
  banner(h("span", {}, "This server needs a token to read. ", input,
    h("button", { onclick: () => { localStorage.setItem("runql.token", input.value.trim()); location.reload(); } }, "Use token")));
}

// Non-finite numbers travel as strings ("NaN", "Infinity"): make those of float columns
// numbers again. Changes the table in place and returns it.
export function reviveFloats(t) {
  const floaty = t.columns.map((c) => (c.type || "").startsWith("Float"));
  for (const row of t.rows) {
    for (let i = 0; i < row.length; i++) {
      if (floaty[i] && typeof row[i] === "string") row[i] = Number(row[i]);
    }
  }
  return t;
}

// Runs one SQL query; resolves to the table {columns: [{name, type}], rows, truncated}, rows
// as arrays in column order. Views read rows by column name (`objects`, `sqlObjects`); the
// arrays are for showing a whole result as it came (`tableOf`).
export async function sql(query, { maxRows } = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/vnd.runql.table+json", ...authHeaders() };
  if (maxRows) headers["X-Runql-Max-Rows"] = String(maxRows);
  const r = await fetch("/api/sql", { method: "POST", headers, body: JSON.stringify({ sql: query }) });
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).message || msg; } catch { /* not JSON */ }
    if (r.status === 401) askToken();
    throw new ApiError(msg, r.status);
  }
  return reviveFloats(await r.json());
}

// A table's rows as objects keyed by column name.
export function objects(t) {
  const names = t.columns.map((c) => c.name);
  return t.rows.map((r) => Object.fromEntries(names.map((n, i) => [n, r[i]])));
}

// Runs one SQL query; resolves to its rows as objects keyed by column name.
export async function sqlObjects(query, opts) {
  return objects(await sql(query, opts));
}

// A call of this server's MLflow API (`/api/2.0/mlflow/…`, the same token): its JSON answer, or
// null when it answers otherwise (an older server, a store without what was asked for).
export async function mlflowApi(path, body) {
  const res = await fetch(`/api/2.0/mlflow/${path}`, body === undefined ? { headers: authHeaders() }
    : { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify(body) });
  return res.ok ? res.json() : null;
}
