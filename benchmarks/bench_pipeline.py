"""What orchestration costs: the retraining workflow's steps called directly, through Dagster in process,
and through Dagster's daemon, side by side in one run.

The same work every time: the bootstrap batch of lesson 14 (January and February of the shipped
Bikeshare hours) through ingest -> validate -> features -> retrain -> evaluate -> gate -> decide ->
record, with ``Settings(trials=TRIALS, window_months=2)``, each run in a fresh temporary workspace
(embedded SQLite store, no champion yet: train, gate, register, promote).

- **direct**: the step functions of :mod:`mlops_lab.pipeline.workflow` called one after the other
  in this process, with a uuid as the Dagster run id (the baseline: no orchestrator);
- **Dagster, in process**: :func:`mlops_lab.pipeline.definitions.run` (``execute_in_process``, an
  ephemeral instance): the ops, the typed outputs, the event log, the failure hook;
- **rerun**: the same batch again in the same workspace, by the same path: the ledger answers
  "already processed" (the cost of asking again, against the cost of a full run);
- **Dagster daemon** (optional, ``--no-daemon`` skips it): ``service.start`` (daemon + web UI, not
  timed in the ratio), the batch dropped into the inbox, then ``service.wait_for_runs``: from the
  drop to the run's end as Dagster recorded it (sensor tick, queue, a new process per run), then the
  same file dropped again (the rerun through the daemon).

The in-process paths are repeated ``REPEATS`` times each, alternating, after ``WARMUP`` unmeasured
runs of each (imports, caches); reported as medians of wall-clock time and of this process's CPU
time (less sensitive to other load on the machine), and as ratios to the direct path. Training is
held to one thread (``threadpoolctl``) in every path, so the identical work weighs the same on a
shared machine and the difference is the orchestrator's; the store of each fresh workspace is
created before the clock starts. The daemon
path runs once (its run is a separate process: wall-clock only). Writes results/pipeline.json and .md.

    TQDM_DISABLE=1 python benchmarks/bench_pipeline.py [--repeats 3] [--warmup 1] [--no-daemon] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

OUT = Path(__file__).parent / "results"
REPEATS = 5
WARMUP = 1
TRIALS = 1
PATHS = ("direct", "dagster")


@contextlib.contextmanager
def fresh_workspace(prefix: str = "bench-pipeline-") -> Iterator[Path]:
    """A temporary workspace with its own embedded store for the block; the previous one restored."""
    import mlflow

    from mlops_lab.config import HOME_ENV, environment_variables

    saved = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    with tempfile.TemporaryDirectory(prefix=prefix) as folder, \
            environment_variables({HOME_ENV: folder, "MLFLOW_TRACKING_URI": None}):
        mlflow.set_tracking_uri(f"sqlite:///{Path(folder) / 'mlflow.db'}")
        mlflow.MlflowClient().search_experiments()  # create the store now: its migrations are not the pipeline's
        try:
            yield Path(folder)
        finally:
            mlflow.set_tracking_uri(saved)


def direct(batch: Path, settings, steps: dict[str, list[float]] | None = None) -> dict:
    """The workflow's step functions in sequence, as the Dagster ops call them (no orchestrator)."""
    from mlops_lab import config
    from mlops_lab.pipeline import workflow

    config.quiet_logs()
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable, *args):
        start = time.perf_counter()
        result = fn(*args)
        timings[name] = time.perf_counter() - start
        return result

    state = step("ingest", lambda: workflow.ingest(str(batch), settings, trigger="manual",
                                                   dagster_run_id=str(uuid.uuid4())))
    state = step("validate", workflow.validate, state)
    for name, fn in (("features", workflow.assemble), ("retrain", workflow.retrain), ("evaluate", workflow.evaluate),
                     ("gate", workflow.gate), ("decide", workflow.decide), ("record", workflow.record)):
        state = step(name, fn, state, settings)
    if steps is not None:
        for name, seconds in timings.items():
            steps.setdefault(name, []).append(seconds)
    return state.summary()


def through_dagster(batch: Path, settings) -> dict:
    from mlops_lab.pipeline import definitions

    return definitions.run(batch, settings=settings)


