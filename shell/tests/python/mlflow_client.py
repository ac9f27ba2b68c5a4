"""Drives a tracking server with the official mlflow client; exits non-zero on any mismatch.

Run by shell/tests/it/mlflow.rs against `runql serve` (MLFLOW_TRACKING_URI is set by it).
Prints one JSON line with the ids it created, for the Rust side to check through SQL.
"""

import json
import math
import os

# The same script runs against `runql serve` and against `mlflow server`; where runql
# deliberately differs (docs/mlflow.md), the expectation depends on the target.
RUNQL = os.environ.get("COMPAT_TARGET", "runql") == "runql"

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except MlflowException as e:
        assert e.error_code == code, (e.error_code, str(e))
        return
    raise AssertionError(f"expected {code} from {fn.__name__}")


client = MlflowClient()
exp = mlflow.set_experiment("mlflow-compat")
assert exp.name == "mlflow-compat", exp

with mlflow.start_run(run_name="parent") as parent:
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"epochs": 3, "optimizer": "adam"})
    for step in range(5):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"acc": 0.9, "weird": float("nan"), "big": float("inf")}, step=5)
    mlflow.log_metric("no_step", 2.5)
    mlflow.set_tag("team", "vision")
    mlflow.set_tags({"stage": "dev"})
    with mlflow.start_run(run_name="child", nested=True) as child:
        mlflow.log_metric("x", 1.0)
    run_id = parent.info.run_id

    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)], history
    run = client.get_run(run_id)
    assert run.data.params == {"lr": "0.01", "epochs": "3", "optimizer": "adam"}, run.data.params
    assert math.isnan(run.data.metrics["weird"]), run.data.metrics
    # MLflow's SQL store clamps infinity to the largest double; runql keeps it.
    big = float("inf") if RUNQL else 1.7976931348623157e308
    assert run.data.metrics["big"] == big, run.data.metrics
    assert run.data.metrics["loss"] == 0.2, run.data.metrics
    assert run.data.metrics["no_step"] == 2.5
    assert run.data.tags["team"] == "vision" and run.data.tags["stage"] == "dev", run.data.tags
    assert run.info.status == "RUNNING", run.info

    # A dataset as an input.
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name="cifar10",
        digest="c1f4",
        source_type="http",
        source='{"url": "https://data.example/cifar10.tar"}',
    )
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])

    # Artifacts, through the mlflow-artifacts proxy.
    mlflow.log_text("hello", "notes/hello.txt")
    mlflow.log_dict({"a": 1}, "config.json")
    listed = client.list_artifacts(run_id)
    assert [(a.path, a.is_dir) for a in listed] == [("config.json", False), ("notes", True)], listed
    assert [a.path for a in client.list_artifacts(run_id, "notes")] == ["notes/hello.txt"]
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes/hello.txt")
    assert open(local).read() == "hello"

finished = client.get_run(run_id)
assert finished.info.status == "FINISHED", finished.info
assert finished.info.run_name == "parent", finished.info
child_run = client.get_run(child.info.run_id)
assert child_run.data.tags.get("mlflow.parentRunId") == run_id, child_run.data.tags
assert child_run.info.experiment_id == exp.experiment_id

# A failed run.
with_failure = client.create_run(exp.experiment_id, run_name="broken")
client.set_terminated(with_failure.info.run_id, status="FAILED")
assert client.get_run(with_failure.info.run_id).info.status == "FAILED"

# Paged history.
paged = client.create_run(exp.experiment_id, run_name="paged")
from mlflow.entities import Metric
client.log_batch(paged.info.run_id, metrics=[Metric("m", float(i), 1700000000000 + i, i) for i in range(1000)])
client.log_batch(paged.info.run_id, metrics=[Metric("m", float(i), 1700000000000 + i, i) for i in range(1000, 1500)])
assert len(client.get_metric_history(paged.info.run_id, "m")) == 1500

# Errors, with MLflow's codes.
expect_error("RESOURCE_DOES_NOT_EXIST", client.get_run, "0" * 32)
expect_error("RESOURCE_ALREADY_EXISTS", client.create_experiment, "mlflow-compat")
# The client splits big batches itself; the server enforces MLflow's limit on raw requests.
import os

