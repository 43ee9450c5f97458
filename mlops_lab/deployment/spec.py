"""The strategy spec: a readable description of a deployment, checked before anything starts.

A spec is a small YAML (or dict) naming the variants behind the router and the strategy that
splits traffic between them::

    name: credit-canary            # names the router's state and inference log in the workspace
    model: credit-risk             # the registered model a successful canary promotes
    strategy: canary               # single | ab | canary | shadow | bluegreen | rolling
    variants:
      stable: {version: "1", urls: ["http://127.0.0.1:5001"]}
      canary: {version: "2", urls: ["http://127.0.0.1:5002"]}
    canary:                        # Flagger's analysis: step weights, an interval, a threshold
      steps: [10, 25, 50, 100]
      interval_s: 1
      threshold: 2                 # failed checks before the rollback
      max_error_rate: 0.01         # share of 5xx or unanswered requests
      max_p99_ratio: 2.0           # canary p99 over the stable variant's p99 in the same interval

Every mistake is reported at once, each in a sentence naming the field (weights that do not sum to
100, an unknown variant, a negative interval, a URL that is not ``http://host:port``), by
:class:`SpecError` before any process starts. The same spec is rendered as Kubernetes manifests by
:mod:`mlops_lab.deployment.manifests`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

STRATEGIES = ("single", "ab", "canary", "shadow", "bluegreen", "rolling")
"""What the router does with traffic: one variant; a fixed weighted split (A/B); a canary with
step weights and automatic analysis; a primary with a mirrored shadow; two colours with a switch;
one variant whose replicas are replaced one at a time."""
DEFAULT_KEY_HEADER = "X-User-Id"
"""The request header whose value makes a split sticky (same user, same variant)."""
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")


class SpecError(ValueError):
    """A strategy spec that cannot run; ``problems`` lists every mistake found, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the strategy spec is not valid:\n- " + "\n- ".join(problems))


@dataclass(frozen=True)
class Fault:
    """Istio-style fault injection on one variant (to rehearse a rollback): a delay added to
    ``delay_percent`` % of its requests, and ``abort_percent`` % answered ``abort_status`` at once."""

    delay_ms: float = 0.0
    delay_percent: float = 100.0
    abort_percent: float = 0.0
    abort_status: int = 500

    @property
    def active(self) -> bool:
        return self.delay_ms > 0 or self.abort_percent > 0


@dataclass(frozen=True)
class Variant:
    """One model version behind the router: its replicas (base URLs of model servers) and what it serves."""

    name: str
    urls: tuple[str, ...]
    version: str | None = None
    model_uri: str | None = None
    fault: Fault = field(default_factory=Fault)


@dataclass(frozen=True)
class Canary:
    """The canary analysis (Flagger's ``analysis``): weights in ``steps``, one check every ``interval_s``."""

    stable: str = "stable"
    canary: str = "canary"
    steps: tuple[float, ...] = (10, 25, 50, 100)
    interval_s: float = 1.0
    threshold: int = 2
    min_requests: int = 10
    max_error_rate: float = 0.01
    max_p99_ratio: float = 2.0
    p99_slack_ms: float = 20.0
    max_p99_ms: float | None = None
    promote: bool = True


@dataclass(frozen=True)
class Mirror:
    """Shadow traffic (Istio's ``mirror``): every request copied to ``to``, off the response path."""

    to: str
    timeout_s: float = 2.0
    max_in_flight: int = 64


