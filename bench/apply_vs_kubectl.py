"""Herald's apply engine vs `kubectl apply --server-side` on 1,000 objects (issue 4).

Both tools apply the same manifests (Namespaces, ConfigMaps, Services, Deployments spread over a
few namespaces; one file per app) to the same test Kubernetes API server (`tests/kubeapi.py`,
run in this process), in three phases:

  cold     nothing of the set exists yet: every object is created;
  no-op    the same set again: nothing changes;
  drift    10 % of the objects were changed by hand (a merge patch by another field manager,
           as `kubectl edit`/`kubectl scale` would make it) and the set is applied again.

The API server is emptied (`KubeAPIServer.reset()`) before each tool's cold phase, so both
start from the same state. Each round runs both tools (the order alternates between rounds);
the table gives the median over the rounds, and the request counts come from the API
server's own request log (`KubeAPIServer.requests`), classed by verb and path.

Herald is driven exactly as `herald worker` drives it for a Kustomization: a long-running
child process holds a `reconciler.worker.Reconciler` whose GitRepository (a local bare repo
holding the manifests) was fetched once, and each phase is one call of
`Reconciler._reconcile_kustomization` -- reading the manifests from Git, inventory load, dry-run, staged
apply, prune, inventory write -- timed inside the child. (The bus, the Lease and the event
publish around it are not part of this benchmark; `bench/webhook_to_applied.py` has them.)
kubectl is one `kubectl apply --server-side --force-conflicts --field-manager=bench-kubectl
-f DIR` per phase, timed from here, process start included (that is how it is used; its
discovery cache is warm, as Herald's is).

    python bench/apply_vs_kubectl.py               # 1,000 objects, 5 rounds
    python bench/apply_vs_kubectl.py --quick       # 100 objects, 1 round: a smoke run
    python bench/apply_vs_kubectl.py --engine-from HEAD    # Herald's engine as committed (before/after)
    python bench/apply_vs_kubectl.py --steps       # where Herald's time goes, step by step
    python bench/apply_vs_kubectl.py --profile /tmp/prof   # py-spy the Herald child too

The table goes to stdout (Markdown, ready to paste); progress, per-round numbers and the load
average go to stderr. "CPU s" is the API server's (this process's) and the client's (the
Herald child, or kubectl) CPU time during the phase: the API server is Python and single-core
bound, so it is part of what is measured, the same for both tools.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("cold", "no-op", "drift")
KS_NAMESPACE, KS_NAME = "flux-system", "bench"
KUBECTL_MANAGER = "bench-kubectl"
ENGINE_FILES = ("apply.py", "kube.py", "inventory.py")
HAND_MANAGER = "kubectl-edit"


# ---- the manifests ---------------------------------------------------------------------------

def app_docs(i: int, namespace: str) -> list[dict[str, Any]]:
    """One app: a ConfigMap, a Service and a Deployment, as a typical repository holds them."""
    name = f"app-{i:04d}"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "bench"}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": f"{name}-config", "namespace": namespace, "labels": labels},
          "data": {"LOG_LEVEL": "info", "FEATURE_FLAGS": "a,b,c", "UPSTREAM": f"http://svc-{i}.example:8080",
                   "app.properties": "threads=8\ntimeout=30s\nretries=3\n"}}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"selector": {"app.kubernetes.io/name": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": name, "namespace": namespace, "labels": labels},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                       "template": {"metadata": {"labels": labels,
                                                 "annotations": {"prometheus.io/scrape": "true"}},
                                    "spec": {"containers": [{
                                        "name": "app", "image": f"registry.example/bench/app:{i % 7}.0.1",
                                        "ports": [{"name": "http", "containerPort": 8080}],
                                        "envFrom": [{"configMapRef": {"name": f"{name}-config"}}],
                                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {
                                            "fieldPath": "metadata.name"}}}],
                                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                                      "limits": {"memory": "128Mi"}},
                                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                                           "periodSeconds": 5}}]}}}}
    return [cm, svc, deploy]


def write_manifests(folder: Path, n_objects: int, n_namespaces: int) -> list[dict[str, Any]]:
    """n_namespaces Namespaces + apps (3 objects each) until n_objects; one file per app."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    namespaces = [f"bench-{k}" for k in range(n_namespaces)]
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]
    (folder / "00-namespaces.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
    i = 0
    while len(objs) < n_objects:
        docs = app_docs(i, namespaces[i % n_namespaces])[:n_objects - len(objs)]
        (folder / f"app-{i:04d}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        objs += docs
        i += 1
    return objs


def drift_by_hand(kube: Any, objs: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """Change every 1/fraction-th object as someone with kubectl would; returns them."""
    step = max(1, round(1 / fraction))
    changed = [o for o in objs if o["kind"] != "Namespace"][::step]
    cluster = kube.cluster
    for o in changed:
        meta = o["metadata"]
        if o["kind"] == "ConfigMap":
            patch: dict[str, Any] = {"data": {"LOG_LEVEL": "debug"}}
        elif o["kind"] == "Deployment":
            patch = {"spec": {"replicas": 5}}
        else:  # Service
            patch = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9090, "protocol": "TCP"}]}}
        with cluster.lock:
            rtype = cluster.type_for(o["apiVersion"], o["kind"])
            cluster.write(rtype, meta["namespace"], meta["name"], "patch", patch, manager=HAND_MANAGER,
                          patch_type="merge")
    return changed