import requests

raw = requests.post(
    os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-batch",
    json={
        "run_id": paged.info.run_id,
        "metrics": [{"key": "m", "value": 1.0, "timestamp": 0, "step": i} for i in range(1001)],
    },
)
assert raw.status_code == 400, raw.text
assert raw.json()["error_code"] == "INVALID_PARAMETER_VALUE", raw.text
# A deleted tag reads as never set; deleting it again is MLflow's 404.
client.set_tag(paged.info.run_id, "scratch", "x")
client.delete_tag(paged.info.run_id, "scratch")
assert "scratch" not in client.get_run(paged.info.run_id).data.tags
expect_error("RESOURCE_DOES_NOT_EXIST", client.delete_tag, paged.info.run_id, "scratch")
# Renaming an experiment keeps its id and its runs; the old name is free again.
renamed = client.create_experiment("to-rename")
rr = client.create_run(renamed)
client.rename_experiment(renamed, "renamed")
assert client.get_experiment_by_name("renamed").experiment_id == renamed
assert client.get_experiment_by_name("to-rename") is None
assert [r.info.run_id for r in client.search_runs([renamed])] == [rr.info.run_id]
assert client.create_experiment("to-rename") != renamed
expect_error("RESOURCE_ALREADY_EXISTS", client.create_experiment, "renamed")
# A field of the wrong type is worded as MLflow words it.
typed = requests.post(
    os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-batch",
    json={"run_id": paged.info.run_id, "metrics": "foo"},
)
assert typed.status_code == 400, typed.text
assert "Invalid value \"foo\" for parameter 'metrics' supplied" in typed.json()["message"], typed.text
# An experiment's artifact_location is kept and returned.
located = client.create_experiment("with-location", artifact_location="s3://bucket/with-location")
assert client.get_experiment(located).artifact_location == "s3://bucket/with-location"
# Python's json writes bare NaN; the server takes it.
nan = requests.post(
    os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-metric",
    data='{"run_id": "%s", "key": "bare", "value": NaN, "timestamp": 1, "step": 0}' % paged.info.run_id,
    headers={"content-type": "application/json"},
)
assert nan.status_code == 200, nan.text
# A retried request (same body) does not log its points twice.
retry = {"run_id": paged.info.run_id, "metrics": [{"key": "r", "value": 1.0, "timestamp": 5, "step": 1}]}
for _ in range(3):
    assert requests.post(os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-batch", json=retry).ok
assert len(client.get_metric_history(paged.info.run_id, "r")) == 1
# Artifact paths that leave the run are refused.
escape = requests.put(
    os.environ["MLFLOW_TRACKING_URI"]
    + f"/api/2.0/mlflow-artifacts/artifacts/{exp.experiment_id}/{paged.info.run_id}/artifacts/%2E%2E/%2E%2E/x",
    data=b"nope",
)
assert escape.status_code == 400, (escape.status_code, escape.text)
expect_error("INVALID_PARAMETER_VALUE", client.log_param, run_id, "lr", "0.5")
client.set_terminated(paged.info.run_id)

# Search: MLflow filter strings, order_by, paging.
ids = lambda runs: [r.info.run_id for r in runs]
found = client.search_runs([exp.experiment_id], "params.lr = '0.01' and metrics.loss < 0.5")
assert ids(found) == [run_id], found
assert ids(client.search_runs([exp.experiment_id], "tags.team = 'vision'")) == [run_id]
assert ids(client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")) == [with_failure.info.run_id]
assert ids(client.search_runs([exp.experiment_id], "metrics.loss > 100")) == []
pair = f"attributes.run_id IN ('{child.info.run_id}', '{paged.info.run_id}')"
assert ids(client.search_runs([exp.experiment_id], pair, order_by=["attributes.run_name DESC"])) == [
    paged.info.run_id,
    child.info.run_id,
]
by_name = client.search_runs([exp.experiment_id], order_by=["attributes.run_name ASC"])
assert [r.info.run_name for r in by_name] == ["broken", "child", "paged", "parent"], by_name
first = client.search_runs([exp.experiment_id], max_results=3, order_by=["attributes.run_name"])
assert len(first) == 3 and first.token, first
rest = client.search_runs([exp.experiment_id], max_results=3, order_by=["attributes.run_name"], page_token=first.token)
assert [r.info.run_name for r in rest] == ["parent"] and not rest.token
assert found[0].data.params["lr"] == "0.01" and found[0].data.metrics["loss"] == 0.2
expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [exp.experiment_id], "metrics.loss <")
# Runs without the metric sort last, whichever the direction.
for direction in ["ASC", "DESC"]:
    by_loss = client.search_runs([exp.experiment_id], order_by=[f"metrics.loss {direction}"])
    assert ids(by_loss)[0] == run_id and len(by_loss) == 4, (direction, by_loss)
assert ids(client.search_runs([exp.experiment_id], "tags.team LIKE 'vis%'")) == [run_id]
assert ids(client.search_runs([exp.experiment_id], "tags.team ILIKE 'VIS%'")) == [run_id]
assert ids(client.search_runs([exp.experiment_id], "metrics.loss >= 0.2 and metrics.loss <= 0.2")) == [run_id]
assert len(client.search_runs([exp.experiment_id], "attributes.start_time > 0")) == 4
assert ids(client.search_runs([exp.experiment_id], "attributes.run_name = 'broken' and attributes.status != 'FINISHED'")) == [
    with_failure.info.run_id
]

# Delete and restore.
from mlflow.entities import ViewType

client.delete_run(with_failure.info.run_id)
assert client.get_run(with_failure.info.run_id).info.lifecycle_stage == "deleted"
assert with_failure.info.run_id not in ids(client.search_runs([exp.experiment_id]))
assert ids(client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY)) == [with_failure.info.run_id]
assert len(client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)) == 4
client.restore_run(with_failure.info.run_id)
assert client.get_run(with_failure.info.run_id).info.lifecycle_stage == "active"
expect_error("RESOURCE_DOES_NOT_EXIST", client.delete_run, "f" * 32)
fluent = mlflow.search_runs(
    experiment_names=["mlflow-compat"], filter_string="metrics.loss < 0.5", output_format="list"
)
assert ids(fluent) == [run_id], fluent

