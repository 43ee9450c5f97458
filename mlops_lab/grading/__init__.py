"""Lab checks with hints, and the instructor's grader.

A lab declares its checks once, in a module of this package (``mlops_lab.grading.warmup`` for
``labs/00_warmup.ipynb``)::

    LAB = Lab("00_warmup", "Warm-up: track a run and find it again")

    @LAB.check("run_logged", hint="Start a run in the experiment and log a parameter ...")
    def run_logged(ns):
        assert ns.get("run_id"), "no variable `run_id`"

A check cell in the notebook calls ``checks.run_logged(globals())``: it prints PASS, or FAIL with
the reason and the hint, and never raises, so one failing task does not hide the next check.
When the grader runs a notebook (``mlops-lab grade``), every result is also recorded to the file
named by ``$MLOPS_LAB_GRADE_FILE``; checks whose cell never ran count as failed, with their hint.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GRADE_FILE_ENV = "MLOPS_LAB_GRADE_FILE"


class GradingError(RuntimeError):
    """A lab notebook cannot be graded (unreadable, or it names no check module)."""


@dataclass
class CheckResult:
    """One check's outcome: ``detail`` says what was found, ``hint`` what to do about it."""

    name: str
    passed: bool
    hint: str
    detail: str = ""

    def __str__(self) -> str:
        if self.passed:
            return f"PASS  {self.name}"
        return f"FAIL  {self.name}: {self.detail}\n      Hint: {self.hint}"


class Lab:
    """A lab's named checks, in the order a student meets them."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title
        self.hints: dict[str, str] = {}

    def check(self, name: str, hint: str) -> Callable[[Callable[[dict], Any]], Callable[[dict], CheckResult]]:
        """Register a check. The function takes the notebook namespace and raises AssertionError
        (its message is the detail) when the check fails; any other exception fails it too."""

        def register(fn: Callable[[dict], Any]) -> Callable[[dict], CheckResult]:
            self.hints[name] = hint

            @functools.wraps(fn)
            def run(ns: dict | None = None) -> CheckResult:
                try:
                    fn(ns if ns is not None else {})
                    result = CheckResult(name, True, hint)
                except AssertionError as exc:
                    result = CheckResult(name, False, hint, str(exc) or "the check's condition is not met")
                except Exception as exc:  # a student's broken state is a failed check, not a crash
                    result = CheckResult(name, False, hint, f"{type(exc).__name__}: {exc}")
                print(result)
                record(result)
                return result

            return run

        return register


def record(result: CheckResult) -> None:
    """Append ``result`` to the grader's results file, if the grader set one."""
    target = os.environ.get(GRADE_FILE_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")


def lab_for(notebook: Path) -> Lab:
    """The :class:`Lab` a lab notebook declares in its metadata (``metadata.mlops_lab.checks``)."""
    import nbformat

    try:
        nb = nbformat.read(notebook, as_version=4)
    except (OSError, ValueError) as exc:
        raise GradingError(f"Cannot read lab notebook {notebook}: {exc}") from exc
    module_name = nb.metadata.get("mlops_lab", {}).get("checks")
    if not module_name:
        raise GradingError(
            f"{notebook} is not a gradable lab: its metadata has no 'mlops_lab.checks' module."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GradingError(f"{notebook}: check module {module_name!r} cannot be imported: {exc}") from exc
    return module.LAB


def grade(notebook: Path | str, *, timeout: int = 600, kernel_name: str | None = None) -> dict[str, Any]:
    """Execute a lab notebook in a fresh workspace and score its checks.

    Every cell runs even when one raises (a failing task must not stop the other checks).
    Returns ``{"lab", "notebook", "passed", "total", "checks": [{"name", "passed", "hint", "detail"}],
    "errors": [...]}``; a check whose cell never ran counts as failed.
    """
    import tempfile

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from mlops_lab.runner import fresh_workspace, pick_kernel

    notebook = Path(notebook)
    lab = lab_for(notebook)
    nb = nbformat.read(notebook, as_version=4)
    stopped = None
    with fresh_workspace() as home:
        results_file = home / "grade-results.jsonl"
        os.environ[GRADE_FILE_ENV] = str(results_file)
        try:
            client = NotebookClient(
                nb,
                timeout=timeout,
                kernel_name=kernel_name or pick_kernel(),
                allow_errors=True,
                resources={"metadata": {"path": str(notebook.parent.resolve())}},
            )
            client.execute()
        except (CellTimeoutError, DeadKernelError) as exc:
            stopped = f"the notebook stopped early ({type(exc).__name__}): {str(exc).splitlines()[0][:200]}"
        finally:
            os.environ.pop(GRADE_FILE_ENV, None)
        recorded: dict[str, dict] = {}
        if results_file.exists():
            for line in results_file.read_text().splitlines():
                item = json.loads(line)
                recorded[item["name"]] = item  # the last run of a check counts
    errors = [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells if c.cell_type == "code"
        for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    checks = []
    for name, hint in lab.hints.items():
        if name in recorded:
            checks.append(recorded[name])
        else:
            checks.append({"name": name, "passed": False, "hint": hint,
                           "detail": stopped or "the check cell did not run"})
    return {
        "lab": lab.name,
        "notebook": str(notebook),
        "passed": sum(bool(c["passed"]) for c in checks),
        "total": len(checks),
        "checks": checks,
        "errors": errors + ([stopped] if stopped else []),
    }


def format_report(report: dict[str, Any]) -> str:
    """The grade as a table a person reads: one row per check, with the hint when it failed."""
    rows = [f"Lab {report['lab']}: {report['passed']}/{report['total']} checks passed", ""]
    width = max((len(c["name"]) for c in report["checks"]), default=5)
    for c in report["checks"]:
        mark = "PASS" if c["passed"] else "FAIL"
        rows.append(f"  {mark}  {c['name']:<{width}}")
        if not c["passed"]:
            rows.append(f"        {c['detail']}")
            rows.append(f"        Hint: {c['hint']}")
    if report.get("errors"):
        rows += ["", "Cells that raised:"] + [f"  {e}" for e in report["errors"]]
    return "\n".join(rows)
