"""dev, staging and prod: naming, backends, passwords, and the `mlops-lab env` command on real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_lab import auth, environments
from mlops_lab.processes import ManagedProcess, ProcessError, group_members, port_in_use


# -- unit -------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_names_accept_all_one_or_several_in_pipeline_order():
    assert environments.names("all") == ("dev", "staging", "prod")
    assert environments.names(["prod", "dev"]) == ("dev", "prod")
    assert environments.names(["all"]) == ("dev", "staging", "prod")  # `mlops-lab env up all`
    with pytest.raises(environments.EnvError, match="dev, staging, prod"):
        environments.names("production")


@pytest.mark.unit
def test_backends_sqlite_by_default_and_postgres_per_environment(tmp_path):
    assert environments.backend_for("dev", None, tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    uri = "postgresql://teacher:s3cret@db.example:5432/mlflow_{env}"
    assert environments.backend_for("prod", uri, tmp_path).endswith("/mlflow_prod")
    with pytest.raises(environments.EnvError, match="Unsupported backend 'mysql://u:\\*\\*\\*@h/db'"):
        environments.backend_for("dev", "mysql://u:pw@h/db", tmp_path)


@pytest.mark.unit
def test_database_passwords_never_reach_a_command_line_or_a_table():
    stripped, password = environments._without_password("postgresql://u:p%40ss@h:5/db")
    assert (stripped, password) == ("postgresql://u@h:5/db", "p@ss")
    assert environments.redact("postgresql://u:p%40ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert environments._without_password("sqlite:////x/y.db") == ("sqlite:////x/y.db", None)


@pytest.mark.unit
def test_admin_password_generated_once_or_taken_from_the_environment(home, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    first = environments.admin_credentials("dev")
    assert len(first.password) >= 20 and environments.admin_credentials("dev") == first  # stored, reused
    assert environments.admin_credentials("staging") != first  # one per environment
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-environment-123")
    assert environments.admin_credentials("prod").password == "from-the-environment-123"
    path = auth.credentials_path()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert set(json.loads(path.read_text())) == {"dev", "staging", "prod"}
    assert str(path).startswith(str(home))  # the git-ignored workspace, never the repository


@pytest.mark.unit
def test_stop_group_refuses_a_group_that_is_not_the_recorded_server(tmp_path):
    proc = ManagedProcess([sys.executable, "-c", "import time; time.sleep(60)"], name="sleeper").start()
    info = proc.detach()
    try:
        with pytest.raises(ProcessError, match="not what was started"):
            environments.stop_group(info["pgid"], expect=("mlflow", "5000"))
        assert group_members(info["pgid"])  # untouched
    finally:
        assert environments.stop_group(info["pgid"], expect=("time.sleep",))
    assert not group_members(info["pgid"])
    assert environments.stop_group(info["pgid"]) is False  # gone already


# -- the command line, on real servers -------------------------------------------------------------
def _cli(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLOPS_LAB_HOME": str(home)}
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    result = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "env", *args], capture_output=True,
                            text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.integration
def test_env_up_status_add_user_down_and_up_again(home):
    try:
        up = _cli("up", "dev", home=home)
        assert "dev" in up.stdout and "credentials.json" in up.stdout and "never commit" in up.stdout
        state = json.loads(environments.state_path(home).read_text())["dev"]
        assert set(state) >= {"url", "port", "pgid", "backend", "folder"}
        assert group_members(state["pgid"]), "env up must leave the server running"
        dev = environments.connect("dev", home)
        assert dev.healthy and auth.whoami(dev.url, dev.admin) == 200 and auth.whoami(dev.url, None) == 401
        status = _cli("status", home=home).stdout
        assert "dev" in status and " up " in status and "prod" in status and " down " in status

        assert "created in dev" in _cli("add-user", "dev", "alice", "data_scientist", home=home).stdout
        alice = auth.stored("dev", "alice", home)
        assert auth.whoami(dev.url, alice) == 200
        assert auth.roles_of(dev.url, dev.admin, "alice") == ["data_scientist"]
        bad = _cli("add-user", "dev", "bob", "wizard", home=home, check=False)
        assert bad.returncode == 2 and "Unknown role 'wizard'" in bad.stderr and "Traceback" not in bad.stderr

        again = _cli("up", "dev", home=home)  # already up: left as it is
        assert json.loads(environments.state_path(home).read_text())["dev"]["pgid"] == state["pgid"]
        assert "dev" in again.stdout
        os.killpg(state["pgid"], signal.SIGSTOP)  # alive but not answering: never start a second one
        try:
            with pytest.raises(environments.EnvError, match="does not answer"):
                environments.up("dev", home=home)
        finally:
            os.killpg(state["pgid"], signal.SIGCONT)

        assert "stopped: dev" in _cli("down", home=home).stdout
        assert not group_members(state["pgid"]) and not port_in_use(state["port"])
        assert " down " in _cli("status", home=home).stdout
        with pytest.raises(environments.EnvError, match="mlops-lab env up dev"):
            environments.connect("dev", home)

        _cli("up", "dev", home=home)  # the stores survived: same admin, same users
        dev = environments.connect("dev", home)
        assert auth.whoami(dev.url, dev.admin) == 200 and auth.whoami(dev.url, alice) == 200
    finally:
        _cli("down", "--purge", home=home, check=False)
    assert not (environments.root(home) / "dev").exists()
    with pytest.raises(auth.AuthError):
        auth.stored("dev", "alice", home)


@pytest.mark.integration
def test_an_admin_password_that_does_not_open_the_store_is_a_clear_error(home, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    with environments.running("dev", home=home) as envs:
        port = int(envs["dev"].url.rsplit(":", 1)[1])
    auth.credentials_path(home).unlink()  # the store keeps its first password; this one is new
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "not-the-original-password")
    with pytest.raises(environments.EnvError, match="does not open its user store"):
        environments.start("dev", home=home, port=port)
    assert not port_in_use(port)  # the server that refused was stopped


def _lan_address() -> str | None:
    """An IPv4 address of this machine other than loopback, if it has one."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent; this only picks an interface
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


@pytest.mark.integration
def test_a_class_server_listens_beyond_loopback_and_still_demands_a_password(home):
    import requests

    address = _lan_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    with environments.start("prod", home=home, host="0.0.0.0", allowed_hosts=[f"{address}:*"]) as prod:
        port = prod.url.rsplit(":", 1)[1]
        url = f"http://{address}:{port}/api/2.0/mlflow/experiments/search"
        assert requests.post(url, json={"max_results": 1}, timeout=60).status_code == 401
        assert requests.post(url, json={"max_results": 1}, auth=prod.admin.pair, timeout=60).status_code == 200
        spoofed = requests.post(url, json={"max_results": 1}, auth=prod.admin.pair, timeout=60,
                                headers={"Host": "attacker.example"})
        assert spoofed.status_code == 403  # MLflow's DNS-rebinding guard, before any password check
