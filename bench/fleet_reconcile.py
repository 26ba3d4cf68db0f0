"""Reconciling a Flux fleet: 100 Kustomizations and 2,000 objects, cold and no-op (issue 16).

Herald is pointed at a fleet's bootstrap `gotk-sync.yaml`, as in `tests/test_fleet.py`: the
Kustomizations that each render holds become configuration (`herald.fleet.Fleet`) and new
ones get reconcile requests on the bus. This script builds, in a temporary folder, a local bare
Git repository shaped like a real fleet:

  clusters/prod/flux-system/gotk-sync.yaml     what `flux bootstrap` writes (GitRepository +
                                               Kustomization flux-system, path ./clusters/prod)
  clusters/prod/flux-system/kustomization.yaml
  clusters/prod/kustomization.yaml             namespace flux-system; patches adding interval
                                               (5m) and prune (true) to every Kustomization
  clusters/prod/apps/kustomization.yaml        lists the apps' Kustomization files
  clusters/prod/apps/app-NNN.yaml              one Kustomization each, path ./apps/app-NNN
  apps/app-NNN/...                             M objects per app: a Namespace, a ServiceAccount,
                                               then ConfigMap + Service + Deployment per component

Even-numbered apps are overlays (`apps/app-NNN/kustomization.yaml` over `apps/app-NNN/base/`, with
a label and a replicas patch: built by kustomize, from a checkout); odd-numbered ones are plain
YAML files (read straight from Git's objects).

The test Kubernetes API server (`tests/kubeapi.py`) runs in this process. Herald runs in a child
process, as `herald worker` runs it: `reconciler.worker.Reconciler` with `fleet=`, the embedded
bus (`herald.bus.open_bus`, SQLite, in the child's state directory), a kubeconfig pointing at
the API server, logs at INFO into `worker.log`. So the child's CPU and peak RSS are Herald's
alone, and the API server's CPU is this process's. Each round (a fresh API server store and a
fresh child) runs three passes:

  cold     the bootstrap request (GitRepository flux-system, reason webhook), and every request
           it leads to, until the reconcile queue is empty: the cluster starts empty, the Git
           cache too (the first fetch is a clone);
  no-op    nothing changed: a request for the GitRepository with reason "interval" (what the
           interval timer sends every `spec.interval`), which reconciles every Kustomization of
           the repository at the same commit;
  webhook  the same commit's webhook again under a new delivery id (origin.revision names the
           commit): the Lease's record of the last run says it is applied already.

Two ways of driving the requests (--mode):

  worker       (default) `Reconciler.run`, as `herald worker` runs it: WorkerSettings from the
               environment (2 reconcile threads, a coalescing window of 1 s, 4 API requests in
               flight per apply), the interval timer off (the passes are requested explicitly);
               follow-up requests that arrive while a run holds the Lease are coalesced;
  sequential   as `tests/test_fleet.py`'s run_until_quiet: one request at a time through
               `Reconciler.handle`, coalescing window 0, one thread: one run per Kustomization.

Per phase: Herald has no timing hooks, so the child wraps (monkeypatches, in its own process
only) the functions of each phase and records their wall time, exclusive of the timed calls
nested in them: `Reconciler.handle` (Lease and coalescing), `_run_and_publish` (events),
`reconcile`, `GitCache.fetch`, `Reconciler._reconcile_kustomization` (also timed per
Kustomization for p50/p95), `Reconciler._render` (parse, post-build) with `GitCache.list_tree` /
`read_blobs` (git read), `GitCache.export` (checkout) and `reconciler.render._kustomize`
(kustomize build), `Reconciler._take_configuration` with `Fleet.take`, `ApplyEngine.apply` with
its steps, `reconciler.worker.prune`, `reconciler.worker.wait_for` (health), and
`InventoryStore.load`/`save`. Herald's code is not changed. What a pass spends outside the
handlers that ran (the bus claiming and acknowledging messages, the consumer's wake-ups) is
"not in a handler"; requests that were coalesced or already satisfied are handled on the second
thread while a run is going, and are listed apart (their time overlaps the run's).

    python bench/fleet_reconcile.py                          # 100 apps x 20 objects, 1 round
    python bench/fleet_reconcile.py --apps 10 --objects-per-app 20   # a smoke run
    python bench/fleet_reconcile.py --rounds 3 --mode sequential
    python bench/fleet_reconcile.py --code worktree          # the working tree, not HEAD
    python bench/fleet_reconcile.py --flux-crds --wait       # Flux's CRDs served; spec.wait on

By default the child runs Herald as committed at HEAD (`git archive HEAD` into the temporary
folder), so uncommitted work of others in the shared working tree is not what is measured;
`--code REV` picks another commit, `--code worktree` the working tree.

The tables go to stdout (Markdown); progress and the load average go to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

ROLES = ("api", "web", "worker", "cache", "auth", "search", "billing", "mailer")
OWNER_NAME = "kustomize.toolkit.fluxcd.io/name"
PASSES = ("cold", "no-op", "webhook")


# ---- the fleet's repository ------------------------------------------------------------------

from tests.test_fleet import gotk_sync  # noqa: E402 (what flux bootstrap writes, as the tests use it)


def cluster_kustomization(wait: bool) -> str:
    """clusters/prod/kustomization.yaml: the Flux objects' namespace, and the fields every
    Kustomization gets from the folder (as in tests/test_fleet.py)."""
    extra = "      - op: add\n        path: /spec/wait\n        value: true\n" if wait else ""
    return f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: flux-system
resources:
  - flux-system
  - apps
patches:
  - target: {{kind: Kustomization}}
    patch: |
      - op: add
        path: /spec/interval
        value: 5m
      - op: add
        path: /spec/prune
        value: true
{extra}"""


