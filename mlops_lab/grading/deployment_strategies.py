"""Checks for ``labs/12_deployment_strategies.ipynb``: a canary, its rollback, a shadow, an A/B decision.

The checks read what the router really did, not what a variable claims: its saved state in the
workspace (``deployments/<name>/state.json``), its inference log (``deployments/<name>/inference.db``)
and the registry's champion alias. A canary spec that was never run has no state, and fails.
"""

from __future__ import annotations

import json

from mlops_lab.grading import Lab

EXPERIMENT = "lab-12-deployment-strategies"
REGISTERED_MODEL = "lab-12-credit-risk"
CANARY_NAME = "lab-12-canary"
SHADOW_NAME = "lab-12-shadow"
INTERVAL_S = 0.5
"""The canary's analysis interval in seconds (production uses minutes; a laptop lab half a second)."""
MIN_REQUESTS = 5
RATE = 150
"""Requests per second while the canary analysis runs."""
LOAD_SECONDS = 3.0
SHADOW_REQUESTS = 50
"""How many applications task 3 sends through the shadow router, one per request."""

AB_WEIGHTS = {"champion": 50, "challenger": 50}
"""The configured A/B split of task 4: control (the champion) first, treatment second."""
BASELINE = 0.30
"""The champion's success rate (a correct credit decision) before the test."""
MINIMUM_EFFECT = 0.05
"""The smallest improvement worth detecting: 5 points, 30 % -> 35 %."""
BROKEN_SPLIT = {"champion": (1530, 5100), "challenger": (1656, 4600)}
"""(successes, users) per variant of an A/B test whose split is broken: it looks like a win."""
REAL_EFFECT = {"champion": (930, 3100), "challenger": (1100, 3100)}
"""(successes, users) per variant of an A/B test with a real effect and enough users."""

LAB = Lab("12_deployment_strategies", "Deployment strategies: a canary and its rollback, a shadow, an A/B decision")


def _registry():
    import mlflow

    from mlops_lab import registry
    from mlops_lab.config import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return registry


def _champion() -> str:
    registry = _registry()
    return str(registry.version_for(REGISTERED_MODEL, registry.CHAMPION).version)


def _challenger() -> str:
    return str(_registry().version_for(REGISTERED_MODEL, "challenger").version)


def _spec(ns: dict, variable: str, strategy: str):
    from mlops_lab.deployment import SpecError, load_spec

    raw = ns.get(variable)
    assert isinstance(raw, dict), f"there is no dict `{variable}` (the strategy spec)"
    try:
        spec = load_spec(raw)
    except SpecError as error:
        raise AssertionError(f"load_spec refuses `{variable}`: " + "; ".join(error.problems)) from None
    assert spec.strategy == strategy, f"`{variable}` has strategy {spec.strategy!r}, not {strategy!r}"
    return spec


def _server_url(ns: dict, variable: str) -> str:
    server = ns.get(variable)
    assert server is not None and getattr(server, "port", None), f"there is no variable `{variable}` (a started gateway)"
    return server.url


def _state(spec, variable: str) -> dict:
    from mlops_lab import config
    from mlops_lab.deployment.routing import state_folder

    path = state_folder(config.workspace(), spec.name) / "state.json"
    assert path.is_file(), (f"no router has run `{variable}` (there is no {path.relative_to(config.workspace())} in "
                            f"the workspace): start one with `deployment.router({variable}).start()`")
    state = json.loads(path.read_text())
    assert state.get("digest") == spec.digest, (
        f"the router state of {spec.name!r} is for another spec than `{variable}` holds now (did you change "
        f"`{variable}` after running it?): start the router again with `{variable}`")
    return state


def _canary_variants(spec, ns: dict, variable: str) -> tuple:
    stable, canary = spec.variants[spec.canary.stable], spec.variants[spec.canary.canary]
    assert spec.model == REGISTERED_MODEL, f"`{variable}` names model {spec.model!r}, not {REGISTERED_MODEL!r}"
    challenger = _challenger()
    assert canary.version == challenger, (f"the canary variant serves version {canary.version}, but the challenger "
                                          f"is version {challenger}")
    assert stable.version != challenger, "the stable variant must serve the champion's version, not the challenger"
    assert _server_url(ns, "champion_server") in stable.urls, "the stable variant's urls should be `[champion_server.url]`"
    assert _server_url(ns, "challenger_server") in canary.urls, \
        "the canary variant's urls should be `[challenger_server.url]`"
    return stable, canary