# Experiments: tags, search with filters / order_by / paging, delete and restore.
other = client.create_experiment("compat-other", tags={"team": "nlp"})
third = client.create_experiment("compat-third")
client.set_experiment_tag(third, "team", "vision")
client.set_experiment_tag(third, "temp", "x")
client.delete_experiment_tag(third, "temp")
assert client.get_experiment(third).tags == {"team": "vision"}, client.get_experiment(third).tags
names = lambda exps: [e.name for e in exps]
assert names(client.search_experiments(filter_string="name LIKE 'compat-%'", order_by=["name ASC"])) == [
    "compat-other",
    "compat-third",
]
assert names(client.search_experiments(filter_string="tags.team = 'vision'")) == ["compat-third"]
assert names(client.search_experiments(filter_string="name ILIKE 'COMPAT-O%'")) == ["compat-other"]
page1 = client.search_experiments(filter_string="name LIKE 'compat-%'", order_by=["name DESC"], max_results=1)
assert names(page1) == ["compat-third"] and page1.token, page1
page2 = client.search_experiments(
    filter_string="name LIKE 'compat-%'", order_by=["name DESC"], max_results=1, page_token=page1.token
)
assert names(page2) == ["compat-other"] and not page2.token, page2
in_other = client.create_run(other, run_name="in-other")
client.set_terminated(in_other.info.run_id)
client.delete_experiment(other)
assert client.get_experiment(other).lifecycle_stage == "deleted"
assert client.get_run(in_other.info.run_id).info.lifecycle_stage == "deleted"
assert "compat-other" not in names(client.search_experiments())
assert names(client.search_experiments(view_type=ViewType.DELETED_ONLY)) == ["compat-other"]
expect_error("RESOURCE_ALREADY_EXISTS", client.create_experiment, "compat-other")
expect_error("RESOURCE_DOES_NOT_EXIST", client.delete_experiment, other)
expect_error("RESOURCE_DOES_NOT_EXIST", client.restore_experiment, third)
client.restore_experiment(other)
assert client.get_experiment_by_name("compat-other").lifecycle_stage == "active"
assert client.get_run(in_other.info.run_id).info.lifecycle_stage == "active"
expect_error("RESOURCE_DOES_NOT_EXIST", client.get_experiment, "987654")
assert client.get_experiment_by_name("no-such-experiment") is None
expect_error("INVALID_PARAMETER_VALUE", client.search_experiments, filter_string="name ~ 'x'")