def app_name(i: int) -> str:
    return f"app-{i:03d}"


def app_kustomization(i: int) -> str:
    return f"""\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {app_name(i)}
spec:
  path: ./apps/{app_name(i)}
  sourceRef:
    kind: GitRepository
    name: flux-system
"""


def component(ns: str, k: int) -> list[dict[str, Any]]:
    """One component of an app: ConfigMap, Service, Deployment (the shapes of
    bench/apply_vs_kubectl.py's apps)."""
    name = ROLES[k % len(ROLES)] + (f"-{k // len(ROLES)}" if k >= len(ROLES) else "")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": ns}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": f"{name}-config", "namespace": ns, "labels": labels},
          "data": {"LOG_LEVEL": "info", "FEATURE_FLAGS": "a,b,c", "UPSTREAM": f"http://{name}.{ns}.svc:8080",
                   "app.properties": "threads=8\ntimeout=30s\nretries=3\n"}}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"selector": {"app.kubernetes.io/name": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": name, "namespace": ns, "labels": labels},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                       "template": {"metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
                                    "spec": {"serviceAccountName": ns, "containers": [{
                                        "name": name, "image": f"registry.example/{ns}/{name}:1.{k % 7}.0",
                                        "ports": [{"name": "http", "containerPort": 8080}],
                                        "envFrom": [{"configMapRef": {"name": f"{name}-config"}}],
                                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {
                                            "fieldPath": "metadata.name"}}}],
                                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                                      "limits": {"memory": "128Mi"}},
                                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                                           "periodSeconds": 5}}]}}}}
    return [cm, svc, deploy]


def app_files(i: int, per_app: int) -> dict[str, list[dict[str, Any]]]:
    """The app's manifests by file name: namespace.yaml (Namespace, ServiceAccount), then one
    file per component, until `per_app` objects."""
    ns = app_name(i)
    first = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"team": f"team-{i % 8}"}}},
             {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ns, "namespace": ns}}][:per_app]
    files = {"namespace.yaml": first}
    left, k = per_app - len(first), 0
    while left > 0:
        docs = component(ns, k)[:left]
        files[f"{docs[0]['metadata']['name'].removesuffix('-config')}.yaml"] = docs
        left -= len(docs)
        k += 1
    return files


