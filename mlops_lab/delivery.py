"""Continuous delivery of a model: unit tests -> integration tests in staging -> promotion to prod.

The course's GitHub Actions workflows (``.github/workflows/``) call one local command per job, so
every step runs on a laptop exactly as it runs on a hosted runner:

=========== ============================ ====================================================
job         command                      what it does
=========== ============================ ====================================================
unit        ``make cd-unit``             the unit tier, ``pytest -m unit`` (:func:`unit`)
staging     ``make cd-staging``          a candidate trained and gated in dev, copied to staging
                                         by the deployer bot, then checked there: loads by alias,
                                         scores the shipped data, keeps its data contract, carries
                                         the gate's verdict (:func:`staging`)
promote     ``make cd-promote``          staging's candidate copied to prod by the deployer bot,
                                         then challenger vs champion decided on held-out data
                                         (:func:`promote`)
=========== ============================ ====================================================

The environments are lesson 09's real, authenticated MLflow servers
(:mod:`mlops_lab.environments`): the ones ``mlops-lab env up`` left running, else started for the
command and stopped after it. Their stores stay in the workspace, so ``cd-promote`` finds what
``cd-staging`` put into staging. :func:`check_workflows` checks the workflow files offline against
GitHub's schema (``check-jsonschema``) and audits them (``zizmor --offline``).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlops_lab import auth, environments, promotion
from mlops_lab.config import SEED

MODEL = "credit-risk"
DATA_SCIENTIST = "data-scientist"
"""The dev account the staging job trains its candidate as (a ``data_scientist``)."""
EXPERIMENT = "credit-risk"


class DeliveryError(RuntimeError):
    """A delivery step cannot run: no candidate in staging, a workflow folder that is missing."""


def _bin(tool: str) -> str:
    """A tool installed beside this Python (the course's .venv), else the one on PATH."""
    local = Path(sys.executable).parent / tool
    return str(local) if local.exists() else tool


def _run(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)


# -- the workflow files ----------------------------------------------------------------------------
def workflows_dir(root: Path | None = None) -> Path:
    """``.github/workflows`` of the checkout (or of ``root``)."""
    from mlops_lab import config

    base = root or config.repo_root()
    if base is None or not (base / ".github" / "workflows").is_dir():
        raise DeliveryError("No .github/workflows folder: run from a checkout of the workbook")
    return base / ".github" / "workflows"


@dataclass
class ToolResult:
    """One checker's verdict on the workflow files: its command, exit status and output."""

    tool: str
    command: list[str]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def check_workflows(folder: Path | None = None) -> list[ToolResult]:
    """Check every workflow in ``folder`` against GitHub's schema and audit it with zizmor, offline.

    ``check-jsonschema --builtin-schema vendor.github-workflows`` catches what GitHub would refuse
    to run (unknown keys, a job without ``runs-on``); ``zizmor --offline`` finds security problems
    (actions not pinned to a commit, credentials left in the checkout, template injection,
    excessive permissions). Both come from PyPI and need no network.
    """
    folder = Path(folder) if folder else workflows_dir()
    files = sorted(p.name for p in folder.glob("*.y*ml"))  # run in the folder: short, stable paths
    if not files:
        raise DeliveryError(f"No workflow files (*.yml) in {folder}")
    results = []
    for tool, argv in (
        ("check-jsonschema", [_bin("check-jsonschema"), "--color", "never", "--builtin-schema", "vendor.github-workflows",
                              *files]),
        ("zizmor", [_bin("zizmor"), "--offline", "--no-progress", "--color", "never", *files]),
    ):
        done = _run(argv, cwd=folder)
        results.append(ToolResult(tool, [tool, *argv[1:]], done.returncode, (done.stdout + done.stderr).strip()))
    return results


def workflow_steps(folder: Path | None = None) -> pd.DataFrame:
    """Every ``run:`` step of every workflow: file, job, what it needs, its environment, the command."""
    import yaml

    folder = Path(folder) if folder else workflows_dir()
    rows = []
    for path in sorted(folder.glob("*.y*ml")):
        spec = yaml.safe_load(path.read_text()) or {}
        for job, body in (spec.get("jobs") or {}).items():
            needs = body.get("needs") or []
            environment = body.get("environment")
            for step in body.get("steps") or []:
                if "run" in step:
                    rows.append({"workflow": path.name, "job": job,
                                 "needs": ",".join([needs] if isinstance(needs, str) else needs),
                                 "environment": (environment.get("name") if isinstance(environment, dict)
                                                 else environment) or "",
                                 "run": step["run"].strip()})
    return pd.DataFrame(rows, columns=["workflow", "job", "needs", "environment", "run"])


def make_targets(makefile: Path) -> set[str]:
    """The targets a Makefile defines (rules at the start of a line)."""
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", makefile.read_text(), flags=re.M))


def check_commands(steps: pd.DataFrame, makefile: Path, parse: Callable[[list[str]], object]) -> list[str]:
    """Problems with the commands the workflows run: a ``make`` target the Makefile lacks, an
    ``mlops-lab`` command that ``parse`` (the CLI's ``parse_args``) refuses. Empty when all exist."""
    import shlex

    targets = make_targets(makefile)
    problems = []
    for row in steps.itertuples():
        for line in row.run.splitlines():
            words = shlex.split(line)
            if not words:
                continue
            if words[0] == "make":
                missing = [w for w in words[1:] if "=" not in w and not w.startswith("-") and w not in targets]
                problems += [f"{row.workflow} {row.job}: make target {t!r} is not in {makefile.name}" for t in missing]
            elif Path(words[0]).name == "mlops-lab":
                try:
                    parse(words[1:])
                except SystemExit:
                    problems.append(f"{row.workflow} {row.job}: `{line}` is not an mlops-lab command")
    return problems


# -- the unit job ------------------------------------------------------------------------------------
def unit(pytest_args: Sequence[str] = ()) -> int:
    """The unit tier (``pytest -m unit``) in a child process; returns pytest's exit status."""
    from mlops_lab import config

    root = config.repo_root()
    return subprocess.run([sys.executable, "-m", "pytest", "-m", "unit", *pytest_args], cwd=root).returncode


# -- the environments and their accounts ------------------------------------------------------------
@contextlib.contextmanager
def open_environments(which: str | Iterable[str], **options) -> Iterator[environments.Environments]:
    """The environments ``which``: those ``mlops-lab env up`` left running (left running after the
    block), else started for the block and stopped after it. ``options`` go to ``environments.start``."""
    wanted = environments.names(which)
    try:
        found = environments.Environments({n: environments.connect(n, options.get("home")) for n in wanted})
    except (environments.EnvError, auth.AuthError):
        with environments.running(wanted, **options) as started:
            yield started
        return
    yield found


def account(env: environments.Environment, username: str, role: str) -> auth.Credentials:
    """``username``'s working credentials in ``env``: stored, else created with ``role``.

    A user who exists on the server but whose password is not stored here (a fresh CI runner given
    the environment's store, not its credentials file) gets a new password from the admin.
    """
    try:
        creds = env.credentials(username)
        if auth.whoami(env.url, creds) == 200:
            return creds
    except auth.AuthError:
        pass
    try:
        return env.create_user(username, role)
    except auth.AuthError:  # the user exists: reset the password as the admin
        creds = auth.Credentials(username, auth.new_password())
        auth.client(env.url, env.admin).update_user_password(username, creds.password)
        auth.remember(env.name, creds, env.home)
        return creds


# -- the staging job ---------------------------------------------------------------------------------
@dataclass
class StagingResult:
    """What the staging job did: the dev and staging versions and the integration checks."""

    dev_version: str
    staging_version: str
    checks: pd.DataFrame = field(repr=False)

    @property
    def passed(self) -> bool:
        return bool(len(self.checks)) and bool(self.checks["passed"].all())


def candidate(dev: environments.Environment, *, name: str = MODEL, model: str = "logistic_regression",
              seed: int = SEED, **train_options) -> str:
    """Train a credit model in dev as the data scientist and run it through the validation gate
    (the MLproject's ``train`` and ``validate``); returns the dev version it was registered as.

    Raises :class:`DeliveryError` with the failing checks when the gate refuses it."""
    import mlflow

    from mlops_lab import projects

    with dev.signed_in(account(dev, DATA_SCIENTIST, "data_scientist")):
        mlflow.set_experiment(EXPERIMENT)
        tracked = projects.train(model, seed=seed, **train_options)
        gated = projects.validate(tracked.model_uri, name=name, seed=seed)
    if not gated.passed:
        raise DeliveryError(f"the candidate failed the validation gate in dev: {', '.join(gated.report.failing)}")
    return str(gated.version.version)


def _check(rows: list[dict], check: str, passed: bool, detail: str) -> None:
    rows.append({"check": check, "passed": bool(passed), "detail": detail})


def integration_checks(staging_env: environments.Environment, *, name: str = MODEL,
                       alias: str = promotion.CHALLENGER, seed: int = SEED) -> pd.DataFrame:
    """Check ``name@alias`` in staging as the deployer bot: it loads by alias, scores the shipped
    German Credit test split (0/1 for every row), carries the data contract and the shipped data
    keeps it (a broken row does not), and it carries the gate's verdict (``passed``, copied whole).

    One row per check: ``check``, ``passed``, ``detail``. Nothing raises for a failed check."""
    import mlflow

    from mlops_lab import datasets, gateway, training

    X = training.model_input(training.credit_split(datasets.load_german_credit(), seed=seed).X_test)
    rows: list[dict] = []
    uri = f"models:/{name}@{alias}"
    with staging_env.signed_in(account(staging_env, promotion.DEPLOYER, "deployer")):
        client = mlflow.MlflowClient()
        try:
            mv = client.get_model_version_by_alias(name, alias)
            model = mlflow.pyfunc.load_model(uri)
        except Exception as exc:  # noqa: BLE001 (the check reports it)
            _check(rows, "loads_by_alias", False, f"{uri}: {type(exc).__name__}: {str(exc)[:200]}")
            return pd.DataFrame(rows)
        _check(rows, "loads_by_alias", True, f"{uri} is version {mv.version}")
        predicted = pd.Series(model.predict(X)).reset_index(drop=True)
        labels = sorted(int(v) for v in predicted.dropna().unique())
        _check(rows, "scores_shipped_data", len(predicted) == len(X) and not predicted.isna().any()
               and set(labels) <= {0, 1}, f"{len(predicted)} of {len(X)} rows scored, labels {labels}")
        contract = gateway.data_contract(uri)
        report = contract.validate(X, name="shipped test split") if contract else None
        _check(rows, "keeps_data_contract", report is not None and report.passed,
               f"{contract.name} v{contract.version}: {report.verdict()}" if contract else "the model carries no contract")
        if contract is not None:
            broken = X.head(1).assign(sex="mael")
            _check(rows, "contract_refuses_bad_rows", not contract.validate(broken, name="broken row").passed,
                   "a row with sex='mael' breaks the contract")
        tags = mv.tags
        verdict = (tags.get("validation_status"), tags.get("lineage.validation_status"), tags.get(promotion.STATE))
        _check(rows, "gate_verdict", verdict == ("passed", "passed", "complete"),
               f"validation_status={verdict[0]}, from {tags.get('lineage.source_env', '?')}: {verdict[1]}, "
               f"copy {verdict[2]}")
    return pd.DataFrame(rows)


def staging(envs: environments.Environments, *, name: str = MODEL, seed: int = SEED,
            **train_options) -> StagingResult:
    """The staging job: a gated candidate from dev, copied to staging by the deployer bot, checked there."""
    account(envs["dev"], promotion.DEPLOYER, "deployer")
    account(envs["staging"], promotion.DEPLOYER, "deployer")
    dev_version = candidate(envs["dev"], name=name, seed=seed, **train_options)
    copied = promotion.promote(name, dev_version, envs["dev"], envs["staging"])
    return StagingResult(dev_version, copied.version, integration_checks(envs["staging"], name=name, seed=seed))


# -- the promote job ---------------------------------------------------------------------------------
def promote(envs: environments.Environments, *, name: str = MODEL, seed: int = SEED,
            decide: bool = True) -> dict[str, object]:
    """The promote job: staging's challenger copied to prod by the deployer bot; then (``decide``)
    prod's challenger vs champion on held-out data (``promotion.decide_champion``)."""
    import mlflow

    from mlops_lab import datasets, training

    staging_env, prod = envs["staging"], envs["prod"]
    account(staging_env, promotion.DEPLOYER, "deployer")
    account(prod, promotion.DEPLOYER, "deployer")
    with staging_env.signed_in(staging_env.credentials(promotion.DEPLOYER)):
        try:
            version = mlflow.MlflowClient().get_model_version_by_alias(name, promotion.CHALLENGER).version
        except mlflow.exceptions.MlflowException:
            raise DeliveryError(f"staging has no {name}@{promotion.CHALLENGER}: run the staging job first "
                                "(`make cd-staging`)") from None
    copied = promotion.promote(name, version, staging_env, prod)
    result: dict[str, object] = {"staging_version": str(version), "prod_version": copied.version,
                                 "promoted_by": promotion.DEPLOYER}
    if decide:
        split = training.credit_split(datasets.load_german_credit(), seed=seed)
        decision = promotion.decide_champion(name, prod, split.X_test, split.y_test)
        result.update({k: decision[k] for k in ("decision", "champion_before", "champion")})
    return result


# -- the command line: mlops-lab cd ... ----------------------------------------------------------------
def add_parser(sub) -> None:
    """Add ``mlops-lab cd unit|staging|promote|check-workflows`` to the CLI's subcommands."""
    cd = sub.add_parser("cd", help="model CD: unit tests, integration tests in staging, promotion to prod")
    cd_sub = cd.add_subparsers(dest="cd_command", required=True)
    unit_cmd = cd_sub.add_parser("unit", help="the unit tier (pytest -m unit)")
    unit_cmd.add_argument("pytest_args", nargs="*", help="more pytest arguments, after -- (cd unit -- -k layers)")
    stage = cd_sub.add_parser("staging", help="a gated candidate from dev into staging, then integration checks")
    stage.add_argument("--model", default="logistic_regression", help="the candidate's algorithm")
    stage.add_argument("--seed", type=int, default=SEED)
    prom = cd_sub.add_parser("promote", help="staging's challenger to prod as the deployer bot, then the champion decision")
    prom.add_argument("--no-decide", action="store_true", help="leave it as prod's challenger")
    prom.add_argument("--seed", type=int, default=SEED)
    cd_sub.add_parser("check-workflows", help="the workflows against GitHub's schema, and zizmor's audit (offline)")
    cd.set_defaults(fn=command)


def command(args: argparse.Namespace) -> int:
    """Run ``mlops-lab cd ...``; the exit status is the step's verdict."""
    import mlflow  # noqa: F401 (imported first: it sets its loggers' levels on import)

    from mlops_lab import config

    config.quiet_logs()  # no progress bars, INFO lines or "View run at" links in a pipeline's log
    action = args.cd_command
    if action == "unit":
        return unit(args.pytest_args)
    if action == "check-workflows":
        results = check_workflows()
        for result in results:
            print(f"== {result.tool}: {'ok' if result.ok else 'FAILED'}")
            if result.output:
                print(result.output)
        return 0 if all(r.ok for r in results) else 1
    try:
        if action == "staging":
            with open_environments(["dev", "staging"]) as envs:
                done = staging(envs, model=args.model, seed=args.seed)
            print(f"dev v{done.dev_version} -> staging v{done.staging_version} (challenger)")
            print(done.checks.to_string(index=False))
            print("staging checks passed" if done.passed else "STAGING CHECKS FAILED")
            return 0 if done.passed else 1
        with open_environments(["staging", "prod"]) as envs:
            done = promote(envs, decide=not args.no_decide, seed=args.seed)
        print(", ".join(f"{k}={v}" for k, v in done.items()))
        return 0
    except (DeliveryError, promotion.PromotionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m mlops_lab.delivery")
    add_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.fn(parsed))
