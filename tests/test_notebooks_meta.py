"""The committed notebooks follow the course's conventions (DESIGN.md section 4)."""

import ast
import re

import nbformat
import pytest

from mlops_lab import runner

pytestmark = pytest.mark.unit

NOTEBOOKS = runner.discover()
MAX_FUNCTION_LINES = 5


def test_there_are_lessons():
    names = [p.name for p in NOTEBOOKS]
    assert names[:2] == ["00_welcome_and_setup.ipynb", "01_project_initiation_and_data.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_outputs_and_without_noise(path):
    nb = nbformat.read(path, as_version=4)
    assert runner.noise(nb) == [], "run `mlops-lab notebooks refresh --only NN` to clean it"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(c.outputs for c in code), "committed without outputs: nbval has nothing to compare"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"committed with an error output: {errors[0].get('ename')}"
    assert nb.metadata.kernelspec.name == runner.KERNEL_NAME


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_follows_the_template(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "**You will learn**" in first.source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert "What you did" in nb.cells[-1].source
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from mlops_lab" in sources
    assert "sys.path" not in sources, "notebooks import the installed package"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_long_helpers_in_notebooks(path):
    """Logic longer than a few lines belongs in mlops_lab, with a test."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = re.sub(r"^[%!].*$", "", cell.source, flags=re.M)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{node.name} is {length} lines long"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ignored_outputs_are_rare(path):
    """Only truly non-deterministic cells may be tagged nbval-ignore-output."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    ignored = [c for c in code if "nbval-ignore-output" in c.metadata.get("tags", [])]
    # A lesson about measuring speed prints measurements in most cells; it says so in its metadata.
    timing = nb.metadata.get("mlops_lab", {}).get("measures_timing")
    assert len(ignored) <= max(1, len(code) * 3 // 4 if timing else len(code) // 4)
