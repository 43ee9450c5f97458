"""The monitoring stack end to end: Prometheus scrapes, the rule fires, Alertmanager delivers once.

A stand-in exporter (tests/promstack.py) serves the drift gauge the monitor exports, so this test
is about the alerting path alone: scrape -> rule (for: 2s) -> Alertmanager (grouping, de-duplication)
-> the receiver's store. The real monitor's own test reuses ``promstack.fast_stack``.
"""

from __future__ import annotations

import importlib
import json
import time
import urllib.request

import pytest
import yaml
from promstack import fast_stack, need, start_exporter

from mlops_lab import cli
from mlops_lab.monitoring import alerts
from mlops_lab.monitoring.alerts import AlertRulesError
from mlops_lab.processes import port_in_use

pytestmark = pytest.mark.integration
stack_module = importlib.import_module("mlops_lab.monitoring.stack")
QUIET_S = 4.0
"""How long a healthy series is watched: longer than for: 2s + an evaluation + group_wait 1s."""


@pytest.fixture
def exporter(tmp_path):
    need("prometheus", "alertmanager")
    running = start_exporter(tmp_path, temp=0.05)
    try:
        yield running
    finally:
        running.process.stop()


def counter(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` (with ``labels``) in a Prometheus text page at ``url``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback)
        text = answer.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_drift_alert_is_delivered_once_then_resolved_and_nothing_while_healthy(exporter, home):
    with fast_stack({"monitor": exporter.url}) as stack:
        assert [(t["job"], t["health"]) for t in stack.wait_for_targets(timeout=30)] == [("monitor", "up")]
        config = yaml.safe_load((stack.folder / "prometheus.yml").read_text())
        assert config["scrape_configs"][0]["static_configs"][0]["targets"] == [exporter.url.split("/")[2]]

        # healthy from the start: evaluated, never pending, nothing delivered
        deadline = time.monotonic() + QUIET_S
        while time.monotonic() < deadline:
            assert stack.alerts() == [] and stack.store.notifications() == []
            time.sleep(0.5)
        [score] = stack.query('mlops_monitor_drift_score{feature="temp"}')
        assert score["value"] == 0.05 and score["labels"]["job"] == "monitor"
        [rule] = [r for r in stack.rules() if r["name"] == "FeatureDrift"]
        assert (rule["state"], rule["health"], rule["duration"]) == ("inactive", "ok", 2.0)
        with pytest.raises(stack_module.StackError, match="another monitoring stack is running"):
            stack_module.start({}, home=home)  # a second stack on the same folders is refused

        # drift: pending, then firing after for: 2s, then delivered once
        exporter.set(temp=0.5)
        [delivered] = stack.store.wait_for("FeatureDrift", status="firing", timeout=30)
        assert {k: delivered["labels"][k] for k in ("feature", "severity", "statistic", "threshold", "job")} == \
            {"feature": "temp", "severity": "warning", "statistic": "psi", "threshold": "0.2", "job": "monitor"}
        assert delivered["annotations"]["summary"] == "Feature temp drifted: PSI 0.500 > 0.2"
        assert delivered["group_key"] == '{}:{alertname="FeatureDrift", feature="temp"}'
        assert [(a["labels"]["alertname"], a["state"]) for a in stack.alerts()] == [("FeatureDrift", "firing")]
        received_before = counter(f"{stack.alertmanager_url}/metrics", "alertmanager_alerts_received_total",
                                  status="firing")
        time.sleep(3)  # three group intervals, and Prometheus re-sends the alert at every evaluation
        received = counter(f"{stack.alertmanager_url}/metrics", "alertmanager_alerts_received_total",
                           status="firing")
        assert received > received_before  # Alertmanager got the alert again ...
        assert len(stack.store.notifications()) == 1  # ... and delivered it once
        assert counter(f"{stack.alertmanager_url}/metrics", "alertmanager_notifications_total",
                       integration="webhook") == 1

        # back to normal: one resolved notification, nothing firing
        exporter.set(temp=0.05)
        [resolved] = stack.store.wait_for("FeatureDrift", status="resolved", timeout=30)
        assert resolved["fingerprint"] == delivered["fingerprint"]
        assert [r["status"] for r in stack.store.notifications()] == ["firing", "resolved"]
        assert stack.store.firing() == []
        ports = [p.port for p in stack.processes.values()]
    assert not any(port_in_use(p) for p in ports)
    assert stack.processes == {}


def test_monitor_up_status_reload_and_down(exporter, home, tmp_path, capsys):
    argv = ["monitor", "up", "--target", f"monitor={exporter.url}", "--for", "2s",
            "--scrape-interval", "1s", "--evaluation-interval", "1s", "--group-wait", "1s", "--group-interval", "1s"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    try:
        assert "prometheus  up    http://127.0.0.1:" in out and "Stop with `mlops-lab monitor down`" in out
        state = json.loads(stack_module.state_path(home).read_text())
        assert set(stack_module.COMPONENTS) <= set(state) and state["targets"] == {"monitor": exporter.url}
        connected = stack_module.connect(home)
        assert connected.prometheus_url == state["prometheus"]["url"] and connected.healthy

        assert stack_module.up({"monitor": exporter.url}, home=home).prometheus_url == connected.prometheus_url
        with pytest.raises(stack_module.StackError, match="already up with targets"):
            stack_module.up({}, home=home)
        with pytest.raises(stack_module.StackError, match="started by `mlops-lab monitor up` runs"):
            stack_module.start({}, home=home)

        # a student's edited threshold, loaded without a restart: the healthy 0.05 now drifts
        edited = tmp_path / "my-rules.yml"
        edited.write_text(alerts.RULES.read_text().replace(  # PSI alone, and a much lower line
            '{statistic="psi"} > 0.2\n          and ignoring(statistic)\n          mlops_monitor_feature_drifted == 1',
            '{statistic="psi"} > 0.01', 1))
        connected.reload(edited)
        [rule] = [r for r in connected.rules() if r["name"] == "FeatureDrift"]
        assert rule["query"] == 'mlops_monitor_drift_score{statistic="psi"} > 0.01' and rule["duration"] == 2
        connected.wait_for_targets(timeout=30)
        assert cli.main(["monitor", "status"]) == 0
        out = capsys.readouterr().out
        assert f"monitor  up      {exporter.url}" in out and f"alerts delivered to {connected.store.path}" in out
        deadline = time.monotonic() + 20
        while not any(a["labels"]["alertname"] == "FeatureDrift" for a in connected.alerts()):
            assert time.monotonic() < deadline, "the edited rule did not become active"
            time.sleep(0.2)
        with pytest.raises(AlertRulesError, match="missing `groups:`"):
            connected.reload(alerts.RULES.parent / "alertmanager.yml")  # not a rules file: refused, nothing reloaded
        with pytest.raises(stack_module.StackError, match="refused"):
            connected.query("rate(mlops_monitor_drift_score[1m]")
    finally:
        assert cli.main(["monitor", "down"]) == 0
    assert "stopped: prometheus, alertmanager, receiver" in capsys.readouterr().out
    assert not stack_module.state_path(home).exists()
    assert not any(port_in_use(state[name]["port"]) for name in stack_module.COMPONENTS)
    assert [row["status"] for row in stack_module.status(home)["components"]] == ["down"] * 3
    assert stack_module.down(home) == []
    with pytest.raises(stack_module.StackError, match="not running"):
        stack_module.connect(home)