@dataclass(frozen=True)
class Spec:
    """A checked strategy spec (build it with :func:`load_spec`)."""

    name: str
    strategy: str
    variants: dict[str, Variant]
    weights: dict[str, float]
    model: str | None = None
    key_header: str = DEFAULT_KEY_HEADER
    salt: str = ""
    canary: Canary | None = None
    mirror: Mirror | None = None

    @property
    def primary(self) -> str:
        """The variant with the largest weight (the stable one, the active colour, the primary)."""
        return max(self.weights, key=lambda v: (self.weights[v], v == next(iter(self.variants))))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for variant in out["variants"].values():
            variant["urls"] = list(variant["urls"])
            variant.pop("name")
        if out["canary"] is not None:
            out["canary"]["steps"] = list(out["canary"]["steps"])
        return {k: v for k, v in out.items() if v is not None}

    @property
    def digest(self) -> str:
        """A short hash of the spec: a router restarted with the same spec resumes its state."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _url_problem(where: str, url: Any) -> str | None:
    if not isinstance(url, str):
        return f"{where} must be a URL such as 'http://127.0.0.1:5001', got {url!r}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{where} must be a URL such as 'http://127.0.0.1:5001', got {url!r}"
    try:
        parts.port
    except ValueError:
        return f"{where} has a port that is not a number: {url!r}"
    if parts.path not in ("", "/"):
        return f"{where} must be the server's base URL without a path (the router adds /invocations), got {url!r}"
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"{where} must be a plain base URL (no query, fragment or credentials), got {url!r}"
    return None


class _Checker:
    """Collects problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def number(self, where: str, value: Any, *, low: float | None = None, high: float | None = None,
               positive: bool = False, integer: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.problems.append(f"{where} must be a number, got {value!r}")
            return None
        if integer and int(value) != value:
            self.problems.append(f"{where} must be a whole number, got {value!r}")
            return None
        if positive and value <= 0:
            self.problems.append(f"{where} must be greater than 0, got {value!r}")
        elif low is not None and value < low or high is not None and value > high:
            self.problems.append(f"{where} must be between {low:g} and {high:g}, got {value!r}")
        return value

    def keys(self, where: str, given: dict, known: set[str]) -> None:
        for key in sorted(set(given) - known):
            hint = _closest(key, known)
            self.problems.append(f"{where} has an unknown field {key!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                                 + f"; known fields: {', '.join(sorted(known))}")


def _closest(word: str, choices) -> str | None:
    import difflib

    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else None


def _fault(check: _Checker, where: str, raw: Any) -> Fault:
    if raw is None:
        return Fault()
    if not isinstance(raw, dict):
        check.problems.append(f"{where} must be a mapping such as {{delay_ms: 100}}, got {raw!r}")
        return Fault()
    check.keys(where, raw, {"delay_ms", "delay_percent", "abort_percent", "abort_status"})
    delay = check.number(f"{where}.delay_ms", raw.get("delay_ms", 0), low=0, high=60_000)
    share = check.number(f"{where}.delay_percent", raw.get("delay_percent", 100), low=0, high=100)
    abort = check.number(f"{where}.abort_percent", raw.get("abort_percent", 0), low=0, high=100)
    status = check.number(f"{where}.abort_status", raw.get("abort_status", 500), low=400, high=599, integer=True)
    return Fault(float(delay or 0), float(share if share is not None else 100), float(abort or 0), int(status or 500))


def _variants(check: _Checker, raw: Any, model: str | None) -> dict[str, Variant]:
    if not isinstance(raw, dict) or not raw:
        check.problems.append("variants must map each variant's name to its urls, e.g. "
                              "{stable: {urls: ['http://127.0.0.1:5001'], version: '1'}}")
        return {}
    out = {}
    for name, body in raw.items():
        where = f"variant {name!r}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            check.problems.append(f"{where}: a variant name is lower-case letters, digits and '-' (it becomes a "
                                  "Kubernetes name and a metric label)")
        if not isinstance(body, dict):
            check.problems.append(f"{where} must be a mapping with urls (and optionally version), got {body!r}")
            continue
        check.keys(where, body, {"urls", "url", "version", "model_uri", "fault"})
        urls = body.get("urls", [body["url"]] if "url" in body else None)
        if isinstance(urls, str):
            urls = [urls]
        elif isinstance(urls, tuple):
            urls = list(urls)
        if not urls or not isinstance(urls, list):
            check.problems.append(f"{where} needs urls: the base URLs of its model servers (one per replica)")
            urls = []
        for i, url in enumerate(urls):
            problem = _url_problem(f"{where} url {i + 1}", url)
            if problem:
                check.problems.append(problem)
        if len(set(map(str, urls))) != len(urls):
            check.problems.append(f"{where} lists the same URL twice")
        version = body.get("version")
        version = None if version is None else str(version)
        model_uri = body.get("model_uri") or (f"models:/{model}/{version}" if model and version else None)
        out[str(name)] = Variant(str(name), tuple(str(u).rstrip("/") for u in urls), version, model_uri,
                                 _fault(check, f"{where}.fault", body.get("fault")))
    return out


def _weights(check: _Checker, raw: Any, variants: dict[str, Variant]) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        check.problems.append("weights must map variants to percentages summing to 100, e.g. {a: 50, b: 50}")
        return {}
    out = {}
    for name, value in raw.items():
        if name not in variants:
            hint = _closest(name, variants)
            check.problems.append(f"weights name an unknown variant {name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                                  + f"; the variants are {', '.join(variants)}")
            continue
        number = check.number(f"the weight of {name!r}", value, low=0, high=100)
        if number is not None:
            out[name] = float(number)
    if out and len(out) == len(raw) and abs(sum(out.values()) - 100) > 1e-6:
        check.problems.append(f"weights must sum to 100; these sum to {sum(out.values()):g} ({out})")
    return {name: out.get(name, 0.0) for name in variants} if out else {}


def _canary(check: _Checker, raw: Any, variants: dict[str, Variant], model: str | None) -> Canary | None:
    if not isinstance(raw, dict):
        check.problems.append("a canary strategy needs a canary section (steps, interval_s, threshold, ...)")
        return None
    fields = set(Canary.__dataclass_fields__)
    check.keys("canary", raw, fields)
    for role in ("stable", "canary"):
        name = raw.get(role, role)
        if not isinstance(name, str) or name not in variants:
            check.problems.append(f"canary.{role} names an unknown variant {name!r}; the variants are {', '.join(variants)}")
    steps = raw.get("steps", list(Canary.steps))
    steps = list(steps) if isinstance(steps, tuple) else steps
    if not isinstance(steps, list) or not steps:
        check.problems.append(f"canary.steps must be a list of percentages ending at 100, got {steps!r}")
        steps = list(Canary.steps)
    numbers = [check.number(f"canary step {i + 1}", s, low=0, high=100) for i, s in enumerate(steps)]
    if all(n is not None for n in numbers):
        if any(b <= a for a, b in zip(numbers, numbers[1:])) or numbers[0] <= 0:
            check.problems.append(f"canary.steps must increase from above 0, got {steps}")
        if numbers[-1] != 100:
            check.problems.append(f"canary.steps must end at 100 (the canary takes all traffic before promotion), got {steps}")
    values = {}
    for key, kind in (("interval_s", "positive"), ("threshold", "count"), ("min_requests", "count"),
                      ("max_error_rate", "share"), ("max_p99_ratio", "positive"), ("p99_slack_ms", "nonneg"),
                      ("max_p99_ms", "positive")):
        if key not in raw or (key == "max_p99_ms" and raw[key] is None):
            continue
        where = f"canary.{key}"
        if kind == "positive":
            values[key] = check.number(where, raw[key], positive=True)
        elif kind == "count":
            values[key] = check.number(where, raw[key], low=1, high=10_000, integer=True)
            values[key] = None if values[key] is None else int(values[key])
        elif kind == "share":
            values[key] = check.number(where, raw[key], low=0, high=1)
        else:
            values[key] = check.number(where, raw[key], low=0, high=60_000)
    promote = raw.get("promote", True)
    if not isinstance(promote, bool):
        check.problems.append(f"canary.promote must be true or false, got {promote!r}")
    elif promote and not model:
        check.problems.append("canary.promote is true but the spec names no model: add model: <registered name>, "
                              "or set canary.promote: false")
    elif promote and variants.get(raw.get("canary", "canary")) and not variants[raw.get("canary", "canary")].version:
        check.problems.append("canary.promote is true but the canary variant has no version to promote")
    values = {k: v for k, v in values.items() if v is not None}
    return Canary(stable=str(raw.get("stable", "stable")), canary=str(raw.get("canary", "canary")),
                  steps=tuple(float(n) for n in numbers if n is not None), promote=bool(promote), **values)


def _mirror(check: _Checker, raw: Any, variants: dict[str, Variant]) -> Mirror | None:
    if not isinstance(raw, dict) or "to" not in raw:
        check.problems.append("a shadow strategy needs mirror: {to: <variant>} naming the shadow variant")
        return None
    check.keys("mirror", raw, {"to", "timeout_s", "max_in_flight"})
    if not isinstance(raw["to"], str) or raw["to"] not in variants:
        check.problems.append(f"mirror.to names an unknown variant {raw['to']!r}; the variants are {', '.join(variants)}")
    timeout = check.number("mirror.timeout_s", raw.get("timeout_s", 2.0), positive=True)
    limit = check.number("mirror.max_in_flight", raw.get("max_in_flight", 64), low=1, high=10_000, integer=True)
    return Mirror(str(raw["to"]), float(timeout or 2.0), int(limit or 64))


def load_spec(source: str | Path | dict) -> Spec:
    """A checked :class:`Spec` from a YAML file, a YAML string or a dict; :class:`SpecError` lists every mistake.

    Defaults fill what a strategy implies: ``single`` and ``rolling`` send everything to their one
    variant, ``bluegreen`` to ``active`` (the first variant unless named), ``shadow`` to the variant
    that is not mirrored, ``canary`` starts at its first step.
    """
    raw = _read(source)
    check = _Checker()
    known = {"name", "model", "strategy", "variants", "weights", "key_header", "salt", "canary", "mirror", "active"}
    check.keys("the spec", raw, known)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        check.problems.append(f"name must be lower-case letters, digits and '-' (1-42 characters), got {name!r}")
    strategy = raw.get("strategy")
    if strategy not in STRATEGIES:
        hint = _closest(strategy, STRATEGIES)
        check.problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
                              + (f" (did you mean {hint!r}?)" if hint else ""))
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        check.problems.append(f"model must be a registered model's name, got {model!r}")
    variants = _variants(check, raw.get("variants"), model)
    canary = mirror = None
    weights: dict[str, float] = {}
    if variants and strategy in STRATEGIES:
        weights, canary, mirror = _strategy(check, strategy, raw, variants, model)
    key_header = raw.get("key_header", DEFAULT_KEY_HEADER)
    if not isinstance(key_header, str) or not re.fullmatch(r"[A-Za-z0-9-]+", key_header):
        check.problems.append(f"key_header must be an HTTP header name such as 'X-User-Id', got {key_header!r}")
    if check.problems:
        raise SpecError(check.problems)
    return Spec(name=name, strategy=strategy, variants=variants, weights=weights, model=model,
                key_header=key_header, salt=str(raw.get("salt") or ""), canary=canary, mirror=mirror)


def _strategy(check: _Checker, strategy: str, raw: dict, variants: dict[str, Variant], model):
    canary = mirror = None
    names = list(variants)
    if strategy == "canary":
        canary = _canary(check, raw.get("canary"), variants, model)
        if canary and canary.stable in variants and canary.canary in variants:
            if canary.stable == canary.canary:
                check.problems.append("canary.stable and canary.canary must be two different variants")
            first = canary.steps[0] if canary.steps else 0.0
            weights = {n: 0.0 for n in names}
            weights.update({canary.stable: 100.0 - first, canary.canary: first})
            return weights, canary, None
        return {}, canary, None
    if strategy == "shadow":
        mirror = _mirror(check, raw.get("mirror"), variants)
    for section in ("canary", "mirror"):
        if raw.get(section) is not None and strategy != {"canary": "canary", "mirror": "shadow"}[section]:
            check.problems.append(f"a {section} section belongs to a {'canary' if section == 'canary' else 'shadow'} "
                                  f"strategy, not {strategy}")
    if "weights" in raw:
        weights = _weights(check, raw["weights"], variants)
    elif strategy == "ab":
        check.problems.append("an ab strategy needs weights, e.g. {a: 50, b: 50}")
        weights = {}
    else:
        active = raw.get("active")
        if active is None:
            served = [n for n in names if not (mirror and n == mirror.to)]
            active = served[0] if served else names[0]
        if not isinstance(active, str) or active not in variants:
            check.problems.append(f"active names an unknown variant {active!r}; the variants are {', '.join(variants)}")
            return {}, None, mirror
        weights = {n: (100.0 if n == active else 0.0) for n in names}
    if strategy == "ab" and len(variants) < 2:
        check.problems.append("an ab strategy needs at least two variants")
    if strategy == "bluegreen" and len(variants) != 2:
        check.problems.append(f"a bluegreen strategy has exactly two variants, got {len(variants)}")
    elif strategy == "bluegreen" and weights and sorted(weights.values()) != [0.0, 100.0]:
        check.problems.append(f"a bluegreen strategy sends all traffic to one colour; got weights {weights} (use ab to split)")
    if strategy in ("single", "rolling") and len(variants) != 1:
        check.problems.append(f"a {strategy} strategy has exactly one variant, got {len(variants)}")
    if mirror and weights.get(mirror.to, 0) > 0:
        check.problems.append(f"the shadow variant {mirror.to!r} must get weight 0: its answers never reach a client")
    return weights, None, mirror


def _read(source: str | Path | dict) -> dict:
    import yaml

    if isinstance(source, dict):
        return source
    text = None
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))):
        path = Path(source)
        if not path.is_file():
            raise SpecError([f"no strategy spec at {path}"])
        text = path.read_text()
    else:
        text = str(source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError([f"the spec is not valid YAML: {error}"]) from None
    if not isinstance(raw, dict):
        raise SpecError([f"the spec must be a YAML mapping (name, strategy, variants, ...), got {type(raw).__name__}"])
    return raw
