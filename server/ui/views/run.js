// One run (#/p/<project>/run/<run_id>?tab=…): overview, metric and system charts, artifacts
// with previews, logs, inputs; live while the run is.

import { h, crumbs, debounce } from "../lib/dom.js";
import { sql, sqlObjects, lit, mlflowApi } from "../lib/sql.js";
import { fmtTime, fmtDur, fmtBytes, badge } from "../lib/format.js";
import { href, setParams } from "../lib/route.js";
import { subscribe } from "../lib/events.js";
import { tableOf, tableFrom } from "../lib/table.js";
import { chartPanel } from "../lib/curves.js";
import { artifactUrl, artifactText, preview } from "../lib/artifacts.js";

export async function runView({ main, project, runId, params, onCleanup }) {
  crumbs(["projects", "#/"], [project, href(["p", project])], [runId.slice(0, 12), null]);
  const P = lit(project), R = lit(runId);
  const [run] = await sqlObjects(`SELECT *, date_part('epoch', COALESCE(ended, heartbeat, started)) - date_part('epoch', started) AS duration_s FROM runs WHERE project = ${P} AND run_id = ${R}`);
  if (!run) { main.append(h("p", { class: "error" }, `No run ${runId} in project ${project}.`)); return; }
  document.title = `${run.name || runId} · ${project} · runql`;
  const tab = params.tab || "overview";
  const tabs = [["overview", "Overview"], ["metrics", "Metrics"], ["system", "System"], ["artifacts", "Artifacts"], ["logs", "Logs"], ["inputs", "Inputs"]];
  const statusEl = badge(run.status);
  statusEl.dataset.role = "status";
  let panel = null;
  const stopLive = subscribe(project, debounce((ev) => {
    if (ev && ev.run_id !== runId) return;
    if (ev && ev.status) { statusEl.textContent = ev.status; statusEl.className = `badge ${ev.status}`; }
    if (panel) panel.refresh();
  }, 500));
  onCleanup(() => { stopLive(); if (panel) panel.stop(); });
  main.append(h("h1", {}, run.name || runId, " ", statusEl),
    h("nav", { class: "tabs" }, ...tabs.map(([id, label]) => h("a", { href: href(["p", project, "run", runId], { tab: id }), class: id === tab ? "on" : null, dataset: { tab: id } }, label))));
  const body = h("div");
  main.append(body);

  if (tab === "overview") {
    const dl = h("dl", { class: "kv" });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(h("dt", {}, k), h("dd", {}, v)); };
    add("run id", h("code", {}, run.run_id));
    add("status", badge(run.status));
    add("parent", run.parent_run_id ? h("a", { href: href(["p", project, "run", run.parent_run_id]) }, run.parent_run_id) : null);
    add("group", run.run_group);
    add("user", run.username);
    add("host", run.hostname);
    add("command", run.command ? h("code", {}, run.command) : null);
    add("git", run.git_commit ? `${run.git_commit}${run.git_branch ? ` (${run.git_branch})` : ""}${run.git_dirty ? " + uncommitted changes" : ""}` : null);
    add("created", fmtTime(run.created));
    add("started", fmtTime(run.started));
    add("ended", fmtTime(run.ended));
    add("last heartbeat", fmtTime(run.heartbeat));
    add("duration", fmtDur(run.duration_s));
    body.append(dl);
    const [paramsRows, tagRows, arts] = await Promise.all([
      sql(`SELECT key, value FROM params WHERE project = ${P} AND run_id = ${R} ORDER BY key`),
      sqlObjects(`SELECT key, value FROM tags WHERE project = ${P} AND run_id = ${R} ORDER BY key`),
      sqlObjects(`SELECT path, size FROM artifacts WHERE project = ${P} AND run_id = ${R} AND (path = 'git/diff.patch' OR path LIKE 'env/%') ORDER BY path`),
    ]);
    const note = tagRows.find((t) => t.key === "mlflow.note.content");
    if (note) body.append(h("h2", {}, "Notes"), h("pre", { class: "note" }, note.value));
    body.append(h("h2", {}, "Params"), tableOf(paramsRows, { empty: "No params." }));
    const isSystem = (t) => t.key.startsWith("mlflow.") || t.key.startsWith("runql.");
    const userTags = tagRows.filter((t) => !isSystem(t));
    const systemTags = tagRows.filter(isSystem);
    const tagTable = (rows) => tableOf(tableFrom([{ name: "key" }, { name: "value" }], rows), { empty: "No tags." });
    body.append(h("h2", {}, "Tags"), userTags.length || !systemTags.length ? tagTable(userTags) : h("p", { class: "muted" }, "No tags of its own."));
    // What the tools set (mlflow.source.name, mlflow.runName, mlflow.log-model.history…), folded.
    if (systemTags.length) {
      body.append(h("details", { dataset: { role: "system-tags" } },
        h("summary", {}, `${systemTags.length} tag${systemTags.length === 1 ? "" : "s"} set by tools (mlflow.*, runql.*)`),
        tagTable(systemTags)));
    }
    // The traces made in the run (MLflow 3 tracing), when the store has any.
    const [{ t: hasTraces }] = await sqlObjects("SELECT count(*) AS t FROM information_schema.tables WHERE table_schema = 'mlflow' AND table_name = 'traces'");
    const traced = Number(hasTraces) > 0
      ? await sqlObjects(`SELECT count(*) AS n FROM mlflow.traces WHERE project = ${P} AND run_id = ${R}`).catch(() => [{ n: 0 }])
      : [{ n: 0 }];
    if (Number(traced[0].n) > 0) {
      const n = Number(traced[0].n);
      body.append(h("p", {}, h("a", { href: href(["p", project, "mlflow"], { run: runId }), dataset: { role: "traces-link" } }, `${n} trace${n === 1 ? "" : "s"}`), " made in this run"));
    }
    const models = await modelsOf(project, runId);
    if (models.length) {
      const metricsText = (m) => (m.data?.metrics || []).map((x) => `${x.key}${x.dataset_name ? ` (${x.dataset_name})` : ""} = ${x.value}`).join(", ");
      const table = tableOf(tableFrom([
        { name: "name", get: (m) => m.info.name },
        { name: "model id", get: (m) => m.info.model_id },
        { name: "type", get: (m) => m.info.model_type || "" },
        { name: "status", get: (m) => (m.info.status || "").replace("LOGGED_MODEL_", "").toLowerCase() },
        { name: "metrics", get: metricsText },
        { name: "params", get: (m) => (m.data?.params || []).map((p) => `${p.key}=${p.value}`).join(", ") },
      ], models), { empty: "No models." });
      table.dataset.role = "models";
      body.append(h("h2", {}, "Models"), table);
    }
    for (const a of arts) {
      const pre = h("pre", {}, "…");
      body.append(h("h2", {}, a.path === "git/diff.patch" ? "Uncommitted changes (git diff)" : `Environment: ${a.path.slice(4)}`), pre);
      artifactText(runId, a.path).then((t) => { pre.textContent = t; }, (e) => { pre.textContent = e.message; });
    }
  } else if (tab === "metrics" || tab === "system") {
    const system = tab === "system";
    const keysFn = async () => (await sqlObjects(system
      ? `SELECT DISTINCT key FROM system_metrics WHERE project = ${P} AND run_id = ${R} ORDER BY key`
      : `SELECT key FROM metric_summary WHERE project = ${P} AND run_id = ${R} ORDER BY key`)).map((r) => r.key);
    panel = chartPanel(body, { project, runs: [run], keys: await keysFn(), keysFn, params, system });
  } else if (tab === "artifacts") {
    const arts = await sqlObjects(`SELECT path, size, media_type, digest FROM artifacts WHERE project = ${P} AND run_id = ${R} ORDER BY path`);
    const latest = new Map(arts.map((a) => [a.path, a]));
    const list = h("div", { class: "list card" });
    const view = h("div", { class: "preview" });
    body.append(h("div", { class: "split" }, list, view));
    if (!latest.size) list.append(h("p", { class: "muted" }, "No artifacts."));
    const show = (a) => {
      setParams({ art: a.path });
      for (const el of list.querySelectorAll("a")) el.classList.toggle("on", el.dataset.path === a.path);
      view.replaceChildren(h("h2", {}, a.path, " ", h("a", { href: artifactUrl(runId, a.path, true), download: a.path.split("/").pop() }, "download")),
        h("p", { class: "muted" }, `${fmtBytes(a.size)} · ${a.media_type || "unknown type"} · sha256 ${a.digest.slice(0, 16)}…`));
      preview(view, runId, a);
    };
    for (const a of latest.values()) {
      list.append(h("a", { href: "#", dataset: { path: a.path }, onclick: (e) => { e.preventDefault(); show(a); } }, a.path, h("span", { class: "muted" }, ` ${fmtBytes(a.size)}`)));
    }
    const first = latest.get(params.art) || null;
    if (first) show(first);
  } else if (tab === "logs") {
    const t = await sqlObjects(`SELECT ts, stream, line FROM logs WHERE project = ${P} AND run_id = ${R} ORDER BY ts DESC LIMIT 5000`);
    t.reverse();
    const grep = h("input", { placeholder: "filter lines", value: params.grep || "", "aria-label": "filter lines" });
    const pre = h("pre", { class: "logs" });
    const draw = () => {
      const g = grep.value.toLowerCase();
      pre.replaceChildren(...t.filter((l) => !g || l.line.toLowerCase().includes(g)).map((l) => h("div", { class: l.stream }, l.line)));
    };
    grep.addEventListener("input", debounce(() => { setParams({ grep: grep.value }); draw(); }, 200));
    body.append(h("div", { class: "toolbar" }, grep, h("span", { class: "muted" }, t.length === 5000 ? "last 5000 lines" : `${t.length} lines`)), pre);
    draw();
  } else if (tab === "inputs") {
    body.append(tableOf(await sql(`SELECT name, uri, digest, role, ts FROM inputs WHERE project = ${P} AND run_id = ${R} ORDER BY ts`), { empty: "No inputs logged." }));
  }
}

// The logged models (MLflow 3) a run made or logged as its outputs, through the MLflow API of
// the same server: none when it answers otherwise (a store without models, an older server).
async function modelsOf(project, runId) {
  const expId = project === "Default" ? "0" : project;
  try {
    const found = await mlflowApi("logged-models/search", { experiment_ids: [expId], filter: `source_run_id = '${runId}'`, max_results: 1000 });
    const models = (found && found.models) || [];
    const seen = new Set(models.map((m) => m.info.model_id));
    const outputs = await sqlObjects(`SELECT uri FROM inputs WHERE project = ${lit(project)} AND run_id = ${lit(runId)} AND role = 'output' AND uri LIKE 'models:/%'`);
    for (const { uri } of outputs) {
      const id = uri.slice("models:/".length);
      if (seen.has(id)) continue;
      seen.add(id);
      const one = await mlflowApi(`logged-models/${encodeURIComponent(id)}`);
      if (one && one.model) models.push(one.model);
    }
    return models;
  } catch {
    return [];
  }
}