def fleet_files(url: str, apps: int, per_app: int, wait: bool) -> dict[str, str]:
    import yaml

    def dump(docs: list[dict[str, Any]]) -> str:
        return yaml.safe_dump_all(docs, sort_keys=False)

    files = {
        "clusters/prod/flux-system/gotk-sync.yaml": gotk_sync(url),
        "clusters/prod/flux-system/kustomization.yaml": "resources: [gotk-sync.yaml]\n",
        "clusters/prod/kustomization.yaml": cluster_kustomization(wait),
        "clusters/prod/apps/kustomization.yaml": "resources:\n" + "".join(
            f"  - {app_name(i)}.yaml\n" for i in range(apps)),
        "README.md": "A fleet for bench/fleet_reconcile.py.\n",
    }
    for i in range(apps):
        files[f"clusters/prod/apps/{app_name(i)}.yaml"] = app_kustomization(i)
        manifests = app_files(i, per_app)
        if i % 2 == 0:  # an overlay of the app's base, built by kustomize
            base = f"apps/{app_name(i)}/base"
            for name, docs in manifests.items():
                files[f"{base}/{name}"] = dump(docs)
            files[f"{base}/kustomization.yaml"] = "resources:\n" + "".join(f"  - {n}\n" for n in manifests)
            files[f"apps/{app_name(i)}/kustomization.yaml"] = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - base
labels:
  - pairs: {environment: prod}
patches:
  - target: {kind: Deployment}
    patch: |
      - op: replace
        path: /spec/replicas
        value: 3
"""
        else:  # plain YAML
            for name, docs in manifests.items():
                files[f"apps/{app_name(i)}/{name}"] = dump(docs)
    return files


FLUX_CRDS = [
    ("source.toolkit.fluxcd.io", "GitRepository", "gitrepositories", "gitrepository"),
    ("kustomize.toolkit.fluxcd.io", "Kustomization", "kustomizations", "kustomization"),
]


def flux_crd(group: str, kind: str, plural: str, singular: str) -> dict[str, Any]:
    """A minimal CRD for one of Flux's kinds (what gotk-components.yaml installs, schema left open)."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": singular, "kind": kind},
                     "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


# ---- the child: Herald, timed ----------------------------------------------------------------

