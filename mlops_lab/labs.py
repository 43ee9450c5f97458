"""Build student copies of the labs from their solution sources (one source, two copies).

A lab's source lives in ``labs/solutions/NN_name.ipynb``. In its cells:

* ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` marks the answer. In a code cell the student
  copy gets ``# YOUR CODE HERE`` and ``raise NotImplementedError(...)`` at the same indentation;
  in a Markdown cell it gets ``*Your answer here.*``.
* ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` is removed from the student copy.

Student copies (``labs/NN_name.ipynb``) carry no outputs. ``mlops-lab labs build`` writes them;
``mlops-lab labs build --check`` fails when a committed copy is stale.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import nbformat

from mlops_lab.runner import clean

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = ["# YOUR CODE HERE", 'raise NotImplementedError("Complete this task, then run the check below.")']
MARKDOWN_STUB = ["*Your answer here.*"]


class LabBuildError(ValueError):
    """A lab source has unbalanced or nested solution markers."""


def labs_dir() -> Path:
    """The ``labs/`` folder of this checkout."""
    from mlops_lab.config import repo_root

    root = repo_root()
    if root is None:
        raise LabBuildError("Cannot find the workbook's labs/ folder: run from a clone.")
    return root / "labs"


def _strip_region(lines: list[str], begin: str, end: str, stub: list[str] | None, where: str) -> list[str]:
    out: list[str] = []
    inside = False
    for number, line in enumerate(lines, start=1):
        marker = line.strip()
        if marker == begin:
            if inside:
                raise LabBuildError(f"{where}, line {number}: {begin!r} inside another solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            if stub:
                out.extend(indent + s for s in stub)
        elif marker == end:
            if not inside:
                raise LabBuildError(f"{where}, line {number}: {end!r} without a matching {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise LabBuildError(f"{where}: {begin!r} is never closed by {end!r}")
    return out


def student_copy(source: nbformat.NotebookNode, name: str = "lab") -> nbformat.NotebookNode:
    """The student version of a solution notebook: answers replaced by stubs, no outputs."""
    nb = nbformat.from_dict(copy.deepcopy(dict(source)))
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index}"
        lines = cell.source.split("\n")
        stub = CODE_STUB if cell.cell_type == "code" else MARKDOWN_STUB
        lines = _strip_region(lines, BEGIN_HIDDEN, END_HIDDEN, None, where)
        lines = _strip_region(lines, BEGIN, END, stub, where)
        cell.source = "\n".join(lines)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.setdefault("mlops_lab", {})["copy"] = "student"
    return clean(nb)


@dataclass
class BuiltLab:
    """One student copy: where it goes and whether the committed file was up to date."""

    source: Path
    target: Path
    stale: bool


def build(folder: Path | None = None, *, check: bool = False) -> list[BuiltLab]:
    """Generate every student copy from ``labs/solutions/``.

    With ``check=True`` nothing is written; each result says whether the committed copy differs
    from what would be generated (a stale copy).
    """
    folder = folder or labs_dir()
    built = []
    for source in sorted((folder / "solutions").glob("*.ipynb")):
        nb = student_copy(nbformat.read(source, as_version=4), source.name)
        text = nbformat.writes(nb) + "\n"
        target = folder / source.name
        current = target.read_text() if target.exists() else None
        stale = current != text
        if stale and not check:
            target.write_text(text)
        built.append(BuiltLab(source, target, stale))
    return built


def normalise_source(path: Path) -> None:
    """Rewrite a solution source without outputs or execution noise (keeps diffs small)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    path.write_text(nbformat.writes(clean(nb)) + "\n")

