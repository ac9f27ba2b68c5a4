// A run's artifacts: their URL (/api/artifacts/<run>/<path>), their text, and a preview by
// kind (image, CSV/TSV table, JSON, text).

import { h } from "./dom.js";
import { authHeaders } from "./sql.js";
import { fmtBytes } from "./format.js";
import { tableOf } from "./table.js";

export function artifactUrl(runId, path, download = false) {
  return `/api/artifacts/${runId}/${path.split("/").map(encodeURIComponent).join("/")}${download ? "?download=1" : ""}`;
}

export async function artifactText(runId, path, limit = 2 << 20) {
  const r = await fetch(artifactUrl(runId, path), { headers: authHeaders() });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  const b = await r.blob();
  return (await b.slice(0, limit).text()) + (b.size > limit ? `\n… (${fmtBytes(b.size)} in all)` : "");
}

export async function preview(view, runId, a) {
  const ext = a.path.toLowerCase().split(".").pop();
  const media = a.media_type || "";
  try {
    if (media.startsWith("image/") && ext !== "svg") {
      const r = await fetch(artifactUrl(runId, a.path), { headers: authHeaders() });
      const url = URL.createObjectURL(await r.blob());
      view.append(h("img", { src: url, alt: a.path }));
    } else if (ext === "csv" || ext === "tsv") {
      const text = await artifactText(runId, a.path, 1 << 20);
      const sep = ext === "tsv" ? "\t" : ",";
      const lines = text.split(/\r?\n/).filter(Boolean).slice(0, 501);
      const cells = lines.map((l) => splitCsv(l, sep));
      view.append(tableOf({ columns: cells[0].map((name) => ({ name })), rows: cells.slice(1) }, { scroll: true }));
    } else if (ext === "json" || media === "application/json") {
      const text = await artifactText(runId, a.path);
      let pretty = text;
      try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch { /* show as is */ }
      view.append(h("pre", {}, pretty));
    } else if (media.startsWith("text/") || ["txt", "log", "md", "py", "rs", "yaml", "yml", "toml", "patch", "diff", "lock", "cfg", "ini", "sh", "jsonl"].includes(ext) || a.size < 64 * 1024) {
      const text = await artifactText(runId, a.path);
      // Binary content is not shown as text.
      if (/[\x00-\x08\x0e-\x1f]/.test(text.slice(0, 4096))) view.append(h("p", { class: "muted" }, "Binary file: download it to open."));
      else view.append(h("pre", {}, text));
    } else {
      view.append(h("p", { class: "muted" }, "No preview for this type: download it to open."));
    }
  } catch (e) { view.append(h("p", { class: "error" }, e.message)); }
}

export function splitCsv(line, sep) {
  const out = [];
  let cur = "", q = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) {
      if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (c === '"') q = false; else cur += c;
    } else if (c === '"') q = true;
    else if (c === sep) { out.push(cur); cur = ""; } else cur += c;
  }
  out.push(cur);
  return out;
}
