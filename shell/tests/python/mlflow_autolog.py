"""mlflow.sklearn.autolog() against a tracking server, with its defaults: params, training
metrics and tags of a real scikit-learn fit arrive, the dataset is logged as an input, and the
model is logged (MLflow 3's logged models), linked to the run and loadable again.
Prints the run id as JSON for the Rust side."""

import json

import mlflow
from mlflow.tracking import MlflowClient
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

exp = mlflow.set_experiment("autolog")
mlflow.sklearn.autolog(silent=True)
X, y = make_classification(n_samples=200, n_features=5, random_state=0)
with mlflow.start_run(run_name="sklearn") as run:
    fitted = LogisticRegression(C=0.5, max_iter=200).fit(X, y)

client = MlflowClient()
r = client.get_run(run.info.run_id)
assert r.data.params["C"] == "0.5", r.data.params
assert r.data.params["max_iter"] == "200", r.data.params
assert 0.5 < r.data.metrics["training_accuracy_score"] <= 1.0, r.data.metrics
assert r.data.tags["estimator_name"] == "LogisticRegression", r.data.tags
assert r.info.status == "FINISHED"
assert [d.tags[0].value for d in r.inputs.dataset_inputs] == ["train"], r.inputs

# The model: one logged model of this run, READY, whose files load back into the same model.
outputs = r.outputs.model_outputs
assert len(outputs) == 1, r.outputs
model = client.get_logged_model(outputs[0].model_id)
assert model.source_run_id == run.info.run_id, model
assert model.status.to_int() == mlflow.entities.LoggedModelStatus.READY.to_int(), model.status
found = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
assert [m.model_id for m in found] == [model.model_id], found
assert mlflow.search_logged_models(
    experiment_ids=[exp.experiment_id], filter_string="name = 'no-such-model'", output_format="list"
) == []
loaded = mlflow.sklearn.load_model(f"models:/{model.model_id}")
assert (loaded.predict(X) == fitted.predict(X)).all()
client.set_logged_model_tags(model.model_id, {"reviewed": "yes"})
assert client.get_logged_model(model.model_id).tags["reviewed"] == "yes"
print(json.dumps({"run": run.info.run_id, "model": model.model_id}))
