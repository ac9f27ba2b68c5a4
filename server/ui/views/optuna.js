// The Optuna plugin's view (#/p/<project>/optuna?study=…) over the optuna.* tables:
// optimization history, parameters → objective, the trials.

import { registerPlugin } from "../lib/plugins.js";
import { h, crumbs } from "../lib/dom.js";
import { sqlObjects, lit } from "../lib/sql.js";
import { fmtNum } from "../lib/format.js";
import { href } from "../lib/route.js";
import { tableOf, tableFrom } from "../lib/table.js";
import { LineChart, ParallelChart, color } from "../lib/chart.js";

registerPlugin("optuna", { label: "Optuna study", table: "trials", view: optunaView });

async function optunaView({ main, project, params }) {
  crumbs(["projects", "#/"], [project, href(["p", project])], ["Optuna", null]);
  const P = lit(project);
  const studies = await sqlObjects(`SELECT study_name, directions, n_trials, best_trial, best_value FROM optuna.studies WHERE project = ${P} ORDER BY n_trials DESC, study_name`);
  if (!studies.length) { main.append(h("p", { class: "muted" }, "No Optuna study in this project: `runql ingest journal.log -p PROJECT`.")); return; }
  const study = studies.find((s) => s.study_name === params.study) || studies[0];
  const sel = h("select", { "aria-label": "study" }, ...studies.map((s) => h("option", { value: s.study_name }, s.study_name)));
  sel.value = study.study_name;
  sel.addEventListener("change", () => { location.hash = href(["p", project, "optuna"], { study: sel.value }); });
  main.append(h("h1", {}, "Optuna study"), h("div", { class: "toolbar" }, sel,
    h("span", { class: "muted" }, `${study.n_trials} trials · direction ${study.directions} · best trial #${study.best_trial ?? "–"} = ${fmtNum(study.best_value)}`)));
  const S = lit(study.study_name);
  const trials = await sqlObjects(`SELECT number, state, value, duration_s, run_key FROM optuna.trials WHERE project = ${P} AND study_name = ${S} ORDER BY number`);
  const minimize = !String(study.directions).toUpperCase().includes("MAXIMIZE");
  const done = trials.filter((t) => t.state === "COMPLETE" && Number.isFinite(t.value));
  let best = null;
  const bestXs = [], bestYs = [];
  for (const t of done) {
    if (best === null || (minimize ? t.value < best : t.value > best)) best = t.value;
    bestXs.push(t.number); bestYs.push(best);
  }
  const grid = h("div", { class: "charts" });
  main.append(h("h2", {}, "Optimization history"), grid);
  const hist = new LineChart(grid, { title: "objective value by trial" });
  hist.setData([
    { name: "trial value", color: color(0), xs: done.map((t) => t.number), ys: done.map((t) => t.value) },
    { name: "best so far", color: color(3), xs: bestXs, ys: bestYs },
  ]);
  const tp = await sqlObjects(`SELECT number, param, value, value_num FROM optuna.trial_params WHERE project = ${P} AND study_name = ${S}`);
  const names = [...new Set(tp.map((p) => p.param))].sort();
  const pv = new Map(tp.map((p) => [`${p.number}\u0000${p.param}`, p.value_num ?? p.value]));
  const pc = h("div");
  main.append(h("h2", {}, "Parameters → objective (parallel coordinates)"), pc);
  new ParallelChart(pc, { title: "" }).setData(
    [...names.map((n) => ({ name: n, values: done.map((t) => pv.get(`${t.number}\u0000${n}`) ?? null) })), { name: "objective", values: done.map((t) => t.value) }],
    done.map((t) => `#${t.number}`));
  // A param's column reads the param, whatever its name (a param may be called "state").
  const paramCol = (n) => ({ name: n, get: (t) => pv.get(`${t.number}\u0000${n}`) ?? null });
  main.append(h("h2", {}, "Trials"), tableOf(tableFrom(
    [{ name: "number", type: "Int64" }, { name: "state" }, { name: "value", type: "Float64" }, { name: "duration_s", type: "Float64" }, ...names.map(paramCol)],
    trials)));
}
