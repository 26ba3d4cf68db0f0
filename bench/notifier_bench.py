"""The notifier's throughput and latency (issue 5).

Part 1, routing: a fleet's configuration (121 Kustomizations in 11 namespaces, 100 Alerts over
9 Providers, written as Flux users write them) and 10,000 events shaped as the reconciler emits
them (change lists, Progressing, failures, DependencyNotReady, a few GitRepository fetch errors).
  (a) pure routing: `route` + `with_alert_metadata` for every routed Alert, as handle_event does;
  (b) the fan-out step: `Notifier.handle_event` on each event's JSON, publishing one delivery per
      (Alert, Provider) on a real bus: embedded (SQLite), RabbitMQ (fresh vhost), and a bus whose
      publish does nothing (to see what the bus costs).
  Events/s, median of several runs; each run goes over the same events in the same order.

Part 2, latency: event published on `herald.events` → chat.postMessage received by the test
Slack Web API (tests/slackapi.py, in its own process, stamping each request's arrival with
CLOCK_MONOTONIC, which is system-wide on Linux). The notifier runs as in production: in the
publisher's process on the embedded bus (as `herald serve`, where the reconciler publishes), as
a `herald notifier` process on RabbitMQ. Three cases, each after a warm-up:
  paced:    N events, one every --pace-ms, each a new object+revision (a new Slack message);
  burst:    N events published back to back (one thread), each a new message;
  threaded: N/2 objects, Progressing then Succeeded at one revision, paced; the second event of
            each pair continues the thread (chat.update of the parent, then the reply), and is
            measured to the reply's arrival.
Every event has its own message (the dedupe key includes it), so nothing is deduplicated.

RabbitMQ is, by default, a node the script starts for itself (own name, ports and data directory,
same disk), so that test suites stopping the machine's shared node cannot break the run;
`--broker amqp://guest:guest@127.0.0.1:5672` uses a running one instead. Each measurement waits
(up to --idle-wait s) for the machine to be idle first, and reports the CPU it used.

    python bench/notifier_bench.py                     # everything, both buses
    python bench/notifier_bench.py --routing-from HEAD # also the routing of a Git revision (before/after)
    python bench/notifier_bench.py --quick             # a short smoke run
    python bench/notifier_bench.py --part routing --bus embedded
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from herald import config, logs
from herald.bus import Delivery, open_bus
from herald.messages import (
    EVENTS_QUEUE,
    NOTIFY_QUEUE,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    Event,
)
from notifier.memory import NotifierMemory
from notifier.providers import kind_of
from notifier.routing import route, wants, with_alert_metadata
from notifier.worker import Notifier
from reconciler.health import go_duration

SLACK_TOKEN = "xoxb-bench-notifier"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672"
MARK = re.compile(rb"web-env-b(\d{9})")  # the sequence number hidden in each latency event's change list


def now() -> float:
    """CLOCK_MONOTONIC: one clock for this process and the Slack server's."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---- the machine ------------------------------------------------------------------------------

def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@contextmanager
def cpu_meter(out: dict[str, float]) -> Iterator[None]:
    """Cores busy on the machine and in this process (with waited-for children) over the block."""
    hz = os.sysconf("SC_CLK_TCK")
    busy0, _ = _cpu_times()
    t0, p0 = time.monotonic(), os.times()
    try:
        yield
    finally:
        busy1, _ = _cpu_times()
        wall = max(time.monotonic() - t0, 1e-9)
        p1 = os.times()
        out["machine"] = (busy1 - busy0) / hz / wall
        out["self"] = (p1.user - p0.user + p1.system - p0.system) / wall
        out["wall"] = wall


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit: float, timeout: float) -> float:
    """Wait (up to `timeout` s) until the machine's busy cores over 1 s are below `limit`; the last reading."""
    deadline = time.monotonic() + timeout
    hz = os.sysconf("SC_CLK_TCK")
    while True:
        b0, _ = _cpu_times()
        time.sleep(1.0)
        busy = (_cpu_times()[0] - b0) / hz
        if busy < limit or time.monotonic() > deadline:
            if busy >= limit:
                print(f"  (machine still busy: {busy:.2f} cores; measuring anyway)", file=sys.stderr)
            return busy


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_info() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    rmq = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True, check=False).stdout.strip()
    return (f"{os.cpu_count()} cores ({model}), {int(mem) / 2**20:.0f} GiB, Python {platform.python_version()}, "
            f"RabbitMQ {rmq or '?'}; load average at start {loadavg()}")


# ---- the fleet: configuration ---------------------------------------------------------------

TEAMS: dict[str, tuple[str, list[str]]] = {  # namespace → (tier of most apps, apps)
    "shop": ("frontend", ["storefront", "cart", "checkout", "catalog", "search-ui", "recommendations", "reviews",
                          "wishlist", "shop-db", "shop-redis", "shop-worker", "pricing"]),
    "payments": ("backend", ["payments-api", "ledger", "fraud-detector", "payouts", "invoicing", "payments-db",
                             "psp-adapter", "refunds"]),
    "search": ("backend", ["search-api", "indexer", "elasticsearch", "query-router", "synonyms"]),
    "data": ("data", ["kafka", "zookeeper", "schema-registry", "airflow", "spark-operator", "trino", "minio",
                      "dbt-runner", "kafka-connect", "clickhouse"]),
    "identity": ("backend", ["keycloak", "auth-gateway", "user-service", "session-store", "ldap-sync"]),
    "platform": ("infra", ["cert-manager", "external-dns", "external-secrets", "cluster-autoscaler", "metrics-server",
                           "kyverno", "kyverno-policies", "sealed-secrets", "velero", "reloader"]),
    "monitoring": ("infra", ["kube-prometheus-stack", "loki", "promtail", "tempo", "grafana-dashboards",
                             "alertmanager-config", "blackbox-exporter"]),
    "ingress-nginx": ("infra", ["ingress-nginx", "ingress-nginx-internal", "oauth2-proxy"]),
    "mobile-api": ("frontend", ["mobile-bff", "push-notifications", "feature-flags", "app-config",
                                "device-registry"]),
    "marketing": ("frontend", ["cms", "newsletter", "landing-pages", "campaign-tracker"]),
}
INFRA_TEAMS = {"platform", "monitoring", "ingress-nginx"}  # one cluster-wide install, no staging copy
OWN_PROVIDER = ("shop", "payments", "data", "platform")  # teams that keep their Alerts in their namespace
DATA_APPS = {"shop-db", "shop-redis", "payments-db", "elasticsearch", "kafka", "zookeeper", "minio", "clickhouse",
             "session-store"}


