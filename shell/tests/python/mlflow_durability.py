"""One client of the durability test (shell/tests/it/durability.rs): logs BATCHES batches of
100 points into a run of its own through the official mlflow client, while the server it talks
to is killed and restarted under it. The client retries (as it does by default); after every
batch the server acknowledged it prints `acked <run> <last step>`, and at the end `done <run>`.

Usage: mlflow_durability.py NAME (MLFLOW_TRACKING_URI points at the server)
"""

import os
import sys

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

out = sys.stdout
# The mlflow client prints "View run …" lines: keep stdout for ours.
sys.stdout = sys.stderr

name = sys.argv[1]
batches = int(os.environ.get("BATCHES", "200"))
client = MlflowClient()

def experiment(name):
    """The experiment's id, creating it if need be. A create the server applied but whose answer
    a kill lost is retried by the client and answered RESOURCE_ALREADY_EXISTS (as MLflow's own
    server does); `mlflow.set_experiment` reads it back then, and so do we."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


exp_id = experiment(f"durability-{name}")
run = client.create_run(exp_id, run_name=name)
rid = run.info.run_id
print(f"run {rid}", file=out, flush=True)
for b in range(batches):
    step0 = b * 100
    metrics = [Metric("loss", float(s), 1_700_000_000_000 + s, s) for s in range(step0, step0 + 100)]
    client.log_batch(rid, metrics=metrics)
    print(f"acked {rid} {step0 + 99}", file=out, flush=True)
client.set_terminated(rid)
print(f"done {rid}", file=out, flush=True)
