"""The strategy spec, the inference log and the router's command line, without servers."""

from __future__ import annotations

import json
import sqlite3
import threading

import pandas as pd
import pytest

from mlops_lab import cli, deployment
from mlops_lab.deployment import SpecError, load_spec
from mlops_lab.deployment.log import BODY_LIMIT, InferenceLog, LogWriter

pytestmark = pytest.mark.unit
A, B = "http://127.0.0.1:5001", "http://127.0.0.1:5002"


def canary(**section) -> dict:
    return {"name": "credit", "model": "credit-risk", "strategy": "canary",
            "variants": {"stable": {"version": 1, "urls": [A]}, "canary": {"version": 2, "url": B}},
            "canary": {"steps": [10, 25, 50, 100], "interval_s": 1, **section}}


def problems(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(raw)
    return caught.value.problems


def test_a_canary_spec_starts_at_its_first_step_and_names_its_model_versions():
    spec = load_spec(canary())
    assert spec.weights == {"stable": 90.0, "canary": 10.0}
    assert spec.variants["canary"].model_uri == "models:/credit-risk/2" and spec.primary == "stable"
    assert spec.digest == load_spec(canary()).digest != load_spec(canary(threshold=3)).digest


def test_every_mistake_of_a_spec_is_reported_at_once_with_its_field():
    found = problems({"name": "Bad Name", "strategy": "ab", "weights": {"a": 60, "b": 30},
                      "variants": {"a": {"urls": [A]}, "b": {"urls": ["127.0.0.1:5002"]}}})
    assert any("name must be lower-case" in p for p in found)
    assert any("must sum to 100; these sum to 90" in p for p in found)
    assert any("variant 'b' url 1 must be a URL" in p for p in found)
    found = problems({**canary(interval_s=-1, threshold=0, steps=[10, 50]), "strategy": "canary"})
    assert any("canary.interval_s must be greater than 0" in p for p in found)
    assert any("canary.threshold must be between 1" in p for p in found)
    assert any("must end at 100" in p for p in found)


@pytest.mark.parametrize("change, words", [
    ({"weights": {"a": 50, "c": 50}}, "unknown variant 'c'"),
    ({"strategy": "canery"}, "did you mean 'canary'"),
    ({"mirror": {"to": "b"}, "strategy": "shadow", "weights": {"a": 50, "b": 50}}, "must get weight 0"),
    ({"strategy": "bluegreen", "active": "z", "weights": None}, "active names an unknown variant 'z'"),
    ({"variants": {"a": {"urls": [A, A]}, "b": {"urls": [B]}}}, "lists the same URL twice"),
    ({"variants": {"a": {"urls": [A + "/invocations"]}, "b": {"urls": [B]}}}, "without a path"),
    ({"variants": {"a": {"urls": [A], "fault": {"abort_percent": 120}}, "b": {"urls": [B]}}}, "abort_percent must be between"),
    ({"colour": "blue"}, "unknown field 'colour'"),
])
def test_a_malformed_spec_names_the_problem(change, words):
    raw = {"name": "x", "strategy": "ab", "weights": {"a": 50, "b": 50},
           "variants": {"a": {"urls": [A]}, "b": {"urls": [B]}}, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    assert any(words in p for p in problems(raw)), problems(raw)


def test_a_promoting_canary_needs_a_model_and_a_version():
    raw = canary()
    del raw["model"]
    assert any("names no model" in p for p in problems(raw))
    assert load_spec({**raw, "canary": {**raw["canary"], "promote": False}}).canary.promote is False


def test_specs_read_from_yaml_files_and_strings(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: one\nstrategy: single\nvariants:\n  only: {urls: ['http://127.0.0.1:5001']}\n")
    assert load_spec(path).weights == {"only": 100.0}
    assert load_spec(path.read_text()).name == "one"
    assert problems(str(tmp_path / "missing.yaml")) == [f"no strategy spec at {tmp_path / 'missing.yaml'}"]
    assert "not valid YAML" in problems("name: [unclosed\n")[0]


def test_the_log_writer_loses_no_row_and_writes_none_twice(tmp_path):
    writer = LogWriter(tmp_path / "inference.db", flush_every=0.01)
    threads = [threading.Thread(target=lambda k=k: [writer.put({"request_id": f"{k}-{i}", "at": 1.0, "role": "primary",
                                                                 "status": 200}) for i in range(500)])
               for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush()
    writer.close()  # writes what is left
    table = InferenceLog(tmp_path / "inference.db").frame()
    assert len(table) == 2000 and table["request_id"].is_unique


def test_the_log_reads_labels_that_arrive_later_and_cuts_huge_bodies(tmp_path):
    writer = LogWriter(tmp_path / "log.db")
    writer.put({"request_id": "r1", "at": 1.0, "role": "primary", "status": 200, "request": "x" * (BODY_LIMIT + 10),
                "response": json.dumps({"predictions": [1]})})
    writer.put({"request_id": "r2", "at": 2.0, "role": "primary", "status": 200, "response": "{}"})
    writer.close()
    log = InferenceLog(tmp_path / "log.db")
    assert log.add_labels({"r1": 0}) == 1 and log.add_labels(pd.Series({"r1": 1})) == 1  # the latest label wins
    table = log.labelled()
    labels = table.set_index("request_id")["label"]
    assert labels["r1"] == 1 and pd.isna(labels["r2"])
    assert table["response"].iloc[0] == {"predictions": [1]} and table["request"].iloc[0] is None
    assert str(table["at"].dt.tz) == "UTC"
    assert InferenceLog(tmp_path / "none.db").frame().empty and len(InferenceLog(tmp_path / "none.db")) == 0


def test_compare_shadow_pairs_answers_by_request_id():
    rows = [("r1", "primary", "p", 200, {"predictions": [1]}), ("r1", "shadow", "s", 200, {"predictions": [1]}),
            ("r2", "primary", "p", 200, {"predictions": [0]}), ("r2", "shadow", "s", 200, {"predictions": [1]}),
            ("r3", "primary", "p", 200, {"predictions": [0]}), ("r3", "shadow", "s", 502, {"message": "down"})]
    table = pd.DataFrame(rows, columns=["request_id", "role", "variant", "status", "response"]).assign(latency_ms=1.0)
    comparison = deployment.compare_shadow(table)
    assert comparison.loc["shadow", "paired"] == 3 and comparison.loc["shadow", "answered"] == 2
    assert comparison.loc["shadow", "agreement"] == 0.5 and comparison.loc["shadow", "mean_abs_diff"] == 0.5


def test_traffic_shares_and_error_rates_per_window():
    at = pd.to_datetime([0.0, 0.1, 0.2, 0.6, 0.7, 0.8], unit="s", utc=True)
    table = pd.DataFrame({"at": at, "role": "primary", "variant": ["a", "a", "b", "b", "b", "a"],
                          "status": [200, 200, 500, 200, 200, 200]})
    timeline = deployment.traffic(table, window=0.5).set_index(["t", "variant"])
    assert timeline.loc[(0.0, "a"), "share"] == pytest.approx(2 / 3)
    assert timeline.loc[(0.0, "b"), "error_rate"] == 1.0 and timeline.loc[(0.5, "b"), "error_rate"] == 0.0


def test_the_router_command_checks_a_spec_and_says_what_is_wrong(tmp_path, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(json.dumps(canary()))
    bad.write_text(json.dumps({**canary(), "canary": {"steps": [10, 50]}}))
    assert cli.main(["router", "check", str(good)]) == 0
    assert "steps [10.0, 25.0, 50.0, 100.0] every 1 s" in capsys.readouterr().out
    assert cli.main(["router", "check", str(bad)]) == 2
    assert "must end at 100" in capsys.readouterr().err
    assert cli.main(["router", "status", "--url", "http://127.0.0.1:9"]) == 2
    assert "no router answers at http://127.0.0.1:9" in capsys.readouterr().err
    assert cli.main(["router", "manifests", str(good), "--out", str(tmp_path / "k8s")]) == 0
    assert (tmp_path / "k8s" / "manifests.yaml").is_file()


def test_a_locked_database_is_retried_not_lost(tmp_path):
    writer = LogWriter(tmp_path / "busy.db", flush_every=0.01)
    blocker = sqlite3.connect(tmp_path / "busy.db", timeout=0, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    writer.put({"request_id": "late", "at": 1.0, "role": "primary", "status": 200})
    threading.Timer(0.3, blocker.rollback).start()
    assert writer.flush(timeout=20)
    writer.close()
    assert InferenceLog(tmp_path / "busy.db").frame()["request_id"].tolist() == ["late"]