@dataclass
class Ks:
    """A Kustomization of the fleet and the objects it applies."""

    namespace: str
    name: str
    labels: dict[str, str]
    objects: list[str]  # Kind/namespace/name (Kind/name when cluster-scoped)
    interval: str = "10m"
    wait: bool = True
    depends_on: str = ""


def _objects(rng: random.Random, ns: str, app: str, infra: bool) -> list[str]:
    """What a typical app (or infrastructure component) applies; 3 to ~40 objects."""
    h = "".join(rng.choice("bcdfghkmt256789") for _ in range(10))  # a configMapGenerator hash
    out: list[str] = []
    if infra:
        out += [f"Namespace/{ns}"]
        out += [f"CustomResourceDefinition/{app}-{c}.acme.io" for c in rng.sample(
            ["certificates", "issuers", "policies", "backups", "schedules", "secretstores", "probes",
             "servicemonitors", "podmonitors", "rules"], rng.randint(0, 6))]
        out += [f"ClusterRole/{app}", f"ClusterRoleBinding/{app}"]
    out += [f"ServiceAccount/{ns}/{app}", f"ConfigMap/{ns}/{app}-config-{h}", f"Service/{ns}/{app}"]
    out += [f"StatefulSet/{ns}/{app}" if app in DATA_APPS else f"Deployment/{ns}/{app}"]
    optional = [f"HorizontalPodAutoscaler/{ns}/{app}", f"PodDisruptionBudget/{ns}/{app}",
                f"NetworkPolicy/{ns}/{app}", f"Role/{ns}/{app}", f"RoleBinding/{ns}/{app}",
                f"ServiceMonitor/{ns}/{app}", f"ExternalSecret/{ns}/{app}", f"Ingress/{ns}/{app}",
                f"PrometheusRule/{ns}/{app}", f"Secret/{ns}/{app}-tls", f"Service/{ns}/{app}-headless",
                f"ConfigMap/{ns}/{app}-dashboards", f"CronJob/{ns}/{app}-cleanup", f"Job/{ns}/{app}-migrate"]
    out += rng.sample(optional, rng.randint(0, len(optional)))
    for i in range(rng.choice([0, 0, 0, 2, 5, 12, 20])):  # the big ones (monitoring stacks, dashboards)
        out.append(f"ConfigMap/{ns}/{app}-extra-{i}")
    return out


def fleet(seed: int = 5) -> list[Ks]:
    rng = random.Random(seed)
    out = [Ks("flux-system", "flux-system", {"team": "platform", "tier": "infra", "env": "production"},
              _objects(rng, "flux-system", "flux", True), interval="1m"),
           Ks("flux-system", "infrastructure", {"team": "platform", "tier": "infra", "env": "production"},
              _objects(rng, "flux-system", "infrastructure", True), interval="1h"),
           Ks("flux-system", "apps", {"team": "platform", "tier": "infra", "env": "production"},
              _objects(rng, "flux-system", "apps", False))]
    for ns, (tier, apps) in TEAMS.items():
        for app in apps:
            t = "data" if app in DATA_APPS else tier
            out.append(Ks(ns, app, {"team": ns, "tier": t, "env": "production", "app.kubernetes.io/name": app},
                          _objects(rng, ns, app, ns in INFRA_TEAMS), interval=rng.choice(["5m", "10m", "10m", "1h"]),
                          wait=rng.random() < 0.6))
            if ns not in INFRA_TEAMS:
                out.append(Ks(ns, f"{app}-staging",
                              {"team": ns, "tier": t, "env": "staging", "app.kubernetes.io/name": app},
                              _objects(rng, ns, f"{app}-staging", False), interval="5m", wait=False))
    by_ns: dict[str, list[Ks]] = {}
    for k in out:
        by_ns.setdefault(k.namespace, []).append(k)
    for ks in by_ns.values():  # a database first, then the apps that need it
        dbs = [k for k in ks if k.name.endswith("-db") or k.name in ("kafka", "keycloak")]
        for k in ks:
            if dbs and k not in dbs and rng.random() < 0.3:
                k.depends_on = dbs[0].name
    return out


