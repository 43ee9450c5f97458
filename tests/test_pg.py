"""The tests' own PostgreSQL server (tests/pg.py): found or skipped, password-only, and stopped
without leaving a process, a port or a folder behind."""

from __future__ import annotations

import psutil
import pytest

import pg
from mlops_lab.processes import port_in_use


@pytest.mark.unit
def test_no_binaries_means_none(monkeypatch):
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    assert pg.find_bindir() is None


@pytest.mark.unit
def test_bindir_needs_all_three_binaries(tmp_path, monkeypatch):
    for name in ("initdb", "pg_ctl"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setattr(pg.shutil, "which", lambda name: str(tmp_path / name) if name == "initdb" else None)
    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    assert pg.find_bindir() is None  # no postgres
    (tmp_path / "postgres").write_text("#!/bin/sh\n")
    (tmp_path / "postgres").chmod(0o755)
    assert pg.find_bindir() == tmp_path


@pytest.mark.unit
def test_missing_postgres_skips_unless_required(monkeypatch):
    monkeypatch.delenv(pg.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="install the 'postgresql' package"):
        pg._unavailable("no initdb")
    monkeypatch.setenv(pg.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required"):
        pg._unavailable("no initdb")


@pytest.mark.integration
def test_session_server_gives_fresh_databases_behind_a_password(postgres):
    import psycopg2

    uri = postgres.create_database()
    assert uri.startswith(f"postgresql://{pg.SUPERUSER}:") and "@127.0.0.1:" in uri
    assert postgres.password not in repr(postgres)
    with psycopg2.connect(uri) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        assert uri.endswith("/" + cursor.fetchone()[0])
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(uri.replace(postgres.password, "wrong"), connect_timeout=5)
    with pytest.raises(psycopg2.OperationalError):  # no password, no entry (scram-sha-256 only)
        psycopg2.connect(host="127.0.0.1", port=postgres.port, user=pg.SUPERUSER, dbname="postgres",
                         connect_timeout=5, passfile="/dev/null")
    assert postgres.create_database().rsplit("/", 1)[1] != uri.rsplit("/", 1)[1]


@pytest.mark.integration
def test_a_server_with_connected_clients_stops_completely(postgres):
    import psycopg2

    server = pg.PostgresServer(postgres.bindir)
    try:
        server.start()
        clients = [psycopg2.connect(server.create_database()) for _ in range(3)]  # smart shutdown waits
        started = psutil.Process(server.process.process.pid)
        processes = [started, *started.children(recursive=True)]
        assert len(processes) >= 5  # postmaster, backends, background workers (+ runuser as root)
        server.stop()
        assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not port_in_use(server.port)
        assert not server._cluster_pids()
        for client in clients:
            client.close()
    finally:
        server.stop()
        server.cleanup()
    assert not server.folder.exists()
