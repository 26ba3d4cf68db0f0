"""Pull-request webhook accepted → final plan status, through RabbitMQ (issue 14).

`herald receiver`, `herald worker` and `herald notifier` run as separate processes on a RabbitMQ
node of the bench's own, against the test Kubernetes API server (`tests/kubeapi.py`) and a
local server speaking GitHub's REST API (`tests/gitforges.py`; the Provider's `address` points
at it, as for GitHub Enterprise). The repository holds 50 objects (a Namespace, 16 apps of a
ConfigMap, a Service and a Deployment, and one more ConfigMap), deployed from `main` before the
measured run. Each pull request is a real commit on a branch of its own that changes one app
(its ConfigMap's data and its Deployment's replicas), published as `refs/pull/<n>/head` the way
GitHub publishes a PR's head, then GitHub's `pull_request` delivery (`opened`) posted to the
receiver. Measured per pull request, from the 202:

  pending   the `herald/plan: flux-system/app` check is pending on the head commit;
  final     the check is final (success) on the head commit;
  comment   the PR's plan comment names the head commit.

The forge server stamps each status and comment as it receives it, so polling adds no delay.

    python bench/pr_plan_latency.py              # 30 pull requests, one every 1–2 s
    python bench/pr_plan_latency.py --prs 5      # a smoke run

Goal (issue 14): final status p50 ≤ 3 s, p99 ≤ 6 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import components  # noqa: E402
from apply_vs_kubectl import app_docs, load_average  # noqa: E402
from receiver_vs_webhook import PrivateBroker  # noqa: E402
from webhook_to_applied import free_port, pct, wait_ready  # noqa: E402

from herald import config  # noqa: E402
from tests.fixtures_herald import (  # noqa: E402
    Repo,
    git,
    github_headers,
    github_pull_request,
    github_push,
    github_status_alert,
    taking_pull_requests,
    write_config,
)
from tests.gitforges import GitForges  # noqa: E402
from tests.kubeapi import KubeAPIServer  # noqa: E402

NAMESPACE = "bench-pr"
CONTEXT = "herald/plan: flux-system/app"


def manifests(apps: list[list[dict]], changed: int = -1, replicas: int = 2) -> dict[str, str]:
    files = {"deploy/00-namespace.yaml": yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": NAMESPACE}}),
             "deploy/zz-extra.yaml": yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                                      "metadata": {"name": "extra", "namespace": NAMESPACE},
                                                      "data": {"a": "b"}})}
    for i, docs in enumerate(apps):
        docs = json.loads(json.dumps(docs))
        if i == changed:
            docs[0]["data"]["PR"] = str(replicas)
            docs[2]["spec"]["replicas"] = replicas
        files[f"deploy/app-{i:04d}.yaml"] = yaml.safe_dump_all(docs, sort_keys=False)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prs", type=int, default=30)
    ap.add_argument("--min-gap", type=float, default=1.0)
    ap.add_argument("--max-gap", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-pr-"))
    bare, work = tmp / "remote.git", tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    git("remote", "add", "origin", str(bare), cwd=work)
    repo = Repo(bare, work)
    apps = [app_docs(i, NAMESPACE) for i in range(16)]
    repo.commit(manifests(apps), "50 objects")

    kube = KubeAPIServer().start()
    forges = GitForges().__enter__()
    forges.repos["github"].add("acme/app")
    cfg_path = taking_pull_requests(write_config(tmp / "herald.yaml", repo.url,
                                                 extra=github_status_alert(f"{forges.url}/acme/app")))
    loaded = config.load([cfg_path])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hook = base + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
    broker = PrivateBroker(tmp)
    env = dict(os.environ, KUBECONFIG=str(kube.write_kubeconfig(tmp / "kubeconfig")), HERALD_LOG_LEVEL="INFO",
               HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_BROKER_URL=f"{broker.url}/%2F",
               HERALD_INTERVAL_POLLING="false")
    procs = components.start(("receiver", "worker", "notifier"), cfg_path, env, tmp)
    session = requests.Session()

    def statuses(sha: str) -> list[dict]:
        return forges.statuses("github", "acme/app", sha)

    def wait(what: str, check, timeout: float = 120.0):  # noqa: ANN001, ANN202
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.01)
        logs = components.logs(procs, tmp)
        raise SystemExit(f"{what}: not within {timeout:.0f} s\n{logs}")

    results = []
    try:
        wait_ready(base)
        body = github_push(repo.head)
        assert session.post(hook, data=body, headers=github_headers(body, event="push"), timeout=30).status_code == 202
        wait("main deployed", lambda: [s for s in statuses(repo.head) if s["state"] == "success"])
        print(f"# 50 objects deployed from main; load average: {load_average()}", file=sys.stderr)
        rng = random.Random(args.seed)
        pending = []
        for n in range(1, args.prs + 1):
            git("checkout", "-q", "-B", f"pr-{n}", "main", cwd=work)
            for rel, text in manifests(apps, changed=n % len(apps), replicas=3 + n).items():
                (work / rel).write_text(text)
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", f"PR {n}", cwd=work)
            git("push", "-q", "-f", "origin", f"HEAD:refs/pull/{n}/head", cwd=work)
            head = git("rev-parse", "HEAD", cwd=work)
            git("checkout", "-q", "main", cwd=work)
            body = github_pull_request(repo.url, n, head, branch=f"pr-{n}")
            t0 = time.time()
            resp = session.post(hook, data=body, headers=github_headers(body, event="pull_request",
                                                                         delivery=str(uuid.uuid4())), timeout=30)
            t_202 = time.time()
            if resp.status_code != 202:
                raise SystemExit(f"PR {n}: the receiver answered {resp.status_code}: {resp.text[:300]}")
            pending.append((n, head, t0, t_202))
            time.sleep(rng.uniform(args.min_gap, args.max_gap))
        for n, head, t0, t_202 in pending:
            final = wait(f"PR {n}'s final status", lambda h=head: [s for s in statuses(h) if s["context"] == CONTEXT
                                                                   and s["state"] != "pending"])
            first_pending = next(s for s in statuses(head) if s["context"] == CONTEXT)
            comment = wait(f"PR {n}'s comment", lambda n=n, h=head: [c for c in forges.comments("github", "acme/app", n)
                                                                     if h[:12] in c["body"]])
            if final[0]["state"] != "success":
                raise SystemExit(f"PR {n}: {final[0]}")
            stamp = forges.written_at
            results.append({"accept": t_202 - t0, "pending": stamp[first_pending["id"]] - t_202,
                            "final": stamp[final[0]["id"]] - t_202, "comment": stamp[comment[0]["id"]] - t_202})
    finally:
        components.stop(procs)
        broker.stop()
        kube.stop()
        forges.__exit__(None, None, None)
        if args.keep:
            print(f"# kept {tmp}", file=sys.stderr)
    print(f"\n{len(results)} pull requests, one every {args.min_gap}–{args.max_gap} s, 50 objects, RabbitMQ, "
          "receiver / worker / notifier as separate processes\n")
    print("| from the 202 to | p50 | p90 | p99 | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, label in (("accept", "the 202 (POST → 202)"), ("pending", "pending check"),
                       ("final", "final check"), ("comment", "plan comment")):
        values = [r[key] for r in results]
        print(f"| {label} | {pct(values, 50):.2f} s | {pct(values, 90):.2f} s | {pct(values, 99):.2f} s | "
              f"{max(values):.2f} s |")


if __name__ == "__main__":
    main()
