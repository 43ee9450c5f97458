"""Labs: one source, a generated student copy, checks that pass the solution and fail the copy."""

import json
import shutil

import nbformat
import pytest

from mlops_lab import cli, labs
from mlops_lab.grading import GradingError, grade
from mlops_lab.labs import LabBuildError

LABS = labs.labs_dir()
SOLUTIONS = sorted((LABS / "solutions").glob("*.ipynb"))


@pytest.mark.unit
def test_committed_student_copies_are_up_to_date():
    built = labs.build(check=True)
    assert built, "no labs found"
    stale = [b.target.name for b in built if b.stale]
    assert not stale, f"stale student copies {stale}: run `mlops-lab labs build` and commit"


@pytest.mark.unit
def test_a_stale_copy_is_detected(tmp_path, capsys, monkeypatch):
    shutil.copytree(LABS, tmp_path / "labs")
    source = tmp_path / "labs" / "solutions" / "00_warmup.ipynb"
    nb = nbformat.read(source, as_version=4)
    nb.cells[0].source += "\n\nA new paragraph in the source."
    nbformat.write(nb, source)
    stale = {b.target.name: b.stale for b in labs.build(tmp_path / "labs", check=True)}
    assert stale["00_warmup.ipynb"] and not any(v for k, v in stale.items() if k != "00_warmup.ipynb")
    monkeypatch.setattr(labs, "labs_dir", lambda: tmp_path / "labs")
    assert cli.main(["labs", "build", "--check"]) == 1
    assert "STALE" in capsys.readouterr().out
    assert cli.main(["labs", "build"]) == 0
    assert cli.main(["labs", "build", "--check"]) == 0


@pytest.mark.unit
@pytest.mark.parametrize("source", SOLUTIONS, ids=lambda p: p.name)
def test_student_copy_hides_the_solution(source):
    solution = nbformat.read(source, as_version=4)
    student = nbformat.read(LABS / source.name, as_version=4)
    assert len(student.cells) == len(solution.cells)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "raise NotImplementedError" in text
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert "mlflow.log_param(\"learning_rate\"" not in text or source.name != "00_warmup.ipynb"


@pytest.mark.unit
def test_markers_are_checked():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1")])
    with pytest.raises(LabBuildError, match="never closed"):
        labs.student_copy(nb)
    nb.cells[0].source = "x = 1\n### END SOLUTION"
    with pytest.raises(LabBuildError, match="without a matching"):
        labs.student_copy(nb)
    nb.cells[0].source = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n### BEGIN HIDDEN TESTS\nassert f() == 1\n### END HIDDEN TESTS"
    out = labs.student_copy(nb).cells[0].source
    assert out.splitlines() == ["def f():", "    # YOUR CODE HERE", f"    {labs.CODE_STUB[1]}"]


@pytest.mark.labs
@pytest.mark.parametrize("source", SOLUTIONS, ids=lambda p: p.name)
def test_solution_scores_full_marks(source, tmp_path):
    report_path = tmp_path / "grade.json"
    assert cli.main(["grade", str(source), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["passed"] == report["total"] > 0
    assert {"passed", "total", "checks"} <= set(report)
    assert all({"name", "passed", "hint"} <= set(c) for c in report["checks"])


@pytest.mark.labs
@pytest.mark.parametrize("source", SOLUTIONS, ids=lambda p: p.name)
def test_untouched_student_copy_fails_with_hints(source):
    report = grade(LABS / source.name)
    assert report["passed"] == 0 and report["total"] > 0
    for check in report["checks"]:
        assert not check["passed"] and len(check["hint"]) > 20


@pytest.mark.labs
def test_partial_work_gets_partial_marks(tmp_path):
    """A student who did task 1 but not task 2: the first checks pass, the search check fails."""
    student = nbformat.read(LABS / "00_warmup.ipynb", as_version=4)
    solution = nbformat.read(LABS / "solutions" / "00_warmup.ipynb", as_version=4)
    task1 = next(i for i, c in enumerate(solution.cells) if "log_param" in c.source)
    student.cells[task1] = solution.cells[task1]
    path = tmp_path / "00_warmup.ipynb"
    nbformat.write(student, path)
    report = grade(path)
    status = {c["name"]: c["passed"] for c in report["checks"]}
    assert status == {"run_logged": True, "param_logged": True, "metric_logged": True,
                      "artifact_logged": True, "found_by_search": False}


@pytest.mark.unit
def test_grading_a_notebook_without_checks_is_refused(tmp_path, capsys):
    path = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    with pytest.raises(GradingError, match="not a gradable lab"):
        grade(path)
    assert cli.main(["grade", str(path)]) == 2
    assert "not a gradable lab" in capsys.readouterr().err


@pytest.mark.labs
def test_a_notebook_that_hangs_still_gets_a_score(tmp_path):
    """A student's endless loop times out; the grader reports every check instead of crashing."""
    student = nbformat.read(LABS / "00_warmup.ipynb", as_version=4)
    student.cells.insert(2, nbformat.v4.new_code_cell("while True:\n    pass"))
    path = tmp_path / "00_warmup.ipynb"
    nbformat.write(student, path)
    report = grade(path, timeout=5)
    assert report["passed"] == 0 and report["total"] == 5
    assert all("stopped early" in c["detail"] for c in report["checks"])
