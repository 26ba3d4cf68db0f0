"""The `herald` command: run the components together or apart, validate, list hook URLs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from herald import config as config_mod
from herald import envcheck, logs, operator_cli
from herald.history import open_history
from herald.suspensions import Applier as SuspensionApplier
from herald.suspensions import open_suspensions
from herald.settings import Settings, state_dir_problem

if TYPE_CHECKING:
    from herald.cluster_config import ClusterConfig
    from herald.fleet import Fleet

log = logging.getLogger("herald")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line naming the flag, the value and what is accepted; exit 2."""
        self.exit(2, f"{self.prog}: {message}\n")


def _address(text: str) -> str:
    problem = envcheck.address_problem(text) if text else ""  # "": not set
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def _parser() -> argparse.ArgumentParser:
    env = Settings.from_env()

    def options(parser: argparse.ArgumentParser, suppress: bool) -> argparse.ArgumentParser:
        """The global options. They are read before the command (`herald -c x validate`) and
        after it; after it, a default would overwrite what came before, so there it has none."""
        def default(value: object) -> object:
            return argparse.SUPPRESS if suppress else value

        parser.add_argument("-c", "--config", action="append", metavar="PATH", default=default(None),
                            help="YAML file or directory; repeatable (env HERALD_CONFIG)")
        parser.add_argument("--broker", default=default(env.broker_url), metavar="URL",
                            help="amqp://… to use RabbitMQ; embedded SQLite bus when unset (env HERALD_BROKER_URL)")
        parser.add_argument("--state-dir", default=default(str(env.state_dir)), metavar="DIR",
                            help="embedded bus, Git cache (env HERALD_STATE_DIR, default .herald)")
        parser.add_argument("--secrets-dir", default=default(env.secrets_dir), metavar="DIR",
                            help="Secrets as files <dir>/<namespace>/<name>/<key> (env HERALD_SECRETS_DIR)")
        parser.add_argument("--listen", default=default(env.listen), metavar="HOST:PORT", type=_address,
                            help="receiver address (env HERALD_LISTEN or PORT; default 127.0.0.1:9292)")
        parser.add_argument("--log-level", default=default(env.log_level), type=str.upper,
                            choices=envcheck.LOG_LEVELS, help="env HERALD_LOG_LEVEL")
        parser.add_argument("--log-format", default=default(env.log_format), choices=("text", "json"),
                            help="env HERALD_LOG_FORMAT (default text)")
        parser.add_argument("--metrics-listen", default=default(env.metrics_listen), metavar="HOST:PORT",
                            type=_address,
                            help="worker/notifier: serve /healthz, /readyz, /metrics here (env HERALD_METRICS_LISTEN)")
        parser.add_argument("--from-cluster", action="store_true", default=default(env.from_cluster),
                            help="also read herald.dev/v1 objects and their Secrets from the cluster, and watch "
                                 "them for changes (env HERALD_FROM_CLUSTER=true)")
        parser.add_argument("--watch-namespace", default=default(env.watch_namespace), metavar="NS",
                            help="with --from-cluster: only this namespace (env HERALD_WATCH_NAMESPACE; "
                                 "default all namespaces)")
        parser.add_argument("--operator-secret", default=default(env.operator_secret), metavar="NS/NAME",
                            help="the Secret whose `token` allows changes over the operator API and status page, "
                                 "and whose optional `readToken` is then needed to read them "
                                 "(env HERALD_OPERATOR_SECRET; unset: read-only)")
        return parser

    common = options(_Parser(add_help=False), suppress=True)

    p = options(_Parser(prog="herald", description="Webhook-driven GitOps companion."), suppress=False)
    p.add_argument("--version", action="version", version=f"herald {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("version", help="print Herald's version", description="print Herald's version")
    for name, help_text in [
        ("serve", "receiver + reconciler + notifier in one process"),
        ("receiver", "the webhook receiver alone"),
        ("worker", "the reconciler alone"),
        ("notifier", "the notifier alone"),
        ("hooks", "print each Receiver's URL path"),
    ]:
        sub.add_parser(name, parents=[common], help=help_text, description=help_text)
    validate_help = ("check the configuration; exit 1 with file:line errors. The image markers of each "
                     "ImageUpdateAutomation are read from its Git branch and those that cannot apply are warned about")
    validate = sub.add_parser("validate", parents=[common], help=validate_help, description=validate_help)
    validate.add_argument("--offline", action="store_true",
                          help="do not fetch the automations' Git repositories (their markers are not checked)")
    plan_help = ("what a revision would change in the cluster (server-side dry-run, nothing applied); "
                 "exit 0 when nothing would change, 1 when something would, 2 on error")
    plan = sub.add_parser("plan", parents=[common], help=plan_help, description=plan_help)
    plan.add_argument("--revision", required=True, metavar="REF_OR_SHA",
                      help="a commit (40 or 64 hex), a full ref (refs/pull/7/head) or a branch name")
    plan.add_argument("--kustomization", action="append", default=[], metavar="NS/NAME",
                      help="plan only this Kustomization (repeatable; default: every Kustomization)")
    plan.add_argument("--format", choices=("text", "markdown"), default="text",
                      help="markdown: the pull-request comment Herald would write")
    operator_cli.add_parsers(sub, common)
    return p


def version() -> str:
    """The installed distribution's version (pyproject.toml's)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("herald")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _settings(args: argparse.Namespace) -> Settings:
    env = Settings.from_env()
    return Settings(
        config=args.config or env.config,
        broker_url=args.broker,
        state_dir=Path(args.state_dir),
        listen=args.listen,
        secrets_dir=args.secrets_dir,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics_listen=args.metrics_listen,
        max_body=env.max_body,
        dedupe_window=env.dedupe_window,  # was dropped here, so HERALD_DEDUPE_WINDOW had no effect
        from_cluster=args.from_cluster,
        watch_namespace=args.watch_namespace,
        operator_secret=getattr(args, "operator_secret", None) or env.operator_secret,
        history_retention=env.history_retention,
    )


def _load(settings: Settings) -> config_mod.Config:
    if not settings.config:
        raise SystemExit("herald: no configuration: pass -c PATH or set HERALD_CONFIG")
    try:
        cfg = config_mod.load(settings.config, settings.secrets_dir or None)
    except config_mod.ConfigError as exc:
        for d in sorted(exc.diagnostics, key=lambda d: (d.path, d.line)):
            print(d, file=sys.stderr)
        raise SystemExit(1) from None
    for w in cfg.warnings:
        log.warning("%s", w)
    return cfg


def _from_cluster(settings: Settings, command: str) -> ClusterConfig:
    """The configuration read from the cluster (and the -c files); exit 1 when it cannot be."""
    from herald.cluster_config import (
        ClusterConfig,
        FromClusterError,
        describe,
        start_errors,
    )

    try:
        source = ClusterConfig.from_settings(settings, command, report=command not in ("validate", "hooks"))
    except FromClusterError as exc:
        print(f"herald {command} --from-cluster: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if command == "hooks":
        for d in source.diagnostics:
            print(describe(d), file=sys.stderr)
    elif command != "validate" and start_errors(source):
        print("\n".join(start_errors(source)), file=sys.stderr)
        raise SystemExit(1)
    return source


def _marker_diagnostics(cfg: config_mod.Config) -> list[config_mod.Diagnostic]:
    """The markers each ImageUpdateAutomation cannot apply, as warnings at the file and line of
    the branch it edits (`reconciler.images.automation.check_markers`); fetched into a
    directory of its own, removed afterwards."""
    import tempfile

    from reconciler.git import GitCache
    from reconciler.images.automation import check_markers

    out: list[config_mod.Diagnostic] = []
    with tempfile.TemporaryDirectory(prefix="herald-validate-") as tmp:
        git = GitCache(Path(tmp))
        for auto in sorted(cfg.image_update_automations.values(), key=lambda a: a.meta.key):
            if auto.suspend:
                continue
            who = f"ImageUpdateAutomation {auto.meta.namespace}/{auto.meta.name}"
            report = check_markers(cfg, git, auto)
            if report.error:
                out.append(config_mod.Diagnostic(report.where, 0, f"{who}: its markers cannot be checked: "
                                                                  f"{report.error}", "warning"))
            for path, problem in report.problems:
                out.append(config_mod.Diagnostic(f"{report.where}:{path}", problem.line,
                                                 f"{who}: {problem.message}", "warning"))
    return out


FLEET_MARKERS = ("kustomization.yaml", "kustomization.yml", "Kustomization", "gotk-sync.yaml", "gotk-components.yaml")


def is_fleet(path: str | Path) -> bool:
    """A folder that Flux would build (a kustomization.yaml somewhere, or what `flux bootstrap`
    writes) rather than Herald's own configuration folder."""
    root = Path(path)
    if not root.is_dir():
        return False
    return any(p.name in FLEET_MARKERS and ".git" not in p.parts for p in root.rglob("*"))


def cmd_validate_fleet(settings: Settings, roots: list[str]) -> int:
    """`herald validate -c <fleet repository>`: each folder built as Flux would build it, the Flux
    objects checked, workload manifests counted (`reconciler.fleet_validate`)."""
    from reconciler.fleet_validate import validate_fleet

    errors = warnings = flux = workloads = 0
    for root in roots:
        report = validate_fleet(Path(root), secrets_dir=settings.secrets_dir or None)
        for d in sorted(report.diagnostics, key=lambda d: (d.path, d.line)):
            print(d)
        errors += len(report.errors)
        warnings += len(report.diagnostics) - len(report.errors)
        flux += report.flux_objects
        workloads += report.workloads
        print(f"{root}: built {len(report.folders)} folder(s): {flux} Flux object(s), {workloads} workload "
              f"manifest(s)" + (", not acted on by Herald: " + ", ".join(
                  f"{kind} ({n})" for kind, n in sorted(report.inert.items())) if report.inert else ""))
    if errors:
        print(f"{errors} error(s), {warnings} warning(s)")
        return 1
    print(f"ok: {flux} Flux object(s), {workloads} workload manifest(s), {warnings} warning(s)")
    return 0


def cmd_validate(settings: Settings, offline: bool = False) -> int:
    if not settings.config and not settings.from_cluster:
        print("herald validate: pass -c PATH or --from-cluster, or set HERALD_CONFIG", file=sys.stderr)
        return 2
    fleets = [p for p in settings.config or [] if is_fleet(p)]
    if fleets and not settings.from_cluster:
        if len(fleets) != len(settings.config):
            print("herald validate: -c names both a fleet repository and configuration files; validate them apart",
                  file=sys.stderr)
            return 2
        return cmd_validate_fleet(settings, fleets)
    if settings.from_cluster:
        from herald.cluster_config import describe

        source = _from_cluster(settings, "validate")
        cfg, diagnostics = source.config, source.diagnostics
    else:
        describe = str
        cfg, diagnostics = config_mod.check(settings.config, settings.secrets_dir or None)
    if not offline and cfg.image_update_automations and not any(d.severity == "error" for d in diagnostics):
        diagnostics = [*diagnostics, *_marker_diagnostics(cfg)]
    for d in sorted(diagnostics, key=lambda d: (d.path, d.line)):
        print(describe(d))
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    objects = sum(len(cfg.by_kind(k)) for k in config_mod.API_VERSIONS)
    if errors:
        print(f"{errors} error(s), {warnings} warning(s)")
        return 1
    print(f"ok: {objects} object(s), {warnings} warning(s)")
    return 0


def cmd_hooks(settings: Settings) -> int:
    # From the cluster, invalid Receivers are reported on stderr and left out, as at run time.
    cfg = _from_cluster(settings, "hooks").config if settings.from_cluster else _load(settings)
    for r in sorted(cfg.receivers.values(), key=lambda r: r.meta.key):
        print(f"{r.meta.namespace}/{r.meta.name}\t{r.type}\t{cfg.hook_path(r)}")
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _start(target: Callable[[threading.Event], None], stop: threading.Event, name: str) -> threading.Thread:
    t = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    t.start()
    return t


def _watch(source: ClusterConfig | Fleet | None, updates: list[Callable[[config_mod.Config], None]]) -> None:
    """With --from-cluster, or a fleet: hand every new configuration to each component, from now on."""
    from herald.fleet import Fleet as FleetType

    if source is None:
        return
    if isinstance(source, FleetType):  # its watch runs on a thread of cmd_run's
        for update in updates:
            source.subscribe(update)
        return
    for update in updates:
        source.subscribe(update)
    source.start()


def _usable_state_dir(settings: Settings, command: str) -> None:
    """Exit 2 with one line when the state directory cannot be used."""
    problem = state_dir_problem(settings.state_dir)
    if problem:
        print(f"herald {command}: --state-dir {settings.state_dir} (HERALD_STATE_DIR): {problem}",
              file=sys.stderr)
        raise SystemExit(2)


def cmd_receiver(settings: Settings) -> int:
    """`herald receiver`: gunicorn with its arbiter and worker processes, as `web` runs it.
    Each worker builds the app, its bus connection and its --from-cluster watch after the
    fork; this process only checks the configuration first, to fail with file:line errors."""
    from receiver.server import run_arbiter

    if not settings.from_cluster:
        _load(settings)
    if not settings.broker_url:  # the embedded bus and dedupe log live there
        _usable_state_dir(settings, "receiver")
    run_arbiter(settings)
    return 0


def cmd_run(command: str, settings: Settings) -> int:
    from herald.bus import open_bus

    source = _from_cluster(settings, command) if settings.from_cluster else None
    cfg = source.config if source is not None else _load(settings)
    if command != "notifier" or not settings.broker_url:  # Git cache, embedded bus, thread memory
        _usable_state_dir(settings, command)
    fleet = None
    if source is None:
        # The Flux objects each Kustomization renders join the configuration (herald.fleet),
        # shared with every process through the bus's logs (a RabbitMQ stream, or SQLite).
        from herald.fleet import Fleet

        fleet = Fleet(settings.config, settings.secrets_dir or None, settings.state_dir, settings.broker_url)
        cfg = fleet.config
    bus = open_bus(settings.broker_url or None, settings.state_dir)
    # What happened, for the operator API (herald.history): only `serve` reads it back here.
    history = open_history(settings.broker_url or None, settings.state_dir, read=command == "serve",
                           retention=settings.history_retention)
    # The operator's suspend/resume (herald.suspensions), applied to what each component sees.
    suspensions = open_suspensions(settings.broker_url or None, settings.state_dir)
    updates: list[Callable[[config_mod.Config], None]] = []  # each component's
    applier = SuspensionApplier(suspensions, cfg, updates)
    cfg = applier.initial()
    log.info("herald %s: bus=%s state-dir=%s", command,
             "rabbitmq" if settings.broker_url else f"embedded ({settings.state_dir / 'bus.sqlite3'})",
             settings.state_dir)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    ops = None
    try:
        if fleet is not None:
            threads.append(_start(fleet.watch, stop, "fleet"))
        if command in ("serve", "worker"):
            from reconciler.worker import Reconciler

            reconciler = Reconciler(cfg, bus, settings.state_dir, fleet=fleet, history=history)
            updates.append(reconciler.update)
            threads.append(_start(reconciler.run, stop, "reconciler"))
        if command in ("serve", "notifier"):
            from notifier.worker import Notifier

            notifier = Notifier(cfg, bus, history=history)
            updates.append(notifier.update)
            threads.append(_start(notifier.run, stop, "notifier"))
        if command == "serve":
            from receiver.app import create_app
            from receiver.server import serve_in_process

            app = create_app(cfg, bus, settings, history=history, suspensions=suspensions)
            updates.append(app.extensions["herald"]["update"])
        if settings.metrics_listen:
            # Once every component exists: /readyz means ready to work, and /metrics has every
            # component's metrics from its first scrape.
            from herald.ops import OpsServer

            ops = OpsServer(settings.metrics_listen, bus.ping).start()
        # Only now that every component listens: a suspension changed since `initial()` reaches all.
        threads.append(_start(applier.watch, stop, "suspensions"))
        _watch(source or fleet, [applier.update])
        if command == "serve":
            serve_in_process(app, settings, stop)  # until SIGTERM or SIGINT
        else:
            _stop_on_signals(stop)
            stop.wait()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if ops is not None:
            ops.stop()
        if source is not None:
            source.stop()
        if fleet is not None:
            fleet.close()
        history.close()
        suspensions.close()
        bus.close()
    return 0


def cmd_plan(settings: Settings, revision: str, only: list[str], fmt: str) -> int:
    """`herald plan`: the plan a pull request would get, on the terminal (`reconciler.preview`)."""
    from herald.forges.plan_comment import PlanSection, comment
    from reconciler.kube import Cluster
    from reconciler.preview import Planner, git_ref

    if not settings.config:
        print("herald plan: no configuration: pass -c PATH or set HERALD_CONFIG", file=sys.stderr)
        return 2
    try:
        cfg = config_mod.load(settings.config, settings.secrets_dir or None)
    except config_mod.ConfigError as exc:
        for d in sorted(exc.diagnostics, key=lambda d: (d.path, d.line)):
            print(d, file=sys.stderr)
        return 2
    chosen = []
    for text in only:
        ns, _, name = text.rpartition("/")
        ks = cfg.kustomizations.get((ns, name))
        if ks is None:
            known = ", ".join(sorted(f"{k[0]}/{k[1]}" for k in cfg.kustomizations)) or "none"
            print(f"herald plan: --kustomization {text!r}: no such Kustomization (known: {known})", file=sys.stderr)
            return 2
        chosen.append(ks)
    chosen = chosen or sorted(cfg.kustomizations.values(), key=lambda k: k.meta.key)
    if not chosen:
        print("herald plan: the configuration has no Kustomization to plan", file=sys.stderr)
        return 2
    cluster = Cluster.from_environment(settings.state_dir / "kube")
    results = Planner(cfg, settings.state_dir, cluster).plan(chosen, git_ref(revision))

    if fmt == "markdown":
        sections = [PlanSection(r.target, r.plan.counts(), r.plan.markdown(f"Kustomization {r.target}"))
                    if r.plan is not None else
                    PlanSection(r.target, error=r.error or "no cluster configured: cannot compare")
                    for r in results]
        print(comment(sections, next((r.revision.rpartition(":")[2] for r in results if r.revision), revision)),
              end="")
    else:
        for r in results:
            where = f"Kustomization {r.target}" + (f" at {r.revision}" if r.revision else "")
            if r.error:
                print(f"► {where}: plan failed: {r.error}")
            elif r.plan is None:
                print(f"► {where}: no cluster configured (no kubeconfig, not in a cluster): rendered "
                      f"{len(r.manifests)} object(s), cannot compare them with the live cluster")
                for m in r.manifests:
                    print(f"  {m.ref()}")
            else:
                print(f"► {where}: {r.plan.body().rstrip()}")
            print()
    if any(r.error or r.plan is None or r.plan.failed for r in results):
        return 2
    return 1 if any(c.changed for r in results for c in r.plan.changes) else 0


def main(argv: list[str] | None = None) -> int:
    bad = envcheck.problems(os.environ)
    if bad:
        for line in bad:
            print(f"herald: {line}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"herald {version()}")
        return 0
    settings = _settings(args)
    if args.command in operator_cli.COMMANDS:
        return operator_cli.run(args, settings.listen)
    if args.command == "validate":
        return cmd_validate(settings, args.offline)
    if args.command == "hooks":
        return cmd_hooks(settings)
    if args.command == "plan":
        logs.setup(settings.log_level, settings.log_format)  # stderr; the plan goes to stdout
        return cmd_plan(settings, args.revision, args.kustomization, args.format)
    # Only the long-running commands take over the process' logging; validate and hooks print.
    logs.setup(settings.log_level, settings.log_format)
    if args.command == "receiver":
        return cmd_receiver(settings)
    return cmd_run(args.command, settings)


if __name__ == "__main__":
    sys.exit(main())
