"""One signed GitHub push travels end to end, with every part real and in its own process:

    curl-like POST → herald receiver → bus → herald worker → Kubernetes API → event →
    herald notifier → Slack chat.postMessage

once on RabbitMQ (three processes, as in production) and once on the embedded bus
(`herald serve`, as on a laptop).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
import requests

from herald import config
from tests.fixtures_herald import (
    FIXTURES,
    TOKEN,
    Repo,
    free_port,
    github_headers,
    github_push,
    start_herald,
    stop_herald,
    wait_ready,
    wait_until,
    write_config,
)

SLACK_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"


@contextmanager
def herald(command: str, cfg: Path, tmp: Path, env: dict[str, str], *extra: str) -> Iterator[Path]:
    """Run one `herald` command as its own process; yield the path of its log."""
    log = tmp / f"{command}-{uuid.uuid4().hex[:6]}.log"
    proc = start_herald(command, cfg, log, env, *extra)
    try:
        yield log
    finally:
        stop_herald(proc)
    assert proc.returncode == 0, f"herald {command} did not exit cleanly on SIGTERM ({proc.returncode}) {proc.returncode}:\n{log.read_text()}"


@pytest.fixture
def scenario(tmp_path: Path, repo: Repo, kube_api, kubeconfig: Path, slack_api):
    cfg = write_config(tmp_path / "herald.yaml", repo.url,
                       slack_address=f"{slack_api.url}/api/chat.postMessage", slack_token=SLACK_TOKEN)
    slack_api.tokens = {SLACK_TOKEN}
    slack_api.channels = {"general"}
    loaded = config.load([cfg])
    port = free_port()
    # No start-up reconcile: the scenario follows one push and counts what it made.
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERALD_LOG_LEVEL="INFO",
               HERALD_STATE_DIR=str(tmp_path / "state"), HERALD_LISTEN=f"127.0.0.1:{port}",
               HERALD_STARTUP_RECONCILE="false")
    env.pop("HERALD_BROKER_URL", None)
    hook_url = f"http://127.0.0.1:{port}" + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
    return cfg, env, f"http://127.0.0.1:{port}", hook_url


def send_bad_signature_and_ping(hook_url: str, repo: Repo) -> None:
    body = github_push(repo.head)
    bad = requests.post(hook_url, data=body, headers=github_headers(body, token="not-the-token"), timeout=10)
    assert bad.status_code == 401
    assert TOKEN not in bad.text and github_headers(body)["X-Hub-Signature-256"] not in bad.text
    ping = (FIXTURES / "github" / "ping.json").read_bytes()
    pong = requests.post(hook_url, data=ping, headers=github_headers(ping, event="ping"), timeout=10)
    assert pong.status_code == 200


def push_and_follow_it(hook_url: str, repo: Repo, kube_api, slack_api, delivery: str = "") -> None:
    body = github_push(repo.head)
    resp = requests.post(hook_url, data=body, headers=github_headers(body, delivery=delivery), timeout=10)
    assert resp.status_code == 202, resp.text
    assert len(resp.json()["requests"]) == 1

    deployment = wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web"), 30,
                            "the Deployment to be applied")
    assert ("herald", "Apply") in [(f["manager"], f["operation"]) for f in deployment["metadata"]["managedFields"]]
    assert kube_api.get_object("v1", "Service", "shop", "web") is not None

    revision = f"main@sha1:{repo.head}"
    # A Progressing message opens the object's thread; the outcome follows in it.
    message = wait_until(lambda: next((m for m in slack_api.messages if m.path == "/api/chat.postMessage"
                                       and "ReconciliationSucceeded" in m.body["text"]), None),
                         30, "the Slack message")
    assert message.path == "/api/chat.postMessage"
    assert message.headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    parent = slack_api.messages[0]
    assert parent.body["channel"] == "general" and "Progressing" in parent.body["text"]
    assert message.body.get("thread_ts"), "the outcome is posted in the Progressing message's thread"
    assert revision in message.body["text"]
    assert "Deployment/shop/web created" in str(message.body["attachments"])


def test_push_travels_end_to_end_on_rabbitmq(scenario, repo: Repo, kube_api, slack_api, vhost_url: str,
                                             tmp_path: Path) -> None:
    cfg, env, base_url, hook_url = scenario
    env = dict(env, HERALD_LOG_FORMAT="json")
    delivery = str(uuid.uuid4())
    broker = vhost_url
    with herald("receiver", cfg, tmp_path, env, "--broker", broker) as receiver_log:
        wait_ready(base_url)
        send_bad_signature_and_ping(hook_url, repo)
        assert queue_depth(broker, "herald.reconcile") == 0, "401 and ping must publish nothing"
        worker_ops, notifier_ops = free_port(), free_port()
        with herald("worker", cfg, tmp_path, env, "--broker", broker,
                    "--metrics-listen", f"127.0.0.1:{worker_ops}") as worker_log, \
                herald("notifier", cfg, tmp_path, env, "--broker", broker,
                       "--metrics-listen", f"127.0.0.1:{notifier_ops}") as notifier_log:
            wait_ready(f"http://127.0.0.1:{worker_ops}")
            wait_ready(f"http://127.0.0.1:{notifier_ops}")
            push_and_follow_it(hook_url, repo, kube_api, slack_api, delivery=delivery)
            wait_until(lambda: "delivered" in notifier_log.read_text(), 10, "the notifier's log line")
            worker_metrics = requests.get(f"http://127.0.0.1:{worker_ops}/metrics", timeout=5).text
            notifier_metrics = requests.get(f"http://127.0.0.1:{notifier_ops}/metrics", timeout=5).text
    logs = "".join(p.read_text() for p in (receiver_log, worker_log, notifier_log))
    assert TOKEN not in logs and SLACK_TOKEN not in logs
    # One grep for the delivery id follows the push through all three processes' JSON logs.
    for log_file, says in ((receiver_log, "published"), (worker_log, "fetched"), (notifier_log, "delivered")):
        lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
        assert any(line.get("correlation_id") == delivery and says in line["message"] for line in lines), \
            (log_file.name, says)
    assert ('herald_reconciles_total{name="app",namespace="flux-system",reason="ReconciliationSucceeded"} 1.0'
            in worker_metrics)
    assert 'herald_queue_lag_seconds_count{queue="herald.reconcile"}' in worker_metrics
    assert 'herald_notifications_total{provider="flux-system/slack",result="delivered",type="slack"}' \
        in notifier_metrics
    assert queue_depth(broker, "herald.reconcile") == 0 and queue_depth(broker, "herald.events") == 0


def queue_depth(broker: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(broker))
    try:
        ch = conn.channel()
        try:
            return ch.queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            return 0  # never declared: nothing was ever published to it
    finally:
        if conn.is_open:
            conn.close()


def test_push_travels_end_to_end_on_the_embedded_bus(scenario, repo: Repo, kube_api, slack_api,
                                                    tmp_path: Path) -> None:
    cfg, env, base_url, hook_url = scenario
    with herald("serve", cfg, tmp_path, env) as log:
        wait_ready(base_url)
        send_bad_signature_and_ping(hook_url, repo)
        push_and_follow_it(hook_url, repo, kube_api, slack_api)
        wait_until(lambda: "delivered" in log.read_text(), 10, "the notifier's log line")
    text = log.read_text()
    assert TOKEN not in text and SLACK_TOKEN not in text
    assert "signature or token missing or invalid (401)" in text and "ping answered" in text
    assert text.count(": fetched main@sha1:") == 1, "only the push may reach the reconciler"