# Run lifecycle as MLflow's server has it (issue 24): made-up names, renames, the client's
# user, deleted runs refusing writes, points sent twice kept once, long values cut.
parity = client.create_experiment("compat-parity")
unnamed = client.create_run(parity)
name = unnamed.info.run_name
assert len(name.split("-")) == 3 and len(name) <= 20, name
assert client.get_run(unnamed.info.run_id).data.tags["mlflow.runName"] == name
rid = unnamed.info.run_id
client.update_run(rid, name="renamed")
got = client.get_run(rid)
assert got.info.run_name == "renamed" and got.data.tags["mlflow.runName"] == "renamed", got.info
client.set_tag(rid, "mlflow.runName", "by-tag")
assert client.get_run(rid).info.run_name == "by-tag"
with mlflow.start_run(experiment_id=parity, run_name="fluent") as fluent_run:
    pass
got = client.get_run(fluent_run.info.run_id)
assert got.info.user_id == got.data.tags["mlflow.user"] != "", (got.info.user_id, got.data.tags)
by_user = client.search_runs([parity], filter_string=f"attributes.user_id = '{got.info.user_id}'")
assert fluent_run.info.run_id in ids(by_user), by_user
# Points sent again identically: kept once (xgboost's and lightgbm's autologgers send them).
for _ in range(2):
    client.log_metric(rid, "dup", 2.5, timestamp=100, step=1)
client.log_batch(rid, metrics=[Metric("dup", 2.5, 100, 1), Metric("dup", 3.5, 100, 1)])
assert sorted(m.value for m in client.get_metric_history(rid, "dup")) == [2.5, 3.5]
# A param past 6,000 characters is cut to 6,000, as MLflow's server cuts it.
client.log_param(rid, "long", "x" * 7000)
assert len(client.get_run(rid).data.params["long"]) == 6000
# A deleted run refuses writes; restored, it takes them again.
client.delete_run(rid)
expect_error("INVALID_PARAMETER_VALUE", client.log_metric, rid, "after", 1.0)
expect_error("INVALID_PARAMETER_VALUE", client.set_tag, rid, "after", "1")
assert client.get_run(rid).info.lifecycle_stage == "deleted"
client.restore_run(rid)
client.log_metric(rid, "after", 1.0)
got = client.get_run(rid)
assert got.info.lifecycle_stage == "active" and got.data.metrics["after"] == 1.0, got.info
# Logging into a finished run keeps it finished, with its end time.
client.set_terminated(rid, end_time=1_800_000_000_000)
client.log_metric(rid, "late", 1.0)
got = client.get_run(rid)
assert (got.info.status, got.info.end_time) == ("FINISHED", 1_800_000_000_000), got.info

