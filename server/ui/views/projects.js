// The projects page (#/): one card per project, redrawn when a run starts, ends or crashes.

import { h, crumbs, debounce } from "../lib/dom.js";
import { sqlObjects } from "../lib/sql.js";
import { fmtTime, badge } from "../lib/format.js";
import { parseHash, href } from "../lib/route.js";
import { subscribe } from "../lib/events.js";

export async function projectsView({ main, onCleanup, reload }) {
  crumbs(["projects", "#/"]);
  main.append(h("h1", {}, "Projects"));
  const rows = await sqlObjects(`SELECT project, count(*) AS runs,
      sum(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running,
      sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
      sum(CASE WHEN status = 'crashed' THEN 1 ELSE 0 END) AS crashed,
      max(created) AS last_run
    FROM runs WHERE NOT deleted GROUP BY project ORDER BY last_run DESC`);
  if (!rows.length) {
    main.append(h("p", { class: "muted" }, "No runs yet. Log one (docs/guide.md), or fill a demo store with `runql demo`."));
    return;
  }
  // An experiment renamed through MLflow keeps its project (its id): shown by its new name.
  const names = new Map((await sqlObjects("SELECT project, name FROM projects WHERE name <> project"))
    .map((p) => [p.project, p.name]));
  const cards = h("div", { class: "cards" });
  for (const r of rows) {
    const name = names.get(r.project);
    cards.append(h("a", { class: "card", href: href(["p", r.project]), dataset: { project: r.project } },
      h("h3", {}, name || r.project, name ? h("span", { class: "muted", title: "the project (MLflow experiment id) its runs are stored in" }, ` (project ${r.project})`) : null),
      h("div", {}, `${r.runs} runs`, r.running ? h("span", {}, " · ", badge("running"), ` ${r.running}`) : null,
        // A run that failed (its script said so: MLflow's FAILED) is not one that crashed
        // (its writer went silent).
        r.failed ? h("span", {}, " · ", badge("failed"), ` ${r.failed}`) : null,
        r.crashed ? h("span", {}, " · ", badge("crashed"), ` ${r.crashed}`) : null),
      h("div", { class: "muted" }, `last run ${fmtTime(r.last_run)}`)));
  }
  main.append(cards);
  // Redrawn when a run starts, ends or crashes (not on every flush of a live run).
  const seen = new Map((await sqlObjects(`SELECT project, run_id FROM runs WHERE status = 'running'`))
    .map((r) => [`${r.project}/${r.run_id}`, "running"]));
  const redraw = debounce(() => { if (parseHash().segs.length === 0) reload(); }, 1000);
  onCleanup(subscribe(null, (ev) => {
    if (!ev) return redraw();
    const key = `${ev.project}/${ev.run_id}`;
    if (seen.get(key) !== ev.status) redraw();
    seen.set(key, ev.status);
  }));
}
