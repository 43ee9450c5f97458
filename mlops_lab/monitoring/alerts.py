"""Alerting rules and Alertmanager's configuration: read, check, test and render them.

The course ships its rules as Prometheus writes them (``prometheus/rules.yml``, with their unit
tests beside them in ``prometheus/rules.test.yml``) and a template of Alertmanager's configuration
(``prometheus/alertmanager.yml``). This module reads them for Python and gives every mistake a clear
message, checks them with Prometheus's own ``promtool``, and writes the copies a running stack uses::

    rules = alerts.load_rules()                 # [Rule(name='FeatureDrift', for_='10m', ...), ...]
    alerts.check_rules()                        # promtool check rules (when promtool is installed)
    alerts.test_rules()                         # promtool test rules rules.test.yml
    alerts.render_rules(alerts.RULES, "fast.yml", for_="2s")   # a classroom demo: seconds, not minutes

Prometheus and Alertmanager are programs, not Python packages: install Debian's ``prometheus`` and
``prometheus-alertmanager`` packages, or ``brew install prometheus alertmanager`` on macOS
(:func:`missing_binaries` says what is missing).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FOLDER = Path(__file__).resolve().parent / "prometheus"
RULES = FOLDER / "rules.yml"
"""The course's alerting rules (Prometheus rule file)."""
RULES_TEST = FOLDER / "rules.test.yml"
"""The unit tests of :data:`RULES`, run by ``promtool test rules``."""
ALERTMANAGER = FOLDER / "alertmanager.yml"
"""The template of Alertmanager's configuration (``${RECEIVER_URL}`` is filled in at run time)."""

INSTALL_HINT = ("install Debian's prometheus and prometheus-alertmanager packages (apt-get install prometheus "
                "prometheus-alertmanager) or on macOS `brew install prometheus alertmanager`")
SEVERITIES = ("info", "warning", "critical")
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP_KEYS = {"groups"}
_GROUP_KEYS = {"name", "interval", "limit", "rules"}
_RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
_SEARCH = ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin")  # where packages put them, if PATH lacks it


class AlertRulesError(ValueError):
    """A rules file (or Alertmanager configuration) is malformed, or promtool refused it.

    ``problems`` lists every mistake found, each naming where it is."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class MissingBinaryError(RuntimeError):
    """Prometheus, promtool or Alertmanager is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Rule:
    """One rule of a rules file. ``for_`` is the rule's ``for:`` (None: fires at once)."""

    name: str
    expr: str
    for_: str | None = None
    severity: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    group: str = ""
    kind: str = "alert"  # or "record" (a recording rule)

    @property
    def threshold(self) -> str | None:
        """The ``threshold`` label, when the rule names its limit (the course's rules do)."""
        return self.labels.get("threshold")


# -- durations ------------------------------------------------------------------------------------
def is_duration(text: object) -> bool:
    """True when ``text`` is a Prometheus duration: ``30s``, ``10m``, ``1h30m``, ``500ms``, ``0``."""
    return isinstance(text, str) and (text == "0" or (text != "" and _DURATION.match(text) is not None))


def duration_seconds(text: str) -> float:
    """A Prometheus duration in seconds (``"1h30m"`` is 5400.0); ValueError if it is not one."""
    if not is_duration(text):
        raise ValueError(f"{text!r} is not a duration; write a number with a unit, e.g. 30s, 10m, 1h, 1h30m")
    if text == "0":
        return 0.0
    match = _DURATION.match(text)
    assert match is not None  # is_duration said so
    return sum(int(p) * ms for p, ms in zip(match.groups(), _DURATION_MS) if p) / 1000


