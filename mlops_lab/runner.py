"""Run the course's notebooks headlessly with Papermill, each in a fresh workspace, and report.

``mlops-lab course`` (and ``make course``) calls :func:`run_course`: notebooks run in numeric order,
every one in its own temporary ``MLOPS_LAB_HOME``; a notebook that fails is reported and the
others still run. The executed notebooks and ``course-report.md`` / ``course-report.json`` land in
the output folder (``build/`` by default).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nbformat

KERNEL_NAME = "mlops-lab"
"""The Jupyter kernel ``make setup`` installs into the virtual environment."""

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_.+\.ipynb$")


class RunnerError(RuntimeError):
    """The runner was asked for something it cannot do (no such notebook, no output folder)."""


@dataclass
class NotebookResult:
    """The outcome of one notebook: ``status`` is ``passed`` or ``failed``."""

    notebook: str
    status: str
    seconds: float
    error: str | None = None


def notebooks_dir() -> Path:
    """The course's ``notebooks/`` folder in this checkout."""
    from mlops_lab.config import repo_root

    root = repo_root()
    if root is None:
        raise RunnerError("Cannot find the workbook's notebooks/ folder: run from a clone.")
    return root / "notebooks"


def discover(folder: Path | None = None, only: Sequence[str] = ()) -> list[Path]:
    """The numbered notebooks (``NN_topic.ipynb``) in ``folder``, in order.

    ``only`` selects by number (``"01"`` or ``"1"``) or by file name; an entry that matches no
    notebook raises :class:`RunnerError` listing what exists.
    """
    folder = folder or notebooks_dir()
    found = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if not only:
        return found
    chosen: list[Path] = []
    for wanted in only:
        key = wanted.removesuffix(".ipynb")
        hits = [
            p for p in found
            if p.stem == key or (key.isdigit() and int(p.name[:2]) == int(key))
        ]
        if not hits:
            names = ", ".join(p.name for p in found) or "none"
            raise RunnerError(f"No notebook matches {wanted!r}. Notebooks: {names}.")
        chosen.extend(h for h in hits if h not in chosen)
    return sorted(chosen)


def full_parameters(path: Path) -> dict[str, Any]:
    """The parameters a notebook declares for a full-size run (``metadata.mlops_lab.full``)."""
    nb = nbformat.read(path, as_version=4)
    return dict(nb.metadata.get("mlops_lab", {}).get("full", {}))