# Search filters MLflow answers: IS NULL on params and tags, quoted keys, datasets, artifact_uri.
with_lr = client.create_run(parity, run_name="with-lr")
client.log_param(with_lr.info.run_id, "lr", "0.1")
client.log_metric(with_lr.info.run_id, "val/acc", 0.9)
client.log_inputs(
    with_lr.info.run_id,
    datasets=[DatasetInput(Dataset(name="ds-one", digest="d1", source_type="local", source="{}"), tags=[InputTag("mlflow.data.context", "train")])],
)
found = lambda f: sorted(r.info.run_name for r in client.search_runs([parity], filter_string=f))
assert found("params.lr IS NOT NULL") == ["with-lr"], found("params.lr IS NOT NULL")
nulls = found("params.lr IS NULL")
assert "with-lr" not in nulls and "by-tag" in nulls and "fluent" in nulls, nulls
assert found('metrics."val/acc" > 0.5') == ["with-lr"]
assert found("metrics.`val/acc` > 0.5") == ["with-lr"]
assert found("datasets.name = 'ds-one'") == ["with-lr"]
assert found("datasets.context = 'train' AND datasets.digest = 'd1'") == ["with-lr"]
assert found("datasets.name IN ('ds-one', 'ds-two')") == ["with-lr"]
assert found("attributes.artifact_uri LIKE '%" + with_lr.info.run_id + "%'") == ["with-lr"]
expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [parity], filter_string="metrics.loss IS NULL")
expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [parity], max_results=50001)

# MLflow's system metrics (log_system_metrics=True, psutil): sampled every 0.5 s here.
import time
import urllib.request

os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.5"
os.environ["MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING"] = "1"
with mlflow.start_run(experiment_id=parity, run_name="sysmetrics", log_system_metrics=True) as sys_run:
    mlflow.log_metric("loss", 1.0)
    deadline = time.time() + 30
    while not client.get_metric_history(sys_run.info.run_id, "system/cpu_utilization_percentage"):
        assert time.time() < deadline, "no system metrics in 30 s"
        time.sleep(0.25)
