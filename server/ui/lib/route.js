// The URL fragment holds every view's state: "#/a/b?k=v&…", path segments and parameters.

// The segments and parameters of a fragment (the page's own by default).
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  const segs = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { segs, params: Object.fromEntries(new URLSearchParams(query)) };
}

// The fragment of some segments and parameters (empty parameters left out).
export function href(segs, params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const s = q.toString();
  return "#/" + segs.map(encodeURIComponent).join("/") + (s ? `?${s}` : "");
}

// Records a view's changed state in the URL without reloading the view.
export function setParams(update) {
  const { segs, params } = parseHash();
  const next = { ...params, ...update };
  history.replaceState(null, "", href(segs, next));
}

// The first route whose path matches the start of segs (further segments are ignored) and
// whose `when`, if any, accepts what it captured: {route, args}, or null. A path is
// "p/:project/run/:runId": literal segments, and `:name` capturing any segment.
export function matchRoute(routes, segs) {
  outer: for (const route of routes) {
    const args = {};
    const pattern = route.path.split("/").filter(Boolean);
    for (const [i, p] of pattern.entries()) {
      if (segs[i] === undefined) continue outer;
      if (p.startsWith(":")) args[p.slice(1)] = segs[i];
      else if (p !== segs[i]) continue outer;
    }
    if (route.when && !route.when(args)) continue;
    return { route, args };
  }
  return null;
}

// The dashboard's own segments for a link the `mlflow` client prints ("🏃 View run … at:
// <tracking uri>/#/experiments/<id>/runs/<run id>"): an experiment id is its project's name,
// "0" MLflow's Default experiment. Null for segments that are not such a link.
// A project whose name has a dot is the experiment `~` + its UTF-8 name in hex (the mlflow
// client refuses ids with dots in trace searches); other ids are the project's name.
export function decodeExperimentId(id) {
  const hex = id.startsWith("~") ? id.slice(1) : "";
  if (!hex || hex.length % 2 || /[^0-9a-f]/i.test(hex)) return id;
  try {
    const bytes = new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch { return id; }
}

export function mlflowLink(segs) {
  if (segs[0] !== "experiments" || segs[1] === undefined) return null;
  const project = segs[1] === "0" ? "Default" : decodeExperimentId(segs[1]);
  if (segs[2] === "runs" && segs[3] !== undefined) return ["p", project, "run", segs[3]];
  return ["p", project];
}
