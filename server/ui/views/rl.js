// The RL plugin's view (#/p/<project>/rl) over rl.episodes: return and length curves per run
// (episodes averaged in buckets), a summary per run.

import { registerPlugin } from "../lib/plugins.js";
import { h, crumbs } from "../lib/dom.js";
import { sql, sqlObjects, lit } from "../lib/sql.js";
import { href, setParams } from "../lib/route.js";
import { tableOf } from "../lib/table.js";
import { LineChart, color } from "../lib/chart.js";

registerPlugin("rl", { label: "RL episodes", table: "episodes", view: rlView });

async function rlView({ main, project, params }) {
  crumbs(["projects", "#/"], [project, href(["p", project])], ["RL episodes", null]);
  const P = lit(project);
  main.append(h("h1", {}, "RL episodes"));
  // At most ~1000 points per run: episodes averaged in buckets.
  const rows = await sqlObjects(`WITH m AS (SELECT run_id, max(episode) / 1000 + 1 AS b FROM rl.episodes WHERE project = ${P} GROUP BY run_id)
    SELECT e.run_id, min(e.episode) AS episode, avg(e."return") AS ret, avg(CAST(e.length AS DOUBLE)) AS len, count(*) AS n
    FROM rl.episodes e JOIN m ON e.run_id = m.run_id WHERE e.project = ${P}
    GROUP BY e.run_id, e.episode / m.b ORDER BY e.run_id, episode`, { maxRows: 500000 });
  const ids = [...new Set(rows.map((r) => r.run_id))];
  const names = new Map((await sqlObjects(`SELECT run_id, name FROM runs WHERE project = ${P} AND run_id IN (${ids.map(lit).join(", ") || "''"})`)).map((r) => [r.run_id, r.name]));
  const smoothIn = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: params.smooth || "0.6", "aria-label": "smoothing" });
  main.append(h("div", { class: "toolbar" }, h("label", {}, "smoothing", smoothIn)));
  const grid = h("div", { class: "charts" });
  main.append(grid);
  const series = (f) => ids.map((id, i) => {
    const mine = rows.filter((r) => r.run_id === id);
    return { name: names.get(id) || id.slice(0, 8), color: color(i), xs: mine.map((r) => r.episode), ys: mine.map(f) };
  });
  const ret = new LineChart(grid, { title: "episode return" });
  const len = new LineChart(grid, { title: "episode length" });
  ret.setData(series((r) => r.ret));
  len.setData(series((r) => r.len));
  const sm = () => { const s = Number(smoothIn.value); ret.setOptions({ smoothing: s }); len.setOptions({ smoothing: s }); };
  smoothIn.addEventListener("input", () => { setParams({ smooth: smoothIn.value }); sm(); });
  sm();
  main.append(h("h2", {}, "Per run"), tableOf(await sql(`SELECT r.name, e.env, count(*) AS episodes, avg(e."return") AS mean_return, max(e."return") AS best_return, avg(e.length) AS mean_length, max(e.cumulative_steps) AS steps
    FROM rl.episodes e LEFT JOIN runs r ON r.run_id = e.run_id WHERE e.project = ${P} GROUP BY r.name, e.env ORDER BY r.name`)));
}
