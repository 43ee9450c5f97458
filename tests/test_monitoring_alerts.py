"""Alerting rules, Alertmanager's configuration and the alert receiver (lesson 13), without servers.

The promtool tests run the shipped rules' own unit tests (rules.test.yml) and prove they can fail:
a threshold or a `for:` edited in a copy of the rules makes `promtool test rules` fail.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import yaml
from promstack import need

from mlops_lab.monitoring import alerts
from mlops_lab.monitoring.alerts import AlertRulesError, MissingBinaryError
from mlops_lab.monitoring.receiver import AlertStore, PayloadError, build_app, parse_notification

pytestmark = pytest.mark.unit
stack_module = importlib.import_module("mlops_lab.monitoring.stack")

EXPECTED = {"FeatureDrift", "FeatureShift", "DatasetDrift", "ModelErrorHigh", "LabelsMissing", "MonitorDown",
            "MonitorStale", "RouterErrorRate", "RouterLatencyP99"}


def write(tmp_path: Path, text: str, name: str = "rules.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rule_file(tmp_path: Path, rule: str, name: str = "rules.yml") -> Path:
    """A one-rule file; ``rule`` is the YAML of the rule, indented as an item of ``rules:``."""
    return write(tmp_path, "groups:\n  - name: g\n    rules:\n" + rule, name)


# -- the shipped rules ----------------------------------------------------------------------------
def test_the_shipped_rules_load_with_production_timings_and_their_thresholds():
    rules = {r.name: r for r in alerts.load_rules()}
    assert EXPECTED <= set(rules)
    drift = rules["FeatureDrift"]
    assert drift.for_ == "10m" and drift.severity == "warning"
    assert drift.labels == {"severity": "warning", "statistic": "psi", "threshold": "0.2"}
    assert drift.expr == ('mlops_monitor_drift_score{statistic="psi"} > 0.2 and ignoring(statistic) '
                          'mlops_monitor_feature_drifted == 1')
    assert "{{ $labels.feature }}" in drift.annotations["summary"]
    assert '{{ $value | printf "%.3f" }}' in drift.annotations["summary"]
    assert "and ignoring(statistic, test)" in rules["FeatureShift"].expr
    assert rules["ModelErrorHigh"].expr == "mlops_monitor_rolling_error > 1.5 * mlops_monitor_baseline_error"
    assert rules["FeatureMissingValues"].labels["statistic"] == "missing_share"
    assert rules["DatasetDrift"].severity == rules["ModelErrorHigh"].severity == "critical"
    assert rules["MonitorDown"].expr == 'up{job="monitor"} == 0'
    assert "histogram_quantile(0.99" in rules["RouterLatencyP99"].expr
    for rule in rules.values():
        assert rule.kind == "alert" and rule.severity in ("warning", "critical"), rule.name
        assert {"summary", "description", "runbook"} <= set(rule.annotations), rule.name
        assert rule.for_ and alerts.duration_seconds(rule.for_) >= 60, rule.name  # production, not demo, values
        if rule.threshold is not None:  # the label names the limit that is in the expression
            assert re.search(rf"(?<![\w.]){re.escape(rule.threshold)}(?![\w.])", rule.expr), (rule.name, rule.expr)


def test_durations_follow_prometheus():
    assert [alerts.duration_seconds(d) for d in ("30s", "10m", "1h30m", "500ms", "1d", "0")] == \
        [30, 600, 5400, 0.5, 86400, 0]
    for bad in ("10", "10 minutes", "1m1h", "", "m", "1.5m"):
        assert not alerts.is_duration(bad)
    with pytest.raises(ValueError, match="not a duration"):
        alerts.duration_seconds("ten minutes")


# -- malformed rules files: every mistake, with where it is ---------------------------------------
def test_a_yaml_syntax_error_names_its_line(tmp_path):
    path = rule_file(tmp_path, "      - alert: A\n        expr: up == 0\n        annotations:\n"
                               "          summary: {{ $labels.instance }} is down\n")
    with pytest.raises(AlertRulesError, match=r"not valid YAML at line 7") as info:
        alerts.load_rules(path)
    assert "quote a value" in str(info.value) and str(path) in str(info.value)


def test_a_rule_without_expr_is_named(tmp_path):
    path = rule_file(tmp_path, "      - alert: NoExpr\n        for: 5m\n")
    with pytest.raises(AlertRulesError, match=r"group 'g', rule 'NoExpr' \(line 4\): missing `expr`"):
        alerts.load_rules(path)


@pytest.mark.parametrize(("value", "message"), [("10 minutes", "'10 minutes' is not a duration"),
                                                ("10", "10 has no unit; write e.g. 10m or 10s"),
                                                ("1.5m", "is not a duration")])
def test_a_bad_for_duration_is_explained(tmp_path, value, message):
    path = rule_file(tmp_path, f"      - alert: Slow\n        expr: up == 0\n        for: {value}\n")
    with pytest.raises(AlertRulesError, match=re.escape(message)):
        alerts.load_rules(path)


def test_unknown_top_level_keys_and_rules_outside_groups_are_refused(tmp_path):
    path = write(tmp_path, "rules:\n  - alert: A\n    expr: up == 0\n")
    with pytest.raises(AlertRulesError) as info:
        alerts.load_rules(path)
    assert "unknown top-level key(s) 'rules'" in str(info.value)
    assert "the rules belong under `groups:" in str(info.value)
    assert "missing `groups:`" in str(info.value)


def test_every_mistake_is_reported_at_once(tmp_path):
    path = write(tmp_path, """groups:
  - name: g
    interval: often
    rules:
      - alert: A
        expr: up == 0
        labls: {severity: warning}
      - alert: B
        expr: up == 0
        labels:
          severity: high
          threshold: 0.2
      - record: bad name
        expr: up
        for: 5m
      - expr: up
  - name: g
    rules: []
