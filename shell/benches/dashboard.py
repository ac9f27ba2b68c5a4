"""Times the dashboard in headless Chromium (see benches/dashboard.rs for the data).

Usage: dashboard.py URL CURVE_RUN_IDS MANY_RUNS

Each step is timed from the action to the moment what it shows is on screen; each is repeated
and the median reported, with the best and worst.
"""

import os
import statistics
import sys
import time

from playwright.sync_api import expect, sync_playwright

URL, IDS, MANY = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
CHROMIUM = os.environ.get("RUNQL_CHROMIUM", "/usr/bin/chromium")
REPEAT = 5
results = []


def timed(name, action, done, repeat=REPEAT):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        action()
        done()
        times.append(time.perf_counter() - t)
    results.append((name, statistics.median(times), min(times), max(times)))
    print(f"{name}: median {statistics.median(times) * 1000:.0f} ms", file=sys.stderr)


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    n = len(IDS.split(","))

    def compare():
        page.goto("about:blank")
        page.goto(f"{URL}/#/p/curves/compare?runs={IDS}")

    def compare_done():
        page.wait_for_selector(f"canvas[data-role=chart][data-series='{n}']", timeout=60000)

    timed(f"compare view: {n} runs × 100,000 points, overlaid", compare, compare_done)

    chart = page.locator("canvas[data-role=chart]").first

    def zoom():
        box = chart.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 60)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + 60, steps=3)
        chart.evaluate("el => { el.dataset.points = '' }")
        page.mouse.up()

    def zoom_done():
        expect(chart).not_to_have_attribute("data-points", "", timeout=60000)

    timed("compare view: zoom into 5% of the steps (full resolution)", zoom, zoom_done, repeat=1)

    def table():
        page.goto("about:blank")
        page.goto(f"{URL}/#/p/many")

    def table_done():
        page.wait_for_selector(f"[data-role=count]:has-text('{MANY} runs')", timeout=60000)
        page.wait_for_selector(".vt .row", timeout=60000)

    timed(f"runs table: {MANY} runs, first rows", table, table_done)

    def sort():
        page.goto(f"{URL}/#/p/many")
        table_done()
        page.click(".vt .hdr [data-col='metrics.val/acc']")

    def sort_done():
        page.wait_for_selector(".vt .hdr [data-col='metrics.val/acc'].sorted", timeout=60000)
        page.wait_for_selector(".vt .row", timeout=60000)

    timed(f"runs table: {MANY} runs, load + sort by a metric", sort, sort_done)

    def filt():
        page.fill("input.filter", "params.lr > 0.005 AND params.model = 'vit'")
        page.press("input.filter", "Enter")

    def filt_done():
        page.wait_for_selector("[data-role=count]:not(:has-text('10000 runs'))", timeout=60000)
        page.wait_for_selector(".vt .row", timeout=60000)
        page.fill("input.filter", "")
        page.press("input.filter", "Enter")
        page.wait_for_selector(f"[data-role=count]:has-text('{MANY} runs')", timeout=60000)

    timed(f"runs table: {MANY} runs, SQL filter (and clearing it)", filt, filt_done)

    def scroll():
        page.evaluate("document.querySelector('.vt').scrollTop = 0")
        page.wait_for_timeout(50)
        page.evaluate("const v = document.querySelector('.vt'); v.scrollTop = v.scrollHeight / 2")

    def scroll_done():
        page.wait_for_selector(f".vt .row[data-index='{MANY // 2}']", timeout=60000)

    timed(f"runs table: {MANY} runs, scroll to the middle", scroll, scroll_done)
    browser.close()

print("| step | median | best | worst |\n|---|---|---|---|")
for name, med, lo, hi in results:
    print(f"| {name} | {med * 1000:.0f} ms | {lo * 1000:.0f} ms | {hi * 1000:.0f} ms |")