class Timers:
    """Wall time per phase, exclusive of the timed calls nested in it (per thread)."""

    HANDLE, RAN = "Lease: requests, coalescing (handle)", "events publish"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.exclusive: dict[str, float] = defaultdict(float)
            self.calls: Counter[str] = Counter()
            self.detached: dict[str, float] = defaultdict(float)  # timed calls on helper threads (pools)
            self.ran: list[tuple[float, float]] = []  # (start, end) of handles that ran a reconcile
            self.coalesced: list[tuple[float, float]] = []  # ... of those that did not (coalesced, satisfied)
            self.kustomizations: list[dict[str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str, after: Any = None, nested_only: bool = False) -> None:
        """Time `owner.attr` under `label`; `after(args, result, seconds)` is called on return.
        `nested_only`: calls outside a handler are not timed at all."""
        fn = getattr(owner, attr)
        timers = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(timers.local, "stack", None)
            if stack is None:
                stack = timers.local.stack = []
            if not stack and nested_only:
                return fn(*args, **kwargs)
            if not stack and label != timers.HANDLE:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    with timers.lock:
                        timers.detached[label] += time.perf_counter() - t0
            if label == timers.RAN:
                stack[0][2] = True  # this handle ran a reconcile
            frame = [label, 0.0, False]
            stack.append(frame)
            t0 = time.perf_counter()
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                t1 = time.perf_counter()
                took = t1 - t0
                stack.pop()
                if stack:
                    stack[-1][1] += took
                with timers.lock:
                    if label == timers.HANDLE and not frame[2]:
                        timers.coalesced.append((t0, t1))
                    else:
                        if label == timers.HANDLE:
                            timers.ran.append((t0, t1))
                        timers.exclusive[label] += took - frame[1]
                        timers.calls[label] += 1
                if after is not None and result is not None:
                    after(args, result, took)

        setattr(owner, attr, timed)

    def install(self) -> None:
        from reconciler import apply, git, inventory, render, worker
        from herald.fleet import Fleet

        R = worker.Reconciler
        self.wrap(R, "handle", self.HANDLE)
        self.wrap(R, "_run_and_publish", self.RAN)
        self.wrap(R, "reconcile", "reconcile: other (targets, final events)")
        self.wrap(git.GitCache, "fetch", "fetch (git)")
        self.wrap(R, "_reconcile_kustomization", "per Kustomization: other", after=self._kustomization)
        self.wrap(R, "_dependency_problem", "dependsOn checks")
        self.wrap(R, "_progress", "Progressing event")
        self.wrap(R, "_render", "render: parse, post-build")
        self.wrap(git.GitCache, "list_tree", "render: git read (ls-tree, cat-file)")
        self.wrap(git.GitCache, "read_blobs", "render: git read (ls-tree, cat-file)")
        self.wrap(git.GitCache, "export", "render: git export (checkout)")
        self.wrap(render, "_kustomize", "render: kustomize build")
        self.wrap(R, "_take_configuration", "configuration: follow-up requests, CRD checks")
        self.wrap(Fleet, "take", "configuration: Fleet.take")
        E = apply.ApplyEngine
        self.wrap(E, "apply", "apply: scopes, plan (reads, dry-runs)")
        self.wrap(E, "_absent_namespaces", "apply: namespace GETs")
        self.wrap(E, "_prefetch", "apply: LISTs")
        self.wrap(E, "_plan_late", "apply: plan after the Namespaces (dry-runs)")
        self.wrap(E, "_apply_stage", "apply: writes")
        self.wrap(E, "_settle", "apply: Namespaces settle")
        self.wrap(worker, "prune", "prune")
        self.wrap(worker, "wait_for", "health (wait)")
        self.wrap(inventory.InventoryStore, "load", "inventory: read")
        self.wrap(inventory.InventoryStore, "save", "inventory: write (status, inventory)")

    def _kustomization(self, args: tuple[Any, ...], result: Any, took: float) -> None:
        ks = args[1]
        actions: Counter[str] = Counter()
        for line in result.lines:
            m = re.search(r" (created|configured|unchanged|recreated|deleted)( \(drift corrected\))?$", line)
            if m:
                actions[m.group(1)] += 1
        with self.lock:
            self.kustomizations.append({"name": ks.meta.name, "seconds": took, "reason": result.reason,
                                        "actions": dict(actions),
                                        "error": "" if result.ok else "\n".join(result.lines)[:1500]})


def child_main(spec: dict[str, Any]) -> None:
    """Runs in its own process: one pass per line on stdin, a JSON line per pass on stdout."""
    if spec["code"]:
        sys.path.insert(0, spec["code"])
    timers = Timers()
    timers.install()
    from herald import logs
    from herald.bus import Delivery, open_bus
    from herald.messages import RECONCILE_QUEUE, ReconcileRequest
    from herald.fleet import Fleet
    from reconciler.worker import Reconciler, WorkerSettings

    logs.setup("INFO")
    state = Path(spec["state"])
    fleet = Fleet([spec["bootstrap"]], None, state)
    bus = open_bus(None, state)
    settings = WorkerSettings.from_env()
    settings.poll = False  # the passes are requested here; the interval timer would add its own
    if spec["mode"] == "sequential":
        settings.threads, settings.window = 1, 0.0
    worker = Reconciler(fleet.config, bus, state, fleet=fleet, settings=settings)
    fleet.subscribe(worker.update)
    worker._cluster_or_none()  # connect and read discovery once, as a running worker has
    stop = threading.Event()
    # The coalescing window and the wait for another holder's Lease are waits on this Event
    # (reconciler.coalesce): timed apart from the Lease's requests.
    timers.wrap(stop, "wait", "Lease: coalescing window wait", nested_only=True)
    loop = None
    if spec["mode"] == "worker":
        loop = threading.Thread(target=worker.run, args=(stop,), name="reconciler", daemon=True)
        loop.start()
    print(json.dumps({"ready": True, "settings": {k: getattr(settings, k) for k in (
        "threads", "window", "lease_duration", "apply_concurrency", "dry_run_unchanged")}}), flush=True)

    def request(name: str) -> ReconcileRequest:
        if name == "cold":
            return ReconcileRequest(kind="GitRepository", name="flux-system", namespace="flux-system",
                                    reason="webhook", origin={"delivery": str(uuid.uuid4())})
        if name == "no-op":
            return ReconcileRequest(kind="GitRepository", name="flux-system", namespace="flux-system",
                                    reason="interval", origin={"interval": "1m"})
        return ReconcileRequest(kind="GitRepository", name="flux-system", namespace="flux-system", reason="webhook",
                                origin={"delivery": str(uuid.uuid4()), "revision": f"main@sha1:{spec['sha']}"})

    def sequential(first: ReconcileRequest) -> None:
        """tests/test_fleet.py's run_until_quiet: every request the runs asked for, one at a time."""
        pending = [first]
        while pending:
            req = pending.pop(0)
            worker.handle(Delivery(RECONCILE_QUEUE, req.to_json(), req.id))
            while bus.depth(RECONCILE_QUEUE):
                got: list[ReconcileRequest] = []
                once = threading.Event()

                def take(d: Delivery, into: list[ReconcileRequest] = got, once: threading.Event = once) -> None:
                    into.append(ReconcileRequest.from_json(d.body))
                    once.set()

                bus.consume(RECONCILE_QUEUE, take, once)
                pending += got

    for line in sys.stdin:
        name = line.strip()
        if name not in PASSES:
            break
        timers.reset()
        self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        req = request(name)
        t0 = time.perf_counter()
        if spec["mode"] == "worker":
            bus.publish(RECONCILE_QUEUE, req.to_json(), message_id=req.id)
            deadline = time.monotonic() + spec["timeout"]
            while bus.depth(RECONCILE_QUEUE):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: the reconcile queue was not empty after {spec['timeout']} s")
                time.sleep(0.01)
        else:
            sequential(req)
        t_quiet = time.perf_counter()
        self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        with timers.lock:
            ends = [e for _, e in timers.ran + timers.coalesced]
            out = {
                "pass": name,
                # until the last handler returned (the queue is seen empty up to 10 ms later)
                "wall": (max(ends) if ends else t_quiet) - t0,
                "phases": dict(timers.exclusive),
                "calls": dict(timers.calls),
                "detached": dict(timers.detached),
                "ran": len(timers.ran), "ran_s": sum(e - s for s, e in timers.ran),
                "runs": timers.calls["reconcile: other (targets, final events)"],
                "coalesced": len(timers.coalesced), "coalesced_s": sum(e - s for s, e in timers.coalesced),
                "kustomizations": list(timers.kustomizations),
                "cpu_self": (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime),
                "cpu_children": (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime),
                "maxrss_kib": self1.ru_maxrss,
                "configured_kustomizations": len(fleet.config.kustomizations),
            }
        print(json.dumps(out), flush=True)
    stop.set()
    if loop is not None:
        loop.join(timeout=60)
    bus.close()


# ---- the parent: repository, API server, report ----------------------------------------------

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def code_tree(rev: str, tmp: Path) -> str:
    """The Herald packages the child imports: `rev` exported with `git archive` (read-only for the
    shared repository), or "" for the working tree."""
    if rev == "worktree":
        return ""
    dest = tmp / "code"
    dest.mkdir()
    data = subprocess.run(["git", "archive", "--format=tar", rev, "herald", "reconciler", "notifier", "receiver"],
                          cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=data, check=True)
    return str(dest)


PHASE_GROUPS = [  # (the issue's phase, the timed labels in it)
    ("fetch (git)", ["fetch (git)"]),
    ("render (kustomize build / plain YAML)", ["render: git read (ls-tree, cat-file)", "render: git export (checkout)",
                                              "render: kustomize build", "render: parse, post-build"]),
    ("configuration update (Fleet.take)", ["configuration: Fleet.take", "configuration: follow-up requests, CRD checks"]),
    ("apply (server-side apply incl. dry-runs)", ["apply: namespace GETs", "apply: LISTs",
                                                 "apply: scopes, plan (reads, dry-runs)",
                                                 "apply: plan after the Namespaces (dry-runs)", "apply: writes",
                                                 "apply: Namespaces settle"]),
    ("prune, inventory", ["prune", "inventory: read", "inventory: write (status, inventory)"]),
    ("health (wait)", ["health (wait)"]),
    ("Lease, events, bus", [Timers.HANDLE, "Lease: coalescing window wait", Timers.RAN, "Progressing event",
                            "not in a handler"]),
    ("other", ["reconcile: other (targets, final events)", "per Kustomization: other", "dependsOn checks"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", type=int, default=100, help="Kustomizations (apps) besides flux-system")
    ap.add_argument("--objects-per-app", type=int, default=20, help="objects each app's Kustomization applies")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of cold + no-op + webhook, each from scratch")
    ap.add_argument("--mode", choices=("worker", "sequential"), default="worker")
    ap.add_argument("--code", default="HEAD", help="the commit whose Herald the child runs, or 'worktree'")
    ap.add_argument("--flux-crds", action="store_true",
                    help="serve Flux's GitRepository and Kustomization CRDs, so the render's Flux objects are applied")
    ap.add_argument("--wait", action="store_true", help="patch spec.wait: true into every Kustomization")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds a pass may take")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the child, e.g. HERALD_APPLY_CONCURRENCY=8; repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (worker.log) and print it")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    from apply_vs_kubectl import busy_processes, count_requests, load_average

    from tests.fixtures_herald import Repo, git
    from tests.kubeapi import KubeAPIServer

    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-fleet-"))
    code = code_tree(args.code, tmp)
    code_rev = (subprocess.run(["git", "rev-parse", "--short", args.code], check=True, cwd=ROOT, capture_output=True,
                               text=True).stdout.strip() if args.code != "worktree" else "working tree")
    bare, work = tmp / "remote.git", tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    git("remote", "add", "origin", str(bare), cwd=work)
    repo = Repo(bare, work)
    files = fleet_files(repo.url, args.apps, args.objects_per_app, args.wait)
    sha = repo.commit(files, f"a fleet of {args.apps} apps")
    bootstrap = tmp / "gotk-sync.yaml"
    bootstrap.write_text(gotk_sync(repo.url))
    n_objects = args.apps * args.objects_per_app
    overlays = (args.apps + 1) // 2
    print(f"# {args.apps} Kustomizations x {args.objects_per_app} objects = {n_objects} objects "
          f"({overlays} overlays built by kustomize, {args.apps - overlays} plain); {len(files)} files; "
          f"Herald from {code_rev}; mode {args.mode}", file=sys.stderr)

    kube = KubeAPIServer().start()
    kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    env.update(kv.split("=", 1) for kv in args.env)
    rounds: list[dict[str, dict[str, Any]]] = []
    settings: dict[str, Any] = {}
    load_before = load_average()
    others = busy_processes({os.getpid()})
    try:
        for r in range(args.rounds):
            kube.reset()
            if args.flux_crds:
                for crd in FLUX_CRDS:
                    kube.apply_object(flux_crd(*crd))
            state = tmp / f"state-{r}"
            spec = {"code": code, "state": str(state), "bootstrap": str(bootstrap), "mode": args.mode,
                    "sha": sha, "timeout": args.timeout}
            log_path = tmp / f"worker-{r}.log"
            with open(log_path, "wb") as log_file:
                child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                         env=env, cwd=tmp)
            assert child.stdin is not None and child.stdout is not None

            def reply(what: str, log_path: Path = log_path, child: subprocess.Popen = child) -> dict[str, Any]:
                line = child.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    child.wait(timeout=30)
                    raise SystemExit(f"the child stopped during {what} (exit {child.returncode}):\n"
                                     + log_path.read_text()[-5000:])
                return json.loads(line)

            settings = reply("start-up")["settings"]
            results: dict[str, dict[str, Any]] = {}
            for name in PASSES:
                if name != "cold":
                    # As if the interval (or the webhook) came a while after the last run: not
                    # within its coalescing window, which would hold the run back.
                    time.sleep(float(settings.get("window") or 0.0) + 1.0)
                start = len(kube.requests)
                cpu0 = time.process_time()
                child.stdin.write(name + "\n")
                child.stdin.flush()
                out = reply(name)
                out["api_cpu"] = time.process_time() - cpu0
                out["requests"] = dict(count_requests(kube, start))
                out["api_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                failed = [k for k in out["kustomizations"] if k["reason"] != "ReconciliationSucceeded"]
                if failed:
                    raise SystemExit(f"{name}: {len(failed)} Kustomizations did not succeed, e.g. {failed[0]['name']}:\n"
                                     f"{failed[0]['error']}\n(log: {log_path})")
                if name == "cold":
                    owned = Counter((o.get("metadata", {}).get("labels") or {}).get(OWNER_NAME, "")
                                    for o in kube.objects())
                    missing = [app_name(i) for i in range(args.apps) if owned[app_name(i)] != args.objects_per_app]
                    if missing:
                        raise SystemExit(f"cold: not all objects applied; short: {missing[:5]} (log: {log_path})")
                results[name] = out
                ks = [k["seconds"] for k in out["kustomizations"] if k["name"] != "flux-system"]
                print(f"# round {r + 1} {name}: {out['wall']:.2f} s, {len(out['kustomizations'])} Kustomization "
                      f"reconciles in {out['runs']} runs ({out['coalesced']} requests coalesced or satisfied)"
                      + (f", per app p50 {statistics.median(ks):.3f} s" if ks else ""), file=sys.stderr)
            child.stdin.close()
            child.wait(timeout=120)
            if kube.internal_errors:
                raise SystemExit("the test API server failed internally:\n" + "\n".join(kube.internal_errors))
            rounds.append(results)
    finally:
        kube.stop()
    load_after = load_average()
    report(args, rounds, settings, sha, code_rev, len(files), overlays, load_before, load_after, others)
    if args.keep:
        print(f"\n(logs in {tmp})", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, rounds: list[dict[str, dict[str, Any]]], settings: dict[str, Any], sha: str,
           code_rev: str, n_files: int, overlays: int, load_before: str, load_after: str, others: list[str]) -> None:
    n_objects = args.apps * args.objects_per_app

    def med(values: list[float]) -> str:
        m = statistics.median(values)
        if len(values) == 1:
            return f"{m:.2f}"
        return f"{m:.2f} ({min(values):.2f}–{max(values):.2f})"

    print(f"\n{args.apps} Kustomizations × {args.objects_per_app} objects ({n_objects:,} objects: {overlays} apps are "
          f"overlays built by kustomize, {args.apps - overlays} plain YAML) + the bootstrap Kustomization "
          f"flux-system; {n_files:,} files at {sha[:10]}. Herald {code_rev}, mode `{args.mode}` "
          f"({settings.get('threads')} reconcile threads, coalescing window {settings.get('window')} s, "
          f"{settings.get('apply_concurrency')} API requests in flight per apply)"
          + (", Flux CRDs served" if args.flux_crds else ", Flux CRDs not served (the Flux objects are configuration "
             "only)") + (", spec.wait on" if args.wait else "") + (f", {' '.join(args.env)}" if args.env else "")
          + f". {os.cpu_count()} cores, Python {platform.python_version()}; load average before {load_before}, "
          f"after {load_after}" + (f"; busy before the run: {', '.join(others)}" if others else "")
          + f". {len(rounds)} round(s)" + ("; medians (min–max)" if len(rounds) > 1 else "") + ".\n")

    print("| pass | wall s | Kustomization reconciles (runs) | objects | objects/s | per app Kustomization p50 s | "
          "p95 s | max s | flux-system s | API requests | CPU s: Herald / git+kustomize / API server | "
          "peak RSS MiB: Herald / API server |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for name in PASSES:
        outs = [r[name] for r in rounds]
        walls = [o["wall"] for o in outs]
        apps_s = [k["seconds"] for k in outs[len(outs) // 2]["kustomizations"] if k["name"] != "flux-system"]
        flux = [k["seconds"] for k in outs[len(outs) // 2]["kustomizations"] if k["name"] == "flux-system"]
        actions: Counter[str] = Counter()
        for k in outs[0]["kustomizations"]:
            actions.update(k["actions"])
        reqs: Counter[str] = Counter(outs[0]["requests"])
        objs = ", ".join(f"{a} {n:,}" for a, n in actions.most_common()) or "—"
        rate = f"{n_objects / statistics.median(walls):,.0f}" if actions else "—"
        p = (f"{statistics.median(apps_s):.3f} | {pct(apps_s, 95):.3f} | {max(apps_s):.3f}" if apps_s
             else "— | — | —")
        fs = ", ".join(f"{s:.2f}" for s in flux) or "—"
        o = outs[0]
        print(f"| {name} | {med(walls)} | {len(o['kustomizations'])} ({o['runs']}) | {objs} | {rate} | {p} | {fs} | "
              f"{sum(reqs.values()):,}: " + ", ".join(f"{c} {n:,}" for c, n in reqs.most_common()) + " | "
              f"{o['cpu_self']:.1f} / {o['cpu_children']:.1f} / {o['api_cpu']:.1f} | "
              f"{o['maxrss_kib'] / 1024:.0f} / {o['api_maxrss_kib'] / 1024:.0f} |")

    print()
    for name in ("cold", "no-op"):
        ks = rounds[len(rounds) // 2][name]["kustomizations"]
        split = []
        for kind, odd in (("overlays (kustomize)", 0), ("plain YAML", 1)):
            xs = [k["seconds"] for k in ks if k["name"].startswith("app-") and int(k["name"][4:]) % 2 == odd]
            if xs:
                split.append(f"{kind} p50 {statistics.median(xs):.3f} s, p95 {pct(xs, 95):.3f} s")
        print(f"{name}, per app Kustomization: " + "; ".join(split) + ".  ")

    # Where the time goes, per phase (first round; medians over rounds if several)
    def phases(o: dict[str, Any]) -> dict[str, float]:
        ph = dict(o["phases"])
        ph["not in a handler"] = o["wall"] - o["ran_s"]
        return ph

    per_pass = {name: [phases(r[name]) for r in rounds] for name in ("cold", "no-op")}

    def cell(name: str, labels: list[str]) -> tuple[float, float]:
        values = [sum(ph.get(lb, 0.0) for lb in labels) for ph in per_pass[name]]
        walls = [r[name]["wall"] for r in rounds]
        return statistics.median(values), statistics.median(walls)

    print("\nWhere the time goes (wall seconds, each phase exclusive of the others; they add up to the pass):\n")
    print("| phase | step | cold s | cold % | no-op s | no-op % |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for group, labels in PHASE_GROUPS:
        for i, label in enumerate(labels):
            c, cw = cell("cold", [label])
            n, nw = cell("no-op", [label])
            if c < 0.0005 and n < 0.0005 and len(labels) > 1:
                continue
            print(f"| {group if i == 0 else ''} | {label} | {c:.2f} | {100 * c / cw:.0f} % | {n:.2f} | "
                  f"{100 * n / nw:.0f} % |")
        if len(labels) > 1:
            c, cw = cell("cold", labels)
            n, nw = cell("no-op", labels)
            print(f"| | **{group}, all** | **{c:.2f}** | **{100 * c / cw:.0f} %** | **{n:.2f}** | "
                  f"**{100 * n / nw:.0f} %** |")
    c = statistics.median([r["cold"]["wall"] for r in rounds])
    n = statistics.median([r["no-op"]["wall"] for r in rounds])
    print(f"| **total** | | **{c:.2f}** | 100 % | **{n:.2f}** | 100 % |")
    for name in PASSES:
        o = rounds[0][name]
        extra = []
        if o["coalesced"]:
            extra.append(f"{o['coalesced']} requests coalesced or satisfied, {o['coalesced_s']:.2f} s of handling "
                         f"(on the second thread, overlapping the run)")
        if o["detached"]:
            extra.append("on helper threads: " + ", ".join(f"{k} {v:.2f} s" for k, v in o["detached"].items()))
        calls = o["calls"]
        extra.append(f"calls: fetch {calls.get('fetch (git)', 0)}, kustomize {calls.get('render: kustomize build', 0)}, "
                     f"git export {calls.get('render: git export (checkout)', 0)}, "
                     f"Fleet.take {calls.get('configuration: Fleet.take', 0)}")
        print(f"\n{name}: " + "; ".join(extra) + ".", end="")
    print()


if __name__ == "__main__":
    main()