@LAB.check(
    "canary_configured",
    hint="`canary_spec = {\"name\": checks.CANARY_NAME, \"model\": checks.REGISTERED_MODEL, \"strategy\": \"canary\", "
    "\"variants\": {\"stable\": {\"version\": champion_version, \"urls\": [champion_server.url]}, \"canary\": "
    "{\"version\": challenger_version, \"urls\": [challenger_server.url]}}, \"canary\": {\"steps\": [10, 25, 50, 100], "
    "\"interval_s\": checks.INTERVAL_S, \"threshold\": 2, \"min_requests\": checks.MIN_REQUESTS, ...}}`; "
    "`deployment.load_spec(canary_spec)` lists every mistake.",
)
def canary_configured(ns: dict) -> None:
    spec = _spec(ns, "canary_spec", "canary")
    analysis = spec.canary
    assert len(analysis.steps) >= 3, f"the canary has {len(analysis.steps)} step(s) {list(analysis.steps)}; give it at least 3"
    assert analysis.steps[-1] == 100, "the steps must end at 100"
    assert analysis.interval_s <= 1, f"interval_s is {analysis.interval_s:g} s; at most 1 s keeps the lab short"
    assert analysis.promote, "promote must be true: a canary that passes every step becomes the champion"
    stable, _ = _canary_variants(spec, ns, "canary_spec")
    champion = _champion()
    assert stable.version == champion, f"the stable variant serves version {stable.version}; the champion is {champion}"


@LAB.check(
    "canary_rolled_back",
    hint="`faulty_spec = copy.deepcopy(canary_spec)` with `faulty_spec[\"variants\"][\"canary\"][\"fault\"] = "
    "{\"abort_percent\": 20}`; `canary_router = deployment.router(faulty_spec).start()`, then "
    "`loadtest.run_open_loop(target_for(canary_router), checks.RATE, checks.LOAD_SECONDS)` and "
    "`rollback = canary_router.client().wait_for_canary(timeout=30)`.",
)
def canary_rolled_back(ns: dict) -> None:
    spec = _spec(ns, "faulty_spec", "canary")
    stable, canary = _canary_variants(spec, ns, "faulty_spec")
    fault = canary.fault
    assert fault.abort_percent >= 5 or (fault.delay_ms >= 50 and fault.delay_percent >= 50), (
        "the canary variant needs a fault that breaks it: abort_percent of at least 5, or delay_ms of at least 50")
    assert not stable.fault.active, "put the fault on the canary variant only: the stable variant must stay healthy"
    state = _state(spec, "faulty_spec")
    analysis = state.get("canary") or {}
    status = analysis.get("status")
    if status == "progressing":
        raise AssertionError("the canary is still progressing: send load through the router while the analysis "
                             "runs, then wait for it with `wait_for_canary`")
    if status == "promoted":
        raise AssertionError(
            "the faulty canary passed its analysis and was promoted: make the fault stronger (the champion alias "
            f"moved; put it back with `registry.promote(checks.REGISTERED_MODEL, {stable.version!r}, reason=...)`)")
    assert status == "rolled_back", f"the canary's status is {status!r}, not 'rolled_back'"
    assert state["weights"].get(spec.canary.canary) == 0, \
        f"after the rollback the canary should get weight 0; the router's weights are {state['weights']}"
    failed = [c for c in analysis.get("checks", []) if c.get("result") == "failed"]
    assert len(failed) >= spec.canary.threshold, "the router's state shows no failed analysis check"
    champion = _champion()
    assert champion == stable.version, (f"the champion alias points to version {champion}, not the stable version "
                                        f"{stable.version}: a rolled-back canary must leave the alias alone")
    rollback = ns.get("rollback")
    assert isinstance(rollback, dict) and rollback.get("status") == "rolled_back", (
        "`rollback` should hold what `canary_router.client().wait_for_canary(...)` returned (status 'rolled_back')")