def drift_corrected(kube: Any, changed: list[dict[str, Any]]) -> int:
    """How many of the hand-changed objects hold the manifest's values again."""
    ok = 0
    for o in changed:
        live = kube.get_object(o["apiVersion"], o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
        if o["kind"] == "ConfigMap":
            ok += live["data"] == o["data"]
        elif o["kind"] == "Deployment":
            ok += live["spec"]["replicas"] == o["spec"]["replicas"]
        else:
            ok += live["spec"]["ports"][0]["targetPort"] == o["spec"]["ports"][0]["targetPort"]
    return ok


# ---- request classes -------------------------------------------------------------------------

def request_class(method: str, path: str, query: dict[str, str], content_type: str) -> str:
    parts = [p for p in path.split("/") if p]
    if method == "GET" and (path in ("/api", "/apis", "/version") or path.startswith("/openapi")
                            or parts[:2] == ["api", "v1"] and len(parts) == 2
                            or parts[:1] == ["apis"] and len(parts) <= 3):
        return "discovery"
    if method == "PATCH" and content_type == "application/apply-patch+yaml":
        return "apply dry-run" if query.get("dryRun") else "apply"
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if len(rest) >= 2 else "list"
    return method.lower()


def count_requests(kube: Any, start: int) -> Counter[str]:
    with kube.cluster.lock:
        recorded = list(kube.requests[start:])
    return Counter(request_class(r.method, r.path, r.query, r.content_type) for r in recorded)


# ---- Herald, as the worker runs it -----------------------------------------------------------

def herald_config(path: Path, repo_url: str) -> Path:
    path.write_text(textwrap.dedent(f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: {KS_NAME}, namespace: {KS_NAMESPACE}}}
        spec:
          interval: 10m
          url: {repo_url}
          ref: {{branch: main}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: {KS_NAME}, namespace: {KS_NAMESPACE}}}
        spec:
          interval: 10m
          path: ./deploy
          prune: true
          sourceRef: {{kind: GitRepository, name: {KS_NAME}}}
        """))
    return path


def engine_overlay(rev: str, into: Path) -> Path:
    """A copy of today's `reconciler` package with the apply engine's files as of `rev`."""
    pkg = into / "reconciler"
    shutil.copytree(ROOT / "reconciler", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ENGINE_FILES:
        text = subprocess.run(["git", "show", f"{rev}:reconciler/{name}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        (pkg / name).write_text(text)
    return into


def herald_child(cfg_path: str, state_dir: str) -> None:
    """Runs in its own process: one `_reconcile_kustomization` per line "apply" on stdin."""
    overlay = os.environ.get("HERALD_BENCH_ENGINE_OVERLAY")
    if overlay:
        sys.path.insert(0, overlay)
    steps = _time_steps() if os.environ.get("HERALD_BENCH_STEPS") else None
    from herald import config
    from reconciler.git import resolve_url
    from reconciler.worker import Reconciler

    cfg = config.load([cfg_path])
    repo = cfg.git_repositories[(KS_NAMESPACE, KS_NAME)]
    ks = cfg.kustomizations[(KS_NAMESPACE, KS_NAME)]
    rec = Reconciler(cfg, None, Path(state_dir))  # type: ignore[arg-type]  # the bus is not used here
    revision = rec.git.fetch(repo, resolve_url(repo.url, repo.meta.source))
    rec._cluster_or_none()  # connect and read discovery once, as a running worker has
    t0 = time.perf_counter()
    rec._render(ks, repo, revision.sha)
    render_s = time.perf_counter() - t0
    print(json.dumps({"ready": True, "render_s": render_s}), flush=True)
    for line in sys.stdin:
        if line.strip() != "apply":
            break
        if steps is not None:
            steps.clear()
        t0 = time.perf_counter()
        result = rec._reconcile_kustomization(ks, repo, revision, "")
        seconds = time.perf_counter() - t0
        actions: Counter[str] = Counter()
        for ln in result.event.message.splitlines():
            m = re.search(r" (created|configured|unchanged|recreated|deleted)( \(drift corrected\))?$", ln)
            if m:
                actions[m.group(1) + (" (drift)" if m.group(2) else "")] += 1
        print(json.dumps({"seconds": seconds, "reason": result.event.reason, "actions": actions,
                          "steps": dict(steps or {}),
                          "message": "" if result.event.reason == "ReconciliationSucceeded"
                          else result.event.message[:2000]}), flush=True)


def _time_steps() -> dict[str, float]:
    """Wall seconds spent in the reconcile's main steps (--steps): where Herald's time goes."""
    from reconciler import apply, inventory, worker

    spent: dict[str, float] = {}

    def timed(cls: type, name: str, label: str) -> None:
        fn = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        setattr(cls, name, wrapper)

    timed(worker.Reconciler, "_render", "git + render")
    timed(inventory.InventoryStore, "load", "inventory load")
    timed(inventory.InventoryStore, "save", "inventory save")
    timed(apply.ApplyEngine, "_absent_namespaces", "plan: namespace gets")
    timed(apply.ApplyEngine, "_prefetch", "plan: LISTs")
    timed(apply.ApplyEngine, "_apply_stage", "apply (writes by kind)")
    timed(apply.ApplyEngine, "_settle", "wait: definitions settle")
    timed(apply.ApplyEngine, "_plan_late", "plan after a stage (LISTs + dry-runs)")
    return spent


class HeraldChild:
    def __init__(self, cfg: Path, state: Path, env: dict[str, str], profile: Path | None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--herald-child", str(cfg), str(state)]
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            cmd = ["py-spy", "record", "-r", "200", "-f", "raw", "-o", str(profile / "herald-apply.txt"), "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=ROOT)
        ready = self._read()
        self.render_s = ready["render_s"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"the Herald child exited ({self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def apply(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("apply\n")
        self.proc.stdin.flush()
        out = self._read()
        if out["reason"] != "ReconciliationSucceeded":
            raise SystemExit(f"Herald's reconcile failed: {out['reason']}: {out['message']}")
        return out

    def cpu(self) -> float:
        """CPU seconds the child (and py-spy's, when profiling) used so far."""
        total = 0.0
        for pid in [self.proc.pid, *self._children()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def _children(self) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def kubectl_apply(folder: Path, kubeconfig: Path, cache: Path) -> tuple[float, Counter[str]]:
    cmd = ["kubectl", "apply", "--server-side", "--force-conflicts", f"--field-manager={KUBECTL_MANAGER}",
           "-f", str(folder), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"kubectl apply failed ({proc.returncode}): {proc.stderr[-2000:]}")
    actions = Counter(ln.rsplit(" ", 1)[-1] for ln in proc.stdout.splitlines() if ln.strip())
    return seconds, actions


# ---- the run ---------------------------------------------------------------------------------

def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def busy_processes(exclude: set[int]) -> list[str]:
    """Other processes that used >= 10 % of a core over the last second (what shared the machine)."""
    def ticks() -> dict[int, tuple[int, str]]:
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(d.name)] = (int(fields[11]) + int(fields[12]), name)
        return out

    a = ticks()
    time.sleep(1.0)
    b = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = [(b[p][0] - a[p][0], b[p][1], p) for p in b if p in a and p not in exclude]
    return [f"{name}[{pid}] {t / hz:.2f}" for t, name, pid in sorted(busy, reverse=True) if t / hz >= 0.10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--drift", type=float, default=0.10, help="fraction of objects changed by hand")
    ap.add_argument("--quick", action="store_true", help="100 objects, 1 round: a smoke run")
    ap.add_argument("--only", choices=("herald", "kubectl"), help="run one tool only")
    ap.add_argument("--profile", type=Path, help="record the Herald child with py-spy (raw) into this folder")
    ap.add_argument("--engine-from", metavar="REV",
                    help="run Herald with reconciler/{apply,kube,inventory}.py as of this git revision "
                         "(e.g. HEAD, to compare with the working tree)")
    ap.add_argument("--steps", action="store_true",
                    help="print the wall seconds of Herald's main steps per phase (stderr)")
    ap.add_argument("--herald-child", nargs=2, metavar=("CONFIG", "STATE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.herald_child:
        herald_child(*args.herald_child)
        return
    if args.quick:
        args.objects, args.rounds = min(args.objects, 100), 1

    from tests.fixtures_herald import Repo, git
    from tests.kubeapi import KubeAPIServer

    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-apply-"))
    bare, work = tmp / "remote.git", tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    git("remote", "add", "origin", str(bare), cwd=work)
    folder = work / "deploy"
    objs = write_manifests(folder, args.objects, args.namespaces)
    repo = Repo(bare, work)
    repo.commit({}, "manifests")
    kinds = Counter(o["kind"] for o in objs)

    kube = KubeAPIServer().start()
    kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERALD_LOG_LEVEL="WARNING")
    env.pop("HERALD_BROKER_URL", None)
    if args.steps:
        env["HERALD_BENCH_STEPS"] = "1"
    if args.engine_from:
        env["HERALD_BENCH_ENGINE_OVERLAY"] = str(engine_overlay(args.engine_from, tmp / "engine"))
    tools = [t for t in ("herald", "kubectl") if args.only in (None, t)]
    herald = HeraldChild(herald_config(tmp / "herald.yaml", repo.url), tmp / "state", env, args.profile) \
        if "herald" in tools else None
    cache = tmp / "kubectl-cache"
    print(f"# {len(objs)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) in {args.namespaces} "
          f"namespaces, {args.rounds} round(s); load average before: {load_average()}", file=sys.stderr)
    others = busy_processes({os.getpid(), *([herald.proc.pid] if herald else [])})
    if others:
        print(f"# busy before the run (cores): {', '.join(others)}", file=sys.stderr)

    times: dict[tuple[str, str], list[float]] = {}
    requests: dict[tuple[str, str], Counter[str]] = {}
    actions: dict[tuple[str, str], Counter[str]] = {}
    cpu: dict[tuple[str, str], list[tuple[float, float]]] = {}
    started = time.time()

    def run_phase(tool: str, phase: str) -> None:
        start = len(kube.requests)
        server0, client0 = resource.getrusage(resource.RUSAGE_SELF), None
        if tool == "herald":
            assert herald is not None
            client0 = herald.cpu()
            out = herald.apply()
            seconds, acts = out["seconds"], Counter(out["actions"])
            if out.get("steps"):
                print("#     steps: " + ", ".join(f"{k} {v:.3f}" for k, v in out["steps"].items()), file=sys.stderr)
            client = herald.cpu() - client0
        else:
            client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds, acts = kubectl_apply(folder, kubeconfig, cache)
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            client = c1.ru_utime + c1.ru_stime - client0.ru_utime - client0.ru_stime
        server1 = resource.getrusage(resource.RUSAGE_SELF)
        server = server1.ru_utime + server1.ru_stime - server0.ru_utime - server0.ru_stime
        counted = count_requests(kube, start)
        cpu.setdefault((tool, phase), []).append((server, client))
        times.setdefault((tool, phase), []).append(seconds)
        requests[(tool, phase)] = counted  # the same in every round; keep the last
        actions[(tool, phase)] = acts
        print(f"#   {tool:7} {phase:6} {seconds:7.3f} s  CPU: API server {server:6.3f} s, {tool} {client:6.3f} s  "
              f"{sum(counted.values())} requests  "
              f"{dict(sorted(acts.items()))}", file=sys.stderr)

    def run_tool(tool: str, record: bool) -> None:
        kube.reset()
        for phase in PHASES:
            if phase == "drift":
                changed = drift_by_hand(kube, objs, args.drift)
            if record:
                run_phase(tool, phase)
            else:
                (herald.apply() if tool == "herald" else kubectl_apply(folder, kubeconfig, cache))  # type: ignore
            if phase == "drift" and drift_corrected(kube, changed) != len(changed):
                raise SystemExit(f"{tool} left {len(changed) - drift_corrected(kube, changed)} drifted objects")

    try:
        print("# warm-up (not measured)", file=sys.stderr)
        for tool in tools:
            run_tool(tool, record=False)
        for r in range(args.rounds):
            print(f"# round {r + 1}/{args.rounds}, load average {load_average()}", file=sys.stderr)
            for tool in (tools if r % 2 == 0 else tools[::-1]):
                run_tool(tool, record=True)
        if kube.internal_errors:
            raise SystemExit("the test API server failed internally:\n" + "\n".join(kube.internal_errors))
    finally:
        if herald is not None:
            herald.close()
        kube.stop()
    elapsed = time.time() - started

    n = len(objs)
    engine = f"Herald's engine files as of {args.engine_from}" if args.engine_from else "Herald's working tree"
    print(f"\n{n} objects, {engine}, median of {args.rounds} round(s) (min–max); requests per object from the API "
          f"server's log; {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} cores, load average after: {load_average()}, {elapsed:.0f} s in all"
          + (f"; of Herald's time, reading the manifests from Git and parsing them takes "
             f"{herald.render_s * 1000:.0f} ms in every phase" if herald else "") + "\n")
    print("| phase | tool | wall s | Herald / kubectl | requests per object | requests by class | "
          "CPU s: API server / client | result |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | --- |")
    for phase in PHASES:
        for tool in tools:
            xs = times[(tool, phase)]
            med = statistics.median(xs)
            ratio = ""
            if tool == "herald" and "kubectl" in tools:
                ratio = f"{med / statistics.median(times[('kubectl', phase)]):.2f}×"
            reqs = requests[(tool, phase)]
            by_class = ", ".join(f"{k} {v}" for k, v in sorted(reqs.items(), key=lambda kv: -kv[1]))
            acts = ", ".join(f"{k} {v}" for k, v in sorted(actions[(tool, phase)].items()))
            server_cpu = statistics.median(c[0] for c in cpu[(tool, phase)])
            client_cpu = statistics.median(c[1] for c in cpu[(tool, phase)])
            print(f"| {phase} | {tool} | {med:.2f} ({min(xs):.2f}–{max(xs):.2f}) | {ratio} | "
                  f"{sum(reqs.values()) / n:.2f} | {by_class} | {server_cpu:.2f} / {client_cpu:.2f} | {acts} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