def _duration_problem(value: object, what: str) -> str | None:
    if isinstance(value, str) and is_duration(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{what} {value!r} has no unit; write e.g. {value}m or {value}s"
    return f"{what} {value!r} is not a duration; write a number with a unit, e.g. 30s, 10m, 1h, 1h30m"


def _check_duration(value: object, what: str) -> str:
    problem = _duration_problem(value, what)
    if problem:
        raise ValueError(problem)
    return str(value)


# -- reading a rules file -------------------------------------------------------------------------
class _Mapping(dict):
    """A YAML mapping that remembers the line it started on."""

    line = 0


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (Prometheus does too) and records line numbers."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> _Mapping:
    loader.flatten_mapping(node)
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in one mapping (first on line {seen[key]})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    mapping = _Mapping(loader.construct_mapping(node, deep=deep))
    mapping.line = node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise AlertRulesError(
            f"{source}: not valid YAML at {where}: {problem}. Check the indentation, and quote a value "
            "that starts with '{{' or contains ': ' (e.g. summary: 'PSI {{ $value }}')") from None
    except yaml.YAMLError as exc:
        raise AlertRulesError(f"{source}: not valid YAML: {exc}") from None


def _where(item: object) -> str:
    line = getattr(item, "line", 0)
    return f" (line {line})" if line else ""


def _string_map(value: object, what: str, problems: list[str], names: bool = True) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{what} must be a mapping of names to text, got {type(value).__name__}")
        return {}
    out = {}
    for key, text in value.items():
        if not isinstance(key, str) or (names and not _LABEL_NAME.match(key)):
            problems.append(f"{what}: {key!r} is not a valid name (letters, digits and _; not starting with a digit)")
            continue
        if not isinstance(text, str):
            problems.append(f"{what}: the value of {key!r} must be text; quote it ({key}: \"{text}\"): "
                            "label and annotation values are strings in Prometheus")
            continue
        out[key] = text
    return out


def _parse_rule(item: object, group: str, index: int, problems: list[str]) -> Rule | None:
    if not isinstance(item, dict):
        problems.append(f"group {group!r}, rule {index + 1}: a rule must be a mapping with alert (or record) and "
                        f"expr, got {item!r}")
        return None
    kind = "alert" if "alert" in item else "record" if "record" in item else None
    name = item.get("alert", item.get("record"))
    label = f"group {group!r}, rule {name!r}{_where(item)}" if name else f"group {group!r}, rule {index + 1}{_where(item)}"
    before = len(problems)
    unknown = sorted(set(map(str, item)) - _RULE_KEYS)
    if unknown:
        problems.append(f"{label}: unknown key(s) {', '.join(map(repr, unknown))}; a rule has "
                        f"{', '.join(sorted(_RULE_KEYS))}")
    if kind is None:
        problems.append(f"{label}: a rule needs `alert: NAME` (an alerting rule) or `record: NAME` (a recording rule)")
    elif "alert" in item and "record" in item:
        problems.append(f"{label}: a rule is either an alert or a record, not both")
    elif not isinstance(name, str) or not name.strip():
        problems.append(f"{label}: the {kind} name must be text")
    elif kind == "record" and not _METRIC_NAME.match(name):
        problems.append(f"{label}: {name!r} is not a valid metric name for a recording rule")
    expr = item.get("expr")
    if expr is None or (isinstance(expr, str) and not expr.strip()):
        problems.append(f"{label}: missing `expr` (the PromQL expression the rule evaluates)")
    elif not isinstance(expr, (str, int, float)) or isinstance(expr, bool):
        problems.append(f"{label}: `expr` must be a PromQL expression (text), got {type(expr).__name__}")
    for_ = item.get("for")
    if "for" in item:
        if kind == "record":
            problems.append(f"{label}: `for` only applies to alerting rules")
        else:
            problem = _duration_problem(for_, "`for:`")
            if problem:
                problems.append(f"{label}: {problem}")
    if "keep_firing_for" in item:
        problem = _duration_problem(item["keep_firing_for"], "`keep_firing_for:`")
        if problem:
            problems.append(f"{label}: {problem}")
    labels = _string_map(item.get("labels"), f"{label}: labels", problems)
    annotations = _string_map(item.get("annotations"), f"{label}: annotations", problems)
    if kind == "record" and "annotations" in item:
        problems.append(f"{label}: annotations only apply to alerting rules")
    severity = labels.get("severity")
    if severity is not None and severity not in SEVERITIES:
        problems.append(f"{label}: severity {severity!r} is not one of {', '.join(SEVERITIES)} "
                        "(Alertmanager's routes and inhibitions match on these)")
    if len(problems) > before:
        return None
    return Rule(name=str(name), expr=str(expr).strip(), for_=None if for_ is None else str(for_), severity=severity,
                labels=labels, annotations=annotations, group=group, kind=kind or "alert")


def parse_rules(text: str, source: str = "<rules>") -> list[Rule]:
    """The rules in ``text`` (a Prometheus rules file); :class:`AlertRulesError` lists every mistake."""
    document = _parse_yaml(text, source)
    if document is None:
        raise AlertRulesError(f"{source}: the file is empty; a rules file starts with `groups:`")
    if not isinstance(document, dict):
        raise AlertRulesError(f"{source}: a rules file is a mapping with one key, `groups:`, "
                              f"not {type(document).__name__}")
    problems: list[str] = []
    unknown = sorted(set(map(str, document)) - _TOP_KEYS)
    if unknown:
        hint = " (the rules belong under `groups: - name: ... rules: [...]`)" if "rules" in unknown else ""
        problems.append(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; a rules file has only "
                        f"`groups:`{hint}")
    groups = document.get("groups")
    if groups is None:
        problems.append("missing `groups:` (a list of rule groups, each with a name and rules)")
        groups = []
    elif not isinstance(groups, list):
        problems.append(f"`groups:` must be a list of rule groups, got {type(groups).__name__}")
        groups = []
    rules: list[Rule] = []
    names: set[str] = set()
    for index, group in enumerate(groups):
        if not isinstance(group, dict):
            problems.append(f"group {index + 1}: a group must be a mapping with name and rules, got {group!r}")
            continue
        name = group.get("name")
        label = f"group {name!r}{_where(group)}" if isinstance(name, str) else f"group {index + 1}{_where(group)}"
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{label}: a group needs a `name:`")
            name = f"#{index + 1}"
        elif name in names:
            problems.append(f"{label}: the group name {name!r} is used twice; group names must be unique")
        names.add(name)
        extra = sorted(set(map(str, group)) - _GROUP_KEYS)
        if extra:
            problems.append(f"{label}: unknown key(s) {', '.join(map(repr, extra))}; a group has "
                            f"{', '.join(sorted(_GROUP_KEYS))}")
        if "interval" in group:
            problem = _duration_problem(group["interval"], "`interval:`")
            if problem:
                problems.append(f"{label}: {problem}")
        items = group.get("rules")
        if not isinstance(items, list):
            problems.append(f"{label}: `rules:` must be a list of rules")
            continue
        for position, item in enumerate(items):
            rule = _parse_rule(item, name, position, problems)
            if rule is not None:
                rules.append(rule)
    if problems:
        shown = "\n  - ".join(problems)
        raise AlertRulesError(f"{source}: {len(problems)} problem(s):\n  - {shown}", problems)
    return rules


def load_rules(path: str | Path = RULES) -> list[Rule]:
    """The rules of a Prometheus rules file (default: the course's), each a :class:`Rule`.

    A malformed file raises :class:`AlertRulesError` naming every mistake and where it is: YAML
    syntax (with the line), unknown keys, a rule without ``expr``, a ``for:`` that is not a
    duration, a label value that is not text. The PromQL itself is checked by :func:`check_rules`
    (``promtool``), which this does not need.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise AlertRulesError(f"cannot read the rules file {path}: {exc.strerror or exc}") from None
    return parse_rules(text, str(path))


# -- the programs ----------------------------------------------------------------------------------
def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for folder in _SEARCH:
        for name in names:
            candidate = Path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def promtool() -> str | None:
    """The path of ``promtool`` (Prometheus's checker), or None when it is not installed."""
    return _which("promtool")


def prometheus() -> str | None:
    """The path of the ``prometheus`` server, or None when it is not installed."""
    return _which("prometheus")


def alertmanager() -> str | None:
    """The path of Alertmanager: ``prometheus-alertmanager`` (Debian) or ``alertmanager`` (Homebrew,
    upstream releases), or None when it is not installed."""
    return _which("prometheus-alertmanager", "alertmanager")


def amtool() -> str | None:
    """The path of ``amtool`` (Alertmanager's checker), or None."""
    return _which("amtool")


def missing_binaries(names: tuple[str, ...] = ("prometheus", "promtool", "alertmanager")) -> list[str]:
    """Which of the programs the monitoring stack needs are not installed ([] when all are).

    Install them with :data:`INSTALL_HINT`: Debian's ``prometheus`` (``prometheus``, ``promtool``) and
    ``prometheus-alertmanager`` (``prometheus-alertmanager``, ``amtool``) packages, or Homebrew's
    ``prometheus`` and ``alertmanager`` formulae.
    """
    finders = {"prometheus": prometheus, "promtool": promtool, "alertmanager": alertmanager, "amtool": amtool}
    return [name for name in names if finders[name]() is None]


def require(*names: str) -> None:
    """Raise :class:`MissingBinaryError` naming what to install when any of ``names`` is missing."""
    missing = missing_binaries(tuple(names))
    if missing:
        raise MissingBinaryError(f"{', '.join(missing)} not found: {INSTALL_HINT}")


def _run(args: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _output(result: subprocess.CompletedProcess) -> str:
    return "\n".join(part.strip() for part in (result.stdout, result.stderr) if part.strip())


def check_rules(path: str | Path = RULES) -> str:
    """Check a rules file: in Python (:func:`load_rules`), then with ``promtool check rules``.

    Returns promtool's report (or, without promtool, a line saying only the Python checks ran and how
    to install it); raises :class:`AlertRulesError` with every problem or promtool's message.
    """
    path = Path(path)
    rules = load_rules(path)
    tool = promtool()
    if tool is None:
        return (f"{path}: {len(rules)} rules read; the PromQL was not checked because promtool is missing "
                f"({INSTALL_HINT})")
    result = _run([tool, "check", "rules", str(path)])
    if result.returncode != 0:
        raise AlertRulesError(f"promtool check rules {path} failed:\n{_output(result)}")
    return _output(result)


def test_rules(test_file: str | Path = RULES_TEST) -> str:
    """Run ``promtool test rules`` on a unit-test file (default: the course's); its report.

    The test file names its rule files relative to its own folder. A failing test raises
    :class:`AlertRulesError` with promtool's report (which alert, at what time, expected and got);
    a missing promtool raises :class:`MissingBinaryError`.
    """
    test_file = Path(test_file)
    if not test_file.is_file():
        raise AlertRulesError(f"no rules test file at {test_file}")
    tool = promtool()
    if tool is None:
        raise MissingBinaryError(f"promtool not found: {INSTALL_HINT}")
    result = _run([tool, "test", "rules", test_file.name], cwd=test_file.parent)
    if result.returncode != 0:
        raise AlertRulesError(f"promtool test rules {test_file} failed:\n{_output(result)}")
    return _output(result)


setattr(test_rules, "__test__", False)  # a library function, not a test for pytest to collect


def check_alertmanager(path: str | Path) -> str:
    """Check a rendered Alertmanager configuration with ``amtool check-config`` (when installed)."""
    path = Path(path)
    tool = amtool()
    if tool is None:
        return f"{path}: not checked, amtool is missing ({INSTALL_HINT})"
    result = _run([tool, "check-config", str(path)])
    if result.returncode != 0:
        raise AlertRulesError(f"amtool check-config {path} failed:\n{_output(result)}")
    return _output(result)


# -- rendering the copies a stack runs with --------------------------------------------------------
def _dump(document: dict, dest: Path, header: str) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=False)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(header + body)
    os.replace(tmp, dest)
    return dest


def render_rules(path: str | Path, dest: str | Path, *, for_: str | None = None,
                 evaluation: str | None = None) -> Path:
    """Write a copy of the rules file ``path`` to ``dest`` with every ``for:`` set to ``for_`` and
    every group's evaluation ``interval`` set to ``evaluation`` (None leaves them as they are).

    Integration tests and classroom demos need alerts in seconds, not the production minutes:
    ``render_rules(RULES, dest, for_="2s")``. Rules without a ``for:`` keep firing at once. The
    source is checked first (:func:`load_rules`); returns ``dest``.
    """
    path = Path(path)
    load_rules(path)  # every mistake reported before anything is written
    if for_ is not None:
        for_ = _check_duration(for_, "for_")
    if evaluation is not None:
        evaluation = _check_duration(evaluation, "evaluation")
    document = yaml.safe_load(path.read_text())
    for group in document["groups"]:
        if evaluation is not None:
            group["interval"] = evaluation
        for rule in group["rules"]:
            if for_ is not None and "for" in rule:
                rule["for"] = for_
    changes = ", ".join(part for part in (f"for: {for_}" if for_ else "", f"interval: {evaluation}" if evaluation
                                          else "") if part) or "no changes"
    header = f"# Rendered from {path} ({changes}) by mlops_lab.monitoring.alerts.render_rules; edit the source.\n"
    return _dump(document, Path(dest), header)


def _substitute(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    return value


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, list):
        return set().union(*map(_placeholders, value)) if value else set()
    if isinstance(value, dict):
        return set().union(*map(_placeholders, value.values())) if value else set()
    return set()


def render_alertmanager(dest: str | Path, receiver_url: str, *, group_wait: str | None = None,
                        group_interval: str | None = None, repeat_interval: str | None = None,
                        template: str | Path = ALERTMANAGER) -> Path:
    """Write Alertmanager's configuration to ``dest``: the template with ``${RECEIVER_URL}`` filled in.

    ``receiver_url``: where the webhook posts (the course's receiver: ``http://127.0.0.1:PORT/alerts``).
    ``group_wait``, ``group_interval``, ``repeat_interval``: replace the top route's production timers
    (30s, 5m, 4h) for tests and demos. Every ``${NAME}`` of the template must be filled; returns ``dest``.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(receiver_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the receiver URL {receiver_url!r} must be an http(s) URL, "
                         "e.g. http://127.0.0.1:9095/alerts")
    template = Path(template)
    try:
        document = _parse_yaml(template.read_text(), str(template))
    except OSError as exc:
        raise AlertRulesError(f"cannot read the Alertmanager template {template}: {exc.strerror or exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("route"), dict):
        raise AlertRulesError(f"{template}: an Alertmanager configuration needs a `route:` mapping")
    document = _substitute(document, {"RECEIVER_URL": receiver_url})
    left = _placeholders(document)
    if left:
        raise AlertRulesError(f"{template}: no value for {', '.join('${' + n + '}' for n in sorted(left))}; "
                              "render_alertmanager fills in ${RECEIVER_URL} only")
    for key, value in (("group_wait", group_wait), ("group_interval", group_interval),
                       ("repeat_interval", repeat_interval)):
        if value is not None:
            document["route"][key] = _check_duration(value, key)
    header = (f"# Rendered from {template} by mlops_lab.monitoring.alerts.render_alertmanager "
              f"(receiver {receiver_url}); edit the template.\n")
    return _dump(document, Path(dest), header)


# -- would this alert fire on these metrics? -------------------------------------------------------
def series_from_metrics(text: str, *, job: str = "monitor", instance: str = "127.0.0.1:9108") -> dict[str, float]:
    """The samples of a ``/metrics`` page as Prometheus stores them after a scrape: ``{series: value}``,
    with the ``job`` and ``instance`` labels added, plus ``up`` = 1 (NaN samples are left out)."""
    import math

    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created") or math.isnan(sample.value):
                continue
            labels = {**sample.labels, "job": job, "instance": instance}
            inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            found[f"{sample.name}{{{inner}}}"] = float(sample.value)
    found[f'up{{instance="{instance}", job="{job}"}}'] = 1.0
    return found


def fires(rules: str | Path, metrics: str | dict[str, float], alert: str, *, job: str = "monitor",
          after: str = "30m", interval: str = "1m") -> list[dict[str, str]]:
    """The instances of ``alert`` firing after ``metrics`` held steady for ``after`` (empty: silent).

    ``rules`` is a rules file (path) or its text; ``metrics`` a ``/metrics`` page (what the monitor
    serves) or ``{series: value}``. It asks Prometheus' own evaluator, ``promtool test rules``, with a
    test that expects silence: a firing alert makes that test fail, and promtool lists what it got.
    Each item is an alert's labels. Raises :class:`AlertRulesError` for rules promtool refuses and
    :class:`MissingBinaryError` without promtool."""
    import json
    import tempfile

    is_file = isinstance(rules, Path) or ("\n" not in rules and rules.endswith((".yml", ".yaml")))
    text = Path(rules).read_text() if is_file else rules
    parsed = parse_rules(text, "rules")
    if not any(r.name == alert and r.kind == "alert" for r in parsed):
        raise AlertRulesError(f"the rules have no alert named {alert!r}; they have {[r.name for r in parsed]}")
    require("promtool")
    series = series_from_metrics(metrics, job=job) if isinstance(metrics, str) else metrics
    steps = int(duration_seconds(after) // duration_seconds(interval)) + 1
    test = {"rule_files": ["rules.yml"], "evaluation_interval": interval,
            "tests": [{"interval": interval,
                       "input_series": [{"series": name, "values": f"{value!r}x{steps}".replace("inf", "Inf")}
                                        for name, value in series.items()],
                       "alert_rule_test": [{"eval_time": after, "alertname": alert, "exp_alerts": []}]}]}
    with tempfile.TemporaryDirectory(prefix="mlops-lab-fires-") as folder:
        (Path(folder) / "rules.yml").write_text(text)
        (Path(folder) / "test.yml").write_text(json.dumps(test))
        result = _run([promtool(), "test", "rules", "test.yml"], cwd=Path(folder))
    if result.returncode == 0:
        return []
    output = _output(result)
    got = re.search(r"got:\s*(\[.*\])", output, re.S)
    if "exp:[]" not in output.replace(" ", "") or got is None:
        raise AlertRulesError(f"promtool could not evaluate the rules:\n{output}")
    return [dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', block)) for block in re.findall(r"Labels:\{([^}]*)\}", got.group(1))]