def pick_kernel() -> str:
    """The project kernel if installed (``make setup`` does it), else the current Python's ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return KERNEL_NAME if KERNEL_NAME in specs else "python3"


@contextlib.contextmanager
def fresh_workspace(keep: bool = False) -> Iterator[Path]:
    """Point ``MLOPS_LAB_HOME`` at a new temporary folder for the duration of the block.

    ``MLOPS_LAB_TRACKING_URI`` is unset meanwhile, so nothing is logged to a server you configured.
    """
    from mlops_lab.config import environment_variables

    home = Path(tempfile.mkdtemp(prefix="mlops-lab-home-"))
    try:  # no MLOPS_LAB_TRACKING_URI: the embedded store of the fresh workspace
        with environment_variables({"MLOPS_LAB_HOME": str(home), "TQDM_DISABLE": "1",
                                    "MLOPS_LAB_TRACKING_URI": None}):
            yield home
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def describe_error(exc: BaseException) -> str:
    """One readable line for a failed notebook: the cell's exception, not Papermill's traceback."""
    ename = getattr(exc, "ename", None)
    if ename:
        cell = getattr(exc, "exec_count", None)
        where = f"cell [{cell}]: " if cell else ""
        return f"{where}{ename}: {getattr(exc, 'evalue', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def run_notebook(
    path: Path,
    out_dir: Path,
    parameters: dict[str, Any] | None = None,
    *,
    kernel_name: str | None = None,
    timeout: int = 900,
) -> NotebookResult:
    """Execute one notebook with Papermill in a fresh workspace; never raises for notebook errors.

    The executed copy goes to ``out_dir/<name>``; its ``cwd`` is the notebook's own folder.
    """
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    error = None
    with fresh_workspace():
        try:
            papermill.execute_notebook(
                str(path),
                str(out_dir / path.name),
                parameters=parameters or {},
                kernel_name=kernel_name or pick_kernel(),
                cwd=str(path.parent),
                progress_bar=False,
                log_output=False,
                execution_timeout=timeout,
            )
        except Exception as exc:  # a failing notebook is a result, not a crash of the runner
            error = describe_error(exc)
    seconds = round(time.perf_counter() - started, 1)
    return NotebookResult(path.name, "failed" if error else "passed", seconds, error)


def write_report(results: Sequence[NotebookResult], out_dir: Path) -> tuple[Path, Path]:
    """Write ``course-report.json`` (a list of results) and ``course-report.md`` (a table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "course-report.json"
    json_path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    passed = sum(r.status == "passed" for r in results)
    lines = [
        "# Course run report",
        "",
        f"{passed} of {len(results)} notebooks passed, "
        f"{sum(r.seconds for r in results):.1f} s in all.",
        "",
        "| notebook | status | seconds | error |",
        "|---|---|---:|---|",
    ]
    for r in results:
        error = (r.error or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.notebook} | {r.status} | {r.seconds:.1f} | {error} |")
    md_path = out_dir / "course-report.md"
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, json_path


def run_course(
    only: Sequence[str] = (),
    *,
    full: bool = False,
    out_dir: Path | str = "build",
    parameters: dict[str, Any] | None = None,
    folder: Path | None = None,
    echo: bool = True,
) -> list[NotebookResult]:
    """Run the course (or the ``only`` notebooks) in order and write the report to ``out_dir``.

    ``full=True`` applies each notebook's full-size parameters; ``parameters`` override both.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunnerError(f"Cannot create the output folder {out_dir}: {exc.strerror or exc}") from exc
    results = []
    kernel = pick_kernel()
    for path in discover(folder, only):
        params = {**(full_parameters(path) if full else {}), **(parameters or {})}
        if echo:
            print(f"running {path.name} ...", flush=True)
        result = run_notebook(path, out_dir, params, kernel_name=kernel)
        if echo:
            tail = f"  {result.error}" if result.error else ""
            print(f"  {result.status} in {result.seconds:.1f} s{tail}", flush=True)
        results.append(result)
    write_report(results, out_dir)
    return results


# -- committed notebooks: clean and refresh -------------------------------------------------------

NOISY_NOTEBOOK_METADATA = ("papermill", "widgets", "execution")
NOISY_CELL_METADATA = ("execution", "papermill", "collapsed", "scrolled", "ExecuteTime")


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip execution-metadata noise (timings, Papermill records) and the injected-parameters cell."""
    for key in NOISY_NOTEBOOK_METADATA:
        nb.metadata.pop(key, None)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    count = 0
    for cell in nb.cells:
        for key in NOISY_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:
            cell.metadata.pop("tags")
        cell.pop("id", None)
        if cell.cell_type == "code":
            if cell.outputs or cell.execution_count:
                count += 1
                cell.execution_count = count
                for output in cell.outputs:
                    if "execution_count" in output:
                        output["execution_count"] = count
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nb


def noise(nb: nbformat.NotebookNode) -> list[str]:
    """Execution-metadata noise in ``nb`` (timings, Papermill records, injected parameters).

    An empty list for a notebook :func:`clean` has processed; cell ids and numbering, which
    ``clean`` also normalises, are not reported.
    """
    found = [f"notebook metadata {k!r}" for k in NOISY_NOTEBOOK_METADATA if k in nb.metadata]
    for index, cell in enumerate(nb.cells):
        found += [f"cell {index} metadata {k!r}" for k in NOISY_CELL_METADATA if k in cell.metadata]
        if "injected-parameters" in cell.metadata.get("tags", []):
            found.append(f"cell {index} is Papermill's injected-parameters cell")
    return found


def refresh(only: Sequence[str] = (), folder: Path | None = None) -> list[NotebookResult]:
    """Re-execute committed notebooks at default parameters and write them back, cleaned.

    This is how a maintainer updates the outputs that nbval compares against. A notebook that
    fails is left untouched.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="mlops-lab-refresh-") as tmp:
        for path in discover(folder, only):
            result = run_notebook(path, Path(tmp))
            if result.status == "passed":
                nb = clean(nbformat.read(Path(tmp) / path.name, as_version=4))
                nbformat.write(nb, path)
            results.append(result)
    return results
