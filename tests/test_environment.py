"""The lock, requirements.in and environment.yml agree; pandas stays on 2.x."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([^\s#]+)")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match and not line.lstrip().startswith("#"):
            found[match.group(1).lower().replace("_", "-")] = match.group(3)
    return found


def test_environment_yml_mirrors_requirements_in():
    direct, conda = pins(ROOT / "requirements.in"), pins(ROOT / "environment.yml")
    assert direct, "requirements.in pins nothing"
    assert conda == direct, "environment.yml and requirements.in disagree: update both"
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_lock_pins_every_direct_dependency_at_the_same_version():
    direct, lock = pins(ROOT / "requirements.in"), pins(ROOT / "requirements.lock")
    mismatched = {name: (v, lock.get(name)) for name, v in direct.items() if lock.get(name) != v}
    assert not mismatched, f"requirements.lock is out of date (run `make lock`): {mismatched}"
    unpinned = [line for line in (ROOT / "requirements.lock").read_text().splitlines()
                if line and not line.startswith("#") and "==" not in line]
    assert not unpinned, f"unpinned lines in the lock: {unpinned}"


def test_pandas_stays_on_2x_and_mlflow_on_3_17():
    lock = pins(ROOT / "requirements.lock")
    assert lock["pandas"].startswith("2.")
    assert lock["mlflow"].startswith("3.17.")


def test_installed_versions_match_the_lock():
    from importlib.metadata import version

    lock = pins(ROOT / "requirements.lock")
    for name in ("mlflow", "pandas", "scikit-learn", "papermill", "nbval"):
        assert version(name) == lock[name], f"{name}: run `make setup`"