def _timed(fn: Callable[[], dict]) -> tuple[float, float, dict]:
    from threadpoolctl import threadpool_limits

    wall, cpu = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1):  # the same training work in both paths, not OpenMP threads spinning
        summary = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, summary


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def in_process(batch: Path, settings, repeats: int, warmup: int) -> dict:
    """Full run and rerun per path, each full run in a fresh workspace; medians and ratios."""
    runners = {"direct": lambda steps=None: direct(batch, settings, steps), "dagster": lambda steps=None:
               through_dagster(batch, settings)}
    samples = {path: {"full_s": [], "full_cpu_s": [], "rerun_s": [], "rerun_cpu_s": []} for path in PATHS}
    steps: dict[str, list[float]] = {}
    decisions = {path: set() for path in PATHS}
    for round_no in range(warmup + repeats):
        measured = round_no >= warmup
        for path in (PATHS if round_no % 2 == 0 else PATHS[::-1]):  # alternate who goes first
            with fresh_workspace():
                wall, cpu, first = _timed(lambda: runners[path](steps if measured and path == "direct" else None))
                again_wall, again_cpu, again = _timed(runners[path])
            assert first["decision"] == "promoted" and again["decision"] == "skipped", (path, first, again)
            decisions[path].add((first["decision"], first["version"], again["decision"]))
            if measured:
                for key, value in (("full_s", wall), ("full_cpu_s", cpu), ("rerun_s", again_wall),
                                   ("rerun_cpu_s", again_cpu)):
                    samples[path][key].append(value)
    rows = {path: {key: _median(values) for key, values in samples[path].items()} for path in PATHS}
    for path in PATHS:
        rows[path]["samples"] = {key: [round(v, 3) for v in values] for key, values in samples[path].items()}
    base = rows["direct"]
    for path, row in rows.items():
        row["full_over_direct"] = round(row["full_s"] / base["full_s"], 3)
        row["full_cpu_over_direct"] = round(row["full_cpu_s"] / base["full_cpu_s"], 3)
        row["overhead_s"] = round(row["full_s"] - base["full_s"], 3)
        row["rerun_over_full"] = round(row["rerun_s"] / row["full_s"], 4)
        row["rerun_over_direct"] = round(row["rerun_s"] / base["rerun_s"], 3)
        row["rerun_overhead_s"] = round(row["rerun_s"] - base["rerun_s"], 3)
        row["outcomes"] = sorted("/".join(map(str, d)) for d in decisions[path])
    return {"rows": rows, "steps_ms": {name: round(statistics.median(v) * 1000, 1) for name, v in steps.items()}}


def daemon(batch: Path, timeout: float = 600.0) -> dict:
    """The daemon path once: drop the batch into the inbox, wait for its run; drop it again."""
    import dagster as dg

    from mlops_lab.pipeline import definitions, service

    with fresh_workspace("bench-pipeline-daemon-") as home:
        inbox = definitions.inbox_dir()
        inbox.mkdir(parents=True)
        started = time.perf_counter()
        with service.start(home=home, timeout=timeout):
            startup = time.perf_counter() - started
            rows = []
            for count in (1, 2):
                if count == 2:
                    time.sleep(1.1)  # a new modification time: the same file is a new request
                tmp = inbox / ".batch.parquet"  # hidden while being written: the sensor ignores it
                tmp.write_bytes(batch.read_bytes())
                dropped = time.time()
                tmp.replace(inbox / "2011-01..02.parquet")
                runs = service.wait_for_runs(count, home=home, timeout=timeout)
                assert [r["status"] for r in runs] == ["SUCCESS"] * count, runs
                with service.instance(home) as instance:
                    [record] = instance.get_run_records(dg.RunsFilter(run_ids=[runs[0]["run_id"]]))
                rows.append({"drop_to_end_s": round(record.end_time - dropped, 3),
                             "queued_s": round(record.start_time - dropped, 3),
                             "run_s": round(record.end_time - record.start_time, 3)})
    return {"startup_s": round(startup, 3), "full": rows[0], "rerun": rows[1]}