@LAB.check(
    "shadow_compared",
    hint="`shadow_spec = {\"name\": checks.SHADOW_NAME, \"strategy\": \"shadow\", \"variants\": {\"primary\": "
    "{... champion ...}, \"candidate\": {... challenger ...}}, \"mirror\": {\"to\": \"candidate\"}}`; start "
    "`shadow_router`, post checks.SHADOW_REQUESTS applications with `shadow_router.scoring_client().post(...)`, "
    "`shadow_router.client().status(flush=True)`, then `comparison = deployment.compare_shadow(shadow_router.log())`.",
)
def shadow_compared(ns: dict) -> None:
    import pandas as pd

    from mlops_lab import config, deployment
    from mlops_lab.deployment import InferenceLog
    from mlops_lab.deployment.routing import state_folder

    spec = _spec(ns, "shadow_spec", "shadow")
    shadow_name = spec.mirror.to
    primary_name = next(n for n in spec.variants if n != shadow_name)
    primary, shadow = spec.variants[primary_name], spec.variants[shadow_name]
    challenger, champion = _challenger(), _champion()
    assert shadow.version == challenger, f"the mirrored variant serves version {shadow.version}, not the challenger {challenger}"
    assert primary.version == champion, f"the primary serves version {primary.version}, not the champion {champion}"
    assert spec.weights[primary_name] == 100, f"the primary should take all the traffic; the weights are {spec.weights}"
    _state(spec, "shadow_spec")
    table = InferenceLog(state_folder(config.workspace(), spec.name) / "inference.db").frame(parse=True)
    primary_rows, shadow_rows = table[table["role"] == "primary"], table[table["role"] == "shadow"]
    assert len(primary_rows) >= SHADOW_REQUESTS, (f"the inference log of {spec.name!r} holds {len(primary_rows)} "
                                                  f"answers; send {SHADOW_REQUESTS} requests")
    leaked = primary_rows[primary_rows["variant"] != primary_name]
    assert leaked.empty, f"{len(leaked)} answers that reached a client came from {set(leaked['variant'])}, not the primary"
    assert (shadow_rows["variant"] == shadow_name).all(), "the log's shadow rows should all come from the mirrored variant"
    comparison = ns.get("comparison")
    assert isinstance(comparison, pd.DataFrame) and {"primary", "shadow"} <= set(comparison.index) \
        and "agreement" in comparison.columns, "`comparison` should be the table `deployment.compare_shadow` returned"
    # The student's comparison read the rows committed at that moment: a prefix of each role's rows.
    seen_primary, seen_shadow = int(comparison.loc["primary", "requests"]), int(comparison.loc["shadow", "requests"])
    assert seen_primary <= len(primary_rows) and seen_shadow <= len(shadow_rows), \
        "`comparison` counts more requests than the router's inference log holds"
    redone = deployment.compare_shadow(pd.concat([primary_rows.iloc[:seen_primary], shadow_rows.iloc[:seen_shadow]]))
    paired = int(redone.loc["shadow", "paired"])
    assert paired >= 0.9 * SHADOW_REQUESTS, (f"only {paired} requests have both a primary and a shadow answer: flush "
                                             "the log (`status(flush=True)`) after the last request, then compare")
    expected = redone.loc["shadow", "agreement"]
    assert comparison.loc["shadow", "agreement"] == expected, (
        f"`comparison` says agreement {comparison.loc['shadow', 'agreement']}, the inference log gives {expected}")


def _decision(ns: dict, variable: str):
    from mlops_lab.deployment.experiment import Decision

    decision = ns.get(variable)
    assert isinstance(decision, Decision), f"there is no `{variable}` holding what `experiment.decide(...)` returned"
    return decision


@LAB.check(
    "ab_decided",
    hint="`required = experiment.sample_size(checks.BASELINE, checks.MINIMUM_EFFECT)`; then "
    "`broken_decision = experiment.decide(checks.BROKEN_SPLIT, checks.AB_WEIGHTS, minimum_effect=checks.MINIMUM_EFFECT, "
    "baseline=checks.BASELINE)` and `effect_decision` the same with `checks.REAL_EFFECT`.",
)
def ab_decided(ns: dict) -> None:
    from mlops_lab.deployment import experiment

    expected_required = experiment.sample_size(BASELINE, MINIMUM_EFFECT)
    required = ns.get("required")
    assert required == expected_required, (f"`required` is {required!r}; for a baseline of {BASELINE:.0%} and a "
                                           f"minimum effect of {MINIMUM_EFFECT:.0%} sample_size gives {expected_required}")
    for variable, outcomes in (("broken_decision", BROKEN_SPLIT), ("effect_decision", REAL_EFFECT)):
        decision = _decision(ns, variable)
        expected = experiment.decide(outcomes, AB_WEIGHTS, minimum_effect=MINIMUM_EFFECT, baseline=BASELINE)
        seen = {v: (decision.successes.get(v), decision.trials.get(v)) for v in AB_WEIGHTS}
        assert (decision.control, decision.treatment) == tuple(AB_WEIGHTS) and seen == outcomes, (
            f"`{variable}` decided other counts ({seen}); decide {variable.replace('_decision', '').upper()} with "
            "checks.AB_WEIGHTS")
        assert decision.verdict == expected.verdict, f"`{variable}` says {decision.verdict!r}; the data say {expected.verdict!r}"
        assert decision.required == expected.required, (
            f"`{variable}` was decided without the planned sample size: pass minimum_effect and baseline")
    assert _decision(ns, "broken_decision").srm.mismatch, "the broken split should fail the sample-ratio-mismatch check"


@LAB.check(
    "servers_stopped",
    hint="Call `.stop()` on `canary_router`, `shadow_router`, `champion_server` and `challenger_server`: each stops "
    "its whole process group and frees its port.",
)
def servers_stopped(ns: dict) -> None:
    from mlops_lab.processes import group_members, port_in_use

    for variable in ("canary_router", "shadow_router", "champion_server", "challenger_server"):
        server = ns.get(variable)
        assert server is not None and hasattr(server, "pgid"), f"there is no variable `{variable}`"
        assert server.pgid is not None, f"`{variable}` was never started"
        assert not server.running and not group_members(server.pgid), f"`{variable}` (or one of its workers) is still running"
        assert not port_in_use(server.port), f"port {server.port} of `{variable}` is still bound"
