// Live run updates: GET /api/events (server-sent events), read with fetch so that a token can
// go along, and reconnected two seconds after it drops.

import { authHeaders } from "./sql.js";

// Splits a buffer of an event stream into its complete events, [{event, data}], and the
// incomplete rest.
export function splitEvents(buf) {
  const events = [];
  let i;
  while ((i = buf.indexOf("\n\n")) >= 0) {
    const chunk = buf.slice(0, i);
    buf = buf.slice(i + 2);
    let event = "message", data = "";
    for (const line of chunk.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    events.push({ event, data });
  }
  return { events, rest: buf };
}

// Calls onEvent with each run change of a project (every project for null), and with null
// when the server dropped some (read everything again). Returns the function that stops it.
export function subscribe(project, onEvent) {
  const ctrl = new AbortController();
  const dot = document.getElementById("live");
  (async () => {
    while (!ctrl.signal.aborted) {
      try {
        const q = project ? `?project=${encodeURIComponent(project)}` : "";
        const r = await fetch(`/api/events${q}`, { headers: authHeaders(), signal: ctrl.signal });
        if (!r.ok) throw new Error(String(r.status));
        dot.classList.add("on");
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const { events, rest } = splitEvents(buf + dec.decode(value, { stream: true }));
          buf = rest;
          for (const { event, data } of events) {
            if (event === "run") { try { onEvent(JSON.parse(data)); } catch { /* ignore */ } }
            else if (event === "lagged") onEvent(null);
          }
        }
      } catch { /* reconnect below */ }
      dot.classList.remove("on");
      if (!ctrl.signal.aborted) await new Promise((res) => setTimeout(res, 2000));
    }
  })();
  return () => { ctrl.abort(); dot.classList.remove("on"); };
}
