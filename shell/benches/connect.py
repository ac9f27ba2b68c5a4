"""One bench run of the analysis endpoints of `runql serve` (driven by benches/connect.rs).

Reads every point of the store's `bench` project into a pandas frame through Flight SQL
(ADBC), through `POST /api/sql` (JSON), through the Postgres wire (psycopg's rows, text and
binary formats, and a pandas frame of them), and through the
`mlflow` client's `get_metric_history` loop; then times psql's connect + first query.
Prints one JSON object of figures.
"""

import json
import os
import statistics
import subprocess
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import pandas as pd
import psycopg

http = os.environ["RUNQL_HTTP"]
flight = os.environ["RUNQL_FLIGHT"]
pg_port = int(os.environ["RUNQL_PG_PORT"])
mlflow_budget_s = float(os.environ.get("MLFLOW_BUDGET_S", "60"))
SQL = "SELECT run_id, step, value FROM metrics WHERE project = 'bench' AND key = 'loss'"
out = {}


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


def via_flight():
    with flight_sql.connect(flight, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(SQL)
        return cur.fetch_df()


def via_json():
    req = urllib.request.Request(
        http + "/api/sql",
        data=json.dumps({"sql": SQL}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=3600) as r:
        return pd.DataFrame(json.loads(r.read()))


def pg_rows(binary):
    with psycopg.connect(host="127.0.0.1", port=pg_port, user="bench", dbname="runql") as conn:
        cur = conn.cursor().execute(SQL, binary=binary)
        return cur.fetchall(), [d.name for d in cur.description]


def via_pg():
    return pg_rows(False)[0]


def via_pg_binary():
    return pg_rows(True)[0]


def via_pg_pandas():
    rows, columns = pg_rows(False)
    return pd.DataFrame(rows, columns=columns)


# Postgres wire: into psycopg (fetchall, text and binary formats), and on into pandas.
for name, f in [
    ("flight_sql", via_flight),
    ("http_json", via_json),
    ("postgres", via_pg),
    ("postgres_binary", via_pg_binary),
    ("postgres_pandas", via_pg_pandas),
]:
    frame, s = timed(f)
    out[name] = {"rows": len(frame), "seconds": s, "rows_per_s": len(frame) / s}
    del frame

# The mlflow client's loop over the same runs' histories, within a time budget: its rate is
# what is compared (the whole set would take this long: rows / rate).
os.environ["MLFLOW_TRACKING_URI"] = http
from mlflow.tracking import MlflowClient  # noqa: E402

client = MlflowClient()
runs = sorted(set(via_flight()["run_id"]))
rows, t = 0, time.perf_counter()
for run_id in runs:
    rows += len(client.get_metric_history(run_id, "loss"))
    if time.perf_counter() - t > mlflow_budget_s:
        break
s = time.perf_counter() - t
out["mlflow_get_metric_history"] = {"rows": rows, "seconds": s, "rows_per_s": rows / s}

# psql: connect + first query, wall time of the whole process, median of 20.
walls = []
for _ in range(20):
    t = time.perf_counter()
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "bench", "-d", "runql", "-XAtc",
         "SELECT count(*) FROM runs"],
        check=True,
        capture_output=True,
    )
    walls.append(time.perf_counter() - t)
out["psql_connect_first_query_ms"] = statistics.median(walls) * 1000
print(json.dumps(out))
