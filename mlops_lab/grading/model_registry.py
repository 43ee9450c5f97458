"""Checks for ``labs/08_model_registry.ipynb``: register, organise, fetch and serve from the registry."""

from __future__ import annotations

from mlops_lab.grading import Lab

EXPERIMENT = "lab-08-model-registry"
REGISTERED_MODEL = "lab-08-credit-risk"

LAB = Lab("08_model_registry", "Model registry: register, organise with aliases and tags, fetch, serve")


def _client():
    import mlflow

    from mlops_lab.config import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient()


def _versions():
    return _client().search_model_versions(f"name = '{REGISTERED_MODEL}'")


@LAB.check(
    "registered_through_gate",
    hint="Call `governance.gate(candidate, baseline, \"credit_risk\", eval_data, registered_name=checks.REGISTERED_MODEL)` "
    "for both models (logistic regression first, with no baseline); each passing model becomes a version.",
)
def registered_through_gate(ns: dict) -> None:
    versions = _versions()
    assert len(versions) >= 2, f"{REGISTERED_MODEL!r} has {len(versions)} version(s); register both models"
    unvalidated = [v.version for v in versions if v.tags.get("validation_status") != "passed"]
    assert not unvalidated, f"versions {unvalidated} were registered without passing the gate"


@LAB.check(
    "organised",
    hint="`registry.promote(checks.REGISTERED_MODEL, <version>, reason=\"...\")` makes a champion; "
    "`client.set_registered_model_tag(name, \"team\", \"credit-risk\")` and "
    "`client.set_model_version_tag(name, version, \"algorithm\", ...)` for every version.",
)
def organised(ns: dict) -> None:
    client = _client()
    model = client.get_registered_model(REGISTERED_MODEL)
    assert "champion" in model.aliases, "no version has the alias 'champion'"
    champion = client.get_model_version(REGISTERED_MODEL, model.aliases["champion"])
    assert champion.tags.get("champion.reason"), "promote with registry.promote so the reason is recorded"
    assert model.tags.get("team") == "credit-risk", "the registered model has no tag team=credit-risk"
    missing = [v.version for v in _versions() if not v.tags.get("algorithm")]
    assert not missing, f"versions {missing} have no 'algorithm' tag"
    boosted = ns.get("boosted")
    assert boosted is not None and champion.source == boosted.model_uri, "the champion should be the boosted model's version"


@LAB.check(
    "fetched_by_alias",
    hint="`champion = mlflow.pyfunc.load_model(f\"models:/{checks.REGISTERED_MODEL}@champion\")`, then "
    "`scores = champion.predict(batch)`.",
)
def fetched_by_alias(ns: dict) -> None:
    import mlflow
    import numpy as np

    scores, batch = ns.get("scores"), ns.get("batch")
    assert scores is not None, "there is no variable `scores`"
    _client()
    expected = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@champion").predict(batch)
    assert np.array_equal(np.asarray(scores), np.asarray(expected)), "`scores` are not the champion's predictions for `batch`"


@LAB.check(
    "served_a_batch",
    hint="Write `batch` to a CSV file and score it with `packaging.cli_predict(f\"models:/{checks.REGISTERED_MODEL}@champion\", "
    "csv_path, json_path)` (it runs `mlflow models predict`); keep the result in `served`.",
)
def served_a_batch(ns: dict) -> None:
    import json
    from pathlib import Path

    served, scores, json_path = ns.get("served"), ns.get("scores"), ns.get("json_path")
    assert isinstance(served, list), "`served` should be the list cli_predict returned"
    assert json_path is not None and Path(json_path).is_file(), "keep the output file's path in `json_path`"
    written = json.loads(Path(json_path).read_text()).get("predictions")
    assert written == served, "`served` is not what `mlflow models predict` wrote to `json_path`"
    assert scores is not None and served == list(map(int, scores)), "the served predictions differ from `scores`"
