"""How long from `git push` to the Slack message: the number Herald exists to make small.

Runs the real processes (`herald serve` on the embedded bus, or receiver + worker + notifier on
RabbitMQ) against the test Kubernetes and Slack API servers, makes N commits, sends each one's
signed push delivery, and measures
  - accept: POST → 202 (the broker has confirmed the request),
  - deployed: POST → the Slack message for that revision arrived (fetch, apply, event, notify).

    python bench/e2e_latency.py --bus embedded -n 30
    python bench/e2e_latency.py --bus rabbitmq -n 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from herald import config  # noqa: E402
from tests.fixtures_herald import github_headers, github_push, make_repo, write_config  # noqa: E402
from tests.kubeapi import KubeAPIServer  # noqa: E402
from tests.slackapi import SlackAPIServer  # noqa: E402
from tests.test_end_to_end import free_port, wait_ready  # noqa: E402

SLACK_TOKEN = "xoxb-bench"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bus", choices=("embedded", "rabbitmq"), default="embedded")
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    repo = make_repo(tmp)
    kube, slack = KubeAPIServer().start(), SlackAPIServer().start()
    slack.tokens, slack.channels = {SLACK_TOKEN}, {"general"}
    cfg = write_config(tmp / "herald.yaml", repo.url, slack_address=slack.post_message_url, slack_token=SLACK_TOKEN)
    loaded = config.load([cfg])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hook = base + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
    env = dict(os.environ, KUBECONFIG=str(kube.write_kubeconfig(tmp / "kubeconfig")), HERALD_LOG_LEVEL="WARNING",
               HERALD_STATE_DIR=str(tmp / "state"), HERALD_LISTEN=f"127.0.0.1:{port}")
    vhost = ""
    if args.bus == "rabbitmq":
        vhost = f"herald-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True)
        env["HERALD_BROKER_URL"] = f"{args.broker}/{vhost}"
        commands = ["receiver", "worker", "notifier"]
    else:
        env.pop("HERALD_BROKER_URL", None)
        commands = ["serve"]
    procs = [subprocess.Popen([sys.executable, "-m", "herald.cli", c, "-c", str(cfg)], env=env) for c in commands]
    accept, deployed = [], []
    try:
        wait_ready(base)
        session = requests.Session()
        for i in range(args.n):
            web = (repo.work / "deploy" / "web.yaml").read_text()
            sha = repo.commit({"deploy/web.yaml": web.replace(f"replicas: {i + 2}", f"replicas: {i + 3}")}, f"c{i}")
            body = github_push(sha)
            seen = len(slack.messages)
            t0 = time.perf_counter()
            resp = session.post(hook, data=body, headers=github_headers(body, delivery=str(uuid.uuid4())))
            accept.append(time.perf_counter() - t0)
            assert resp.status_code == 202, resp.text
            deadline = time.monotonic() + 30
            while not any(sha in m.body.get("text", "") for m in slack.messages[seen:]):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no Slack message for {sha} after 30 s")
                time.sleep(0.002)
            deployed.append(time.perf_counter() - t0)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        kube.stop()
        slack.stop()
        if vhost:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)

    def row(name: str, xs: list[float]) -> str:
        ms = [x * 1000 for x in xs]
        return (f"| {args.bus} | {name} | {len(ms)} | {statistics.median(ms):.1f} | {pct(ms, 95):.1f} | "
                f"{max(ms):.1f} |")

    print("| bus | measure | n | p50 ms | p95 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("POST → 202 (request confirmed)", accept))
    print(row("POST → Slack message (fetched, applied, announced)", deployed))


if __name__ == "__main__":
    main()
