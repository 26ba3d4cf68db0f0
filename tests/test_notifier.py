"""The notifier delivers routed events to Slack through the bus, retrying what can succeed."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from herald import config
from herald.bus import RetryPolicy, open_bus
from herald.messages import EVENTS_QUEUE, NOTIFY_QUEUE, Event
from notifier.worker import Notifier

BOT_TOKEN = "xoxb-1111-2222-notifier-test"


def write(path: Path, slack_url: str, webhook_url: str) -> Path:
    path.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: bot}}
        stringData: {{token: {BOT_TOKEN}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: hook}}
        stringData: {{address: "{webhook_url}"}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: bot}}
        spec: {{type: slack, channel: general, address: "{slack_url}", secretRef: {{name: bot}}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: hook}}
        spec: {{type: slack, secretRef: {{name: hook}}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: everything}}
        spec:
          providerRef: {{name: bot}}
          eventSources: [{{kind: Kustomization, name: '*'}}]
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: errors-to-webhook}}
        spec:
          providerRef: {{name: hook}}
          eventSeverity: error
          eventSources: [{{kind: Kustomization, name: app}}]
        """))
    return path


@pytest.fixture
def running(tmp_path: Path, slack_api):
    slack_api.tokens = {BOT_TOKEN}
    cfg = config.load([write(tmp_path / "n.yaml", slack_api.post_message_url, slack_api.webhook_url)])
    bus = open_bus(None, tmp_path / "state", retry=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=0.2))
    stop = threading.Event()
    t = threading.Thread(target=Notifier(cfg, bus).run, args=(stop,))
    t.start()
    yield bus, slack_api
    stop.set()
    t.join(timeout=10)
    bus.close()


def publish(bus, severity: str, message: str = "Deployment/shop/web configured") -> None:
    e = Event.for_object("Kustomization", "app", "default", severity=severity,
                         reason="ReconciliationSucceeded" if severity == "info" else "ReconciliationFailed",
                         message=message, metadata={"revision": "main@sha1:" + "b" * 40})
    bus.publish(EVENTS_QUEUE, e.to_json())


def test_info_goes_to_the_info_alert_only_and_errors_to_both(running) -> None:
    bus, slack = running
    publish(bus, "info")
    slack.wait_for(1, timeout=10)
    time.sleep(0.5)
    assert [m.path for m in slack.messages] == ["/api/chat.postMessage"]
    assert slack.messages[0].body["attachments"][0]["color"] == "good"

    publish(bus, "error", 'namespaces "nowhere" not found')
    slack.wait_for(3, timeout=10)
    paths = sorted(m.path for m in slack.messages[1:])
    assert paths == sorted(["/api/chat.postMessage", slack.webhook_path])
    assert all(m.body["attachments"][0]["color"] == "danger" for m in slack.messages[1:])


def test_a_slack_outage_is_retried_until_delivered(running) -> None:
    bus, slack = running
    slack.fail_next(status=503)
    publish(bus, "info")
    slack.wait_for(1, timeout=10)
    assert len([r for r in slack.requests if r.path == "/api/chat.postMessage"]) == 2


def test_a_refused_token_is_dead_lettered_with_slacks_error_and_no_token(running) -> None:
    bus, slack = running
    slack.tokens = {"xoxb-some-other-token"}
    publish(bus, "info")
    deadline = time.monotonic() + 10
    while not bus.dead_letters(NOTIFY_QUEUE) and time.monotonic() < deadline:
        time.sleep(0.1)
    [dead] = bus.dead_letters(NOTIFY_QUEUE)
    error = dead.headers["x-herald-error"]
    assert "invalid_auth" in error and BOT_TOKEN not in error
    assert len([r for r in slack.requests if r.path == "/api/chat.postMessage"]) == 1, "no retry on invalid_auth"
