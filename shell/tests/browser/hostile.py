"""Hostile web pages against `runql serve`, in a real headless Chromium (Playwright), as a page
the user happens to have open would attack a server on their machine (see
shell/tests/it/hostile.rs, which starts the server over a demo store).

Usage: hostile.py RUNQL_URL

An attacker's web server of our own (http.server on 127.0.0.1, another port: another origin)
serves pages that try, from two origins (http://127.0.0.1:ATTACKER_PORT, same-site for the
browser, and http://evil.test:ATTACKER_PORT, cross-site), to
  (a) write through the MLflow API with `no-cors` fetches (create an experiment and a run, log
      into a running run, delete it and a demo run), a Blob typed application/json, a CORS
      fetch that needs a preflight, and navigator.sendBeacon;
  (b) create an experiment with a `<form enctype=text/plain>` whose body is JSON, submitted by
      script and by a click;
  (c) change the SQL session (`SET datafusion.catalog.default_schema`, `PREPARE`) with no-cors
      fetches and a form;
  (e) read the API by embedding it (`<img>`, `<script src>`);
and (d) a DNS rebinding page: Chromium resolves rebind.test to 127.0.0.1, so
http://rebind.test:RUNQL_PORT/ is the attacker's page and same-origin to the server's port;
its fetches of /api/sql and the MLflow API must be answered 403.

Every request of an attack that reaches the server must be answered 403 (Playwright sees the
status even of opaque responses), and after each attack the server's state, read directly
(urllib, no browser headers), must be what it was: the same experiments and runs, the running
run without the attacker's metric, param or tag, the demo run not deleted, the default schema
unchanged, no prepared statement left, SQL still answering. Last, the real dashboard still
works same-origin (at the server's URL and at localhost). One line per check; exits 1 listing
every failure.
"""

import html
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

URL = sys.argv[1].rstrip("/")
PORT = urllib.parse.urlparse(URL).port
CHROMIUM = os.environ.get("RUNQL_CHROMIUM", "/usr/bin/chromium")
failures = []


def check(name, ok, detail=""):
    line = f"{'ok' if ok else 'FAILED'}: {name}" + (f" ({detail})" if detail else "")
    print(line, flush=True)
    if not ok:
        failures.append(line)
    return ok


# --- The server, read directly (no Origin, no Sec-Fetch-*: not a browser) -------------------


