"""The client side of `cargo bench -p runql --bench mlflow_server`: one MLflow client workload,
logged through the official `mlflow` client into the tracking server at MLFLOW_TRACKING_URI.

RUNS runs × 20 params × 5 metric keys × 1,000 steps, all through `log_batch` (1,000 metrics a
request, MLflow's limit), then timed searches and metric-history reads. Prints one JSON line of
wall-clock figures; the Rust side measures the server's CPU around the logging phase itself.
"""

import json
import os
import statistics
import sys
import time

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

# The mlflow client prints "View run …" lines: keep stdout for this script's JSON lines.
OUT = sys.stdout
sys.stdout = sys.stderr

RUNS = int(os.environ.get("RUNS", "200"))
PARAMS, KEYS, STEPS = 20, 5, 1000
KEY_NAMES = ["loss", "val_loss", "acc", "val_acc", "lr"]


def phase(name):
    # The Rust side reads these markers to sample the server's CPU between phases.
    print(json.dumps({"phase": name}), file=OUT, flush=True)
    sys.stdin.readline()


client = MlflowClient()
exp = client.create_experiment(f"bench-{time.time_ns()}")
base_ts = 1_700_000_000_000
phase("log")
t0, cpu0 = time.perf_counter(), time.process_time()
run_ids = []
for r in range(RUNS):
    run = client.create_run(exp, run_name=f"run-{r:04d}")
    rid = run.info.run_id
    run_ids.append(rid)
    params = [Param(f"p{i:02d}", str((r * 31 + i) % 97 / 10)) for i in range(PARAMS)]
    client.log_batch(rid, params=params)
    batch = []
    for step in range(STEPS):
        for k, key in enumerate(KEY_NAMES):
            value = 1.0 / (1 + step) + (r % 13) * 0.001 + k
            batch.append(Metric(key, value, base_ts + step, step))
            if len(batch) == 1000:
                client.log_batch(rid, metrics=batch)
                batch = []
    if batch:
        client.log_batch(rid, metrics=batch)
    client.set_terminated(rid)
log_s = time.perf_counter() - t0
client_cpu_s = time.process_time() - cpu0
phase("read")


def timed(fn, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


search_ms, found = timed(
    lambda: client.search_runs([exp], "metrics.val_loss < 1.0011 and params.p00 = '0.0'", max_results=100),
    5,
)
assert all(f.data.params["p00"] == "0.0" for f in found), found
top_ms, top = timed(
    lambda: client.search_runs([exp], order_by=["metrics.val_loss ASC"], max_results=10), 5
)
assert len(top) == 10
history_ms, history = timed(lambda: client.get_metric_history(run_ids[RUNS // 2], "val_loss"), 5)
assert len(history) == STEPS, len(history)
points = RUNS * KEYS * STEPS
print(
    json.dumps(
        {
            "runs": RUNS,
            "points": points,
            "log_s": log_s,
            "client_cpu_s": client_cpu_s,
            "points_per_s": points / log_s,
            "search_ms": search_ms,
            "search_hits": len(found),
            "top10_ms": top_ms,
            "history_ms": history_ms,
        }
    ),
    file=OUT,
    flush=True,
)
