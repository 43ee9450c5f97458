"""Fixtures shared by the tests in this folder (the root conftest.py has the session plumbing)."""

import pytest
from pg import postgres  # noqa: F401 (the session's PostgreSQL server; see tests/pg.py)

from mlops_lab import datasets, gateway, training


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A logged credit model (logistic regression) downloaded to a folder: servable without a tracking store.

    ``uri`` was logged without a data contract; ``guarded_uri`` is the same pipeline logged with German
    Credit's (``contract_read`` is what :func:`gateway.data_contract` read back from the tracking store)."""
    import mlflow

    root = tmp_path_factory.mktemp("served-model")
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        split = training.credit_split(datasets.load_german_credit())
        pipeline = training.credit_pipeline("logistic_regression").fit(split.X_train, split.y_train)
        experiment = mlflow.create_experiment("served-model", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = training.log_sklearn_model(pipeline, split.X_train)
            guarded = training.log_sklearn_model(pipeline, split.X_train, name="guarded", contract="german_credit")
        path = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model"))
        guarded_path = mlflow.artifacts.download_artifacts(guarded.model_uri, dst_path=str(root / "guarded"))
        read = {"logged": gateway.data_contract(guarded.model_uri), "plain": gateway.data_contract(info.model_uri),
                "info": mlflow.models.get_model_info(guarded.model_uri).metadata}
    finally:
        mlflow.set_tracking_uri(saved)
    return {"uri": path, "pipeline": pipeline, "X": split.X_test, "guarded_uri": guarded_path, "contract_read": read}