cpu = client.get_metric_history(sys_run.info.run_id, "system/cpu_utilization_percentage")
assert all(0 <= m.value <= 100 for m in cpu) and cpu[0].step == 0, cpu
# The latest sample is among the run's metrics, as in MLflow.
assert "system/cpu_utilization_percentage" in client.get_run(sys_run.info.run_id).data.metrics
# And search filters see it.
hot = client.search_runs([parity], "metrics.`system/cpu_utilization_percentage` >= 0")
assert sys_run.info.run_id in [r.info.run_id for r in hot], hot
# A search's pages list it among each run's metrics too, as MLflow's do.
page = {r.info.run_id: r for r in client.search_runs([parity])}
assert "system/cpu_utilization_percentage" in page[sys_run.info.run_id].data.metrics, page
assert "loss" in page[sys_run.info.run_id].data.metrics
if RUNQL:
    # In runql they are samples of the machine: the `system_metrics` table (the System tab).
    body = json.dumps(
        {"sql": f"SELECT DISTINCT key FROM system_metrics WHERE run_id = '{sys_run.info.run_id}'"}
    ).encode()
    req = urllib.request.Request(
        os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/sql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    answer = urllib.request.urlopen(req, timeout=30).read().decode()
    assert "system/cpu_utilization_percentage" in answer, answer
    assert "system/system_memory_usage_megabytes" in answer, answer

# The endpoints MLflow's own UI reads: bulk and sampled histories, the tracking API's artifact
# listing and download, its upload, dataset summaries. Same answers from runql and MLflow.
base = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
ui_runs = []
for name, steps in [("ui-a", range(0, 10)), ("ui-b", range(5, 8))]:
    with mlflow.start_run(experiment_id=parity, run_name=name) as r:
        client.log_batch(r.info.run_id, metrics=[Metric("loss", float(s), 1700000000000 + s, s) for s in steps])
        mlflow.log_text("hello", "notes/hello.txt")
        ui_runs.append(r.info.run_id)
ua, ub = ui_runs
bulk = requests.get(
    base + "/ajax-api/2.0/mlflow/metrics/get-history-bulk",
    params={"run_id": [ub, ua], "metric_key": "loss", "max_results": 12},
)
assert bulk.status_code == 200, bulk.text
got = [(m["run_id"], m["step"], m["value"]) for m in bulk.json()["metrics"]]
want = sorted([(ua, s, float(s)) for s in range(10)] + [(ub, s, float(s)) for s in range(5, 8)])[:12]
assert got == want, got
sampled = requests.get(
    base + "/api/2.0/mlflow/metrics/get-history-bulk-interval",
    params={"run_ids": [ua, ub], "metric_key": "loss", "max_results": 3},
)
assert sampled.status_code == 200, sampled.text
got = [(m["run_id"] == ua, m["step"]) for m in sampled.json()["metrics"]]
# Each run sampled on its own: a's ten points in three buckets (their first points 0, 4, 7),
# the last point (9) in place of the last sample; b's three points all kept.
assert got == [(True, s) for s in [0, 4, 9]] + [(False, s) for s in [5, 6, 7]], got
bad = requests.get(
    base + "/api/2.0/mlflow/metrics/get-history-bulk-interval",
    params={"run_ids": [ua], "metric_key": "loss", "start_step": 3},
)
assert bad.status_code == 400 and "both must be specified" in bad.json()["message"], bad.text
listing = requests.get(base + "/api/2.0/mlflow/artifacts/list", params={"run_id": ua, "path": "notes"})
assert listing.status_code == 200, listing.text
assert [(f["path"], f["is_dir"], f["file_size"]) for f in listing.json()["files"]] == [("notes/hello.txt", False, 5)], listing.text
assert listing.json()["root_uri"] == client.get_run(ua).info.artifact_uri, listing.text
unsafe = requests.get(base + "/api/2.0/mlflow/artifacts/list", params={"run_id": ua, "path": "../x"})
assert unsafe.status_code == 400 and unsafe.json()["message"] == "Invalid path", unsafe.text
up = requests.post(
    base + "/ajax-api/2.0/mlflow/upload-artifact",
    params={"run_uuid": ua, "path": "uploads/table.csv"},
    data=b"a,b\n1,2\n",
)
assert up.status_code == 200, up.text
down = requests.get(base + "/get-artifact", params={"run_uuid": ua, "path": "uploads/table.csv"})
assert down.status_code == 200 and down.content == b"a,b\n1,2\n", (down.status_code, down.text)
assert down.headers["content-type"].startswith("text/plain"), down.headers
assert down.headers["content-disposition"].startswith("attachment"), down.headers
empty = requests.post(
    base + "/ajax-api/2.0/mlflow/upload-artifact", params={"run_uuid": ua, "path": "x.txt"}, data=b""
)
assert empty.status_code == 400 and empty.json()["message"] == "Request must specify data.", empty.text
requests.post(
    base + "/api/2.0/mlflow/runs/log-inputs",
    json={"run_id": ua, "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "train"}], "dataset": {"name": "ui-ds", "digest": "d9", "source_type": "local", "source": "{\"uri\": \"/data/ui\"}"}}]},
).raise_for_status()
summaries = requests.post(base + "/ajax-api/2.0/mlflow/experiments/search-datasets", json={"experiment_ids": [parity]})
assert summaries.status_code == 200, summaries.text
assert {"experiment_id": parity, "name": "ui-ds", "digest": "d9", "context": "train"} in summaries.json()["dataset_summaries"], summaries.text

# MLflow 3: metrics logged for a logged model read back on the model (and on the run), and
# logged-model searches filter and order on them.
with mlflow.start_run(experiment_id=parity, run_name="model-metrics") as mr:
    good = mlflow.create_external_model(name="good")
    bad = mlflow.create_external_model(name="bad")
    mlflow.log_metric("acc", 0.9, step=1, model_id=good.model_id)
    mlflow.log_metric("acc", 0.4, step=1, model_id=bad.model_id)
got = client.get_logged_model(good.model_id).metrics
assert [(m.key, m.value, m.step, m.run_id) for m in got] == [("acc", 0.9, 1, mr.info.run_id)], got
assert client.get_run(mr.info.run_id).data.metrics["acc"] in (0.9, 0.4)
names = lambda models: [m.name for m in models]
found = mlflow.search_logged_models(experiment_ids=[parity], filter_string="metrics.acc > 0.5", output_format="list")
assert names(found) == ["good"], names(found)
ranked = mlflow.search_logged_models(
    experiment_ids=[parity],
    filter_string="name IN ('good', 'bad')",
    order_by=[{"field_name": "metrics.acc", "ascending": False}],
    output_format="list",
)
assert names(ranked) == ["good", "bad"], names(ranked)

