"""The dashboard in a real headless Chromium (Playwright), against `runql serve` over a seeded
store (`runql demo` plus plugin ingests, see shell/tests/it/dashboard.rs).

Usage: dashboard.py URL SCREENSHOT_DIR

Checks the runs table (SQL filter, inline errors, sorting), a run page, comparing two runs
(series per chart), a live run gaining points while the page is open, a shared link reopening
the same view, the SQL page, the plugin views, the unit tests of the page's helpers
(server/ui/test/, run by /ui/test/index.html), and that the browser logged no console error.
Writes one screenshot per page into SCREENSHOT_DIR.
"""

import json
import os
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

URL = sys.argv[1].rstrip("/")
SHOTS = sys.argv[2]
CHROMIUM = os.environ.get("RUNQL_CHROMIUM", "/usr/bin/chromium")
problems = []
# Steps that send bad input on purpose: the browser logs the 400 answer as a console error.
expected_400 = [False]


def post(path, body, accept="application/json"):
    req = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def sql(q):
    return post("/api/sql", {"sql": q}, "application/vnd.runql.table+json")["rows"]


def shot(page, name):
    page.wait_for_timeout(300)
    page.screenshot(path=os.path.join(SHOTS, f"dashboard-{name}.png"))


def watch(page):
    def on_console(msg):
        if msg.type == "error":
            if expected_400[0] and "status of 400" in msg.text:
                return
            problems.append(f"console error on {page.url}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"page error on {page.url}: {e}"))


def cells(page, col):
    """The texts of one column of the runs table's rendered rows, top to bottom."""
    idx = page.eval_on_selector(
        ".vt .hdr", "(h, c) => [...h.children].findIndex(d => d.dataset.col === c)", col
    )
    assert idx > 0, f"no column {col}"
    return page.eval_on_selector_all(
        ".vt .row",
        "(rows, i) => rows.sort((a, b) => a.dataset.index - b.dataset.index)"
        ".map(r => r.children[i].textContent)",
        idx,
    )


def number(text):
    return float(text) if text.strip() else None


def run_checks(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    watch(page)

    # Projects.
    page.goto(URL + "/#/")
    expect(page.locator(".card[data-project='mnist-cnn']")).to_be_visible()
    shot(page, "projects")

    # Runs table: every run, then a SQL filter.
    page.click(".card[data-project='mnist-cnn']")
    total = sql("SELECT count(*) FROM runs WHERE project = 'mnist-cnn' AND NOT deleted")[0][0]
    # The demo's sweep: its trials fold under the parent run until asked for.
    top = sql(
        "SELECT count(*) FROM runs WHERE project = 'mnist-cnn' AND NOT deleted AND parent_run_id IS NULL"
    )[0][0]
    expect(page.locator("[data-role=count]")).to_have_text(
        f"{top} run{'' if top == 1 else 's'} · {total - top} child runs folded"
    )
    page.uncheck("input[aria-label='nest child runs']")
    expect(page.locator("[data-role=count]")).to_have_text(f"{total} runs")
    expect(page.locator(".vt .row")).to_have_count(total)
    wanted = sql(
        "SELECT count(*) FROM params WHERE project = 'mnist-cnn' AND key = 'lr' AND value_num >= 0.01"
    )[0][0]
    assert 0 < wanted < total, (wanted, total)
    page.fill("input.filter", "params.lr >= 0.01")
    page.press("input.filter", "Enter")
    expect(page.locator("[data-role=count]")).to_have_text(f"{wanted} runs")
    expect(page.locator(".vt .row")).to_have_count(wanted)
    assert all(number(v) >= 0.01 for v in cells(page, "params.lr")), cells(page, "params.lr")
    assert "filter=params.lr" in page.url, page.url

    # A bad filter is an inline error naming the problem; the table stays usable.
    expected_400[0] = True
    page.fill("input.filter", "params.no_such_param > 1")
    page.press("input.filter", "Enter")
    expect(page.locator("[role=alert]")).to_contain_text("no_such_param")
    expected_400[0] = False
    page.fill("input.filter", "params.lr >= 0.01")
    page.press("input.filter", "Enter")
    expect(page.locator("[data-role=count]")).to_have_text(f"{wanted} runs")

    # Sorting by a param: descending first, then ascending.
    page.click(".vt .hdr [data-col='params.lr']")
    expect(page.locator(".vt .hdr [data-col='params.lr']")).to_have_class("cell num sorted desc")
    page.wait_for_timeout(300)
    lrs = [number(v) for v in cells(page, "params.lr")]
    assert lrs == sorted(lrs, reverse=True), lrs
    page.click(".vt .hdr [data-col='params.lr']")
    expect(page.locator(".vt .hdr [data-col='params.lr']")).to_have_class("cell num sorted")
    page.wait_for_timeout(300)
    lrs = [number(v) for v in cells(page, "params.lr")]
    assert lrs == sorted(lrs), lrs
    shot(page, "runs")

    # Open a run.
    first = page.locator(".vt .row").first
    run_id = first.get_attribute("data-run-id")
    first.locator("a").first.click()
    expect(page).to_have_url(f"{URL}/#/p/mnist-cnn/run/{run_id}")
    expect(page.locator("h2", has_text="Params")).to_be_visible()
    expect(page.locator("table.grid td", has_text="batch_size")).to_be_visible()
    page.click(".tabs a[data-tab='metrics']")
    keys = sql(f"SELECT count(DISTINCT key) FROM metrics WHERE run_id = '{run_id}'")[0][0]
    expect(page.locator("canvas[data-role=chart][data-series='1']")).to_have_count(keys)
    shot(page, "run")

    # Compare two runs: every chart overlays two series.
    page.goto(URL + "/#/p/mnist-cnn?flat=1")
    rows = page.locator(".vt .row")
    expect(rows).to_have_count(total)
    a, b = rows.nth(1).get_attribute("data-run-id"), rows.nth(2).get_attribute("data-run-id")
    rows.nth(1).locator("input[type=checkbox]").check()
    rows.nth(2).locator("input[type=checkbox]").check()
    page.click("button:has-text('Compare (2)')")
    keys = sql(
        f"SELECT count(DISTINCT key) FROM metric_summary WHERE run_id IN ('{a}', '{b}')"
    )[0][0]
    charts = page.locator("canvas[data-role=chart]")
    expect(charts).to_have_count(keys)
    expect(page.locator("canvas[data-role=chart][data-series='2']")).to_have_count(keys)
    page.check("input[aria-label='log scale']")
    page.fill("input[aria-label='smoothing']", "0.6")
    page.dispatch_event("input[aria-label='smoothing']", "input")
    shot(page, "compare")

    # The same view from a shared link, in a fresh browser context.
    link = page.url
    assert "log=1" in link and "smooth=0.6" in link, link
    other = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    watch(other)
    other.goto(link)
    expect(other.locator("canvas[data-role=chart][data-series='2']")).to_have_count(keys)
    expect(other.locator("input[aria-label='log scale']")).to_be_checked()
    expect(other.locator("input[aria-label='smoothing']")).to_have_value("0.6")
    other.context.close()

    page.click(".tabs a[data-tab='diff']")
    expect(page.locator("tr[data-key='params.lr'].diff")).to_be_visible()
    page.click(".tabs a[data-tab='parallel']")
    expect(page.locator("canvas[data-role=parallel]")).to_have_attribute("data-lines", "2")
    shot(page, "compare-params")

    # A live run logged through the MLflow API gains points on an open page.
    exp = post("/api/2.0/mlflow/experiments/create", {"name": "live-demo"})["experiment_id"]
    now = int(time.time() * 1000)
    run = post(
        "/api/2.0/mlflow/runs/create",
        {"experiment_id": exp, "run_name": "live", "start_time": now},
    )["run"]["info"]["run_id"]

    def log(steps):
        metrics = [
            {"key": "loss", "value": 1.0 / (1 + s), "timestamp": now + s, "step": s}
            for s in steps
        ]
        post("/api/2.0/mlflow/runs/log-batch", {"run_id": run, "metrics": metrics})

    log(range(0, 10))
    page.goto(f"{URL}/#/p/live-demo/run/{run}?tab=metrics")
    chart = page.locator("canvas[data-role=chart]")
    expect(chart).to_have_count(1, timeout=15000)
    expect(chart).to_have_attribute("data-points", "10", timeout=15000)
    log(range(10, 40))
    expect(chart).to_have_attribute("data-points", "40", timeout=15000)
    expect(page.locator("[data-role=status]")).to_have_text("running")
    post(
        "/api/2.0/mlflow/runs/update",
        {"run_id": run, "status": "FINISHED", "end_time": now + 1000},
    )
    expect(page.locator("[data-role=status]")).to_have_text("finished", timeout=15000)
    shot(page, "live")

    # The link the mlflow client prints after a run ("🏃 View run live at: …") opens that run.
    page.goto(f"{URL}/#/experiments/{exp}/runs/{run}")
    expect(page.locator("[data-role=status]")).to_have_text("finished", timeout=15000)
    assert f"#/p/live-demo/run/{run}" in page.url, page.url
    # Its only tags are the ones MLflow sets (mlflow.runName): folded, not "No tags.".
    tools = page.locator("details[data-role=system-tags]")
    expect(tools).to_contain_text("mlflow.runName", timeout=15000)
    expect(page.get_by_text("No tags.", exact=True)).to_have_count(0)
    # The models it logged (MLflow 3 logged models), with their metrics.
    model = post(
        "/api/2.0/mlflow/logged-models",
        {"experiment_id": exp, "name": "live-model", "model_type": "sklearn", "source_run_id": run},
    )["model"]["info"]["model_id"]
    post(
        "/api/2.0/mlflow/runs/log-metric",
        {"run_id": run, "key": "auc", "value": 0.93, "timestamp": now, "step": 0, "model_id": model},
    )
    page.reload()
    models = page.locator("[data-role=models]")
    expect(models).to_contain_text("live-model", timeout=15000)
    expect(models).to_contain_text(model)
    expect(models).to_contain_text("auc = 0.93")

    # A trace made in the live run (as the mlflow client sends one): the run links to it, and
    # the traces view draws its span tree and a span's inputs and outputs.
    tid = "tr-00000000000000000000000000000abc"
    post(
        "/api/3.0/mlflow/traces",
        {"trace": {"trace_info": {
            "trace_id": tid,
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}},
            "request_time": "2023-11-14T22:13:20Z", "execution_duration": "0.3s", "state": "OK",
            "request_preview": "{\"q\": \"capital of France?\"}", "trace_metadata": {"mlflow.sourceRun": run},
        }}},
    )
    ns = 1_700_000_000_000_000_000
    spans = {"spans": [
        {"span_id": "AAAAAAAAAAE=", "parent_span_id": None, "name": "agent", "start_time_unix_nano": ns,
         "end_time_unix_nano": ns + 300_000_000, "status": {"code": "STATUS_CODE_OK"},
         "attributes": {"mlflow.spanType": "\"AGENT\"", "mlflow.spanInputs": "{\"q\": \"capital of France?\"}", "mlflow.spanOutputs": "\"Paris\""}},
        {"span_id": "AAAAAAAAAAI=", "parent_span_id": "AAAAAAAAAAE=", "name": "chat", "start_time_unix_nano": ns + 50_000_000,
         "end_time_unix_nano": ns + 250_000_000, "status": {"code": "STATUS_CODE_OK"},
         "attributes": {"mlflow.spanType": "\"CHAT_MODEL\"", "mlflow.spanInputs": "{\"model\": \"gpt-4o-mini\"}", "mlflow.spanOutputs": "\"Paris\"",
                        "mlflow.chat.tokenUsage": "{\"input_tokens\": 9, \"output_tokens\": 1, \"total_tokens\": 10}"}},
    ]}
    put = urllib.request.Request(
        f"{URL}/api/2.0/mlflow-artifacts/artifacts/{exp}/traces/{tid}/artifacts/traces.json",
        data=json.dumps(spans).encode(), method="PUT", headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(put, timeout=30).read()
    page.goto(f"{URL}/#/p/live-demo/run/{run}?tab=overview")
    page.click("a[data-role=traces-link]")
    expect(page.locator("[data-role=span]")).to_have_count(2, timeout=15000)
    child = page.locator("[data-role=span][data-depth='1']")
    expect(child).to_contain_text("chat")
    child.click()
    expect(page.locator("pre[data-role=inputs]")).to_contain_text("gpt-4o-mini")
    expect(page.locator(".spaninfo")).to_contain_text("10 tokens")
    assert "span=" in page.url and f"run={run}" in page.url, page.url
    shot(page, "traces")

    # Nested runs (MLflow's parentRunId, a sweep's trials) fold under their parent.
    nexp = post("/api/2.0/mlflow/experiments/create", {"name": "nested"})["experiment_id"]
    parent = post(
        "/api/2.0/mlflow/runs/create",
        {"experiment_id": nexp, "run_name": "sweep", "start_time": now},
    )["run"]["info"]["run_id"]
    for i in range(3):
        post(
            "/api/2.0/mlflow/runs/create",
            {
                "experiment_id": nexp,
                "run_name": f"trial-{i}",
                "start_time": now + 1 + i,
                "tags": [{"key": "mlflow.parentRunId", "value": parent}],
            },
        )
    post("/api/2.0/mlflow/runs/create", {"experiment_id": nexp, "run_name": "solo", "start_time": now + 10})
    page.goto(URL + "/#/p/nested")
    rows = page.locator(".vt .row")
    expect(rows).to_have_count(2)
    toggle = page.locator(f".vt .row[data-run-id='{parent}'] button[data-role=children]")
    expect(toggle).to_have_text("▸ 3")
    toggle.click()
    expect(rows).to_have_count(5)
    expect(page.locator(".vt .row.child")).to_have_count(3)
    # The children sit right below their parent, newest first.
    order = [rows.nth(i).locator(".cell a").first.inner_text() for i in range(5)]
    assert order == ["solo", "sweep", "trial-2", "trial-1", "trial-0"], order
    assert "open=" in page.url, page.url
    shot(page, "nested")
    page.uncheck("input[aria-label='nest child runs']")
    expect(page.locator(".vt .row.child")).to_have_count(0)
    expect(rows).to_have_count(5)
    page.check("input[aria-label='nest child runs']")
    expect(page.locator(".vt .row.child")).to_have_count(3)

    # An experiment renamed through MLflow keeps its project; its card shows the new name.
    post("/api/2.0/mlflow/experiments/update", {"experiment_id": nexp, "new_name": "sweep-2026"})
    page.goto(URL + "/#/")
    expect(page.locator(".card[data-project='nested'] h3")).to_contain_text("sweep-2026 (project nested)")
    # …and so do its runs page's crumbs and title (the `projects` table's name).
    page.click(".card[data-project='nested']")
    expect(page.locator("#crumbs")).to_contain_text("sweep-2026")
    expect(page).to_have_title("sweep-2026 · runql")

    # The SQL page: a table and a chart of a numeric column.
    page.goto(URL + "/#/sql")
    page.fill(
        "textarea",
        "SELECT step, value, run_id FROM metrics WHERE project = 'mnist-cnn' "
        "AND key = 'val/acc' ORDER BY step",
    )
    page.press("textarea", "Control+Enter")
    expect(page.locator("table.grid")).to_be_visible()
    page.select_option("select[aria-label='chart y']", label="y: value")
    page.select_option("select[aria-label='chart x']", label="x: step")
    page.select_option("select[aria-label='chart series']", label="series by run_id")
    n = sql("SELECT count(DISTINCT run_id) FROM metrics WHERE project='mnist-cnn' AND key='val/acc'")
    expect(page.locator("canvas[data-role=chart]")).to_have_attribute("data-series", str(n[0][0]))
    shot(page, "sql")
    expected_400[0] = True
    page.fill("textarea", "DROP TABLE runs")
    page.press("textarea", "Control+Enter")
    expect(page.locator("[role=alert]")).to_contain_text("read-only")
    expected_400[0] = False

    # Plugin views.
    page.goto(URL + "/#/p/sweeps")
    page.click("a:has-text('Optuna study')")
    expect(page.locator("canvas[data-role=parallel]")).to_be_visible()
    expect(page.locator("canvas[data-role=chart]")).to_have_attribute("data-series", "2")
    shot(page, "optuna")
    page.goto(URL + "/#/p/rl-cartpole/rl")
    expect(page.locator("canvas[data-role=chart]").first).not_to_have_attribute("data-series", "0")
    shot(page, "rl")
    page.goto(URL + "/#/p/llm-finetune/llm")
    calls = sql("SELECT count(*) FROM llm.calls WHERE project = 'llm-finetune'")[0][0]
    expect(page.locator("table.grid tbody tr")).to_have_count(calls)
    page.fill("input[aria-label=search]", "Paris")
    paris = sql(
        "SELECT count(*) FROM llm.calls WHERE project = 'llm-finetune' "
        "AND (prompt ILIKE '%Paris%' OR response ILIKE '%Paris%')"
    )[0][0]
    expect(page.locator("table.grid tbody tr")).to_have_count(paris)
    shot(page, "llm")

    # The unit tests of the helpers (server/ui/test/helpers.test.js): their page runs every
    # test function and leaves [{name, ok, error}] in window.__results.
    page.goto(URL + "/ui/test/index.html")
    page.wait_for_function("window.__results !== undefined", timeout=15000)
    results = page.evaluate("window.__results")
    failed = [f"{r['name']}: {r['error']}" for r in results if not r["ok"]]
    assert results and not failed, "unit tests failed:\n" + "\n".join(failed)
    print(f"dashboard: {len(results)} unit tests of the helpers passed")
    ctx.close()


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
        ],
    )
    try:
        run_checks(browser)
    finally:
        browser.close()

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("dashboard: every check passed")
