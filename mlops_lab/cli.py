"""The ``mlops-lab`` command line: run the course, build and grade labs, open the UI.

    mlops-lab info                          versions, workspace and tracking URI
    mlops-lab course [--only NN ...] [--full] [--out DIR] [-p NAME VALUE ...]
    mlops-lab notebooks refresh [--only NN ...]   re-execute committed notebooks (maintainers)
    mlops-lab notebooks check                     fail if a committed notebook carries noise
    mlops-lab labs build [--check]                generate student copies from labs/solutions/
    mlops-lab grade NOTEBOOK [--json FILE]        execute a lab and score its checks
    mlops-lab ui [--port N]                       MLflow UI on the workspace store
    mlops-lab env up [dev|staging|prod|all] [--backend URI] [--host H]   authenticated servers
    mlops-lab env status                          which environments run, where
    mlops-lab env add-user ENV USERNAME ROLE      a user with a course role (password stored)
    mlops-lab env down [ENV|all] [--purge]        stop them (--purge: delete their stores too)
    mlops-lab router check SPEC                   check a strategy spec (every mistake at once)
    mlops-lab router serve SPEC [--port N]        run the traffic router in the foreground (Ctrl+C stops it)
    mlops-lab router status|weights|switch|apply [--url URL] ...   talk to a running router
    mlops-lab router log NAME [--tail N]          the last answers of a router's inference log
    mlops-lab router manifests SPEC [--out DIR]   the same strategy as Kubernetes manifests, validated
    mlops-lab monitor up [--target JOB=URL ...] [--for 30s] [--rules FILE] [--group-wait 5s]   Prometheus,
                                                  Alertmanager and the alert receiver, until `monitor down`
    mlops-lab monitor status                      their URLs, the scrape targets' health, firing alerts
    mlops-lab monitor down                        stop them
    mlops-lab monitor serve CONFIG.json [--port P]  the monitor service (drift on an inference log) in the
                                                  foreground, /metrics for Prometheus
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _value(text: str):
    """Parse a ``-p`` value like Papermill does: int, then float, then JSON (booleans, lists), else text."""
    for parse in (int, float, json.loads):
        try:
            return parse(text)
        except ValueError:
            continue
    return text


def cmd_info(args: argparse.Namespace) -> int:
    from mlops_lab.config import environment_report

    for key, value in environment_report().items():
        print(f"{key:>14}: {value}")
    return 0


def cmd_course(args: argparse.Namespace) -> int:
    from mlops_lab.runner import run_course

    params = {name: _value(value) for name, value in args.parameter or []}
    results = run_course(args.only or (), full=args.full, out_dir=args.out, parameters=params)
    failed = [r for r in results if r.status != "passed"]
    print(f"\n{len(results) - len(failed)} of {len(results)} notebooks passed; "
          f"report: {Path(args.out) / 'course-report.md'}")
    return 1 if failed else 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    import nbformat

    from mlops_lab.runner import discover, noise, refresh

    if args.action == "refresh":
        results = refresh(args.only or ())
        for r in results:
            print(f"{r.notebook}: {r.status} in {r.seconds:.1f} s {r.error or ''}")
        return 1 if any(r.status != "passed" for r in results) else 0
    problems = 0
    for path in discover():
        for item in noise(nbformat.read(path, as_version=4)):
            print(f"{path.name}: {item}")
            problems += 1
    return 1 if problems else 0


def cmd_labs(args: argparse.Namespace) -> int:
    from mlops_lab.labs import build

    built = build(check=args.check)
    stale = [b for b in built if b.stale]
    for b in built:
        state = ("STALE" if args.check else "written") if b.stale else "up to date"
        print(f"{b.target.name}: {state}")
    if args.check and stale:
        print("Student copies are stale: run `mlops-lab labs build` and commit the result.")
        return 1
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from mlops_lab.grading import GradingError, format_report, grade

    try:
        report = grade(Path(args.notebook))
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] == report["total"] else 1


def cmd_ui(args: argparse.Namespace) -> int:
    from mlops_lab.config import tracking_uri, workspace

    home = workspace()
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(home),
            "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"MLflow UI for {home} at http://127.0.0.1:{args.port} (Ctrl+C to stop)", flush=True)
    os.execv(sys.executable, argv)
    return 0  # not reached


def _print_status(rows: list[dict]) -> None:
    for row in rows:
        print(f"{row['environment']:>8}  {row['status']:<5} {row['url']:<24} {row['backend']}")


def cmd_env(args: argparse.Namespace) -> int:
    from mlops_lab import auth, environments

    if args.action == "up":
        hosts = [h for h in (args.allowed_hosts or "").split(",") if h]
        envs = environments.up(args.which, backend=args.backend, host=args.host,
                               auth_cache_ttl=args.auth_cache_ttl, allowed_hosts=hosts)
        _print_status(environments.status())
        print(f"\nSigned in as 'admin' with the password stored in {auth.credentials_path()} "
              "(mode 600, in the git-ignored workspace; never commit it).")
        print("Stop with `mlops-lab env down`. UI: open a URL above and sign in.")
        return 0 if envs else 1
    if args.action == "status":
        _print_status(environments.status())
        return 0
    if args.action == "add-user":
        if len(args.names) != 3:
            print("usage: mlops-lab env add-user ENV USERNAME ROLE", file=sys.stderr)
            return 2
        env_name, username, role = args.names
        creds = environments.connect(env_name).create_user(username, role)
        print(f"{creds.username} ({role}) created in {env_name}; password stored in "
              f"{auth.credentials_path()}")
        return 0
    stopped = environments.down(args.which, purge=args.purge)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}" + ("; stores deleted" if args.purge else ""))
    return 0


def _describe(spec) -> str:
    lines = [f"{spec.name}: strategy {spec.strategy}, weights {spec.weights}"]
    for name, variant in spec.variants.items():
        fault = f", fault {variant.fault}" if variant.fault.active else ""
        lines.append(f"  {name}: version {variant.version or '-'} on {', '.join(variant.urls)}{fault}")
    if spec.canary:
        c = spec.canary
        lines.append(f"  canary {c.canary!r} over {c.stable!r}: steps {list(c.steps)} every {c.interval_s:g} s, "
                     f"rollback after {c.threshold} failed checks, promote: {c.promote}")
    if spec.mirror:
        lines.append(f"  mirror to {spec.mirror.to!r} (timeout {spec.mirror.timeout_s:g} s)")
    return "\n".join(lines)


def cmd_router(args: argparse.Namespace) -> int:
    from mlops_lab import deployment

    action, rest = args.action, args.names
    if action in ("check", "serve", "manifests"):
        if len(rest) != 1:
            print(f"usage: mlops-lab router {action} SPEC", file=sys.stderr)
            return 2
        spec = deployment.load_spec(Path(rest[0]))
        if action == "check":
            print(_describe(spec) + "\nthe spec is valid")
            return 0
        if action == "manifests":
            from mlops_lab.deployment import manifests

            objects = manifests.render(spec)
            if args.out:
                for path in manifests.write(spec, Path(args.out)):
                    print(f"wrote {path}")
            else:
                print(manifests.to_yaml(objects))
            print(manifests.validate(objects).to_string(index=False), file=sys.stderr)
            return 0
        from mlops_lab import config

        os.environ.setdefault("MLFLOW_TRACKING_URI", config.tracking_uri())  # the course's registry
        server = deployment.router(spec, port=args.port)
        print(_describe(spec))
        print(f"router {spec.name!r} on http://127.0.0.1:{server.port} (Ctrl+C to stop); "
              f"state and log in {server.folder}", flush=True)
        os.execv(server.args[0], server.args)  # the router itself, in the foreground
    client = deployment.RouterClient(args.url)
    if action == "status":
        print(json.dumps(client.status(flush=True), indent=1))
    elif action == "weights":
        weights = dict(_pair(text) for text in rest)
        print(json.dumps(client.set_weights(weights)["weights"]))
    elif action == "switch":
        print(json.dumps(client.switch(rest[0])["weights"]))
    elif action == "apply":
        print(json.dumps(client.apply(Path(rest[0]))["weights"]))
    elif action == "log":
        from mlops_lab import config
        from mlops_lab.deployment.routing import state_folder

        log = deployment.InferenceLog(state_folder(config.workspace(), rest[0]) / "inference.db")
        columns = ["at", "request_id", "role", "variant", "version", "status", "latency_ms"]
        print(log.frame()[columns].tail(args.tail).to_string(index=False))
    return 0


def _print_monitor(report: dict) -> None:
    for row in report["components"]:
        print(f"{row['component']:>13}  {row['status']:<5} {row['url']}")
    if report["targets"]:
        print("\ntargets:")
        for target in report["targets"]:
            error = f"  ({target['last_error']})" if target["last_error"] else ""
            print(f"{target['job']:>13}  {target['health']:<7} {target['url']}{error}")
    print(f"\nalerts delivered to {report['store']}; firing now: {', '.join(report['firing']) or 'none'}")


def cmd_monitor(args: argparse.Namespace) -> int:
    from mlops_lab.monitoring.stack import down, parse_targets, status, up

    if args.monitor_command == "up":
        timers = {name: getattr(args, name) for name in ("group_wait", "group_interval", "repeat_interval")
                  if getattr(args, name)}
        options = {"scrape_interval": args.scrape_interval, "evaluation_interval": args.evaluation_interval,
                   "alertmanager_timers": timers}
        if args.rules:
            options["rules"] = Path(args.rules)
        up(parse_targets(args.target), for_=args.for_, **options)
        _print_monitor(status())
        print("\nPrometheus scrapes new targets about 5 s after it starts. "
              "Stop with `mlops-lab monitor down`.")
        return 0
    if args.monitor_command == "status":
        _print_monitor(status())
        return 0
    if args.monitor_command == "serve":
        from mlops_lab.monitoring import service
        from mlops_lab.processes import free_port

        return service.main([args.config, "--port", str(args.port or free_port())])
    stopped = down()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from mlops_lab.pipeline import service

    if args.pipeline_command == "run":
        from mlops_lab.pipeline import definitions, workflow

        options = {"window_months": args.window_months, "holdout_days": args.holdout_days, "trials": args.trials,
                   "min_improvement": args.min_improvement, "retrain_when": args.retrain_when}
        if args.model_name:
            options["model_name"] = args.model_name
        settings = workflow.Settings(**options)
        if args.env:  # against lesson 09's server, as the deployer bot (or --user)
            from mlops_lab.pipeline import production

            summary = production.run_cli(args.env, args.batch, settings=settings, trigger=args.trigger, user=args.user)
        else:
            with service.instance() as dagster_instance:  # the run shows in `pipeline up`'s UI
                summary = definitions.run(args.batch, settings=settings, trigger=args.trigger, instance=dagster_instance)
        print(f"{summary['label']}: {summary['decision']}: {summary['reason']}")
        print(f"champion: version {summary['champion_after'] or 'none'}; Dagster run {summary['dagster_run_id']}")
        return 0
    if args.pipeline_command == "up":
        from mlops_lab.pipeline.definitions import inbox_dir

        state = service.up(port=args.port)
        inbox_dir().mkdir(parents=True, exist_ok=True)
        print(f"Dagster UI: {state['url']}\ninbox: {inbox_dir()}  (a batch dropped here starts a run)")
        print("Stop with `mlops-lab pipeline down`.")
        return 0
    if args.pipeline_command == "status":
        report = service.status()
        for row in report["components"]:
            print(f"{row['component']:>10}  {row['status']}")
        print(f"UI: {report['url'] or '-'}\n")
        for run in report["runs"]:
            print(f"{run['created']}  {run['status']:<8} {run['trigger']:<16} {run['batch']}  {run['run_id'][:8]}")
        return 0
    stopped = service.down()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def _pair(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise ValueError(f"weights are given as NAME=PERCENT (e.g. stable=90 canary=10), got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-lab", description="The MLOps workbook's command line.")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="versions, workspace and tracking URI").set_defaults(fn=cmd_info)

    course = sub.add_parser("course", help="run the notebooks headlessly and write a report")
    course.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names")
    course.add_argument("--full", action="store_true", help="full-size parameters (slower)")
    course.add_argument("--out", default="build", help="output folder (default: build)")
    course.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="override a notebook parameter (repeatable)")
    course.set_defaults(fn=cmd_course)

    nbs = sub.add_parser("notebooks", help="maintain the committed notebooks")
    nbs.add_argument("action", choices=["refresh", "check"])
    nbs.add_argument("--only", nargs="+", metavar="NN")
    nbs.set_defaults(fn=cmd_notebooks)

    labs = sub.add_parser("labs", help="build the student copies of the labs")
    labs.add_argument("action", choices=["build"])
    labs.add_argument("--check", action="store_true", help="fail if a committed copy is stale")
    labs.set_defaults(fn=cmd_labs)

    grade = sub.add_parser("grade", help="execute a lab notebook and score its checks")
    grade.add_argument("notebook")
    grade.add_argument("--json", metavar="FILE", help="also write the score as JSON")
    grade.set_defaults(fn=cmd_grade)

    ui = sub.add_parser("ui", help="open the MLflow UI on the workspace store")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(fn=cmd_ui)

    env = sub.add_parser("env", help="dev, staging and prod MLflow servers with authentication")
    env.add_argument("action", choices=["up", "down", "status", "add-user"])
    env.add_argument("names", nargs="*", metavar="ENV",
                     help="dev, staging, prod or all (default: all); add-user: ENV USERNAME ROLE")
    env.add_argument("--backend", default=None,
                     help="'sqlite' (default) or a postgresql:// URI; {env} becomes the environment's name")
    env.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (0.0.0.0 serves a class; use TLS in front of it)")
    env.add_argument("--auth-cache-ttl", type=int, default=60,
                     help="seconds MLflow may cache a verified password (default 60; 0, MLflow's own "
                          "default, checks a slow hash on every request)")
    env.add_argument("--allowed-hosts", default=None, metavar="HOSTS",
                     help="comma-separated names students use to reach a class server (e.g. mlflow.school.example)")
    env.add_argument("--purge", action="store_true", help="with down: delete the stores and passwords")
    env.set_defaults(fn=cmd_env)

    router = sub.add_parser("router", help="the traffic router: deployment strategies on live traffic")
    router.add_argument("action", choices=["check", "serve", "status", "weights", "switch", "apply", "log", "manifests"])
    router.add_argument("names", nargs="*", metavar="ARG",
                        help="check/serve/manifests: SPEC; weights: NAME=PERCENT ...; switch: VARIANT; "
                             "apply: SPEC; log: the router's name")
    router.add_argument("--url", default="http://127.0.0.1:5010", help="a running router (default port 5010)")
    router.add_argument("--port", type=int, default=5010, help="serve: the port to listen on")
    router.add_argument("--tail", type=int, default=20, help="log: how many answers to show")
    router.add_argument("--out", default=None, help="manifests: write files here instead of printing")
    router.set_defaults(fn=cmd_router)

    monitor = sub.add_parser("monitor", help="monitoring: Prometheus, Alertmanager and the alert receiver")
    monitor_sub = monitor.add_subparsers(dest="monitor_command", required=True)
    monitor_up = monitor_sub.add_parser("up", help="start the stack; it keeps running until `monitor down`")
    monitor_up.add_argument("--target", action="append", default=[], metavar="JOB=URL",
                            help="a metrics endpoint to scrape, e.g. monitor=http://127.0.0.1:8000/metrics "
                                 "(repeatable; default: none, the stack alone)")
    monitor_up.add_argument("--for", dest="for_", default=None, metavar="DURATION",
                            help="replace every rule's `for:` (e.g. 30s for a demo; default: the rules' own)")
    monitor_up.add_argument("--rules", default=None, metavar="FILE",
                            help="a rules file of your own (default: the course's rules.yml)")
    monitor_up.add_argument("--scrape-interval", default="15s", metavar="DURATION", help="default 15s")
    monitor_up.add_argument("--evaluation-interval", default="15s", metavar="DURATION", help="default 15s")
    for timer, default in (("group-wait", "30s"), ("group-interval", "5m"), ("repeat-interval", "4h")):
        monitor_up.add_argument(f"--{timer}", default=None, metavar="DURATION",
                                help=f"Alertmanager's {timer.replace('-', '_')} (default: the configuration's {default})")
    monitor_up.set_defaults(fn=cmd_monitor)
    monitor_sub.add_parser("status", help="URLs, the scrape targets' health, firing alerts").set_defaults(fn=cmd_monitor)
    monitor_sub.add_parser("down", help="stop the stack started by `monitor up`").set_defaults(fn=cmd_monitor)
    monitor_serve = monitor_sub.add_parser("serve", help="the monitor service for a configuration written by "
                                                          "monitoring.ServiceConfig(...).save(path)")
    monitor_serve.add_argument("config", help="the service's JSON configuration")
    monitor_serve.add_argument("--port", type=int, default=None, help="default: a free port")
    monitor_serve.set_defaults(fn=cmd_monitor)
    pipe = sub.add_parser("pipeline", help="the retraining workflow on Dagster: run a batch, or the daemon and UI")
    pipe_sub = pipe.add_subparsers(dest="pipeline_command", required=True)
    pipe_run = pipe_sub.add_parser("run", help="run the workflow on one batch in this process")
    pipe_run.add_argument("--batch", default=None, metavar="FILE",
                          help="a .parquet or .csv batch of whole months (default: retrain on the stored window)")
    pipe_run.add_argument("--trigger", default="manual", help="recorded with the run (default: manual)")
    from mlops_lab.pipeline.workflow import Settings  # one place for the defaults

    for option, kind in (("window-months", int), ("holdout-days", int), ("trials", int), ("min-improvement", float)):
        default = getattr(Settings(), option.replace("-", "_"))
        pipe_run.add_argument(f"--{option}", type=kind, default=default, help=f"default {default}")
    pipe_run.add_argument("--model-name", default=None, help="the registered model (default: bike-demand)")
    pipe_run.add_argument("--retrain-when", default="always", choices=["always", "drift", "never"],
                          help="after a new month: retrain always (default), on a monitor alarm, or never")
    pipe_run.add_argument("--env", default=None, choices=["dev", "staging", "prod"],
                          help="run against that environment's server (mlops-lab env up) as the deployer bot")
    pipe_run.add_argument("--user", default=None, help="with --env: sign in as this stored user instead of the bot")
    pipe_run.set_defaults(fn=cmd_pipeline)
    pipe_up = pipe_sub.add_parser("up", help="start Dagster's daemon (sensors, schedule) and web UI")
    pipe_up.add_argument("--port", type=int, default=None, help="the UI's port (default: a free one)")
    pipe_up.set_defaults(fn=cmd_pipeline)
    pipe_sub.add_parser("status", help="the daemon, the UI and the latest runs").set_defaults(fn=cmd_pipeline)
    pipe_sub.add_parser("down", help="stop what `pipeline up` started").set_defaults(fn=cmd_pipeline)
    from mlops_lab import delivery  # mlops-lab cd unit|staging|promote|check-workflows (lesson 17)
    delivery.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "env" and args.action != "add-user":
        args.which = args.names or "all"
    try:
        return args.fn(args)
    except Exception as exc:  # noqa: BLE001 (one clear line instead of a traceback)
        from mlops_lab.config import WorkspaceError
        from mlops_lab.datasets import DataError
        from mlops_lab.labs import LabBuildError
        from mlops_lab.auth import AuthError
        from mlops_lab.environments import EnvError
        from mlops_lab.processes import ProcessError
        from mlops_lab.runner import RunnerError
        from mlops_lab.deployment import RouterError, SpecError

        known: tuple[type[BaseException], ...] = (WorkspaceError, DataError, RunnerError, LabBuildError, EnvError,
                                                  AuthError, ProcessError, SpecError, RouterError)
        if args.command == "monitor":
            from mlops_lab.monitoring.alerts import AlertRulesError, MissingBinaryError
            from mlops_lab.monitoring.stack import StackError

            known += (AlertRulesError, MissingBinaryError, StackError)
        if args.command == "pipeline":
            from mlops_lab.pipeline.service import ServiceError
            from mlops_lab.pipeline.workflow import PipelineError
            from mlops_lab.quality import BatchRejected

            known += (ServiceError, PipelineError, BatchRejected)
        if isinstance(exc, known) or (args.command == "router" and isinstance(exc, (ValueError, OSError))):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