# MLflow 3 tracing: a traced function in a run, read back through the client (and, in runql,
# through SQL: mlflow.traces and mlflow.spans).
@mlflow.trace(span_type="CHAIN")
def pipeline(question):
    return answer(question)


@mlflow.trace(span_type="LLM")
def answer(question):
    return "42"


mlflow.set_experiment(experiment_id=parity)
with mlflow.start_run(experiment_id=parity, run_name="traced") as traced:
    assert pipeline("why?") == "42"
trace_id = mlflow.get_last_active_trace_id()
mlflow.flush_trace_async_logging()
trace = mlflow.get_trace(trace_id)
assert trace is not None and trace.info.trace_id == trace_id, trace
spans = {s.name: s for s in trace.data.spans}
assert set(spans) == {"pipeline", "answer"}, spans
assert spans["answer"].inputs == {"question": "why?"} and spans["answer"].outputs == "42", spans["answer"]
assert spans["answer"].parent_id == spans["pipeline"].span_id
assert trace.info.request_metadata.get("mlflow.sourceRun") == traced.info.run_id, trace.info
found = mlflow.search_traces(locations=[parity], return_type="list")
assert trace_id in [t.info.trace_id for t in found], found
in_run = mlflow.search_traces(locations=[parity], run_id=traced.info.run_id, return_type="list")
assert [t.info.trace_id for t in in_run] == [trace_id], in_run
if RUNQL:
    body = json.dumps(
        {"sql": f"SELECT s.name, s.span_type, s.run_id, t.state FROM mlflow.spans s JOIN mlflow.traces t USING (trace_id) "
                f"WHERE s.trace_id = '{trace_id}' ORDER BY s.start_time"}
    ).encode()
    req = urllib.request.Request(
        base + "/api/sql", data=body, headers={"Content-Type": "application/json", "Accept": "text/csv"}
    )
    rows = urllib.request.urlopen(req, timeout=30).read().decode().strip().splitlines()
    assert rows[1:] == [
        f"pipeline,CHAIN,{traced.info.run_id},OK",
        f"answer,LLM,{traced.info.run_id},OK",
    ], rows

# After the fact: trace tags, assessments (feedback, expectations, updates, overrides,
# deletes), filters on spans and assessments, order_by, deletes. Same answers from both.
from mlflow.entities import AssessmentSource, Feedback

edited = []
for q in ["a", "b", "c"]:
    pipeline(q)
    edited.append(mlflow.get_last_active_trace_id())
mlflow.flush_trace_async_logging()
first = edited[0]
client.set_trace_tag(first, "color", "red")
assert mlflow.get_trace(first).info.tags.get("color") == "red"
tagged = mlflow.search_traces(locations=[parity], filter_string="tags.color = 'red'", return_type="list")
assert [t.info.trace_id for t in tagged] == [first], tagged
client.delete_trace_tag(first, "color")
assert "color" not in mlflow.get_trace(first).info.tags
expect_error("RESOURCE_DOES_NOT_EXIST", client.delete_trace_tag, first, "color")
fb = mlflow.log_feedback(trace_id=first, name="quality", value=0.8, rationale="fine",
                         source=AssessmentSource(source_type="HUMAN", source_id="me"))
ex = mlflow.log_expectation(trace_id=first, name="expected", value="A")
assert [(a.name, a.value) for a in mlflow.get_trace(first).info.assessments] == [("quality", 0.8), ("expected", "A")]
assert mlflow.get_assessment(first, fb.assessment_id).rationale == "fine"
updated = mlflow.update_assessment(trace_id=first, assessment_id=fb.assessment_id,
                                   assessment=Feedback(name="quality", value=0.9))
