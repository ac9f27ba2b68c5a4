// How values are shown: times, durations, sizes, numbers, a run's status badge.

import { h } from "./dom.js";

// A timestamp as local "YYYY-MM-DD hh:mm:ss" (empty for none; as is when not a date).
export function fmtTime(v) {
  if (!v) return "";
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// Seconds as "12.3s", "4m 5s" or "2h 3m".
export function fmtDur(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "";
  if (s < 60) return `${s.toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
}

// Bytes as "512 B", "1.5 KiB", …
export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}

// A number in at most five significant digits (exponent form when very large or small).
export function fmtNum(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  if (Number.isInteger(v)) return String(v);
  return String(+v.toPrecision(5));
}

// A run's status as a coloured badge.
export const badge = (status) => h("span", { class: `badge ${status}`, title: status === "crashed" ? "its writer stopped sending heartbeats" : null }, status);
