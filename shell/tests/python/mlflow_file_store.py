"""Writes an MLflow file store (mlruns/) with the real `mlflow` client, for `runql import
mlflow`'s test: argv[1] is the folder. Prints the run ids as JSON."""

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

# MLflow 3.7+ keeps the file store for the folders teams already have, behind this switch.
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
root = os.path.abspath(sys.argv[1])
mlflow.set_tracking_uri("file://" + root)
client = MlflowClient()
out = {}
exp = client.create_experiment("vision sweep", tags={"team": "cv"})
mlflow.set_experiment(experiment_id=exp)
with mlflow.start_run(run_name="parent") as parent:
    out["parent"] = parent.info.run_id
    mlflow.log_params({"lr": 0.01, "optimizer": "adam"})
    mlflow.set_tag("stage", "dev")
    for step in range(50):
        mlflow.log_metric("train/loss", 1.0 / (step + 1), step=step)
    mlflow.log_metric("acc", 0.9)
    art = os.path.join(root, "..", "notes.txt")
    with open(art, "w") as f:
        f.write("hello")
    mlflow.log_artifact(art, artifact_path="docs")
    with mlflow.start_run(run_name="child", nested=True) as child:
        out["child"] = child.info.run_id
        mlflow.log_metric("val/loss", 0.5, step=0)
with mlflow.start_run(run_name="broken") as broken:
    out["broken"] = broken.info.run_id
mlflow.end_run()
client.set_terminated(broken.info.run_id, status="FAILED")
with mlflow.start_run(run_name="gone") as gone:
    out["gone"] = gone.info.run_id
client.delete_run(gone.info.run_id)
old = client.create_experiment("old")
with mlflow.start_run(experiment_id=old, run_name="ancient") as ancient:
    out["ancient"] = ancient.info.run_id
client.delete_experiment(old)
print(json.dumps(out))
