"""mlflow.sklearn.autolog() against a tracking server: params, training metrics and tags of a
real scikit-learn fit arrive. Prints the run id as JSON for the Rust side."""

import json

import mlflow
from mlflow.tracking import MlflowClient
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

mlflow.set_experiment("autolog")
# Models and datasets are left out: runql has no logged models (MLflow 3) yet.
mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True)
X, y = make_classification(n_samples=200, n_features=5, random_state=0)
with mlflow.start_run(run_name="sklearn") as run:
    LogisticRegression(C=0.5, max_iter=200).fit(X, y)

r = MlflowClient().get_run(run.info.run_id)
assert r.data.params["C"] == "0.5", r.data.params
assert r.data.params["max_iter"] == "200", r.data.params
assert 0.5 < r.data.metrics["training_accuracy_score"] <= 1.0, r.data.metrics
assert r.data.tags["estimator_name"] == "LogisticRegression", r.data.tags
assert r.info.status == "FINISHED"
print(json.dumps({"run": run.info.run_id}))