def _doc(kind: str, api: str, name: str, ns: str, spec: dict[str, Any], labels: dict[str, str] | None = None,
         ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


NOTIF = "notification.toolkit.fluxcd.io/v1beta3"
NOISE = ["^Dependencies do not meet ready condition.*", ".*no changes since last reconcil.*",
         "^Reconciliation in progress.*"]


def alerts_and_providers(kss: list[Ks], rng: random.Random) -> list[dict[str, Any]]:
    """9 Providers and exactly 100 Alerts, in the forms Flux users write."""
    docs: list[dict[str, Any]] = []
    secret = lambda ns, name, data: {"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"name": name, "namespace": ns}, "stringData": data}
    docs.append(secret("flux-system", "slack-bot", {"token": SLACK_TOKEN}))
    docs.append(secret("flux-system", "teams-webhook", {"address": "https://acme.webhook.office.com/webhookb2/x"}))
    docs.append(secret("flux-system", "github-token", {"token": "ghp_bench"}))
    slack = "https://slack.com/api/chat.postMessage"
    providers = [
        ("flux-system", "slack-deploys", {"type": "slack", "channel": "deploys", "address": slack,
                                          "secretRef": {"name": "slack-bot"}}),
        ("flux-system", "slack-oncall", {"type": "slack", "channel": "oncall", "address": slack,
                                         "secretRef": {"name": "slack-bot"}}),
        ("flux-system", "msteams", {"type": "msteams", "secretRef": {"name": "teams-webhook"}}),
        ("flux-system", "github", {"type": "github", "address": "https://github.com/acme/fleet",
                                   "secretRef": {"name": "github-token"}}),
        ("flux-system", "audit", {"type": "generic", "address": "https://audit.acme.internal/flux"}),
    ]
    for ns in OWN_PROVIDER:
        docs.append(secret(ns, "slack-bot", {"token": SLACK_TOKEN}))
        providers.append((ns, "slack", {"type": "slack", "channel": f"team-{ns}", "address": slack,
                                        "secretRef": {"name": "slack-bot"}}))
    docs += [_doc("Provider", NOTIF, name, ns, spec) for ns, name, spec in providers]

    alerts: list[tuple[str, str, dict[str, Any]]] = []

    def alert(ns: str, name: str, provider: str, sources: list[dict[str, Any]], severity: str = "info",
              **extra: Any) -> None:
        spec: dict[str, Any] = {"providerRef": {"name": provider}, "eventSeverity": severity,
                                "eventSources": sources}
        spec.update(extra)
        alerts.append((ns, name, spec))

    everywhere = {"kind": "Kustomization", "name": "*", "namespace": "*"}
    git_everywhere = {"kind": "GitRepository", "name": "*", "namespace": "*"}
    # Cluster-wide, kept by the platform team in flux-system.
    alert("flux-system", "oncall-errors", "slack-oncall", [everywhere, git_everywhere], "error",
          exclusionList=["(?i)dependencies do not meet ready condition"])
    alert("flux-system", "deploys", "slack-deploys", [everywhere],
          inclusionList=[".*configured.*", ".*created.*", ".*deleted.*"], exclusionList=NOISE[:2])
    alert("flux-system", "production-errors", "msteams",
          [{**everywhere, "matchLabels": {"env": "production"}}], "error")
    alert("flux-system", "commit-status", "github", [{**everywhere, "matchLabels": {"env": "production"}}])
    alert("flux-system", "audit", "audit", [everywhere, git_everywhere])
    alert("flux-system", "frontend-changes", "slack-deploys",
          [{**everywhere, "matchLabels": {"tier": "frontend"}}],
          inclusionList=["Deployment/.* configured", "Ingress/.* (configured|created)"])
    alert("flux-system", "flux-itself", "slack-oncall",
          [{"kind": "Kustomization", "name": "flux-system"}, {"kind": "Kustomization", "name": "infrastructure"},
           {"kind": "GitRepository", "name": "fleet"}])
    alert("flux-system", "git-failures", "slack-oncall", [git_everywhere], "error")
    alert("flux-system", "crd-changes", "slack-oncall", [everywhere],
          inclusionList=[r"CustomResourceDefinition/\S+ (configured|created|deleted)"])
    alert("flux-system", "staging-failures", "slack-deploys",
          [{**everywhere, "matchLabels": {"env": "staging"}}], "error",
          exclusionList=["timeout waiting for"])
    alert("flux-system", "maintenance-window", "slack-deploys", [everywhere], suspend=True)
    alert("flux-system", "data-tier", "slack-oncall", [{**everywhere, "matchLabels": {"tier": "data"}}],
          exclusionList=NOISE, summary="Stateful workloads")
    for ns in TEAMS:  # one Alert per team namespace, all in flux-system
        alert("flux-system", f"team-{ns}", "slack-deploys", [{"kind": "Kustomization", "name": "*", "namespace": ns},
                                                             {"kind": "GitRepository", "name": "*", "namespace": ns}],
              exclusionList=NOISE, eventMetadata={"team": ns}, summary=f"{ns} deployments")
    # Teams that keep their own Alerts next to their apps.
    for ns in OWN_PROVIDER:
        alert(ns, "all", "slack", [{"kind": "Kustomization", "name": "*"}], exclusionList=NOISE,
              eventMetadata={"cluster": "eu-west-1"})
        alert(ns, "production-errors", "slack", [{"kind": "Kustomization", "name": "*",
                                                  "matchLabels": {"env": "production"}}], "error",
              summary=f"{ns}: production is failing")
        alert(ns, "releases", "slack", [{"kind": "Kustomization", "name": "*",
                                         "matchLabels": {"env": "production", "tier": TEAMS[ns][0]}}],
              inclusionList=[r"(Deployment|StatefulSet)/\S+ configured"])
    # One Alert per production app, by exact name, until there are 100.
    apps = [k for k in kss if k.labels.get("env") == "production" and k.namespace != "flux-system"]
    rng.shuffle(apps)
    for i, k in enumerate(apps):
        if len(alerts) >= 100:
            break
        own = k.namespace in OWN_PROVIDER
        src: dict[str, Any] = {"kind": "Kustomization", "name": k.name}
        if not own:
            src["namespace"] = k.namespace
        sources = [src]
        if i % 4 == 0 and k.namespace not in INFRA_TEAMS:
            sources.append({**src, "name": f"{k.name}-staging"})
        extra: dict[str, Any] = {"summary": f"{k.name} ({k.labels['env']})",
                                 "eventMetadata": {"env": "production", "cluster": "eu-west-1", "owner": k.namespace}}
        if i % 3 == 1:
            extra["inclusionList"] = [r".*(configured|created|deleted).*", "(?i)failed"]
        if i % 5 == 2:
            extra["exclusionList"] = [rf"ConfigMap/{re.escape(k.namespace)}/\S+ configured", NOISE[0]]
        if i % 17 == 5:
            extra["suspend"] = True
        alert(k.namespace if own else "flux-system", f"app-{k.namespace}-{k.name}" if not own else f"app-{k.name}",
              "slack" if own else rng.choice(["slack-deploys", "slack-deploys", "slack-oncall"]), sources,
              "error" if i % 3 == 0 else "info", **extra)
    assert len(alerts) == 100, len(alerts)
    docs += [_doc("Alert", NOTIF, name, ns, spec) for ns, name, spec in alerts]
    return docs


def write_fleet_config(path: Path, kss: list[Ks], seed: int = 5) -> Path:
    rng = random.Random(seed + 1)
    docs: list[dict[str, Any]] = [
        _doc("GitRepository", "source.toolkit.fluxcd.io/v1", "fleet", "flux-system",
             {"interval": "1m", "url": "https://github.com/acme/fleet", "ref": {"branch": "main"}})]
    for ns in TEAMS:
        docs.append(_doc("GitRepository", "source.toolkit.fluxcd.io/v1", "apps", ns,
                         {"interval": "5m", "url": f"https://github.com/acme/{ns}-deploy", "ref": {"branch": "main"}}))
    for k in kss:
        spec: dict[str, Any] = {
            "interval": k.interval, "path": f"./{k.namespace}/{k.name}", "prune": True, "wait": k.wait,
            "sourceRef": {"kind": "GitRepository", "name": "fleet" if k.namespace == "flux-system" else "apps"}}
        if k.depends_on:
            spec["dependsOn"] = [{"name": k.depends_on}]
        docs.append(_doc("Kustomization", "kustomize.toolkit.fluxcd.io/v1", k.name, k.namespace, spec, k.labels))
    docs += alerts_and_providers(kss, rng)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


# ---- the fleet: events -----------------------------------------------------------------------

def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def fleet_events(kss: list[Ks], n: int, seed: int = 7) -> list[Event]:
    """n events as the reconciler writes them, over the fleet, in time order."""
    rng = random.Random(seed)
    revisions = {ns: f"main@sha1:{_sha(rng)}" for ns in [*TEAMS, "flux-system"]}
    weights = [3.0 if k.interval in ("1m", "5m") else 1.0 for k in kss]
    t = 1_795_000_000.0
    out: list[Event] = []
    reasons = (["ReconciliationSucceeded"] * 62 + ["Progressing"] * 14 + ["DependencyNotReady"] * 7
               + ["ReconciliationFailed"] * 6 + ["HealthCheckFailed"] * 4 + ["BuildFailed"] * 2
               + ["GitOperationFailed"] * 3 + ["PruneFailed"] * 2)
    for _ in range(n):
        t += rng.expovariate(20.0)
        k = rng.choices(kss, weights)[0]
        if rng.random() < 0.02:  # a push: the namespace's repository moves
            revisions[k.namespace] = f"main@sha1:{_sha(rng)}"
        revision = revisions[k.namespace]
        reason = rng.choice(reasons)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
        took = go_duration(rng.lognormvariate(1.0, 1.0))
        retry_in = go_duration(rng.choice([30, 60, 120, 300]))
        meta = {"revision": revision, "commit_status": "update"}
        if reason == "GitOperationFailed":
            repo = "fleet" if k.namespace == "flux-system" else "apps"
            url = "https://github.com/acme/fleet" if repo == "fleet" else f"https://github.com/acme/{k.namespace}-deploy"
            msg = rng.choice([f"git fetch {url}: fatal: unable to access '{url}/': Could not resolve host: github.com",
                              f"git fetch {url}: remote: Repository not found.",
                              (f"git fetch {url}: error: RPC failed; HTTP 502 curl 22 The requested URL returned "
                              "error: 502")])
            out.append(Event.for_object("GitRepository", repo, k.namespace, severity=SEVERITY_ERROR,
                                        reason=reason, message=msg))
            out[-1].timestamp = stamp
            continue
        changes = []
        for ref in k.objects:
            r = rng.random()
            action = "configured" if r < 0.10 else "created" if r < 0.12 else "unchanged"
            changes.append(f"{ref} {action}")
        if rng.random() < 0.03:
            changes.append(f"ConfigMap/{k.namespace}/{k.name}-config-{_sha(rng)[:10]} deleted")
        severity = SEVERITY_INFO
        if reason == "ReconciliationSucceeded":
            lines = changes + ([f"Health check passed in {go_duration(rng.lognormvariate(2.0, 1.0))}"]
                               if k.wait else [])
            lines.append(f"Reconciliation finished in {took}, next run in {go_duration(_secs(k.interval))}")
        elif reason == "Progressing":
            lines = [f"Reconciliation in progress for revision {revision}"]
        elif reason == "DependencyNotReady":
            meta.pop("commit_status")
            lines = [(f"Dependencies do not meet ready condition (dependency '{k.namespace}/{k.depends_on or 'db'}' "
                     f"is not ready), retrying in {retry_in}")]
        else:
            severity = SEVERITY_ERROR
            workload = next((o for o in k.objects if o.startswith(("Deployment/", "StatefulSet/"))), k.objects[0])
            if reason == "ReconciliationFailed":
                kind, _, rest = workload.partition("/")
                lines = [(f"{workload} dry-run failed (Invalid): {kind}.apps \"{rest.rsplit('/', 1)[-1]}\" is "
                         "invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string"
                         "{\"app\":\"web\"}}: field is immutable"),
                         *[c for c in changes if not c.endswith("unchanged")]]
            elif reason == "HealthCheckFailed":
                lines = [*changes, f"health check failed after {took}: timeout waiting for:",
                         (f"{workload} status: 'InProgress' (Deployment rollout: 1 of 3 updated replicas are "
                         "available)")]
            elif reason == "PruneFailed":
                lines = [*changes, (f"ConfigMap/{k.namespace}/{k.name}-old: delete failed: the server has asked for "
                         "the client to provide credentials")]
            else:
                lines = [(f"./{k.namespace}/{k.name}: kustomize build failed: Error: accumulating resources: "
                         f"accumulation err='accumulating resources from 'overlays/{k.labels['env']}': "
                         "open overlays/production: no such file or directory'")]
            lines.append(f"Reconciliation failed after {took}, next try in {retry_in}")
        e = Event.for_object("Kustomization", k.name, k.namespace, severity=severity, reason=reason,
                             message="\n".join(lines), metadata=meta)
        e.timestamp, e.reportingInstance = stamp, "herald-worker-7d9f8c6b5-x2x9q"
        out.append(e)
    return out


def _secs(interval: str) -> float:
    return {"1m": 60, "5m": 300, "10m": 600, "1h": 3600}[interval]


# ---- part 1: routing and fan-out ------------------------------------------------------------

class NullBus:
    """A bus whose publish does nothing: handle_event without the bus's cost."""

    def __init__(self) -> None:
        self.published = 0

    def publish(self, queue: str, body: bytes, *, message_id: str = "", headers: dict | None = None) -> None:
        self.published += 1

    def close(self) -> None:
        pass


@dataclass
class Measure:
    name: str
    events: int
    seconds: list[float] = field(default_factory=list)
    deliveries: int = 0
    cpu: list[dict[str, float]] = field(default_factory=list)
    note: str = ""

    @property
    def rates(self) -> list[float]:
        return [self.events / s for s in self.seconds]

    def row(self) -> str:
        rates = self.rates
        machine = statistics.median(c["machine"] for c in self.cpu) if self.cpu else float("nan")
        own = statistics.median(c["self"] for c in self.cpu) if self.cpu else float("nan")
        return (f"| {self.name} | {self.events:,} | {len(rates)} | **{statistics.median(rates):,.0f}** | "
                f"{min(rates):,.0f}–{max(rates):,.0f} | {statistics.median(self.seconds) * 1e6 / self.events:,.1f} | "
                f"{self.deliveries:,} | {own:.2f} / {machine:.2f} | {self.note} |")


ROUTING_HEADER = ("| step | events | runs | events/s (median) | range | µs per event | deliveries per run "
                  "| CPU cores: bench / machine | note |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")


def labels_of(cfg: config.Config) -> Callable[[str, str, str], dict[str, str]]:
    """Notifier._labels, without a Notifier."""
    return lambda kind, ns, name: Notifier._labels(_CfgHolder(cfg), kind, ns, name)  # type: ignore[arg-type]


@dataclass
class _CfgHolder:
    cfg: config.Config


IDLE = {"limit": 0.3, "timeout": 30.0}


def idle() -> None:
    if IDLE["timeout"] > 0:
        wait_idle(IDLE["limit"], IDLE["timeout"])


def routing_from(ref: str) -> types.ModuleType:
    """notifier/routing.py as it is at a Git revision, to compare with the working tree's."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:notifier/routing.py"], capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType(f"routing_at_{ref}")
    exec(compile(source, f"{ref}:notifier/routing.py", "exec"), module.__dict__)  # noqa: S102
    return module


def bench_routing(cfg: config.Config, events: list[Event], runs: int, module: Any = None,
                  name: str = "(a) `route` + `with_alert_metadata`") -> tuple[Measure, dict[str, float]]:
    labels = labels_of(cfg)
    route_, with_metadata = (module.route, module.with_alert_metadata) if module else (route, with_alert_metadata)
    m = Measure(name, len(events))
    stats: dict[str, float] = {}
    for r in range(runs + 1):  # the first pass warms caches (compiled patterns) and is not counted
        usage: dict[str, float] = {}
        routed = 0
        if r:
            idle()
        with cpu_meter(usage):
            t0 = time.perf_counter()
            for e in events:
                for a in route_(list(cfg.alerts.values()), e, labels):
                    with_metadata(a, e)
                    routed += 1
            elapsed = time.perf_counter() - t0
        if r:
            m.seconds.append(elapsed)
            m.cpu.append(usage)
        stats["routed"] = routed
    m.deliveries = int(stats["routed"])
    m.note = f"{stats['routed'] / len(events):.1f} Alerts matched per event"
    return m, stats


def expected_deliveries(cfg: config.Config, events: list[Event]) -> int:
    labels = labels_of(cfg)
    n = 0
    for e in events:
        for a in route(list(cfg.alerts.values()), e, labels):
            p = cfg.providers.get((a.meta.namespace, a.provider_ref))
            if p is not None and not p.suspend and wants(kind_of(p.type), e):
                n += 1
    return n


def bench_fanout(cfg: config.Config, bodies: list[bytes], runs: int, bus_kind: str, broker: Broker | None,
                 tmp: Path, expect: int) -> Measure:
    names = {"null": "(b) `handle_event`, publish is a no-op", "embedded": "(b) `handle_event`, embedded bus",
             "rabbitmq": "(b) `handle_event`, RabbitMQ"}
    m = Measure(names[bus_kind], len(bodies))
    for r in range(runs):
        state = tmp / f"fanout-{bus_kind}-{r}"
        vhost = ""
        if bus_kind == "rabbitmq":
            assert broker is not None
            vhost = broker.new_vhost()
            bus: Any = open_bus(f"{broker.url}/{vhost}", state)
        elif bus_kind == "embedded":
            bus = open_bus(None, state)
        else:
            bus = NullBus()
        memory = NotifierMemory.open(f"{broker.url}/{vhost}" if broker and vhost else None, state)
        notifier = Notifier(cfg, bus, memory=memory)
        try:
            # Warm-up on a copy of the first event with another message: connections, queue
            # declarations, SQLite schema; not counted, not deduplicated against the run.
            warm = json.loads(bodies[0])
            warm["message"] += "\nwarm-up"
            notifier.handle_event(Delivery(EVENTS_QUEUE, json.dumps(warm).encode()))
            before = bus.published if bus_kind == "null" else bus.depth(NOTIFY_QUEUE)
            idle()
            usage: dict[str, float] = {}
            with cpu_meter(usage):
                t0 = time.perf_counter()
                for body in bodies:
                    notifier.handle_event(Delivery(EVENTS_QUEUE, body))
                elapsed = time.perf_counter() - t0
            after = bus.published if bus_kind == "null" else bus.depth(NOTIFY_QUEUE)
            m.seconds.append(elapsed)
            m.cpu.append(usage)
            m.deliveries = after - before
            if m.deliveries != expect:
                m.note = f"**{m.deliveries} deliveries, {expect} expected**"
            print(f"  fan-out {bus_kind} run {r + 1}: {len(bodies) / elapsed:,.0f} events/s, "
                  f"{m.deliveries:,} deliveries ({m.deliveries / elapsed:,.0f}/s)", file=sys.stderr)
        finally:
            memory.close()
            bus.close()
            if broker and vhost:
                broker.drop_vhost(vhost)
    if not m.note:
        per_event = m.deliveries / len(bodies)
        m.note = f"{per_event:.1f} deliveries per event; {statistics.median(m.rates) * per_event:,.0f} publishes/s"
    return m


# ---- RabbitMQ ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """The RabbitMQ the bench uses: by default a node of its own (own name, ports and data
    directory, on the same disk as the machine's node), so that test suites stopping or freezing
    the shared node meanwhile cannot break or skew the run; or a running one given by URL."""

    def __init__(self, spec: str, work: Path) -> None:
        self.node = ""
        self.dir = work / "rabbitmq"
        if spec != "private":
            self.url = spec.rstrip("/")
            if subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, check=False).returncode != 0:
                subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, check=False)
                subprocess.run(["rabbitmqctl", "-q", "await_startup", "--timeout", "90"], capture_output=True,
                               check=False)
            return
        self.dir.mkdir()
        port, dist = free_port(), free_port()
        self.node = f"herald-nbench-{uuid.uuid4().hex[:6]}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\n")
        shutil.chown(work, "rabbitmq", "rabbitmq")  # the Debian wrapper runs the node as `rabbitmq`
        for path in [self.dir, *self.dir.iterdir()]:
            shutil.chown(path, "rabbitmq", "rabbitmq")
        env = dict(os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(port),
                   RABBITMQ_DIST_PORT=str(dist), RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
                   RABBITMQ_LOG_BASE=str(self.dir / "log"), RABBITMQ_PID_FILE=str(self.dir / "pid"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
                   RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"))
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True)
        subprocess.run([*self.ctl(), "wait", str(self.dir / "pid"), "--timeout", "90"], check=True,
                       capture_output=True)
        self.url = f"amqp://guest:guest@127.0.0.1:{port}"

    def ctl(self) -> list[str]:
        return ["rabbitmqctl", "-n", self.node] if self.node else ["rabbitmqctl"]

    def pid(self) -> int | None:
        """The broker's OS pid, to count its CPU."""
        if self.node:
            return int((self.dir / "pid").read_text().split()[0])
        out = subprocess.run(["rabbitmqctl", "eval", "os:getpid()."], capture_output=True, text=True,
                             check=False).stdout
        digits = re.sub(r"\D", "", out)
        return int(digits) if digits else None

    def new_vhost(self) -> str:
        vhost = f"herald-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run([*self.ctl(), "-q", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run([*self.ctl(), "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                       capture_output=True)
        return vhost

    def drop_vhost(self, vhost: str) -> None:
        subprocess.run([*self.ctl(), "-q", "delete_vhost", vhost], check=False, capture_output=True)

    def stop(self) -> None:
        if self.node:
            subprocess.run([*self.ctl(), "stop"], capture_output=True, check=False)


# ---- part 2: latency to Slack ------------------------------------------------------------

def serve_slack() -> None:
    """The test Slack Web API in this process, stamping arrivals; `POST /bench/arrivals` reads them."""
    from tests.slackapi import SlackAPIServer

    class Stamped(SlackAPIServer):
        def __init__(self) -> None:
            super().__init__()
            self.arrivals: list[tuple[str, int, float, bool]] = []  # method, seq, arrival, in a thread
            self.lock = threading.Lock()

        def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
            at = now()
            if path == "/bench/arrivals":
                with self.lock:
                    data, self.arrivals = self.arrivals, []
                return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()
            status, headers_out, payload = super()._handle(path, headers, raw)
            mark = MARK.search(raw)
            if mark and status == 200 and b'"ok": true' in payload:
                with self.lock:
                    self.arrivals.append((path.rsplit("/", 1)[-1], int(mark.group(1)), at, b"thread_ts" in raw))
            return status, headers_out, payload

    server = Stamped()
    server.tokens, server.channels = {SLACK_TOKEN}, {"deploys"}
    server.start()
    print(server.post_message_url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


class SlackProcess:
    def __init__(self, log_path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-slack"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(log_path, "ab"), text=True)  # noqa: SIM115
        self.post_message_url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.post_message_url:
            raise SystemExit(f"the Slack test server did not start; see {log_path}")
        self.base = self.post_message_url.removesuffix("/api/chat.postMessage")
        import requests

        self.session = requests.Session()

    def arrivals(self) -> list[tuple[str, int, float, bool]]:
        return [tuple(x) for x in self.session.post(self.base + "/bench/arrivals", timeout=10).json()]  # type: ignore[misc]

    def stop(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=10)


def write_latency_config(path: Path, slack_url: str) -> Path:
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "slack-bot", "namespace": "flux-system"},
         "stringData": {"token": SLACK_TOKEN}},
        _doc("Provider", NOTIF, "slack", "flux-system", {"type": "slack", "channel": "deploys", "address": slack_url,
                                                         "secretRef": {"name": "slack-bot"}}),
        _doc("Alert", NOTIF, "deploys", "flux-system", {
            "providerRef": {"name": "slack"}, "eventSeverity": "info",
            "eventSources": [{"kind": "Kustomization", "name": "*", "namespace": "*"}],
            "exclusionList": ["^Dependencies do not meet ready condition.*"]}),
    ]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def latency_event(seq: int, obj: str, revision: str, reason: str = "ReconciliationSucceeded") -> Event:
    if reason == "Progressing":
        lines = [f"Reconciliation in progress for revision {revision}", f"ConfigMap/bench/web-env-b{seq:09d} pending"]
    else:
        lines = [f"ServiceAccount/bench/{obj} unchanged", f"ConfigMap/bench/web-env-b{seq:09d} created",
                 f"Service/bench/{obj} unchanged", f"Deployment/bench/{obj} configured",
                 "Health check passed in 2.01s", "Reconciliation finished in 2.345s, next run in 10m0s"]
    meta = {"revision": revision, "commit_status": "update"}
    return Event.for_object("Kustomization", obj, "bench", severity=SEVERITY_INFO, reason=reason,
                            message="\n".join(lines), metadata=meta)


@dataclass
class Latency:
    bus: str
    case: str
    sent: dict[int, float] = field(default_factory=dict)  # seq → publish call started
    measured: set[int] = field(default_factory=set)  # which seqs count in this case
    arrived: dict[int, float] = field(default_factory=dict)
    wall: float = 0.0
    publish: list[float] = field(default_factory=list)  # how long each publish call took
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per party over the case

    def row(self) -> str:
        ms = [(self.arrived[s] - self.sent[s]) * 1000 for s in sorted(self.measured) if s in self.arrived]
        lost = len(self.measured) - len(ms)
        pub = statistics.median(self.publish) * 1000 if self.publish else float("nan")
        rate = len(self.sent) / self.wall if self.wall else float("nan")
        per = lambda k: f"{self.cpu[k] * 1000 / len(self.sent):.2f}" if k in self.cpu else "-"
        return (f"| {self.bus} | {self.case} | {len(ms)}{f' (**{lost} missing**)' if lost else ''} | "
                f"{statistics.median(ms):.1f} | {pct(ms, 99):.1f} | {max(ms):.1f} | {pub:.2f} | {rate:,.0f} | "
                f"{per('bench')} / {per('notifier')} / {per('slack')} / {per('rabbitmq')} / {per('machine')} |")


LATENCY_HEADER = ("| bus | case | n | p50 ms | p99 ms | max ms | publish call p50 ms | events/s through "
                  "| CPU ms per event: bench / notifier process / Slack server / RabbitMQ / machine |\n"
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


class LatencyRun:
    """One bus: a notifier, a publisher, the Slack server; runs the cases one after the other."""

    def __init__(self, bus_kind: str, slack: SlackProcess, tmp: Path, broker: Broker | None, log_level: str) -> None:
        self.bus_kind, self.slack, self.seq = bus_kind, slack, 0
        cfg_path = write_latency_config(tmp / f"latency-{bus_kind}.yaml", slack.post_message_url)
        state = tmp / f"latency-{bus_kind}-state"
        self.vhost = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.run_id = uuid.uuid4().hex[:6]
        self.broker = broker
        self.broker_pid = broker.pid() if broker and bus_kind == "rabbitmq" else None
        if bus_kind == "rabbitmq":
            assert broker is not None
            self.vhost = broker.new_vhost()
            url = f"{broker.url}/{self.vhost}"
            env = dict(os.environ, HERALD_BROKER_URL=url, HERALD_STATE_DIR=str(state), HERALD_LOG_LEVEL=log_level)
            self.proc = subprocess.Popen([sys.executable, "-m", "herald.cli", "notifier", "-c", str(cfg_path)],
                                         env=env, cwd=ROOT, stderr=open(tmp / "notifier-rabbitmq.log", "ab"))  # noqa: SIM115
            self.bus: Any = open_bus(url, tmp / "publisher-state")
        else:
            # As `herald serve` runs it: the notifier in the process whose reconciler publishes.
            self.bus = open_bus(None, state)
            self.notifier = Notifier(config.load([cfg_path]), self.bus)
            self.thread = threading.Thread(target=self.notifier.run, args=(self.stop,), name="notifier", daemon=True)
            self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=30)
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.bus.close()
        if self.broker and self.vhost:
            self.broker.drop_vhost(self.vhost)

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far: this process (publisher, and the notifier on the embedded bus), the
        notifier process, the Slack server, the broker, and the whole machine."""
        out = {"bench": proc_cpu(os.getpid()), "slack": proc_cpu(self.slack.proc.pid),
               "machine": _cpu_times()[0] / os.sysconf("SC_CLK_TCK")}
        if self.proc:
            out["notifier"] = proc_cpu(self.proc.pid)
        if self.broker_pid:
            out["rabbitmq"] = proc_cpu(self.broker_pid)
        return out

    def _start(self, lat: Latency) -> float:
        lat.cpu = self._cpu()
        return now()

    def _end(self, lat: Latency, t0: float) -> None:
        after = self._cpu()
        lat.cpu = {k: after[k] - v for k, v in lat.cpu.items()}
        lat.wall = max(lat.arrived.values(), default=t0) - t0

    def _publish(self, lat: Latency, event: Event, seq: int, measured: bool = True) -> None:
        body = event.to_json()
        t0 = now()
        self.bus.publish(EVENTS_QUEUE, body)
        t1 = now()
        lat.sent[seq] = t0
        lat.publish.append(t1 - t0)
        if measured:
            lat.measured.add(seq)

    def _collect(self, lat: Latency, method: str, want_thread: bool | None, quiet: float = 10.0) -> None:
        """Gather arrivals until every measured event arrived, or none came for `quiet` seconds."""
        last = time.monotonic()
        while True:
            for m, seq, at, threaded in self.slack.arrivals():
                last = time.monotonic()
                if seq in lat.sent and m == method and (want_thread is None or threaded == want_thread):
                    lat.arrived.setdefault(seq, at)
            if lat.measured <= lat.arrived.keys() or time.monotonic() - last > quiet:
                return
            time.sleep(0.05)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def revision(self, seq: int) -> str:
        return "main@sha1:" + uuid.uuid5(uuid.NAMESPACE_OID, f"{self.run_id}-{seq}").hex + "deadbeef"

    def warm_up(self, n: int = 5) -> None:
        lat = Latency(self.bus_kind, "warm-up")
        for _ in range(n):
            s = self.next_seq()
            self._publish(lat, latency_event(s, f"warm-{s}", self.revision(s)), s)
        self._collect(lat, "chat.postMessage", None, quiet=30)
        if len(lat.arrived) < n:
            raise SystemExit(f"{self.bus_kind}: only {len(lat.arrived)} of {n} warm-up messages reached Slack")
        time.sleep(0.2)
        self.slack.arrivals()  # drop stragglers

    def new_messages(self, n: int, pace: float) -> Latency:
        lat = Latency(self.bus_kind, f"new message each, paced {pace * 1000:.0f} ms" if pace else
                      "new message each, burst")
        t0 = self._start(lat)
        for i in range(n):
            s = self.next_seq()
            self._publish(lat, latency_event(s, f"web-{s}", self.revision(s)), s)
            if pace:
                _sleep_until(t0 + (i + 1) * pace)
        self._collect(lat, "chat.postMessage", False)
        self._end(lat, t0)
        return lat

    def threaded(self, pairs: int, pace: float) -> Latency:
        lat = Latency(self.bus_kind, f"threaded: update + reply, paced {pace * 1000:.0f} ms")
        t0 = self._start(lat)
        for i in range(pairs):
            s1 = self.next_seq()
            obj, rev = f"api-{s1}", self.revision(s1)
            self._publish(lat, latency_event(s1, obj, rev, "Progressing"), s1, measured=False)
            _sleep_until(t0 + (2 * i + 1) * pace)
            s2 = self.next_seq()
            self._publish(lat, latency_event(s2, obj, rev), s2)
            _sleep_until(t0 + (2 * i + 2) * pace)
        self._collect(lat, "chat.postMessage", True)
        self._end(lat, t0)
        return lat


def _sleep_until(t: float) -> None:
    delay = t - now()
    if delay > 0:
        time.sleep(delay)


# ---- main ------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--part", choices=("routing", "latency", "all"), default="all")
    ap.add_argument("--bus", nargs="+", choices=("embedded", "rabbitmq"), default=["embedded", "rabbitmq"])
    ap.add_argument("--events", type=int, default=10_000, help="events routed (part 1)")
    ap.add_argument("--runs", type=int, default=5, help="measured runs of the pure routing")
    ap.add_argument("--fanout-events", type=int, default=10_000,
                    help="events handed to handle_event per run (the first N of the routing set)")
    ap.add_argument("--fanout-runs", type=int, default=3)
    ap.add_argument("--routing-from", nargs="*", default=[], metavar="GITREF",
                    help="also measure the pure routing with notifier/routing.py as at these revisions (e.g. HEAD)")
    ap.add_argument("-n", "--latency-events", type=int, default=200)
    ap.add_argument("--pace-ms", type=float, default=50.0)
    ap.add_argument("--broker", default="private",
                    help="'private' (default: a RabbitMQ node of the bench's own) or the amqp:// URL of a running "
                         f"one, e.g. {DEFAULT_BROKER}")
    ap.add_argument("--log-level", default="INFO", help="the notifier's log level (its lines go to a file)")
    ap.add_argument("--idle-wait", type=float, default=30.0,
                    help="before each measurement, wait up to this many seconds for the machine to be idle "
                         "(under 0.3 busy cores)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (config, logs)")
    ap.add_argument("--serve-slack", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_slack:
        serve_slack()
        return
    if args.quick:
        args.events, args.runs, args.fanout_events, args.fanout_runs = 1_000, 2, 200, 1
        args.latency_events, args.pace_ms = 20, 20.0

    IDLE["timeout"] = args.idle_wait
    tmp = Path(tempfile.mkdtemp(prefix="herald-notifier-bench-"))
    # The notifier logs one line per event and per delivery at INFO, as in production; to a file.
    logs.setup(args.log_level)
    logging.getLogger().handlers[0].setStream(open(tmp / "notifier.log", "a"))  # type: ignore[attr-defined]  # noqa: SIM115
    broker = Broker(args.broker, tmp) if "rabbitmq" in args.bus else None
    try:
        run_parts(args, tmp, broker)
    finally:
        if broker:
            broker.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def run_parts(args: argparse.Namespace, tmp: Path, broker: Broker | None) -> None:
    print(f"machine: {machine_info()}", file=sys.stderr)
    print(f"temporary files: {tmp}", file=sys.stderr)
    tables: list[str] = []

    if args.part in ("routing", "all"):
        kss = fleet()
        cfg = config.load([write_fleet_config(tmp / "fleet.yaml", kss)])
        events = fleet_events(kss, args.events)
        bodies = [e.to_json() for e in events]
        sizes = sorted(len(b) for b in bodies)
        print(f"config: {len(cfg.alerts)} Alerts, {len(cfg.providers)} Providers, {len(cfg.kustomizations)} "
              f"Kustomizations; events: {len(events):,}, JSON {sizes[len(sizes) // 2]:,} B median, "
              f"{sizes[-1]:,} B max", file=sys.stderr)
        measures = []
        for ref in args.routing_from:
            m, _ = bench_routing(cfg, events, args.runs, routing_from(ref),
                                 f"(a) `route` + `with_alert_metadata`, routing.py at {ref}")
            measures.append(m)
            print(f"  routing at {ref}: {statistics.median(m.rates):,.0f} events/s", file=sys.stderr)
        m, _ = bench_routing(cfg, events, args.runs)
        measures.append(m)
        print(f"  routing: {statistics.median(m.rates):,.0f} events/s", file=sys.stderr)
        fan = bodies[: args.fanout_events]
        expect = expected_deliveries(cfg, events[: args.fanout_events])
        for kind in ["null", *args.bus]:
            measures.append(bench_fanout(cfg, fan, args.fanout_runs, kind, broker, tmp, expect))
        tables.append(ROUTING_HEADER + "\n" + "\n".join(m.row() for m in measures))

    if args.part in ("latency", "all"):
        slack = SlackProcess(tmp / "slack.log")
        rows = []
        try:
            pace = args.pace_ms / 1000
            for kind in args.bus:
                run = LatencyRun(kind, slack, tmp, broker, args.log_level)
                try:
                    run.warm_up()
                    cases = ((run.new_messages, args.latency_events, pace),
                             (run.new_messages, args.latency_events, 0.0),
                             (run.threaded, args.latency_events // 2, pace))
                    for case, count, spacing in cases:
                        idle()
                        lat = case(count, spacing)
                        rows.append(lat.row())
                        print("  " + rows[-1], file=sys.stderr)
                finally:
                    run.close()
        finally:
            slack.stop()
        tables.append(LATENCY_HEADER + "\n" + "\n".join(rows))

    print(f"\nload average at the end: {loadavg()}\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