""")
    with pytest.raises(AlertRulesError) as info:
        alerts.load_rules(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert "`interval:` 'often' is not a duration" in text
    assert "unknown key(s) 'labls'" in text
    assert "severity 'high' is not one of info, warning, critical" in text
    assert "the value of 'threshold' must be text; quote it (threshold: \"0.2\")" in text
    assert "'bad name' is not a valid metric name" in text and "`for` only applies to alerting rules" in text
    assert "a rule needs `alert: NAME`" in text
    assert "the group name 'g' is used twice" in text
    assert len(problems) == 8, problems


def test_a_duplicated_key_is_an_error_not_a_silent_override(tmp_path):
    path = rule_file(tmp_path, "      - alert: A\n        expr: up == 0\n        for: 10m\n        for: 1m\n")
    with pytest.raises(AlertRulesError, match=r"line 7.*'for' appears twice.*first on line 6"):
        alerts.load_rules(path)


def test_empty_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(AlertRulesError, match="the file is empty"):
        alerts.load_rules(write(tmp_path, ""))
    with pytest.raises(AlertRulesError, match="a mapping with one key"):
        alerts.load_rules(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(AlertRulesError, match="cannot read the rules file"):
        alerts.load_rules(tmp_path / "missing.yml")


# -- rendering --------------------------------------------------------------------------------------
def test_render_rules_replaces_every_for_and_the_evaluation_interval_only(tmp_path):
    dest = alerts.render_rules(alerts.RULES, tmp_path / "out" / "rules.yml", for_="2s", evaluation="1s")
    rendered, shipped = alerts.load_rules(dest), alerts.load_rules()
    assert [r.for_ for r in rendered] == ["2s"] * len(shipped)
    assert [(r.name, r.expr, r.labels, r.annotations) for r in rendered] == \
        [(r.name, r.expr, r.labels, r.annotations) for r in shipped]
    assert {g["interval"] for g in yaml.safe_load(dest.read_text())["groups"]} == {"1s"}
    assert dest.read_text().startswith("# Rendered from")
    unchanged = alerts.load_rules(alerts.render_rules(alerts.RULES, tmp_path / "same.yml"))
    assert unchanged == shipped


def test_render_rules_keeps_a_rule_without_for_immediate_and_checks_its_inputs(tmp_path):
    source = rule_file(tmp_path, "      - alert: Now\n        expr: up == 0\n", "src.yml")
    assert alerts.load_rules(alerts.render_rules(source, tmp_path / "a.yml", for_="1s"))[0].for_ is None
    with pytest.raises(ValueError, match="for_ '2 seconds' is not a duration"):
        alerts.render_rules(alerts.RULES, tmp_path / "b.yml", for_="2 seconds")
    broken = rule_file(tmp_path, "      - alert: X\n", "broken.yml")
    with pytest.raises(AlertRulesError, match="missing `expr`"):
        alerts.render_rules(broken, tmp_path / "c.yml", for_="1s")
    assert not (tmp_path / "c.yml").exists() and not (tmp_path / "b.yml").exists()


def test_render_alertmanager_fills_the_receiver_and_the_timers(tmp_path):
    template = yaml.safe_load(alerts.ALERTMANAGER.read_text())
    assert template["route"]["group_by"] == ["alertname", "feature"]
    assert (template["route"]["group_wait"], template["route"]["group_interval"],
            template["route"]["repeat_interval"]) == ("30s", "5m", "4h")
    assert template["receivers"][0]["webhook_configs"][0]["url"] == "${RECEIVER_URL}"
    inhibit = template["inhibit_rules"][0]
    assert "alertname = DatasetDrift" in inhibit["source_matchers"] and inhibit["equal"] == ["job", "instance"]

    dest = alerts.render_alertmanager(tmp_path / "am.yml", "http://127.0.0.1:9095/alerts", group_wait="1s",
                                      repeat_interval="1h")
    config = yaml.safe_load(dest.read_text())
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook == {"url": "http://127.0.0.1:9095/alerts", "send_resolved": True}
    assert (config["route"]["group_wait"], config["route"]["group_interval"], config["route"]["repeat_interval"]) \
        == ("1s", "5m", "1h")
    assert "${" not in dest.read_text()


def test_render_alertmanager_refuses_a_bad_url_a_bad_timer_and_an_unfilled_placeholder(tmp_path):
    with pytest.raises(ValueError, match="must be an http"):
        alerts.render_alertmanager(tmp_path / "a.yml", "127.0.0.1:9095/alerts")
    with pytest.raises(ValueError, match="group_wait 'soon' is not a duration"):
        alerts.render_alertmanager(tmp_path / "a.yml", "http://127.0.0.1:1/alerts", group_wait="soon")
    template = write(tmp_path, "route:\n  receiver: r\nreceivers:\n  - name: r\n    webhook_configs:\n"
                               "      - url: '${RECEIVER_URL}?token=${TOKEN}'\n", "template.yml")
    with pytest.raises(AlertRulesError, match=r"no value for \$\{TOKEN\}"):
        alerts.render_alertmanager(tmp_path / "a.yml", "http://127.0.0.1:1/alerts", template=template)
    assert not (tmp_path / "a.yml").exists()


# -- the programs ----------------------------------------------------------------------------------
def test_missing_programs_are_named_with_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(alerts, "_SEARCH", ())
    assert alerts.missing_binaries() == ["prometheus", "promtool", "alertmanager"]
    assert "apt-get install prometheus prometheus-alertmanager" in alerts.INSTALL_HINT
    assert "brew install prometheus alertmanager" in alerts.INSTALL_HINT
    assert "promtool was not" not in alerts.check_rules()  # without promtool: the Python checks only
    assert "the PromQL was not checked because promtool is missing" in alerts.check_rules()
    with pytest.raises(MissingBinaryError, match="promtool not found: install Debian's prometheus"):
        alerts.test_rules()
    with pytest.raises(MissingBinaryError, match="needs prometheus and alertmanager: install Debian's"):
        stack_module.start({}, home=tmp_path)
    assert not (tmp_path / "monitoring").exists()  # refused before anything was written

    brew = tmp_path / "alertmanager"  # Homebrew's and upstream's name for it
    brew.write_text("#!/bin/sh\n")
    brew.chmod(0o755)
    assert alerts.alertmanager() == str(brew)
    assert alerts.missing_binaries() == ["prometheus", "promtool"]


def test_promtool_checks_the_shipped_rules_and_runs_their_unit_tests():
    need("promtool")
    assert "SUCCESS: 11 rules found" in alerts.check_rules()
    assert "SUCCESS" in alerts.test_rules()


def test_promtool_refuses_what_python_cannot_see(tmp_path):
    need("promtool")
    path = rule_file(tmp_path, "      - alert: Typo\n        expr: rate(mlops_router_errors_total[5m] > 0\n")
    alerts.load_rules(path)  # fine as YAML
    with pytest.raises(AlertRulesError, match="promtool check rules .* failed:[\\s\\S]*unclosed"):
        alerts.check_rules(path)


def _copy_rules(tmp_path: Path, old: str | None = None, new: str | None = None) -> Path:
    """rules.yml and rules.test.yml copied into ``tmp_path``, ``old`` replaced by ``new`` in the rules."""
    text = alerts.RULES.read_text()
    if old is not None:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "rules.yml").write_text(text)
    return Path(shutil.copy(alerts.RULES_TEST, tmp_path / "rules.test.yml"))


@pytest.mark.parametrize(("old", "new", "alert"), [
    ('mlops_monitor_drift_score{statistic="psi"} > 0.2', 'mlops_monitor_drift_score{statistic="psi"} > 2.0',
     "FeatureDrift"),  # a threshold that never fires
    ("mlops_monitor_drifted_features_share > 0.5\n        for: 10m", "mlops_monitor_drifted_features_share > 0.5\n"
     "        for: 2m", "DatasetDrift"),  # fires before the production for: elapsed
    ("and ignoring(statistic, test)", "or ignoring(statistic, test)", "FeatureShift"),  # either alone is enough
    ("and ignoring(statistic)\n          mlops_monitor_feature_drifted == 1", "or ignoring(statistic)\n"
     "          mlops_monitor_feature_drifted == 1", "FeatureDrift"),  # PSI noise alone fires
    ("ignoring(statistic, test)", "on(feature)", "FeatureShift"),  # another monitor's test counts
    ('up{job="monitor"} == 0', "up == 0", "MonitorDown"),  # any job's outage
])
def test_the_rule_tests_can_fail(tmp_path, old, new, alert):
    need("promtool")
    assert "SUCCESS" in alerts.test_rules(_copy_rules(tmp_path))  # the copy itself passes
    edited = _copy_rules(tmp_path, old, new)
    with pytest.raises(AlertRulesError) as info:
        alerts.test_rules(edited)
    assert "FAILED" in str(info.value) and f"alertname: {alert}" in str(info.value)


def test_the_rendered_alertmanager_config_passes_amtool(tmp_path):
    need("amtool")
    dest = alerts.render_alertmanager(tmp_path / "am.yml", "http://127.0.0.1:9095/alerts",
                                      group_wait="1s", group_interval="1s", repeat_interval="1h")
    assert "SUCCESS" in alerts.check_alertmanager(dest)
    with pytest.raises(AlertRulesError, match="unsupported scheme"):
        alerts.check_alertmanager(alerts.ALERTMANAGER)  # the template, unfilled


def test_a_bad_rules_file_stops_the_stack_before_anything_starts(tmp_path):
    need("prometheus", "alertmanager")
    broken = rule_file(tmp_path, "      - alert: X\n        expr: up == 0\n        for: soon\n", "broken.yml")
    with pytest.raises(AlertRulesError, match="'soon' is not a duration"):
        stack_module.start({}, home=tmp_path, rules=broken)
    with pytest.raises(stack_module.StackError, match="for_ '2' is not a duration"):
        stack_module.start({}, home=tmp_path, for_="2")
    with pytest.raises(stack_module.StackError, match="unknown Alertmanager timer"):
        stack_module.start({}, home=tmp_path, alertmanager_timers={"group_delay": "1s"})


# -- targets ---------------------------------------------------------------------------------------
def test_targets_become_scrape_jobs():
    assert stack_module.parse_targets(["monitor=http://127.0.0.1:8000/metrics", "router=http://h:5010"]) == \
        {"monitor": "http://127.0.0.1:8000/metrics", "router": "http://h:5010"}
    assert stack_module.scrape_config("router", "http://127.0.0.1:5010") == {
        "job_name": "router", "scheme": "http", "metrics_path": "/metrics",
        "static_configs": [{"targets": ["127.0.0.1:5010"]}]}
    assert stack_module.scrape_config("m", "https://h:9/custom/metrics?model=bike")["params"] == {"model": ["bike"]}
    for bad in (["monitor"], ["=http://h:1"], ["a=http://h:1", "a=http://h:2"]):
        with pytest.raises(stack_module.StackError, match="JOB=URL|given twice"):
            stack_module.parse_targets(bad)
    for job, url, message in (("m", "127.0.0.1:8000", "http"), ("m", "ftp://h/metrics", "http"),
                              ("m", "http://u:p@h:1/metrics", "credentials"), ("m", "http://h:port/", "invalid port"),
                              ("my job", "http://h:1", "job name")):
        with pytest.raises(stack_module.StackError, match=message):
            stack_module.scrape_config(job, url)


def test_the_cli_names_what_to_install(monkeypatch, capsys, home):
    from mlops_lab import cli

    monkeypatch.setattr(alerts, "prometheus", lambda: None)
    assert cli.main(["monitor", "up", "--target", "monitor=http://127.0.0.1:1/metrics", "--for", "2s"]) == 2
    assert "apt-get install prometheus prometheus-alertmanager" in capsys.readouterr().err
    assert cli.main(["monitor", "status"]) == 0
    assert "receiver  down" in capsys.readouterr().out
    assert cli.main(["monitor", "down"]) == 0
    assert "nothing was running" in capsys.readouterr().out
    args = cli.parser().parse_args(["monitor", "up", "--target", "a=http://h:1", "--target", "b=http://h:2"])
    assert (args.monitor_command, args.target, args.for_) == ("up", ["a=http://h:1", "b=http://h:2"], None)


# -- the receiver ----------------------------------------------------------------------------------
def notification(status: str = "firing", **alert_changes) -> dict:
    """A webhook body as Alertmanager 0.25 sends it (two alerts of one group)."""
    def alert(feature: str, fingerprint: str) -> dict:
        return {"status": status, "labels": {"alertname": "FeatureDrift", "feature": feature, "severity": "warning",
                                             "statistic": "psi", "threshold": "0.2", "job": "monitor"},
                "annotations": {"summary": f"Feature {feature} drifted: PSI 0.500 > 0.2"},
                "startsAt": "2026-12-01T13:25:07.67Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T13:30:07.67Z",
                "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=...", "fingerprint": fingerprint,
                **alert_changes}
    return {"receiver": "course-webhook", "status": status,
            "alerts": [alert("temp", "d69f7391f16b312b"), alert("hum", "0a1b2c3d4e5f6071")],
            "groupLabels": {"alertname": "FeatureDrift"}, "commonLabels": {"alertname": "FeatureDrift"},
            "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093", "version": "4",
            "groupKey": '{}:{alertname="FeatureDrift"}', "truncatedAlerts": 0}


@pytest.fixture
def client(tmp_path):
    with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2 behind its test client
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    store = tmp_path / "monitoring" / "alerts.db"
    with TestClient(build_app(store)) as test_client:
        test_client.store = AlertStore(store)
        yield test_client


def test_the_receiver_records_one_row_per_alert_per_notification(client):
    assert client.get("/health").json()["status"] == "ok"
    answer = client.post("/alerts", json=notification())
    assert answer.status_code == 200 and answer.json()["stored"] == 2
    rows = client.store.notifications()
    assert [(r["alertname"], r["status"], r["labels"]["feature"]) for r in rows] == \
        [("FeatureDrift", "firing", "temp"), ("FeatureDrift", "firing", "hum")]
    first = rows[0]
    assert first["fingerprint"] == "d69f7391f16b312b" and first["group_key"] == '{}:{alertname="FeatureDrift"}'
    assert first["starts_at"] == "2026-12-01T13:25:07.67Z" and first["annotations"]["summary"].startswith("Feature temp")
    assert first["notification"] == rows[1]["notification"] and first["received_at"].endswith("Z")
    assert len(client.store.firing()) == 2

    resolved = notification("resolved")
    resolved["alerts"] = resolved["alerts"][:1]
    assert client.post("/alerts", json=resolved).status_code == 200
    assert [r["labels"]["feature"] for r in client.store.firing()] == ["hum"]  # temp resolved since
    assert [r["status"] for r in client.get("/alerts").json()] == ["firing", "firing", "resolved"]
    assert len(client.get("/alerts", params={"status": "firing"}).json()) == 2
    assert len(client.get("/alerts", params={"status": "resolved", "alertname": "FeatureDrift"}).json()) == 1
    assert client.get("/alerts", params={"status": "pending"}).status_code == 400
    frame = client.store.frame()
    assert list(frame["feature"]) == ["temp", "hum", "temp"] and set(frame["severity"]) == {"warning"}
    assert client.store.wait_for("FeatureDrift", status="resolved", timeout=1)[0]["labels"]["feature"] == "temp"
    with pytest.raises(TimeoutError, match="2 resolved notification"):
        client.store.wait_for("FeatureDrift", status="resolved", count=2, timeout=0.3)


def _without(document: dict, *path) -> dict:
    document = json.loads(json.dumps(document))
    target = document
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return document


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (json.dumps({**notification(), "version": "3"}).encode(), 'version must be "4"'),
    (json.dumps({**notification(), "alerts": []}).encode(), "alerts must be a non-empty list"),
    (json.dumps({**notification(), "status": "pending"}).encode(), "status must be firing or resolved"),
    (json.dumps(_without(notification(), "groupKey")).encode(), "groupKey must be a non-empty string"),
    (json.dumps(_without(notification(), "alerts", 1, "labels", "alertname")).encode(),
     "alerts[1].labels must have an alertname"),
    (json.dumps(notification(fingerprint="")).encode(), "alerts[0].fingerprint must be a non-empty string"),
    (json.dumps(notification(startsAt="yesterday")).encode(), "alerts[0].startsAt must be an RFC 3339 time"),
    (json.dumps(notification(labels={"alertname": "A", "threshold": 0.2})).encode(),
     "the values of 'threshold' must be strings"),
])
def test_a_malformed_notification_is_refused_and_nothing_is_stored(client, body, message):
    answer = client.post("/alerts", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert client.store.notifications() == []


def test_a_half_valid_notification_stores_none_of_its_alerts(client):
    document = notification()
    document["alerts"][1]["status"] = "silenced"
    answer = client.post("/alerts", json=document)
    assert answer.status_code == 400 and "alerts[1].status" in answer.json()["error"]
    assert client.store.notifications() == []
    big = b'{"pad": "' + b"x" * 1_000_001 + b'"}'
    assert client.post("/alerts", content=big).status_code == 413
    assert client.store.notifications() == []


def test_parse_notification_and_a_store_that_does_not_exist_yet(tmp_path):
    assert len(parse_notification(notification())) == 2
    with pytest.raises(PayloadError, match="must be a JSON object"):
        parse_notification("firing")
    missing = AlertStore(tmp_path / "none.db")
    assert missing.notifications() == [] and missing.firing() == [] and len(missing.frame()) == 0
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(ValueError, match="firing or resolved"):
        missing.notifications(status="active")