def main(out: Path = OUT, repeats: int = REPEATS, warmup: int = WARMUP, trials: int = TRIALS,
         with_daemon: bool = True) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    from mlops_lab import config, datasets
    from mlops_lab.pipeline import workflow

    config.quiet_logs()
    settings = workflow.Settings(trials=trials, window_months=2)
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "repeats": repeats, "warmup": warmup, "trials": trials, "batch": "2011-01..2011-02",
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-batch-") as folder:
        batch = Path(folder) / "2011-01..02.parquet"
        bikes = datasets.load_bikeshare()
        bikes[bikes["mnth"].isin(["Jan", "Feb"])].to_parquet(batch, index=False)
        meta["rows"] = int(bikes["mnth"].isin(["Jan", "Feb"]).sum())
        results = in_process(batch, settings, repeats, warmup)
        if with_daemon:
            results["daemon"] = daemon(batch)
            dagster_full = results["rows"]["dagster"]["full_s"]
            results["daemon"]["drop_to_end_over_in_process"] = round(
                results["daemon"]["full"]["drop_to_end_s"] / dagster_full, 3)
            results["daemon"]["rerun_over_in_process_rerun"] = round(
                results["daemon"]["rerun"]["drop_to_end_s"] / results["rows"]["dagster"]["rerun_s"], 3)
    out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, **results}
    (out / "pipeline.json").write_text(json.dumps(data, indent=2) + "\n")
    text = _markdown(data)
    (out / "pipeline.md").write_text(text)
    print(text)
    return 0


def _markdown(data: dict) -> str:
    meta, rows = data["meta"], data["rows"]
    lines = ["# The retraining pipeline: what orchestration costs", "",
             f"{meta['cpus']} CPUs (load average {meta['load_average'][0]} at the start), Python {meta['python']}; "
             f"the bootstrap batch ({meta['batch']}, {meta['rows']:,} hours), {meta['trials']} tuning trial(s); "
             f"median of {meta['repeats']} runs per path after {meta['warmup']} warm-up run(s), each in a fresh "
             "workspace.", "",
             "| path | full run (s) | range (s) | CPU (s) | full / direct | CPU / direct | rerun (s) | range (s) | "
             "rerun / direct | rerun / full |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = {"direct": "step functions, direct", "dagster": "Dagster, in process"}
    for path, row in rows.items():
        full, rerun = row["samples"]["full_s"], row["samples"]["rerun_s"]
        lines.append(f"| {names[path]} | {row['full_s']:.2f} | {min(full):.2f}-{max(full):.2f} | {row['full_cpu_s']:.2f} | "
                     f"{row['full_over_direct']:.2f}x | {row['full_cpu_over_direct']:.2f}x | {row['rerun_s']:.2f} | "
                     f"{min(rerun):.2f}-{max(rerun):.2f} | {row['rerun_over_direct']:.2f}x | {row['rerun_over_full']:.3f} |")
    dagster = rows["dagster"]
    lines += ["", "On a shared machine the wall-clock of a full run varies more between samples (the ranges) than "
                  "Dagster adds to it; CPU time is the steadier measure of what the orchestrator costs."]
    lines += ["", f"Dagster's fixed cost per run shows best on the rerun, where the steps have almost nothing to do: "
                  f"{dagster['rerun_overhead_s']:+.2f} s ({dagster['rerun_over_direct']:.1f}x the direct rerun). "
                  f"Asking again costs {dagster['rerun_over_full']:.1%} of a full run through Dagster."]
    if "daemon" in data:
        d = data["daemon"]
        lines += ["", f"## Through the daemon (started in {d['startup_s']:.1f} s, not counted)", "",
                  "| run | drop to end (s) | of which waiting for the sensor and queue (s) | run process (s) |",
                  "|---|---:|---:|---:|"]
        for name in ("full", "rerun"):
            r = d[name]
            lines.append(f"| {name} | {r['drop_to_end_s']:.2f} | {r['queued_s']:.2f} | {r['run_s']:.2f} |")
        lines += ["", f"Drop to end of a full run: {d['drop_to_end_over_in_process']:.2f}x the in-process Dagster run; "
                      f"a rerun: {d['rerun_over_in_process_rerun']:.1f}x the in-process rerun (a new process per run, "
                      "a sensor every 5 s)."]
    lines += ["", "## Where the direct run spends its time (median ms)", "", "| step | ms |", "|---|---:|"]
    lines += [f"| {name} | {ms:,.0f} |" for name, ms in data["steps_ms"].items()]
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="measured runs per in-process path")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="unmeasured runs per path first")
    parser.add_argument("--trials", type=int, default=TRIALS, help="tuning trials per run")
    parser.add_argument("--no-daemon", dest="with_daemon", action="store_false", help="skip the daemon path")
    parser.add_argument("--quick", action="store_true", help="one measured run per path, no daemon (a smoke test)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for pipeline.json and pipeline.md")
    args = vars(parser.parse_args(argv))
    if args.pop("quick"):
        args.update(repeats=1, with_daemon=False)
    return args


if __name__ == "__main__":
    raise SystemExit(main(**_parse()))
