// Runs every function exported by helpers.test.js (a test passes when it returns, or its
// promise resolves, without throwing), lists the outcomes on the page and leaves them in
// window.__results as [{name, ok, error}] for the browser test (shell/tests/browser/dashboard.py).

import * as tests from "./helpers.test.js";

const results = [];
for (const [name, fn] of Object.entries(tests)) {
  if (typeof fn !== "function") continue;
  try {
    await fn();
    results.push({ name, ok: true, error: null });
  } catch (e) {
    results.push({ name, ok: false, error: String(e && e.stack || e) });
  }
}
const list = document.getElementById("results");
for (const r of results) {
  const li = document.createElement("li");
  li.className = r.ok ? "pass" : "fail";
  li.textContent = r.ok ? `ok ${r.name}` : `FAILED ${r.name}: ${r.error}`;
  list.append(li);
}
const failed = results.filter((r) => !r.ok).length;
document.getElementById("summary").textContent = `${results.length - failed} passed, ${failed} failed`;
window.__results = results;
