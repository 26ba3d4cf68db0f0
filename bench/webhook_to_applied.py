"""Webhook accepted → Kustomization applied, through RabbitMQ (issue 4).

`herald receiver` and `herald worker` run as separate processes on a fresh RabbitMQ vhost,
against the test Kubernetes API server (`tests/kubeapi.py`, in this process). The repository is
a local bare repo holding 10 objects (a Namespace and three apps: ConfigMap, Service,
Deployment). Each push is a real commit that changes one app's ConfigMap (`data.REVISION`) and
its Deployment's pod template (annotation `bench.herald.dev/revision`), pushed to the bare repo,
then the signed GitHub push delivery for it posted to the receiver. Measured per push:

  accept    POST sent → 202 received (the broker confirmed the reconcile request);
  applied   202 received → the API server holds both changed objects at this push's revision
            (or a later one: a later push's reconcile covers an earlier push);
  recorded  202 received → the Kustomization's inventory ConfigMap records the revision as
            lastAppliedRevision (apply, prune and inventory write all done).

"Applied" is observed inside the API server: a thread waits on the store's change condition and
stamps the first moment each revision is there, so polling adds no delay. Two runs:

  paced     pushes one every 1–2 s (uniformly random, seeded), as a team pushing would;
  burst     pushes back to back, as fast as commit + POST go (coalescing collapses them).

    python bench/webhook_to_applied.py              # 100 paced pushes + a burst of 20
    python bench/webhook_to_applied.py --quick      # 10 paced + a burst of 5: a smoke run
    python bench/webhook_to_applied.py --profile /tmp/prof   # py-spy the worker and receiver

RabbitMQ: the local node (guest/guest) is started with `rabbitmq-server -detached` when
`rabbitmqctl status` fails; a fresh vhost is made for the run and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NAMESPACE = "bench-0"
APP = "app-0000"
MARK_KEY = "bench.herald.dev/revision"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url}/readyz not ready after {timeout:.0f} s")


def ensure_rabbitmq(amqp_url: str) -> None:
    """Start the local node when `rabbitmqctl status` fails, and wait for AMQP."""
    status = subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, timeout=60, check=False)
    if status.returncode != 0:
        print("# rabbitmqctl status failed: starting rabbitmq-server -detached", file=sys.stderr)
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60, check=False)
    from tests.fixtures_rabbitmq import _wait_ready

    _wait_ready(amqp_url)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[min(len(ordered), int(rank)) - 1]


class RevisionWatch:
    """Stamps the first moment the API server holds each revision (marker) of the two objects."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.applied: dict[int, float] = {}  # marker -> when both objects first had >= it
        self.recorded: dict[str, float] = {}  # sha -> when the inventory first named it lastAppliedRevision
        self.writes = 0  # apply writes of the two objects seen (how many reconciles changed them)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="revision-watch", daemon=True)

    def start(self) -> RevisionWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.kube.cluster.lock:
            self.kube.cluster.changed.notify_all()
        self._thread.join(timeout=5)

    @staticmethod
    def _marker(obj: dict[str, Any] | None, deployment: bool) -> int:
        if obj is None:
            return -1
        if deployment:
            value = ((((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations")
                     or {}).get(MARK_KEY)
        else:
            value = (obj.get("data") or {}).get("REVISION")
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1

    def _run(self) -> None:
        cluster = self.kube.cluster
        cm_key = ("", "configmaps", NAMESPACE, f"{APP}-config")
        dep_key = ("apps", "deployments", NAMESPACE, APP)
        inv_key = ("", "configmaps", "flux-system", "herald-inventory-app")
        last_rv, highest, last_inv = -1, -1, ""
        with cluster.lock:
            while not self._stop.is_set():
                if cluster.rv == last_rv:
                    cluster.changed.wait(timeout=0.5)
                    continue
                now = time.perf_counter()
                last_rv = cluster.rv
                rev = min(self._marker(cluster.objects.get(cm_key), False),
                          self._marker(cluster.objects.get(dep_key), True))
                if rev > highest:
                    for r in range(highest + 1, rev + 1):
                        self.applied.setdefault(r, now)
                    highest = rev
                    self.writes += 1
                inv = cluster.objects.get(inv_key)
                applied_rev = ((inv or {}).get("data") or {}).get("lastAppliedRevision", "")
                if applied_rev and applied_rev != last_inv:
                    last_inv = applied_rev
                    self.recorded.setdefault(applied_rev.rpartition(":")[2], now)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--pushes", type=int, default=100, help="paced pushes")
    ap.add_argument("--burst", type=int, default=20, help="pushes in the burst run (0: none)")
    ap.add_argument("--min-gap", type=float, default=1.0, help="seconds between paced pushes, at least")
    ap.add_argument("--max-gap", type=float, default=2.0, help="seconds between paced pushes, at most")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="10 paced pushes and a burst of 5: a smoke run")
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672",
                    help="the machine's RabbitMQ node, without the vhost")
    ap.add_argument("--private-broker", action="store_true",
                    help="start a RabbitMQ node of our own (as bench/receiver_vs_webhook.py does), so that test "
                         "suites stopping or freezing the shared node cannot end up in the numbers")
    ap.add_argument("--profile", type=Path, help="record the worker and the receiver with py-spy into this folder")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) and print it")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every push's numbers")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the herald processes, e.g. HERALD_COALESCE_WINDOW=0; repeatable")
    args = ap.parse_args()
    if args.quick:
        args.pushes, args.burst = min(args.pushes, 10), min(args.burst, 5)

    import components
    import yaml
    from apply_vs_kubectl import app_docs, busy_processes, load_average

    from herald import config
    from tests.fixtures_herald import (
        Repo,
        git,
        github_headers,
        github_push,
        write_config,
    )
    from tests.kubeapi import KubeAPIServer

    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-webhook-"))
    bare, work = tmp / "remote.git", tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    git("remote", "add", "origin", str(bare), cwd=work)
    repo = Repo(bare, work)
    apps = [app_docs(i, NAMESPACE) for i in range(3)]
    files = {"deploy/00-namespace.yaml": yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": NAMESPACE}})}
    files.update({f"deploy/app-{i:04d}.yaml": yaml.safe_dump_all(docs, sort_keys=False)
                  for i, docs in enumerate(apps[1:], start=1)})

    def app0(marker: int) -> dict[str, str]:
        cm, svc, deploy = (json.loads(json.dumps(d)) for d in apps[0])
        cm["data"]["REVISION"] = str(marker)
        deploy["spec"]["template"]["metadata"]["annotations"][MARK_KEY] = str(marker)
        return {"deploy/app-0000.yaml": yaml.safe_dump_all([cm, svc, deploy], sort_keys=False)}

    repo.commit({**files, **app0(0)}, "10 objects")
    n_objects = 1 + 3 * len(apps)

    kube = KubeAPIServer().start()
    cfg_path = write_config(tmp / "herald.yaml", repo.url)
    loaded = config.load([cfg_path])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hook = base + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])

    private = None
    ctl = ["rabbitmqctl"]
    if args.private_broker:
        from receiver_vs_webhook import PrivateBroker

        private = PrivateBroker(tmp)
        args.broker, ctl = private.url, private.ctl()
    else:
        ensure_rabbitmq(f"{args.broker}/%2F")
    vhost = f"herald-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run([*ctl, "-q", "add_vhost", vhost], check=True)
    subprocess.run([*ctl, "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True)
    env = dict(os.environ, KUBECONFIG=str(kube.write_kubeconfig(tmp / "kubeconfig")), HERALD_LOG_LEVEL="INFO",
               HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_BROKER_URL=f"{args.broker}/{vhost}")
    env.update(kv.split("=", 1) for kv in args.env)
    procs = components.start(("receiver", "worker"), cfg_path, env, tmp)
    spies: list[subprocess.Popen] = []

    watch = RevisionWatch(kube).start()
    session = requests.Session()
    marker = 0
    results: dict[str, list[dict[str, float]]] = {"paced": [], "burst": []}

    def push() -> tuple[int, str, float, float]:
        """Commit the next revision, post its delivery; (marker, sha, POST→202 s, when the 202 came)."""
        nonlocal marker
        marker += 1
        sha = repo.commit(app0(marker), f"revision {marker}")
        body = github_push(sha)
        headers = github_headers(body, delivery=str(uuid.uuid4()))
        t0 = time.perf_counter()
        resp = session.post(hook, data=body, headers=headers, timeout=30)
        t_202 = time.perf_counter()
        if resp.status_code != 202:
            hint = ("\n(another test suite may have stopped the shared RabbitMQ node: try --private-broker)"
                    if resp.status_code == 503 and not args.private_broker else "")
            raise SystemExit(f"push {marker}: the receiver answered {resp.status_code}: {resp.text[:500]}{hint}")
        return marker, sha, t_202 - t0, t_202

    def wait_applied(m: int, sha: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while m not in watch.applied or sha not in watch.recorded:
            if time.monotonic() > deadline:
                logs = components.logs(procs, tmp)
                raise SystemExit(f"revision {m} ({sha[:12]}) not applied after {timeout:.0f} s\n{logs}")
            time.sleep(0.01)

    t_first = time.perf_counter()

    def run(name: str, gaps: list[float]) -> None:
        pushed = []
        next_at = time.perf_counter()
        for gap in gaps:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pushed.append(push())
            next_at += gap
        last_marker, last_sha = pushed[-1][0], pushed[-1][1]
        wait_applied(last_marker, last_sha)
        for m, sha, accept, t_202 in pushed:
            # A later revision recorded also records this push's change.
            recorded = min(t for s, t in watch.recorded.items() if s in {p[1] for p in pushed if p[0] >= m})
            results[name].append({"accept": accept, "applied": watch.applied[m] - t_202, "recorded": recorded - t_202})
            if args.verbose:
                print(f"#   {name} {m:3d} {sha[:10]} 202 at {t_202 - t_first:8.3f} s: accept {accept * 1000:6.1f} ms, "
                      f"applied {(watch.applied[m] - t_202) * 1000:7.1f} ms, recorded {(recorded - t_202) * 1000:7.1f} ms",
                      file=sys.stderr)

    try:
        wait_ready(base)
        others = busy_processes({os.getpid(), *(p.pid for p in procs.values())})
        print(f"# {n_objects} objects; load average before: {load_average()}"
              + (f"; busy before the run (cores): {', '.join(others)}" if others else ""), file=sys.stderr)
        # Warm-up: the worker's first fetch (a clone) and the objects' creation are not measured.
        m, sha, _, _ = push()
        wait_applied(m, sha, timeout=120)
        time.sleep(2.0)  # as if the last push before the measured ones came a while ago
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            for command, proc in procs.items():
                spies.append(subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "-r", "250", "-f", "raw",
                                               "--nonblocking", "-o", str(args.profile / f"{command}.txt")],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        rng = random.Random(args.seed)
        writes_before = watch.writes
        started = time.time()
        print(f"# paced: {args.pushes} pushes, one every {args.min_gap}–{args.max_gap} s", file=sys.stderr)
        run("paced", [rng.uniform(args.min_gap, args.max_gap) for _ in range(args.pushes)])
        writes_paced = watch.writes
        if args.burst:
            time.sleep(3.0)  # let the coalescing window and the Lease settle
            print(f"# burst: {args.burst} pushes back to back", file=sys.stderr)
            run("burst", [0.0] * args.burst)
        elapsed = time.time() - started
        if kube.internal_errors:
            raise SystemExit("the test API server failed internally:\n" + "\n".join(kube.internal_errors))
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        components.stop(procs)
        watch.stop()
        kube.stop()
        subprocess.run([*ctl, "-q", "delete_vhost", vhost], check=False)
        if private is not None:
            private.stop()

    def row(run_name: str, label: str, key: str) -> str:
        xs = [r[key] * 1000 for r in results[run_name]]
        return (f"| {run_name} | {label} | {len(xs)} | {statistics.median(xs):.0f} | {pct(xs, 90):.0f} | "
                f"{pct(xs, 99):.0f} | {max(xs):.0f} |")

    print(f"\n{n_objects}-object repository, RabbitMQ ({'a private node' if private else 'the shared node'}, "
          f"fresh vhost), `herald receiver` + `herald worker` processes"
          + (f" ({', '.join(args.env)})" if args.env else "") + "; "
          f"{os.cpu_count()} cores; load average after: {load_average()}; {elapsed:.0f} s of pushes. Paced: one "
          f"push every {args.min_gap}–{args.max_gap} s; burst: {args.burst} back to back. Reconciles that changed "
          f"the objects: {writes_paced - writes_before} for {args.pushes} paced pushes"
          + (f", {watch.writes - writes_paced} for the {args.burst} of the burst" if args.burst else "") + ".\n")
    print("| run | measure | n | p50 ms | p90 ms | p99 ms | max ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for run_name in ("paced", "burst"):
        if results[run_name]:
            print(row(run_name, "POST → 202 (broker confirmed)", "accept"))
            print(row(run_name, "202 → objects applied in the API server", "applied"))
            print(row(run_name, "202 → inventory records the revision", "recorded"))
    if args.keep or args.profile:
        print(f"\n(logs in {tmp})", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
