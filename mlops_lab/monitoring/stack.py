"""The monitoring stack: Prometheus, Alertmanager and the course's alert receiver, on loopback.

Prometheus scrapes the targets it is given (the monitor's and the router's ``/metrics``) and
evaluates the alerting rules (:data:`~mlops_lab.monitoring.alerts.RULES`); a firing alert goes to
Alertmanager, which groups and de-duplicates it and posts a notification to the receiver
(:mod:`mlops_lab.monitoring.receiver`), which records it in ``<workspace>/monitoring/alerts.db``.
Each runs as a managed process (its own process group, a free port, ready when its health endpoint
answers) with its configuration and data under ``<workspace>/monitoring/stack/``.

From a notebook or a test (everything stops when the block ends)::

    with stack({"monitor": monitor.url + "/metrics"}, for_="5s") as s:
        s.query("mlops_monitor_drift_score")       # what Prometheus scraped
        s.alerts()                                 # pending and firing alerts
        s.store.wait_for("FeatureDrift")           # what Alertmanager delivered

From a terminal (it keeps running until ``monitor down``)::

    mlops-lab monitor up --target monitor=http://127.0.0.1:8000/metrics --for 30s
    mlops-lab monitor status
    mlops-lab monitor down

Prometheus and Alertmanager are programs: Debian's ``prometheus`` and ``prometheus-alertmanager``
packages, or ``brew install prometheus alertmanager`` (see :func:`~mlops_lab.monitoring.alerts.missing_binaries`).
Each start begins with empty Prometheus and Alertmanager data (no alert state carried over from an
earlier run); the receiver's store keeps its history.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlops_lab.monitoring import alerts
from mlops_lab.monitoring.alerts import RULES
from mlops_lab.monitoring.receiver import AlertStore, receiver, store_path
from mlops_lab.processes import (LOOPBACK, ManagedProcess, ProcessError, free_port, group_runs, http_ok, read_state,
                                 stop_group, write_state)

COMPONENTS = ("receiver", "alertmanager", "prometheus")
"""The stack's processes, in the order they start (they stop in the reverse order)."""
TIMERS = ("group_wait", "group_interval", "repeat_interval")
_JOB = re.compile(r"^[A-Za-z0-9_.:-]+$")


class StackError(RuntimeError):
    """The monitoring stack cannot be started, found, queried or stopped; the message says why."""


def root(home: Path | None = None) -> Path:
    """``<workspace>/monitoring/stack``: the stack's configuration, data, logs and state file."""
    from mlops_lab import config

    return (Path(home) if home else config.workspace()) / "monitoring" / "stack"


# -- configuration --------------------------------------------------------------------------------
def parse_targets(items: Iterable[str]) -> dict[str, str]:
    """``["monitor=http://127.0.0.1:8000/metrics", ...]`` (the CLI's ``--target``) as a dict job -> URL."""
    targets: dict[str, str] = {}
    for item in items:
        job, sep, url = item.partition("=")
        if not sep or not job.strip() or not url.strip():
            raise StackError(f"a target is given as JOB=URL (e.g. monitor=http://127.0.0.1:8000/metrics), got {item!r}")
        if job.strip() in targets:
            raise StackError(f"the job {job.strip()!r} is given twice; each job scrapes one URL")
        targets[job.strip()] = url.strip()
    return targets


