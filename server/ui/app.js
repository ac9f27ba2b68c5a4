// runql's dashboard: one page, every view's state in the URL fragment, every question asked
// with SQL through POST /api/sql. Plain ES modules, no build step, no network but this server.
//
// This module is the entry point: the route table (URL fragment → view) and the mounting of a
// view in <main>, with the cleanup of the one before. The views are in views/, what they share
// in lib/.

import { h, banner } from "./lib/dom.js";
import { parseHash, matchRoute, href, mlflowLink } from "./lib/route.js";
import { projectsView } from "./views/projects.js";
import { runsView } from "./views/runs.js";
import { runView } from "./views/run.js";
import { compareView } from "./views/compare.js";
import { sqlView } from "./views/sql.js";
import { plugin } from "./lib/plugins.js";
// The plugin views register themselves in lib/plugins.js.
import "./views/optuna.js";
import "./views/rl.js";
import "./views/llm.js";
import "./views/traces.js";

// The first route whose path matches the start of the fragment's path wins; `:name` segments
// reach the view by that name, beside main, params, onCleanup and reload.
const ROUTES = [
  { path: "sql", view: sqlView },
  { path: "p/:project/run/:runId", view: runView },
  { path: "p/:project/compare", view: compareView },
  { path: "p/:project/:schema", view: (ctx) => plugin(ctx.schema).view(ctx), when: ({ schema }) => plugin(schema) !== null },
  { path: "p/:project", view: runsView },
  { path: "", view: projectsView },
];

let unmount = () => {};

// Mounts the view of the current fragment. A view registers what stops it (subscriptions,
// observers, popups) with onCleanup; whatever it registers after it was left runs at once.
async function route() {
  unmount();
  const cleanups = [];
  let mounted = true;
  unmount = () => { mounted = false; for (const f of cleanups.splice(0)) f(); };
  const onCleanup = (f) => { if (mounted) cleanups.push(f); else f(); };
  banner(null);
  let { segs, params } = parseHash();
  // A link the mlflow client printed opens the same run here, under the dashboard's own URL.
  const alias = mlflowLink(segs);
  if (alias) {
    segs = alias;
    history.replaceState(null, "", href(segs, params));
  }
  // Each view draws into a container of its own: one left while it still loads (a fast
  // click) draws on into a detached one, not over the next view.
  const main = h("div", { class: "view" });
  document.getElementById("main").replaceChildren(main);
  document.title = "runql";
  const { route: r, args } = matchRoute(ROUTES, segs);
  try {
    await r.view({ ...args, main, params, onCleanup, reload: route });
  } catch (e) {
    main.append(h("p", { class: "error" }, e.message || String(e)));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
window.addEventListener("unhandledrejection", (e) => banner(String(e.reason && e.reason.message || e.reason)));
