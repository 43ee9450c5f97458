"""Managed processes: own process group, readiness by health check, nothing left after exit."""

import socket
import sys
import textwrap
import time
import urllib.request

import mlflow
import psutil
import pytest

from mlops_lab import processes
from mlops_lab.processes import (
    ManagedProcess,
    PortInUseError,
    ProcessError,
    free_port,
    group_members,
    mlflow_server,
    port_in_use,
)

pytestmark = pytest.mark.integration

# A server that also starts a child (like mlflow server's workers) and ignores SIGTERM when asked.
SERVER = textwrap.dedent(
    """
    import http.server, signal, subprocess, sys, time
    port, ignore_term = int(sys.argv[1]), sys.argv[2] == "1"
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
    """
)


def server(tmp_path, port, ignore_term=False, **kwargs):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return ManagedProcess(
        [sys.executable, str(script), str(port), "1" if ignore_term else "0"],
        name="toy-server", port=port, health_url=f"http://127.0.0.1:{port}/",
        cwd=tmp_path, log_path=tmp_path / "server.log", **kwargs,
    )


def test_free_ports_come_from_below_the_ephemeral_range():
    """Ports the OS hands to outgoing connections and to a Spark JVM (port 0) never collide with ours."""
    from mlops_lab import processes

    ports = {free_port() for _ in range(20)}
    low, high = processes.PORT_RANGE
    assert all(low <= p <= min(high, processes._ephemeral_low() - 1) for p in ports) and len(ports) > 1


def test_free_port_is_bindable():
    port = free_port()
    assert not port_in_use(port)


def test_group_is_stopped_with_its_children(tmp_path):
    port = free_port()
    with server(tmp_path, port) as proc:
        members = group_members(proc.pgid)
        assert len(members) >= 2, "the server and its child share the group"
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/").status == 200
        pgid = proc.pgid
    assert group_members(pgid) == []
    assert not port_in_use(port)


def test_sigterm_ignored_escalates_to_sigkill(tmp_path):
    port = free_port()
    proc = server(tmp_path, port, ignore_term=True).start()
    pgid = proc.pgid
    proc.stop(grace=1.0)
    assert group_members(pgid) == []
    assert not port_in_use(port)


def test_group_is_stopped_when_the_body_raises(tmp_path):
    port = free_port()
    with pytest.raises(ZeroDivisionError):
        with server(tmp_path, port) as proc:
            pgid = proc.pgid
            1 / 0
    assert group_members(pgid) == []
    assert not port_in_use(port)


def test_port_in_use_is_refused_clearly(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} .* already in use"):
            server(tmp_path, port).start()


def test_never_ready_times_out_with_the_log(tmp_path):
    script = "import time; print('warming up forever', flush=True); time.sleep(600)"
    proc = ManagedProcess(
        [sys.executable, "-c", script], name="sleeper", port=free_port(),
        health_url="http://127.0.0.1:9/never", timeout=2, log_path=tmp_path / "s.log",
    )
    with pytest.raises(ProcessError, match="not ready after 2 s") as err:
        proc.start()
    assert "warming up forever" in str(err.value)
    assert proc.process is None  # stopped, nothing left


def test_early_exit_reports_code_and_log(tmp_path):
    proc = ManagedProcess(
        [sys.executable, "-c", "import sys; print('bad config: no such option'); sys.exit(3)"],
        name="crasher", health_url="http://127.0.0.1:9/", log_path=tmp_path / "c.log",
    )
    with pytest.raises(ProcessError, match="exited with code 3") as err:
        proc.start()
    assert "bad config: no such option" in str(err.value)


def test_clean_stop_forgets_the_group_and_removes_a_temporary_log():
    port = free_port()
    proc = ManagedProcess([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                          name="web", port=port, health_url=f"http://127.0.0.1:{port}/")
    with proc:
        log = proc.log_path
        assert log.exists() and processes.leftovers()["pids"]
    assert not log.exists()
    assert processes.leftovers() == {"pids": [], "ports": []}


def test_missing_executable_is_a_clear_error(tmp_path):
    proc = ManagedProcess(["/no/such/binary"], name="ghost", log_path=tmp_path / "g.log")
    with pytest.raises(ProcessError, match="cannot start '/no/such/binary'"):
        proc.start()


@pytest.mark.parametrize("jobs", [False, True], ids=["course default", "with MLflow's job runner"])
def test_real_mlflow_server_leaves_no_process_and_no_port(home, jobs):
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"} if jobs else None
    with mlflow_server(home, env=env) as srv:
        members = {p.pid for p in group_members(srv.pgid)}
        names = " ".join(" ".join(psutil.Process(pid).cmdline()) for pid in members)
        assert "uvicorn" in names, "mlflow server runs its app in a uvicorn child"
        # the job runner (huey consumers) is off unless asked for: half a core per idle server
        assert ("huey" in names) is jobs
        client = mlflow.MlflowClient(srv.url)
        experiment_id = client.create_experiment("served")
        run = client.create_run(experiment_id, run_name="via-server")
        client.log_metric(run.info.run_id, "m", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
        pgid, port = srv.pgid, srv.port
    assert group_members(pgid) == []
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
               for pid in members)
    assert not port_in_use(port)
    assert processes.leftovers() == {"pids": [], "ports": []}
    assert (home / "mlflow.db").is_file()


def test_stall_freezes_the_group_then_resumes_it(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with server(tmp_path, port) as proc:
        thread = proc.stall(1.5)
        time.sleep(0.2)
        statuses = {p.status() for p in group_members(proc.pgid)}
        assert statuses == {psutil.STATUS_STOPPED}, statuses
        with pytest.raises(OSError):  # no answer while frozen
            urllib.request.urlopen(url, timeout=0.5)
        thread.join()
        assert urllib.request.urlopen(url, timeout=5).status == 200


def test_a_stalled_group_still_stops(tmp_path):
    port = free_port()
    proc = server(tmp_path, port).start()
    pgid = proc.pgid
    proc.stall(30)
    time.sleep(0.2)
    proc.stop(grace=2.0)
    assert group_members(pgid) == [] and not port_in_use(port)
    with pytest.raises(ProcessError, match="not running"):
        proc.stall(1)


def test_a_server_left_running_stops_when_python_exits(tmp_path):
    """A notebook kernel that shuts down with a server still running takes the server with it."""
    import subprocess

    port = free_port()
    script = tmp_path / "leave_running.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from mlops_lab.processes import ManagedProcess
        proc = ManagedProcess([sys.executable, {str(tmp_path / 'server.py')!r}, "{port}", "0"], name="toy",
                              port={port}, health_url="http://127.0.0.1:{port}/").start()
        print(proc.pgid)
    """))
    (tmp_path / "server.py").write_text(SERVER)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True)
    pgid = int(out.stdout.strip().splitlines()[-1])
    assert group_members(pgid) == [] and not port_in_use(port)


def test_stopping_cancels_a_stall_that_has_not_begun(tmp_path):
    port = free_port()
    proc = server(tmp_path, port).start()
    pgid = proc.pgid
    thread = proc.stall(5, after=1.0)
    proc.stop()
    assert not thread.is_alive(), "the stall thread ends with the server"
    assert group_members(pgid) == [] and not port_in_use(port)
