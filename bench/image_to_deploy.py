"""Registry webhook accepted → Git commit pushed → new image applied, through RabbitMQ (issue 15).

`herald receiver` and `herald worker` run as separate processes on a RabbitMQ node of the
bench's own, against the test Kubernetes API server (`tests/kubeapi.py`), a real registry
(Debian's `docker-registry`, `tests/registry.py`) and a local bare Git repository holding a
Deployment whose image carries Flux's `$imagepolicy` marker. Each round pushes a new semver tag
to the registry with its HTTP API, then posts Harbor's `PUSH_ARTIFACT` webhook naming it (the
real payload's shape, the new tag's reference). Measured per push, from the 202:

  commit    the bare repository's `main` names the new tag (the automation's commit pushed);
  applied   the API server's Deployment runs the new image (the commit reconciled).

Both are stamped by watchers (a thread polling `git rev-parse` every 10 ms; a thread waiting on
the API server's change condition).

    python bench/image_to_deploy.py              # 30 pushes, one every 1–2 s
    python bench/image_to_deploy.py --pushes 5   # a smoke run

Goal (issue 15): commit p50 ≤ 2 s, applied p50 ≤ 3 s.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import components  # noqa: E402
from receiver_vs_webhook import PrivateBroker  # noqa: E402
from webhook_to_applied import free_port, pct, wait_ready  # noqa: E402

from herald import config  # noqa: E402
from tests.fixtures_herald import (  # noqa: E402
    TOKEN,
    Repo,
    git,
    harbor_push,
    image_automation,
    marked_deployment,
    receiver_yaml,
)
from tests.kubeapi import KubeAPIServer  # noqa: E402
from tests.registry import install, push_image, start_registry  # noqa: E402


def herald_config(path: Path, repo_url: str, image: str) -> Path:
    """A harbor Receiver naming the ImageRepository, and the scenario's image automation."""
    path.write_text(receiver_yaml("registry", "harbor", "[{kind: ImageRepository, name: web}]")
                    + image_automation(repo_url, image, insecure=True))
    return path


def manifests(image: str, tag: str) -> dict[str, str]:
    return {"deploy/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
            "deploy/web.yaml": marked_deployment(image, tag)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pushes", type=int, default=30)
    ap.add_argument("--min-gap", type=float, default=1.0)
    ap.add_argument("--max-gap", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    problem = install()
    if problem:
        raise SystemExit(problem)

    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-image-"))
    bare, work = tmp / "remote.git", tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    git("remote", "add", "origin", str(bare), cwd=work)
    repo = Repo(bare, work)
    kube = KubeAPIServer().start()
    broker = PrivateBroker(tmp)
    results = []
    (tmp / "registry").mkdir()
    with start_registry(tmp / "registry") as registry:
        image = f"{registry.host}/acme/web"
        push_image(registry, "acme/web", "1.0.0")
        repo.commit(manifests(image, "1.0.0"), "web 1.0.0")
        cfg_path = herald_config(tmp / "herald.yaml", repo.url, image)
        loaded = config.load([cfg_path])
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        hook = base + loaded.hook_path(loaded.receivers[("flux-system", "registry")])
        env = dict(os.environ, KUBECONFIG=str(kube.write_kubeconfig(tmp / "kubeconfig")), HERALD_LOG_LEVEL="INFO",
                   HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_BROKER_URL=f"{broker.url}/%2F",
                   HERALD_INTERVAL_POLLING="false")
        procs = components.start(("receiver", "worker"), cfg_path, env, tmp)
        committed: dict[str, float] = {}
        applied: dict[str, float] = {}
        stop = threading.Event()

        def watch_git() -> None:
            seen = ""
            while not stop.is_set():
                head = git("rev-parse", "main", cwd=bare)
                if head != seen:
                    seen = head
                    text = git("show", "main:deploy/web.yaml", cwd=bare)
                    tag = text.split(f"{image}:", 1)[1].split()[0]
                    committed.setdefault(tag, time.time())
                time.sleep(0.01)

        def watch_cluster() -> None:
            cluster = kube.cluster
            key = ("apps", "deployments", "shop", "web")
            last = -1
            with cluster.lock:
                while not stop.is_set():
                    if cluster.rv == last:
                        cluster.changed.wait(timeout=0.2)
                        continue
                    last = cluster.rv
                    obj = cluster.objects.get(key)
                    if obj:
                        tag = obj["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
                        applied.setdefault(tag, time.time())

        watchers = [threading.Thread(target=watch_git, daemon=True), threading.Thread(target=watch_cluster, daemon=True)]
        for t in watchers:
            t.start()
        session = requests.Session()
        try:
            wait_ready(base)
            rng = random.Random(args.seed)
            sent = []
            for n in range(1, args.pushes + 1):
                tag = f"1.{n}.0"
                push_image(registry, "acme/web", tag)
                body = harbor_push(image, tag)
                t0 = time.time()
                resp = session.post(hook, data=body, headers={"Content-Type": "application/json",
                                                              "Authorization": TOKEN}, timeout=30)
                t_202 = time.time()
                if resp.status_code != 202:
                    raise SystemExit(f"push {tag}: the receiver answered {resp.status_code}: {resp.text[:300]}")
                sent.append((tag, t0, t_202))
                deadline = time.time() + 60
                while tag not in applied and time.time() < deadline:
                    time.sleep(0.01)
                if tag not in applied:
                    logs = components.logs(procs, tmp)
                    raise SystemExit(f"{tag} not applied within 60 s\n{logs}")
                time.sleep(rng.uniform(args.min_gap, args.max_gap))
            for tag, t0, t_202 in sent:
                results.append({"accept": t_202 - t0, "commit": committed[tag] - t_202, "applied": applied[tag] - t_202})
        finally:
            stop.set()
            components.stop(procs)
            broker.stop()
            kube.stop()
    print(f"\n{len(results)} registry pushes, one every {args.min_gap}–{args.max_gap} s; RabbitMQ; receiver and "
          "worker as separate processes\n")
    print("| from the 202 to | p50 | p90 | p99 | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, label in (("accept", "the 202 (POST → 202)"), ("commit", "commit pushed"), ("applied", "new image applied")):
        values = [r[key] for r in results]
        print(f"| {label} | {pct(values, 50):.2f} s | {pct(values, 90):.2f} s | {pct(values, 99):.2f} s | "
              f"{max(values):.2f} s |")


if __name__ == "__main__":
    main()