def request(method, path, body=None, content_type="application/json"):
    """(status, text) of a plain request to the server."""
    data = None
    headers = {}
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    req = urllib.request.Request(URL + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def api(method, path, body=None):
    status, text = request(method, "/api/2.0/mlflow/" + path, body)
    if status != 200:
        raise RuntimeError(f"{method} {path} answered {status}: {text[:300]}")
    return json.loads(text or "{}")


def sql(q):
    status, text = request("POST", "/api/sql", {"sql": q})
    if status != 200:
        raise RuntimeError(f"SQL {q!r} answered {status}: {text[:300]}")
    return json.loads(text)


def snapshot():
    """What an attack must not change, read directly from the server."""
    s = {}

    def part(key, f):
        try:
            s[key] = f()
        except Exception as e:  # a failing read is a difference too
            s[key] = f"error: {e}"

    part(
        "experiments",
        lambda: sorted(
            e["name"]
            for e in api("GET", "experiments/search?max_results=1000").get("experiments", [])
        ),
    )
    part(
        "runs (SELECT run_id, name, deleted, status FROM runs)",
        lambda: sql("SELECT run_id, name, deleted, status FROM runs ORDER BY run_id"),
    )

    def run(run_id):
        r = api("GET", f"runs/get?run_id={run_id}")["run"]
        d = r["data"]
        return {
            "lifecycle_stage": r["info"]["lifecycle_stage"],
            "status": r["info"]["status"],
            "metrics": sorted(m["key"] for m in d.get("metrics", [])),
            "params": sorted(p["key"] for p in d.get("params", [])),
            "tags": sorted(t["key"] for t in d.get("tags", []) if not t["key"].startswith("mlflow.")),
        }

    part("the running run", lambda: run(VICTIM))
    part("the demo run", lambda: run(DEMO_RUN))
    part(
        "default schema (SHOW datafusion.catalog.default_schema)",
        lambda: sql("SHOW datafusion.catalog.default_schema")[0]["value"],
    )
    part("SELECT count(*) FROM runs", lambda: sql("SELECT count(*) AS n FROM runs")[0]["n"])
    return s


def unchanged(label, before):
    after = snapshot()
    for key in before:
        if before[key] == after[key]:
            check(f"{label}: {key} unchanged", True)
        else:
            check(f"{label}: {key} unchanged", False, f"before {before[key]!r}, after {after[key]!r}")
    had = before.get("experiments") if isinstance(before.get("experiments"), list) else []
    pwned = [
        n for n in after.get("experiments", []) if isinstance(n, str) and "pwned" in n and n not in had
    ]
    check(f"{label}: no experiment named pwned* created", not pwned, f"found {pwned}" if pwned else "")
    return after


# --- The store the attacks aim at ------------------------------------------------------------

status, text = request("GET", "/health")
if status != 200:
    sys.exit(f"hostile: {URL}/health answered {status}: {text}")
NOW = int(time.time() * 1000)
VICTIM_EXP = api("POST", "experiments/create", {"name": f"hostile-victim-{NOW}"})["experiment_id"]
VICTIM = api(
    "POST", "runs/create", {"experiment_id": VICTIM_EXP, "run_name": "victim", "start_time": NOW}
)["run"]["info"]["run_id"]
api(
    "POST",
    "runs/log-batch",
    {"run_id": VICTIM, "metrics": [{"key": "loss", "value": 1.0, "timestamp": NOW, "step": 0}]},
)
DEMO_RUN = sql("SELECT run_id FROM runs WHERE NOT deleted AND project NOT LIKE 'hostile-victim-%' ORDER BY run_id LIMIT 1")[0]["run_id"]
ARTIFACT = (sql("SELECT run_id, path FROM artifacts ORDER BY run_id, path LIMIT 1") or [None])[0]
print(f"hostile: attacking {URL}: running run {VICTIM} (experiment {VICTIM_EXP}), demo run {DEMO_RUN}")


# --- The attacker's web server ---------------------------------------------------------------


def config(tag):
    return json.dumps(
        {
            "runql": URL,
            "tag": tag,
            "victim": VICTIM,
            "victim_exp": VICTIM_EXP,
            "demo": DEMO_RUN,
            "now": NOW,
        }
    )


def page_fetch(tag):
    """(a): writes through the MLflow API with requests a page may send anywhere."""
    return f"""<!doctype html><title>cute cats</title><script>
const C = {config(tag)};
const api = p => C.runql + "/api/2.0/mlflow/" + p;
const nc = (p, body) => fetch(api(p), {{method: "POST", mode: "no-cors", body: JSON.stringify(body)}});
async function attempt(label, f) {{
  try {{ const r = await f(); return label + ": " + (r ? r.type + " " + r.status : "sent"); }}
  catch (e) {{ return label + ": threw " + e; }}
}}
(async () => {{
  const out = [];
  out.push(await attempt("no-cors experiments/create", () => nc("experiments/create", {{name: "pwned-fetch-" + C.tag}})));
  out.push(await attempt("no-cors runs/create", () => nc("runs/create", {{experiment_id: C.victim_exp, run_name: "pwned-run-" + C.tag, start_time: C.now}})));
  out.push(await attempt("no-cors runs/log-batch", () => nc("runs/log-batch", {{run_id: C.victim,
    metrics: [{{key: "pwned", value: 1, timestamp: C.now, step: 0}}],
    params: [{{key: "pwned", value: C.tag}}], tags: [{{key: "pwned", value: C.tag}}]}})));
  out.push(await attempt("no-cors runs/delete (running run)", () => nc("runs/delete", {{run_id: C.victim}})));
  out.push(await attempt("no-cors runs/delete (demo run)", () => nc("runs/delete", {{run_id: C.demo}})));
  out.push(await attempt("no-cors experiments/create, Blob typed application/json", () => fetch(api("experiments/create"),
    {{method: "POST", mode: "no-cors", body: new Blob([JSON.stringify({{name: "pwned-blob-" + C.tag}})], {{type: "application/json"}})}})));
  out.push(await attempt("sendBeacon experiments/create", () => {{
    if (!navigator.sendBeacon(api("experiments/create"), JSON.stringify({{name: "pwned-beacon-" + C.tag}})))
      throw new Error("sendBeacon refused to queue it");
  }}));
  out.push(await attempt("CORS experiments/create with Content-Type application/json (preflight)", () => fetch(api("experiments/create"),
    {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{name: "pwned-cors-" + C.tag}})}})));
  window.__done = out;
}})();
</script><p>Nothing to see here.</p>"""


def json_form(action, name, auto):
    """(b): a text/plain form whose body `NAME=VALUE` is a JSON object."""
    field = html.escape('{"name":"' + name + '","x":"', quote=True)
    value = html.escape('"}', quote=True)
    script = "<script>document.forms[0].submit()</script>" if auto else ""
    return f"""<!doctype html><title>win a prize</title>
<form method="POST" enctype="text/plain" action="{html.escape(action, quote=True)}">
<input type="hidden" name="{field}" value="{value}"><button type="submit">Claim your prize</button>
</form>{script}"""


def sql_form(tag):
    """(c): a text/plain form whose body is a SET statement (`--` comments out the `=`)."""
    field = html.escape(f"SET datafusion.catalog.default_schema = 'pwned_{tag}' --", quote=True)
    return f"""<!doctype html><title>quiz</title>
<form method="POST" enctype="text/plain" action="{html.escape(URL + '/api/sql', quote=True)}">
<input type="hidden" name="{field}" value=""></form><script>document.forms[0].submit()</script>"""


def page_sql(tag):
    """(c): session statements with no-cors fetches."""
    return f"""<!doctype html><title>news</title><script>
const C = {config(tag)};
async function attempt(label, body) {{
  try {{ const r = await fetch(C.runql + "/api/sql", {{method: "POST", mode: "no-cors", body}}); return label + ": " + r.type; }}
  catch (e) {{ return label + ": threw " + e; }}
}}
(async () => {{
  const out = [];
  out.push(await attempt("no-cors SET", "SET datafusion.catalog.default_schema = 'pwned'"));
  out.push(await attempt("no-cors PREPARE", "PREPARE pwned AS SELECT 1"));
  out.push(await attempt("no-cors JSON SET", JSON.stringify({{sql: "SET datafusion.catalog.default_schema = 'pwned'"}})));
  window.__done = out;
}})();
</script>"""


def embeds():
    """(e): the GET API embedded across sites (each URL distinct, so none is cached)."""
    urls = [
        ("img", f"{URL}/api/2.0/mlflow/experiments/search?max_results=10&via=img"),
        ("img", f"{URL}/api/2.0/mlflow/runs/get?run_id={DEMO_RUN}&via=img"),
        ("script", f"{URL}/api/2.0/mlflow/experiments/search?max_results=10&via=script"),
        ("script", f"{URL}/api/2.0/mlflow/runs/get?run_id={DEMO_RUN}&via=script"),
    ]
    if ARTIFACT:
        path = urllib.parse.quote(ARTIFACT["path"])
        urls.append(("img", f"{URL}/api/artifacts/{ARTIFACT['run_id']}/{path}"))
    return urls


def page_embed(tag):
    tags = []
    for i, (kind, url) in enumerate(embeds()):
        u = html.escape(url, quote=True)
        ev = f'onload="__r[{i}]=\'{kind} load\'" onerror="__r[{i}]=\'{kind} error\'"'
        tags.append(f'<img src="{u}" {ev}>' if kind == "img" else f'<script src="{u}" {ev}></script>')
    return (
        "<!doctype html><title>gallery</title><script>window.__r = [];</script>"
        + "\n".join(tags)
        + "<script>addEventListener('load', () => { window.__done = __r; });</script>"
    )


def page_for(path):
    _, kind, tag = (path.split("?")[0].split("/") + ["", ""])[:3]
    exp = URL + "/api/2.0/mlflow/experiments/create"
    return {
        "fetch": lambda: page_fetch(tag),
        "form": lambda: json_form(exp, "pwned-form-" + tag, auto=True),
        "click": lambda: json_form(exp, "pwned-click-" + tag, auto=False),
        "sql": lambda: page_sql(tag),
        "sqlform": lambda: sql_form(tag),
        "embed": lambda: page_embed(tag),
    }.get(kind, lambda: None)()


class Attacker(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = page_for(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
threading.Thread(target=attacker.serve_forever, daemon=True).start()
APORT = attacker.server_address[1]
ORIGINS = {
    "samesite": f"http://127.0.0.1:{APORT}",  # another port of this machine
    "crosssite": f"http://evil.test:{APORT}",  # another site (resolved to 127.0.0.1)
}


# --- The attacks, in the browser -------------------------------------------------------------


def to_runql(url):
    p = urllib.parse.urlparse(url)
    return p.port == PORT and p.hostname in ("127.0.0.1", "localhost", "rebind.test")


def watch(ctx, page):
    """Every request of the page to the server's port, read from Chromium's network events
    (CDP): {request id: {method, url, type, status, failed}}. `status` is what the server
    answered, seen even where the browser then withheld the answer from the page (an opaque
    answer, one blocked by ORB); a request the browser stopped (a CORS preflight it refused)
    has none."""
    seen = {}
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")

    def entry(e):
        return seen.setdefault(e["requestId"], {})

    def sent(e):
        entry(e).update(method=e["request"]["method"], url=e["request"]["url"], type=e.get("type"))

    def headers(e):
        entry(e)["status"] = e.get("statusCode")

    def response(e):
        x = entry(e)
        x.setdefault("status", e["response"]["status"])
        x.setdefault("url", e["response"]["url"])
        if e.get("type"):
            x["type"] = e["type"]

    def failed(e):
        cors = e.get("corsErrorStatus", {}).get("corsError")
        entry(e)["failed"] = e.get("errorText", "") + (f" ({cors})" if cors else "")

    cdp.on("Network.requestWillBeSent", sent)
    cdp.on("Network.responseReceivedExtraInfo", headers)
    cdp.on("Network.responseReceived", response)
    cdp.on("Network.loadingFailed", failed)
    return seen


def requests(seen):
    """The page's requests to the server, as (method, path, status or None, type, failure)."""
    out = []
    for x in list(seen.values()):
        url = x.get("url")
        if url and to_runql(url):
            path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url
            if not path.startswith("/api/"):
                continue  # the browser's own /favicon.ico once a form has left for the server
            out.append((x.get("method"), path, x.get("status"), x.get("type"), x.get("failed")))
    return out


def answered(seen):
    """The requests (not preflights) the server answered."""
    return [r for r in requests(seen) if r[2] is not None and r[3] != "Preflight" and r[0] != "OPTIONS"]


def wait_for(page, seen, n, timeout=5.0):
    """Until `n` of the page's requests are answered (events arrive while Playwright waits)."""
    deadline = time.time() + timeout
    while len(answered(seen)) < n and time.time() < deadline:
        page.wait_for_timeout(100)


def refused(label, seen, expected):
    """Every request that reached the server was answered 403; `expected` of them did."""
    sent = answered(seen)
    for m, path, status, kind, fail in sent:
        withheld = f"; the browser then: {fail}" if fail else ""
        check(f"{label}: {kind} {m} {path[:90]} answered 403", status == 403, f"answered {status}{withheld}")
    for m, path, status, kind, fail in requests(seen):
        if kind == "Preflight" or m == "OPTIONS":
            print(f"  ({label}: CORS preflight {m} {path[:90]} answered {status})")
        elif status is None:
            print(f"  ({label}: {kind} {m} {path[:90]} not sent or not answered: {fail})")
    check(
        f"{label}: the page's {expected} requests reached the server",
        len(sent) >= expected,
        f"{len(sent)} did: {[(m, p[:50], s) for m, p, s, _, _ in sent]}",
    )


def attack(ctx, label, origin, kind, expected, navigates=False, click=False):
    before = snapshot()
    page = ctx.new_page()
    seen = watch(ctx, page)
    url = f"{origin}/{kind}/{label.split()[-1]}"
    try:
        if navigates:
            # The form leaves the attacker's page for the server's answer.
            with page.expect_response(
                lambda r: r.request.method == "POST" and to_runql(r.url), timeout=15000
            ) as answer:
                page.goto(url)
                if click:
                    page.click("button")
            r = answer.value
            print(f"  ({label}: the form's POST answered {r.status}: {r.text()[:200]!r})")
        else:
            page.goto(url)
            page.wait_for_function("window.__done !== undefined", timeout=15000)
            for line in page.evaluate("window.__done"):
                print(f"  ({label}: {line})")
    except Exception as e:
        check(f"{label}: the attack page ran", False, str(e).splitlines()[0])
    wait_for(page, seen, expected)
    page.wait_for_timeout(300)  # let anything still in flight land before reading the state
    refused(label, seen, expected)
    page.close()
    return unchanged(label, before)


def rebinding(browser):
    """(d): a page whose own name resolves to 127.0.0.1 is same-origin to the server's port."""
    before = snapshot()
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        nav = page.goto(f"http://rebind.test:{PORT}/")
        print(f"  (rebinding: http://rebind.test:{PORT}/ answered {nav.status if nav else None})")
        got = page.evaluate(
            """async () => {
              const call = async (path, init) => {
                try { const r = await fetch(path, init); return [r.status, (await r.text()).slice(0, 200)]; }
                catch (e) { return [0, String(e)]; }
              };
              return {
                sql: await call("/api/sql", {method: "POST", body: "SELECT count(*) FROM runs"}),
                sql_json: await call("/api/sql", {method: "POST", headers: {"Content-Type": "application/json"},
                                                 body: JSON.stringify({sql: "SELECT count(*) FROM runs"})}),
                read: await call("/api/2.0/mlflow/experiments/search?max_results=10"),
                create: await call("/api/2.0/mlflow/experiments/create", {method: "POST",
                  headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "pwned-rebind"})}),
              };
            }"""
        )
        for what, call in [
            ("POST /api/sql (text)", "sql"),
            ("POST /api/sql (JSON)", "sql_json"),
            ("GET experiments/search", "read"),
            ("POST experiments/create (JSON)", "create"),
        ]:
            s, body = got[call]
            check(f"rebinding: {what} from http://rebind.test:{PORT} answered 403", s == 403, f"answered {s}: {body[:160]!r}")
    except Exception as e:
        check("rebinding: the page ran", False, str(e).splitlines()[0])
    ctx.close()
    unchanged("rebinding", before)


def dashboard(browser, base):
    """The real dashboard, same-origin: its page's own fetch of /api/sql is answered."""
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        nav = page.goto(base + "/")
        check(f"dashboard at {base}/ loads", nav is not None and nav.status == 200, f"answered {nav.status if nav else None}")
        s, body = page.evaluate(
            """async () => {
              const r = await fetch("/api/sql", {method: "POST", headers: {"Content-Type": "application/json"},
                                                 body: JSON.stringify({sql: "SELECT 1 AS one"})});
              return [r.status, await r.text()];
            }"""
        )
        ok = s == 200 and json.loads(body) == [{"one": 1}]
        check(f"dashboard at {base}: its fetch of SELECT 1 AS one answered 200 [{{one: 1}}]", ok, f"answered {s}: {body[:200]!r}")
    except Exception as e:
        check(f"dashboard at {base}: works", False, str(e).splitlines()[0])
    ctx.close()


def run_checks(browser):
    ctx = browser.new_context()
    for tag, origin in ORIGINS.items():
        print(f"hostile: attacks from {origin} ({tag})")
        attack(ctx, f"(a) no-cors writes {tag}", origin, "fetch", 7)
        attack(ctx, f"(b) text/plain JSON form, auto-submitted {tag}", origin, "form", 1, navigates=True)
        attack(ctx, f"(b) text/plain JSON form, clicked {tag}", origin, "click", 1, navigates=True, click=True)
        attack(ctx, f"(c) no-cors SET and PREPARE {tag}", origin, "sql", 3)
        status, text = request("POST", "/api/sql", {"sql": "EXECUTE pwned"})
        check(f"(c) {tag}: no prepared statement left (EXECUTE pwned refused)", status != 200, f"answered {status}: {text[:160]!r}")
        attack(ctx, f"(c) text/plain SET form {tag}", origin, "sqlform", 1, navigates=True)
        attack(ctx, f"(e) <img>/<script src> embeds {tag}", origin, "embed", len(embeds()))
    ctx.close()
    print("hostile: DNS rebinding")
    rebinding(browser)
    print("hostile: the dashboard, same-origin")
    dashboard(browser, URL)
    dashboard(browser, f"http://localhost:{PORT}")
    final = snapshot()
    pwned = [n for n in final.get("experiments", []) if isinstance(n, str) and "pwned" in n]
    check("in the end: no experiment named pwned* exists", not pwned, f"found {pwned}" if pwned else "")
    victim = final.get("the running run")
    check(
        "in the end: the running run is not deleted and has none of the attacker's data",
        isinstance(victim, dict)
        and victim["lifecycle_stage"] == "active"
        and "pwned" not in victim["metrics"] + victim["params"] + victim["tags"],
        repr(victim),
    )
    demo = final.get("the demo run")
    check("in the end: the demo run is not deleted", isinstance(demo, dict) and demo["lifecycle_stage"] == "active", repr(demo))


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            # evil.test: another site; rebind.test: DNS rebinding (its name points at us).
            "--host-resolver-rules=MAP rebind.test 127.0.0.1, MAP evil.test 127.0.0.1",
        ],
    )
    try:
        run_checks(browser)
    finally:
        browser.close()
        attacker.shutdown()

if failures:
    print(f"\nhostile: {len(failures)} checks failed:", file=sys.stderr)
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("hostile: every check passed")
