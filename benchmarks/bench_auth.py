"""Tracking-API throughput side by side: MLflow without auth, with basic auth, with basic auth cached.

The same tracking requests against three servers, each started in a fresh temporary home, measured
and stopped before the next one starts (so they never share the cores), with the load generator on
the same machine:

- ``mlflow server``, 1 worker, no authentication (the baseline);
- ``mlflow server --app-name basic-auth``, 1 worker, MLflow's defaults (``auth_cache_ttl_seconds =
  0``): the password is checked against its slow (PBKDF2) hash on *every* request;
- the same with MLflow's credential cache on (``auth_cache_ttl_seconds = 60``): the hash is checked
  once, then a verified password is remembered for 60 s.

The authenticated servers are the course's ``dev`` environment (:mod:`mlops_lab.environments`, the
course's roles applied); the client signs in as a ``data_scientist`` (EDIT in dev through its role,
not as an admin, so the permission check runs too). Two requests, each measured on its own:

- **read**: ``GET /api/2.0/mlflow/experiments/get?experiment_id=<id>`` of an existing experiment;
- **write**: ``POST /api/2.0/mlflow/runs/log-metric`` to an existing run (the same metric value each
  time; a SQLite write per request).

Closed loop (``mlops_lab.loadtest.run_closed_loop``): ``CLIENTS`` concurrent clients, each sending
the next request as soon as the previous answer is in, for ``SECONDS`` per request after a warm-up
of ``WARMUP_SECONDS`` (connections, caches, the first password check). Reported: throughput (2xx
answers per second), p50/p99 latency, and the CPU time per request of the uvicorn worker that answers
(not the server's parent process). Ratios: authenticated / no auth, and cached / uncached authentication. Writes
results/auth.json and .md.

    TQDM_DISABLE=1 python benchmarks/bench_auth.py [--seconds 10] [--warmup 2] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

OUT = Path(__file__).parent / "results"
SECONDS = 10.0
WARMUP_SECONDS = 2.0
CLIENTS = 4
CACHE_TTL = 60
MAX_ERROR_RATE = 0.01
SETTLED_CORES = 0.8  # CPU use of a server group that has finished starting up
SETTLE_LIMIT_S = 30.0
SERVERS = ("no auth", "basic auth", f"basic auth, cache {CACHE_TTL} s")
REQUESTS = ("read", "write")
API = "/api/2.0/mlflow"


def _cpu_seconds(pgid: int, only: str | None = None) -> float:
    """User + system CPU seconds used so far by the live processes of a server's group.

    ``only``: count just the processes whose command line contains it (``"uvicorn"``: the worker
    that answers the requests, not the parent ``mlflow server`` process, nor MLflow's job runner
    when it is turned on).
    """
    import psutil

    from mlops_lab.processes import group_members

    total = 0.0
    for proc in group_members(pgid):
        try:
            if only is not None and only not in " ".join(proc.cmdline()):
                continue
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _settle(pgid: int, *, idle_cores: float = SETTLED_CORES, limit: float = SETTLE_LIMIT_S) -> float:
    """Wait until the server's group has finished starting up (its CPU use over 1 s falls below
    ``idle_cores``) or ``limit`` seconds passed; returns the seconds waited.

    ``/health`` answers as soon as the worker is up, while the rest of the group may still be
    importing: without this, whichever request is measured first shares the cores with it.
    """
    start = time.monotonic()
    before = _cpu_seconds(pgid)
    while time.monotonic() - start < limit:
        time.sleep(1.0)
        now = _cpu_seconds(pgid)
        if now - before < idle_cores:
            break
        before = now
    return time.monotonic() - start


def _prepare(url: str, admin: tuple[str, str] | None, user: tuple[str, str] | None) -> dict:
    """An experiment (created by the admin) and a run in it (created by the user); their ids."""
    import requests

    response = requests.post(f"{url}{API}/experiments/create", json={"name": "bench-auth"}, auth=admin, timeout=30)
    response.raise_for_status()
    experiment_id = response.json()["experiment_id"]
    response = requests.post(f"{url}{API}/runs/create",
                             json={"experiment_id": experiment_id, "start_time": int(time.time() * 1000)},
                             auth=user, timeout=30)
    response.raise_for_status()
    return {"experiment_id": experiment_id, "run_id": response.json()["run"]["info"]["run_id"]}


def _targets(url: str, user: tuple[str, str] | None, ids: dict) -> dict:
    """The read and write requests as load-test targets, signed in as ``user`` (None: anonymous).

    ``loadtest.Target`` has no headers field; the credentials travel in the URL's user-info part,
    which aiohttp strips from the URL and sends as an ``Authorization: Basic`` header instead.
    """
    from mlops_lab import loadtest

    base = url
    if user is not None:
        scheme, rest = url.split("://", 1)
        base = f"{scheme}://{quote(user[0], safe='')}:{quote(user[1], safe='')}@{rest}"
    metric = {"run_id": ids["run_id"], "key": "bench", "value": 1.0, "timestamp": int(time.time() * 1000), "step": 0}
    return {
        "read": loadtest.Target(f"{base}{API}/experiments/get?experiment_id={ids['experiment_id']}", method="GET"),
        "write": loadtest.Target.json(f"{base}{API}/runs/log-metric", metric),
    }


def _check_once(url: str, user: tuple[str, str] | None, ids: dict) -> None:
    """One of each request with requests, so a refused one fails loudly before any measurement."""
    import requests

    read = requests.get(f"{url}{API}/experiments/get", params={"experiment_id": ids["experiment_id"]},
                        auth=user, timeout=30)
    write = requests.post(f"{url}{API}/runs/log-metric", auth=user, timeout=30,
                          json={"run_id": ids["run_id"], "key": "check", "value": 0.0,
                                "timestamp": int(time.time() * 1000), "step": 0})
    for name, response in (("read", read), ("write", write)):
        if response.status_code != 200:
            raise RuntimeError(f"{url}: the {name} request answered {response.status_code}: {response.text[:300]}")


def measure(server, targets: dict, *, seconds: float, warmup_seconds: float, clients: int) -> dict:
    """Closed-loop throughput, latency and server CPU per request, for each target in turn."""
    from mlops_lab import loadtest

    rows = {}
    settled = _settle(server.pgid)
    for name, target in targets.items():
        loadtest.run_closed_loop(target, clients, warmup_seconds)
        cpu_before = _cpu_seconds(server.pgid, only="uvicorn")
        result = loadtest.run_closed_loop(target, clients, seconds)
        cpu = _cpu_seconds(server.pgid, only="uvicorn") - cpu_before
        summary = result.summary()
        if not summary["ok"] or summary["error_rate"] > MAX_ERROR_RATE:
            raise RuntimeError(f"{server.name}, {name}: {summary['error_rate']:.1%} errors "
                               f"({summary['errors']}) in {summary['sent']} requests")
        rows[name] = {"throughput_rps": summary["throughput_rps"], "requests": summary["sent"],
                      "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"],
                      "error_rate": summary["error_rate"],
                      "worker_cpu_ms_per_request": 1000.0 * cpu / summary["sent"], "settle_s": settled}
    return rows


def _run_plain(home: Path, **kw) -> dict:
    from mlops_lab.processes import mlflow_server

    with mlflow_server(home, workers=1) as server:
        ids = _prepare(server.url, None, None)
        _check_once(server.url, None, ids)
        return measure(server, _targets(server.url, None, ids), **kw)


def _run_auth(home: Path, cache_ttl: int, **kw) -> dict:
    from mlops_lab import environments

    with environments.start("dev", home=home, workers=1, auth_cache_ttl=cache_ttl) as env:
        user = env.create_user("bench", "data_scientist").pair
        ids = _prepare(env.url, env.admin.pair, user)
        _check_once(env.url, user, ids)
        return measure(env.server, _targets(env.url, user, ids), **kw)


def main(out: Path = OUT, seconds: float = SECONDS, warmup_seconds: float = WARMUP_SECONDS,
         clients: int = CLIENTS) -> int:
    from mlops_lab import config

    config.quiet_logs()
    kw = {"seconds": seconds, "warmup_seconds": warmup_seconds, "clients": clients}
    runs = {SERVERS[0]: lambda home: _run_plain(home, **kw),
            SERVERS[1]: lambda home: _run_auth(home, 0, **kw),
            SERVERS[2]: lambda home: _run_auth(home, CACHE_TTL, **kw)}
    results = {}
    load_before = os.getloadavg()
    for name, run in runs.items():  # one server at a time, each in a home of its own
        with tempfile.TemporaryDirectory(prefix="mlops-lab-bench-auth-") as home:
            results[name] = run(Path(home))
        print(f"{name}: {results[name]}", file=sys.stderr)

    plain, uncached, cached = (results[name] for name in SERVERS)
    ratios, cpu_ratios = {}, {}
    for rows in results.values():
        for row in rows.values():  # what one core could answer if the worker's CPU were the only limit
            row["cpu_bound_rps"] = 1000.0 / row["worker_cpu_ms_per_request"] if row["worker_cpu_ms_per_request"] > 0 \
                else float("nan")
    for request in REQUESTS:
        for out_ratios, key in ((ratios, "throughput_rps"), (cpu_ratios, "cpu_bound_rps")):
            out_ratios[request] = {
                "auth_vs_no_auth": uncached[request][key] / plain[request][key],
                "cached_auth_vs_no_auth": cached[request][key] / plain[request][key],
                "cached_auth_vs_auth": cached[request][key] / uncached[request][key],
            }
    meta = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "mlflow": _mlflow_version(), "workers": 1,
            "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
            "clients": clients, "seconds": seconds, "warmup_seconds": warmup_seconds, "cache_ttl_s": CACHE_TTL,
            "load": "closed loop, loadtest.run_closed_loop, client on the same machine",
            "user": "data_scientist in dev (EDIT through its role)",
            "requests": {"read": f"GET {API}/experiments/get?experiment_id=<id>",
                         "write": f"POST {API}/runs/log-metric"}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "auth.json").write_text(json.dumps({"meta": meta, "results": results, "ratios": ratios,
                                                "ratios_worker_cpu": cpu_ratios}, indent=2) + "\n")

    lines = ["# Tracking API throughput: no auth vs basic auth vs basic auth with the credential cache", "",
             f"MLflow {meta['mlflow']} tracking server, 1 worker, SQLite store, measured {meta['when']} on "
             f"{meta['cpus']} CPUs (Python {meta['python']}; 1-minute load average {meta['load_average_1m']['before']:g} "
             f"before, {meta['load_average_1m']['after']:g} after). Closed loop: {clients} concurrent clients on the same "
             f"machine, {seconds:g} s per request after a {warmup_seconds:g} s warm-up; each server started alone "
             "in a fresh home and stopped before the next. Authenticated: `mlflow server --app-name basic-auth` "
             "(the course's dev environment), signed in as a data_scientist; `auth_cache_ttl_seconds` 0 (MLflow's "
             f"default: the password hash is checked on every request) or {CACHE_TTL}. Read: "
             f"`{meta['requests']['read']}`; write: `{meta['requests']['write']}`. Worker CPU: the uvicorn worker's "
             "CPU time per request. MLflow's job runner is off, as on every server the course starts. Each server is left to finish starting up (its CPU use under "
             f"{SETTLED_CORES:g} cores, at most {SETTLE_LIMIT_S:g} s) before its first warm-up.", "",
             "| server | request | throughput (req/s) | p50 (ms) | p99 (ms) | worker CPU (ms/req) | throughput vs no auth |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in SERVERS:
        for request in REQUESTS:
            row = results[name][request]
            lines.append(f"| {name} | {request} | {row['throughput_rps']:.0f} | {row['p50_ms']:.1f} | "
                         f"{row['p99_ms']:.1f} | {row['worker_cpu_ms_per_request']:.1f} | "
                         f"{row['throughput_rps'] / plain[request]['throughput_rps']:.2f}x |")
    lines += ["", "Ratios of measured throughput, and of CPU-bound throughput (1 / worker CPU per request: what the "
                  "worker could answer if its own CPU were the only limit; much less sensitive than the measured "
                  "throughput to other load on the machine):", "",
              "| request | basis | auth / no auth | cached auth / no auth | cached auth / auth |",
              "|---|---|---:|---:|---:|"]
    for request in REQUESTS:
        for basis, table in (("measured", ratios), ("worker CPU", cpu_ratios)):
            r = table[request]
            lines.append(f"| {request} | {basis} | {r['auth_vs_no_auth']:.2f}x | {r['cached_auth_vs_no_auth']:.2f}x | "
                         f"{r['cached_auth_vs_auth']:.2f}x |")
    (out / "auth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def _parse(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="measured seconds per server and request")
    parser.add_argument("--warmup", type=float, default=WARMUP_SECONDS, dest="warmup_seconds",
                        help="warm-up seconds per server and request (not measured)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent closed-loop clients")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for auth.json and auth.md")
    return vars(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main(**_parse()))
