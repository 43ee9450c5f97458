"""The notebook runner: order, fresh workspaces, parameters, failures reported, report written."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mlops_lab import cli, runner

KERNELSPEC = {"name": "mlops-lab", "display_name": "Python (mlops-lab)", "language": "python"}


def make_notebook(path: Path, *sources: str, parameters: str = "", full: dict | None = None) -> Path:
    cells = []
    if parameters:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    cells += [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC})
    if full is not None:
        nb.metadata["mlops_lab"] = {"full": full}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def course(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    record = "import os, json, pathlib\n" \
        "pathlib.Path(os.environ['OUT']).joinpath(NAME + '.json').write_text(" \
        "json.dumps({'home': os.environ['MLOPS_LAB_HOME'], 'size': SIZE}))"
    make_notebook(folder / "00_first.ipynb", record, parameters="NAME = 'first'\nSIZE = 1",
                  full={"SIZE": 100})
    make_notebook(folder / "01_broken.ipynb", "x = 1", "raise ValueError('the data batch is broken')")
    make_notebook(folder / "02_third.ipynb", record, parameters="NAME = 'third'\nSIZE = 2")
    (folder / "_template.ipynb").write_text((folder / "00_first.ipynb").read_text())
    return folder


@pytest.mark.unit
def test_discover_orders_and_selects(course):
    assert [p.name for p in runner.discover(course)] == ["00_first.ipynb", "01_broken.ipynb", "02_third.ipynb"]
    assert [p.name for p in runner.discover(course, ["2", "00"])] == ["00_first.ipynb", "02_third.ipynb"]
    assert [p.name for p in runner.discover(course, ["01_broken"])] == ["01_broken.ipynb"]
    with pytest.raises(runner.RunnerError, match="No notebook matches '7'.*00_first.ipynb"):
        runner.discover(course, ["7"])


@pytest.mark.integration
def test_course_runs_all_reports_failure_and_isolates_workspaces(course, tmp_path, monkeypatch):
    out = tmp_path / "build"
    monkeypatch.setenv("OUT", str(tmp_path))
    results = runner.run_course(folder=course, out_dir=out, echo=False)
    assert [(r.notebook, r.status) for r in results] == [
        ("00_first.ipynb", "passed"), ("01_broken.ipynb", "failed"), ("02_third.ipynb", "passed")]
    assert "ValueError: the data batch is broken" in results[1].error

    report = json.loads((out / "course-report.json").read_text())
    assert [set(item) for item in report] == [{"notebook", "status", "seconds", "error"}] * 3
    assert "1 of 3" not in (out / "course-report.md").read_text()
    assert "2 of 3 notebooks passed" in (out / "course-report.md").read_text()
    assert (out / "01_broken.ipynb").is_file(), "the failed notebook is kept for inspection"

    first = json.loads((tmp_path / "first.json").read_text())
    third = json.loads((tmp_path / "third.json").read_text())
    assert first["home"] != third["home"], "each notebook gets its own workspace"
    assert "mlops-lab-home-" in first["home"] and not Path(first["home"]).exists(), "and it is removed"
    assert first["size"] == 1


@pytest.mark.integration
def test_full_and_explicit_parameters(course, tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    runner.run_course(["0", "2"], full=True, folder=course, out_dir=tmp_path / "b", echo=False)
    assert json.loads((tmp_path / "first.json").read_text())["size"] == 100
    runner.run_course(["0"], full=True, folder=course, out_dir=tmp_path / "b",
                      parameters={"SIZE": 7}, echo=False)
    assert json.loads((tmp_path / "first.json").read_text())["size"] == 7


@pytest.mark.integration
def test_cli_exit_code_is_non_zero_when_a_notebook_fails(course, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(runner, "notebooks_dir", lambda: course)
    assert cli.main(["course", "--only", "01", "--out", str(tmp_path / "o")]) == 1
    assert cli.main(["course", "--only", "02", "--out", str(tmp_path / "o"), "-p", "SIZE", "5"]) == 0
    assert json.loads((tmp_path / "third.json").read_text())["size"] == 5
    assert cli.main(["course", "--only", "9", "--out", str(tmp_path / "o")]) == 2
    assert "No notebook matches '9'" in capsys.readouterr().err


@pytest.mark.unit
def test_unwritable_output_folder_is_a_clear_error(course, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(runner.RunnerError, match="Cannot create the output folder"):
        runner.run_course(folder=course, out_dir=blocker / "build", echo=False)


@pytest.mark.unit
def test_clean_removes_execution_noise():
    nb = new_notebook(cells=[new_code_cell("1")])
    nb.metadata["papermill"] = {"duration": 1.2}
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
    nb.cells[0].metadata["tags"] = []
    injected = new_code_cell("x = 1")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.append(injected)
    assert len(runner.noise(nb)) == 3
    cleaned = runner.clean(nb)
    assert runner.noise(cleaned) == []
    assert len(cleaned.cells) == 1 and "tags" not in cleaned.cells[0].metadata


@pytest.mark.unit
def test_fresh_workspace_restores_environment():
    before = os.environ.get("MLOPS_LAB_HOME")
    with runner.fresh_workspace() as home:
        assert os.environ["MLOPS_LAB_HOME"] == str(home) and home.is_dir()
    assert os.environ.get("MLOPS_LAB_HOME") == before
    assert not home.exists()


@pytest.mark.unit
def test_fresh_workspace_ignores_a_configured_tracking_server(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_TRACKING_URI", "http://127.0.0.1:9")
    with runner.fresh_workspace():
        assert "MLOPS_LAB_TRACKING_URI" not in os.environ
    assert os.environ["MLOPS_LAB_TRACKING_URI"] == "http://127.0.0.1:9"


@pytest.mark.unit
def test_parameter_values_parse_like_papermill():
    assert cli._value("06") == 6 and cli._value("0.5") == 0.5
    assert cli._value("true") is True and cli._value("[1, 2]") == [1, 2]
    assert cli._value("hello") == "hello"