def scrape_config(job: str, url: str) -> dict[str, Any]:
    """One Prometheus ``scrape_configs`` entry: the job scraping ``url`` (scheme, host:port, path)."""
    if not isinstance(job, str) or not _JOB.match(job):
        raise StackError(f"the job name {job!r} must be letters, digits, '_', '-', '.' or ':'")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StackError(f"the target of job {job!r} must be an http(s) URL such as "
                         f"http://127.0.0.1:8000/metrics, got {url!r}")
    if parts.username or parts.password:
        raise StackError(f"the target of job {job!r} has credentials in its URL; the stack scrapes without them")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise StackError(f"the target of job {job!r} has an invalid port: {url!r}") from None
    entry: dict[str, Any] = {"job_name": job, "scheme": parts.scheme, "metrics_path": parts.path or "/metrics",
                             "static_configs": [{"targets": [parts.netloc]}]}
    if parts.query:
        entry["params"] = {k: v for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
    return entry


def prometheus_config(targets: dict[str, str], *, rules_file: Path, alertmanager: str,
                      scrape_interval: str = "15s", evaluation_interval: str = "15s") -> dict[str, Any]:
    """Prometheus's configuration: one scrape job per target, the rules, and where Alertmanager is
    (``alertmanager``: ``host:port``)."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [scrape_config(job, url) for job, url in targets.items()],
    }


def _duration(value: str, what: str) -> str:
    if not alerts.is_duration(value):
        raise StackError(f"{what} {value!r} is not a duration; write e.g. 1s, 15s, 1m")
    return value


def _write_yaml(path: Path, document: dict, header: str) -> Path:
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    return path


# -- the running stack ----------------------------------------------------------------------------
@dataclass
class Stack:
    """A running stack: its URLs, Prometheus's view (:meth:`query`, :meth:`alerts`, :meth:`targets`)
    and the receiver's store (:attr:`store`: what Alertmanager delivered)."""

    prometheus_url: str
    alertmanager_url: str
    receiver_url: str
    folder: Path
    jobs: dict[str, str]
    store: AlertStore
    rules_source: Path = RULES
    for_: str | None = None
    processes: dict[str, ManagedProcess] = field(default_factory=dict, repr=False)

    @property
    def webhook_url(self) -> str:
        """Where Alertmanager posts its notifications (the receiver's ``/alerts``)."""
        return f"{self.receiver_url}/alerts"

    @property
    def rules_file(self) -> Path:
        """The rendered copy of the rules Prometheus evaluates."""
        return self.folder / "rules.yml"

    # -- Prometheus's HTTP API ------------------------------------------------------------------
    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.prometheus_url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (loopback)
                document = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise StackError(f"Prometheus refused {path} {params or ''}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"Prometheus does not answer at {self.prometheus_url} ({exc}); is the stack "
                             "running? (`mlops-lab monitor status`)") from None
        if document.get("status") != "success":
            raise StackError(f"Prometheus answered {path} with an error: {document.get('error')}")
        return document["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Evaluate ``promql`` now: one dict per series, ``{"labels": {...}, "value": float}`` (a
        range selector gives ``"values": [(time, value), ...]`` instead). A PromQL mistake raises
        :class:`StackError` with Prometheus's message."""
        data = self._api("/api/v1/query", {"query": promql})
        kind, result = data["resultType"], data["result"]
        if kind in ("scalar", "string"):
            return [{"labels": {}, "value": float(result[1]) if kind == "scalar" else result[1]}]
        if kind == "matrix":
            return [{"labels": r["metric"], "values": [(float(t), float(v)) for t, v in r["values"]]} for r in result]
        return [{"labels": r["metric"], "value": float(r["value"][1])} for r in result]

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's active alerts (``/api/v1/alerts``): labels, annotations, ``state`` (pending or
        firing), ``activeAt`` and ``value``."""
        return self._api("/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict[str, Any]]:
        """The alerting rules Prometheus evaluates: name, state (inactive, pending, firing), health,
        last evaluation and the rule's active alerts."""
        return [rule for group in self._api("/api/v1/rules", {"type": "alert"})["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        """The scrape targets and their health: job, url, health (up, down, unknown), last_error, last_scrape."""
        data = self._api("/api/v1/targets", {"state": "active"})
        return [{"job": t["labels"].get("job", t.get("scrapePool")), "url": t["scrapeUrl"], "health": t["health"],
                 "last_error": t.get("lastError", ""), "last_scrape": t.get("lastScrape")}
                for t in data["activeTargets"]]

    def wait_for_targets(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until every target has been scraped successfully; their health (StackError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.targets()
            if len(found) >= len(self.jobs) and all(t["health"] == "up" for t in found):
                return found
            if time.monotonic() > deadline:
                raise StackError(f"targets not up after {timeout:g} s: "
                                 + "; ".join(f"{t['job']} {t['url']} {t['health']} {t['last_error']}".strip()
                                             for t in found))
            time.sleep(0.2)

    def reload(self, rules: str | Path | None = None, *, for_: str | None = None, timeout: float = 30.0) -> None:
        """Load edited rules without a restart: check ``rules`` (default: the file the stack started
        with), render it with ``for_`` (default: the stack's), ask Prometheus to reload, and wait
        until it knows Alertmanager again.

        Prometheus 2.42 forgets its Alertmanagers on a reload and finds them again about 5 s later
        (its discovery's batching); an alert that starts firing in that gap reaches Alertmanager at
        Prometheus's next re-send (``resend_delay``, 1m by default). Rules whose name, labels and
        expression did not change keep their pending and firing state.
        """
        source = Path(rules) if rules else self.rules_source
        for_ = for_ if for_ is not None else self.for_
        alerts.check_rules(source)
        alerts.render_rules(source, self.rules_file, for_=for_)
        request = urllib.request.Request(f"{self.prometheus_url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30):  # noqa: S310 (loopback)
                pass
        except urllib.error.HTTPError as exc:
            raise StackError(f"Prometheus refused to reload {self.rules_file}: {exc.read().decode()[:500]}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"Prometheus does not answer at {self.prometheus_url} ({exc})") from None
        self.rules_source, self.for_ = source, for_
        deadline = time.monotonic() + timeout
        while not self._api("/api/v1/alertmanagers")["activeAlertmanagers"]:
            if time.monotonic() > deadline:
                raise StackError(f"Prometheus reloaded but found no Alertmanager within {timeout:g} s")
            time.sleep(0.2)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """True when Prometheus, Alertmanager and the receiver all answer their health checks."""
        return all(http_ok(url) for url in (f"{self.prometheus_url}/-/ready", f"{self.alertmanager_url}/-/ready",
                                            f"{self.receiver_url}/health"))

    def stop(self) -> None:
        """Stop the processes this object started (Prometheus first, the receiver last). A stack
        started by :func:`up` is stopped by :func:`down` instead."""
        errors = []
        for name in reversed(COMPONENTS):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            try:
                process.stop()
            except ProcessError as exc:
                errors.append(str(exc))
        if errors:
            raise StackError("; ".join(errors))

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _prometheus_on(data: Path) -> bool:
    """True when a Prometheus of ours runs on the TSDB folder ``data`` now (another stack in this workspace)."""
    import psutil

    flag = f"--storage.tsdb.path={data}"
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and flag in (proc.info["cmdline"] or []):
                return True
        except psutil.Error:
            continue
    return False


def start(targets: dict[str, str] | None = None, *, home: Path | None = None, rules: str | Path = RULES,
          for_: str | None = None, scrape_interval: str = "15s", evaluation_interval: str = "15s",
          alertmanager_timers: dict[str, str] | None = None, store: str | Path | None = None,
          resend_delay: str | None = None, timeout: float = 60.0) -> Stack:
    """Start the receiver, Alertmanager and Prometheus; the running :class:`Stack` (``.stop()`` it).

    ``targets``: job name -> metrics URL (``{"monitor": "http://127.0.0.1:8000/metrics"}``); none
    starts the stack alone. ``rules``: the rules file (checked first, every mistake at once);
    ``for_``: replaces every ``for:`` (seconds for a demo). ``scrape_interval`` and
    ``evaluation_interval``: Prometheus's. ``alertmanager_timers``: any of ``group_wait``,
    ``group_interval``, ``repeat_interval`` replacing the production 30s, 5m, 4h. ``store``: the
    receiver's SQLite file (default ``<workspace>/monitoring/alerts.db``). ``resend_delay``: how
    often Prometheus re-sends a firing alert to Alertmanager (its default, 1m, unless given).

    Prometheus scrapes a new target about 5 s after it starts (its service discovery hands targets
    over in 5-second batches), whatever the scrape interval. If one process fails to start, those
    already started are stopped before the error is raised.
    """
    from mlops_lab import config

    missing = alerts.missing_binaries(("prometheus", "alertmanager"))
    prometheus_bin, alertmanager_bin = alerts.prometheus(), alerts.alertmanager()
    if missing or prometheus_bin is None or alertmanager_bin is None:
        raise alerts.MissingBinaryError(f"the monitoring stack needs {' and '.join(missing)}: {alerts.INSTALL_HINT}")
    targets = dict(targets or {})
    for job, url in targets.items():  # every target checked before anything starts
        scrape_config(job, url)
    scrape_interval = _duration(scrape_interval, "scrape_interval")
    evaluation_interval = _duration(evaluation_interval, "evaluation_interval")
    timers = dict(alertmanager_timers or {})
    unknown = sorted(set(timers) - set(TIMERS))
    if unknown:
        raise StackError(f"unknown Alertmanager timer(s) {', '.join(unknown)}; use {', '.join(TIMERS)}")
    for key, value in timers.items():
        _duration(value, key)
    for option, what in ((for_, "for_"), (resend_delay, "resend_delay")):
        if option is not None:
            _duration(option, what)
    home = Path(home) if home else config.workspace()
    folder = root(home)
    if _live_state(home):
        raise StackError(f"a monitoring stack started by `mlops-lab monitor up` runs in {home}; use it "
                         "(monitoring.stack.connect()) or stop it with `mlops-lab monitor down`")
    if _prometheus_on(folder / "prometheus-data"):
        raise StackError(f"another monitoring stack is running in {home} (a Prometheus keeps its data in "
                         f"{folder / 'prometheus-data'}); stop it first")
    folder.mkdir(parents=True, exist_ok=True)
    alerts.check_rules(rules)
    rules_file = alerts.render_rules(rules, folder / "rules.yml", for_=for_)
    for data in ("prometheus-data", "alertmanager-data"):
        shutil.rmtree(folder / data, ignore_errors=True)
        (folder / data).mkdir()
    logs = folder / "logs"
    alert_store = AlertStore(Path(store) if store else store_path(home))
    started: list[ManagedProcess] = []
    try:
        webhook = receiver(store=alert_store.path, log_path=logs / "receiver.log", timeout=timeout)
        webhook.start()
        started.append(webhook)

        am_port = free_port()
        am_config = alerts.render_alertmanager(folder / "alertmanager.yml", webhook.webhook_url, **timers)
        manager = ManagedProcess(
            [alertmanager_bin, f"--config.file={am_config}", f"--storage.path={folder / 'alertmanager-data'}",
             f"--web.listen-address={LOOPBACK}:{am_port}", f"--web.external-url=http://{LOOPBACK}:{am_port}",
             "--cluster.listen-address="],
            name="alertmanager", port=am_port, health_url=f"http://{LOOPBACK}:{am_port}/-/ready",
            timeout=timeout, log_path=logs / "alertmanager.log", cwd=folder)
        manager.start()
        started.append(manager)

        prom_port = free_port()
        prom_config = _write_yaml(
            folder / "prometheus.yml",
            prometheus_config(targets, rules_file=rules_file, alertmanager=f"{LOOPBACK}:{am_port}",
                              scrape_interval=scrape_interval, evaluation_interval=evaluation_interval),
            "# Written by mlops_lab.monitoring.stack when the stack started; it is rewritten at every start.\n")
        server = ManagedProcess(
            [prometheus_bin, f"--config.file={prom_config}", f"--storage.tsdb.path={folder / 'prometheus-data'}",
             f"--web.listen-address={LOOPBACK}:{prom_port}", f"--web.external-url=http://{LOOPBACK}:{prom_port}",
             "--web.enable-lifecycle", *([f"--rules.alert.resend-delay={resend_delay}"] if resend_delay else [])],
            name="prometheus", port=prom_port, health_url=f"http://{LOOPBACK}:{prom_port}/-/ready",
            timeout=timeout, log_path=logs / "prometheus.log", cwd=folder)
        server.start()
        started.append(server)
    except BaseException:
        for process in reversed(started):
            with contextlib.suppress(ProcessError):
                process.stop()
        raise
    return Stack(prometheus_url=f"http://{LOOPBACK}:{prom_port}", alertmanager_url=f"http://{LOOPBACK}:{am_port}",
                 receiver_url=webhook.url, folder=folder, jobs=targets, store=alert_store, rules_source=Path(rules),
                 for_=for_, processes=dict(zip(COMPONENTS, started)))


@contextlib.contextmanager
def stack(targets: dict[str, str] | None = None, *, home: Path | None = None, rules: str | Path = RULES,
          for_: str | None = None, scrape_interval: str = "15s", evaluation_interval: str = "15s",
          alertmanager_timers: dict[str, str] | None = None, store: str | Path | None = None,
          resend_delay: str | None = None, timeout: float = 60.0) -> Iterator[Stack]:
    """The monitoring stack for a ``with`` block (see :func:`start` for the options); stopped at the end."""
    running = start(targets, home=home, rules=rules, for_=for_, scrape_interval=scrape_interval,
                    evaluation_interval=evaluation_interval, alertmanager_timers=alertmanager_timers,
                    store=store, resend_delay=resend_delay, timeout=timeout)
    try:
        yield running
    finally:
        running.stop()


# -- a stack that outlives the command: mlops-lab monitor up / status / down ----------------------
def state_path(home: Path | None = None) -> Path:
    """``<workspace>/monitoring/stack/state.json``: what :func:`up` started (process groups, ports, URLs)."""
    return root(home) / "state.json"


def _read_state(home: Path | None) -> dict:
    return read_state(state_path(home))


def _write_state(home: Path | None, state: dict) -> None:
    write_state(state_path(home), state, remove_empty=True)


def _alive(known: dict) -> bool:
    """True when the recorded process group still runs the recorded component (not a reused id)."""
    return group_runs(known["pgid"], lambda cmdline: all(word in " ".join(cmdline) for word in known["expect"]))


def _live_state(home: Path | None) -> dict:
    state = _read_state(home)
    return state if any(name in state and _alive(state[name]) for name in COMPONENTS) else {}


def _expect(name: str, process: ManagedProcess) -> list[str]:
    """Words a member of the component's group must have on its command line."""
    if name == "receiver":
        return ["mlops_lab.monitoring.receiver", f"--port {process.port}"]
    return [f"--web.listen-address={LOOPBACK}:{process.port}"]


def up(targets: dict[str, str] | None = None, *, home: Path | None = None, **options: Any) -> Stack:
    """Start a stack that keeps running after this call (``options`` as for :func:`start`);
    :func:`down` stops it. A stack already up with the same targets is left as it is."""
    state = _read_state(home)
    wanted = dict(targets or {})
    if state:
        alive = {name: name in state and _alive(state[name]) for name in COMPONENTS}
        if all(alive.values()):
            if state.get("targets", {}) != wanted:
                raise StackError(f"the monitoring stack is already up with targets {state.get('targets') or 'none'}; "
                                 "stop it with `mlops-lab monitor down` to start it with others")
            return connect(home)
        if any(alive.values()):
            down_now = ", ".join(name for name, ok in alive.items() if not ok)
            raise StackError(f"the monitoring stack is only partly running ({down_now} stopped); "
                             "run `mlops-lab monitor down`, then `mlops-lab monitor up` again")
        _write_state(home, {})  # it died (a reboot): forget it
    running = start(wanted, home=home, **options)
    new_state: dict[str, Any] = {"targets": running.jobs, "folder": str(running.folder), "store": str(running.store.path),
                                 "rules": str(running.rules_source), "for": running.for_,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    urls = {"receiver": running.receiver_url, "alertmanager": running.alertmanager_url,
            "prometheus": running.prometheus_url}
    for name in COMPONENTS:
        process = running.processes[name]
        expect = _expect(name, process)
        info = process.detach()
        new_state[name] = {**info, "url": urls[name], "expect": expect}
    running.processes = {}
    _write_state(home, new_state)
    return running


def connect(home: Path | None = None) -> Stack:
    """The stack started by :func:`up` in this workspace (StackError if it is not running)."""
    state = _read_state(home)
    if not state or not all(name in state and _alive(state[name]) for name in COMPONENTS):
        raise StackError("the monitoring stack is not running; start it with `mlops-lab monitor up`")
    return Stack(prometheus_url=state["prometheus"]["url"], alertmanager_url=state["alertmanager"]["url"],
                 receiver_url=state["receiver"]["url"], folder=Path(state["folder"]), jobs=state.get("targets", {}),
                 store=AlertStore(state["store"]), rules_source=Path(state.get("rules") or RULES),
                 for_=state.get("for"))


def down(home: Path | None = None) -> list[str]:
    """Stop the stack started by :func:`up`; the components that were stopped (Prometheus first)."""
    state = _read_state(home)
    stopped = []
    errors = []
    for name in reversed(COMPONENTS):
        known = state.get(name)
        if not known or not _alive(known):
            continue  # gone already (or the group id now belongs to something else: never signal it)
        try:
            stop_group(known["pgid"], port=known["port"], expect=known["expect"], name=name)
            stopped.append(name)
        except ProcessError as exc:
            errors.append(str(exc))
        with contextlib.suppress(OSError):  # started by this very process (a notebook, a test): reap it
            os.waitpid(known["pid"], os.WNOHANG)
    if errors:
        raise StackError("; ".join(errors))
    _write_state(home, {})
    return stopped


def status(home: Path | None = None) -> dict[str, Any]:
    """Where the stack stands: ``components`` (name, status up/dead/down, URL), ``targets`` (their
    scrape health, when Prometheus answers), ``store`` and the alerts ``firing`` per the receiver."""
    state = _read_state(home)
    health = {"receiver": "/health", "alertmanager": "/-/ready", "prometheus": "/-/ready"}
    components = []
    for name in COMPONENTS:
        known = state.get(name)
        if not known:
            components.append({"component": name, "status": "down", "url": ""})
            continue
        up_now = http_ok(known["url"] + health[name])
        components.append({"component": name, "status": "up" if up_now else "dead", "url": known["url"]})
    targets: list[dict[str, Any]] = []
    if components[-1]["status"] == "up":
        running = Stack(prometheus_url=state["prometheus"]["url"], alertmanager_url=state["alertmanager"]["url"],
                        receiver_url=state["receiver"]["url"], folder=Path(state["folder"]),
                        jobs=state.get("targets", {}), store=AlertStore(state["store"]))
        with contextlib.suppress(StackError):
            targets = running.targets()
    store = AlertStore(state["store"]) if state.get("store") else AlertStore(store_path(home))
    return {"components": components, "targets": targets, "store": str(store.path),
            "firing": [row["alertname"] + (f" ({row['labels']['feature']})" if "feature" in row["labels"] else "")
                       for row in store.firing()],
            "since": state.get("started", "")}