assert updated.value == 0.9 and updated.rationale == "fine", updated
good = mlflow.search_traces(locations=[parity], filter_string="feedback.quality = '0.9'", return_type="list")
assert [t.info.trace_id for t in good] == [first], good
mlflow.delete_assessment(trace_id=first, assessment_id=ex.assessment_id)
assert [(a.name, a.value) for a in mlflow.get_trace(first).info.assessments] == [("quality", 0.9)]
over = mlflow.override_feedback(trace_id=first, assessment_id=fb.assessment_id, value=0.1, rationale="no")
listed = {a.assessment_id: a for a in mlflow.get_trace(first).info.assessments}
assert listed[fb.assessment_id].valid is False and listed[over.assessment_id].value == 0.1, listed
mlflow.delete_assessment(trace_id=first, assessment_id=over.assessment_id)
assert mlflow.get_assessment(first, fb.assessment_id).valid is True
llm = mlflow.search_traces(locations=[parity], filter_string="span.type = 'LLM' AND span.name = 'answer'", return_type="list")
assert set(edited) <= {t.info.trace_id for t in llm}, llm
assert not mlflow.search_traces(locations=[parity], filter_string="span.name = 'nothing'", return_type="list")
oldest_first = [t.info.request_time for t in mlflow.search_traces(locations=[parity], order_by=["timestamp_ms ASC"], return_type="list")]
assert len(oldest_first) > 3 and oldest_first == sorted(oldest_first), oldest_first
newest_first = [t.info.request_time for t in mlflow.search_traces(locations=[parity], return_type="list")]
assert newest_first == sorted(newest_first, reverse=True), newest_first
assert client.delete_traces(experiment_id=parity, trace_ids=[edited[1]]) == 1
left = {t.info.trace_id for t in mlflow.search_traces(locations=[parity], return_type="list")}
assert edited[1] not in left and first in left, left
assert mlflow.get_trace(edited[1]) is None
# An experiment whose name has a dot: the client refuses trace searches of an id with one.
dotted = client.create_experiment("bert-v1.5")
assert "." not in dotted, dotted
assert client.get_experiment(dotted).name == "bert-v1.5"
mlflow.set_experiment(experiment_id=dotted)
pipeline("dot")
dotted_trace = mlflow.get_last_active_trace_id()
mlflow.flush_trace_async_logging()
assert [t.info.trace_id for t in mlflow.search_traces(locations=[dotted], return_type="list")] == [dotted_trace]
with mlflow.start_run(experiment_id=dotted, run_name="dotted-run") as dr2:
    mlflow.log_metric("m", 1.0)
assert client.get_run(dr2.info.run_id).info.experiment_id == dotted
assert [r.info.run_id for r in client.search_runs([dotted])] == [dr2.info.run_id]
mlflow.set_experiment(experiment_id=parity)
if RUNQL:
    body = json.dumps(
        {"sql": "SELECT name, kind, value_num, valid, deleted FROM mlflow.assessments "
                f"WHERE trace_id = '{first}' AND assessment_id = '{fb.assessment_id}' ORDER BY at"}
    ).encode()
    req = urllib.request.Request(
        base + "/api/sql", data=body, headers={"Content-Type": "application/json", "Accept": "text/csv"}
    )
    rows = urllib.request.urlopen(req, timeout=30).read().decode().strip().splitlines()
    # Created, updated, overridden (invalid), valid again once its override was deleted.
    assert rows[1:] == [
        "quality,feedback,0.8,true,false",
        "quality,feedback,0.9,true,false",
        "quality,feedback,0.9,false,false",
        "quality,feedback,0.9,true,false",
    ], rows

# A dataset's source type, schema and profile are kept and returned as logged.
import pandas as pd

frame = mlflow.data.from_pandas(
    pd.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}), source="s3://bucket/table.csv", name="tabular"
)
with mlflow.start_run(experiment_id=parity, run_name="with-dataset") as dr:
    mlflow.log_input(frame, context="training")
logged = frame.to_dict()
got = client.get_run(dr.info.run_id).inputs.dataset_inputs[0].dataset
assert (got.name, got.digest, got.source_type) == (logged["name"], logged["digest"], logged["source_type"]), got
assert json.loads(got.schema) == json.loads(logged["schema"]), (got.schema, logged["schema"])
assert json.loads(got.profile) == json.loads(logged["profile"]), (got.profile, logged["profile"])

print(json.dumps({"experiment_id": exp.experiment_id, "parent": run_id, "child": child.info.run_id}))
