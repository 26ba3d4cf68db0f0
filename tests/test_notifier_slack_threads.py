"""One Slack thread per object and revision, however its deliveries race.

After a Slack outage the retries of one revision's Progressing and Succeeded come due in the
same second (the backoff ladder rounds most of the jitter away) and are picked up by two
delivery threads, or two notifier replicas, at once. Each scenario here makes that race happen
every run: the local Slack holds the requests that arrive and lets them go together, as the end
of an outage does. Whatever wins, the channel must show one message for the revision, showing
its latest state, with the other event in its thread:
- two delivery threads of one notifier;
- a late Progressing racing a newer Succeeded to a parent that already exists;
- two notifier processes on one RabbitMQ vhost, and two on one state directory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from herald import config
from herald.bus import open_bus
from herald.messages import NOTIFY_QUEUE, Event
from notifier.worker import Notifier, NotifierSettings
from tests.fixtures_herald import start_herald, stop_herald, wait_until
from tests.slackapi import Held, SlackAPIServer

BOT_TOKEN = "xoxb-3333-4444-thread-race"
REVISION = "main@sha1:" + "c" * 40
GRACE = 1.0  # how long an unserialised second delivery would need, many times over, to reach Slack


def write_config(path: Path, slack: SlackAPIServer) -> Path:
    slack.tokens = {BOT_TOKEN}
    path.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: bot, namespace: flux-system}}
        stringData: {{token: {BOT_TOKEN}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: slack, namespace: flux-system}}
        spec: {{type: slack, channel: general, address: "{slack.post_message_url}", secretRef: {{name: bot}}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: deployments, namespace: flux-system}}
        spec:
          providerRef: {{name: slack}}
          eventSources: [{{kind: Kustomization, name: '*'}}]
        """))
    return path


def delivery(reason: str, at: str, severity: str = "info") -> bytes:
    """A delivery as the notifier's fan-out publishes it: one event for one (Alert, Provider)."""
    event = Event.for_object("Kustomization", "app", "shop", severity=severity, reason=reason,
                             message=f"{reason} at {at}", metadata={"revision": REVISION})
    event.timestamp = at
    return json.dumps({"alert": "flux-system/deployments", "provider": "flux-system/slack",
                       "event": event.to_dict()}).encode()


PROGRESSING = delivery("Progressing", "2026-11-21T10:00:01.000Z")
SUCCEEDED = delivery("ReconciliationSucceeded", "2026-11-21T10:00:09.000Z")


def leased(state_dir: Path) -> int:
    """Deliveries a consumer of the embedded bus holds right now."""
    with sqlite3.connect(state_dir / "bus.sqlite3") as db:
        row = db.execute("SELECT COUNT(*) FROM messages WHERE queue = ? AND dead = 0 AND leased_until > ?",
                         (NOTIFY_QUEUE, time.time())).fetchone()
    return int(row[0])


def release_together(slack: SlackAPIServer, both_taken: Callable[[], bool]) -> None:
    """Once both deliveries are being handled and one request waits at Slack, give the other
    time to get there too, then end the outage for everything at once."""
    wait_until(both_taken, 30, "both deliveries taken by the notifier")
    slack.wait_held(1, timeout=30)
    time.sleep(GRACE)
    slack.release()


def assert_one_parent_showing_succeeded(slack: SlackAPIServer) -> None:
    slack.wait_for(2, timeout=30)  # each delivery ends with one chat.postMessage: a parent or a reply
    time.sleep(0.3)
    shown = slack.channel_messages("general")
    assert len(shown) == 1, [m.content["text"] for m in shown]
    [parent] = shown
    assert "ReconciliationSucceeded" in parent.content["text"], parent.content["text"]
    assert len(slack.thread("general", parent.ts)) == 1


def run_notifier(tmp_path: Path, slack: SlackAPIServer, threads: int):
    cfg = config.load([write_config(tmp_path / "n.yaml", slack)])
    bus = open_bus(None, tmp_path / "state")
    stop = threading.Event()
    worker = threading.Thread(target=Notifier(cfg, bus, settings=NotifierSettings(threads=threads)).run,
                              args=(stop,))
    worker.start()
    return bus, stop, worker


def test_progressing_and_succeeded_released_together_make_one_parent_showing_succeeded(
        tmp_path: Path, slack_api: SlackAPIServer) -> None:
    """Issue 13 point 10 as it was seen: two delivery threads of one notifier each found no
    thread in memory and each posted a parent, and the channel kept a stale Progressing."""
    bus, stop, worker = run_notifier(tmp_path, slack_api, threads=2)
    try:
        slack_api.hold()  # Slack is down: both deliveries wait for it
        bus.publish(NOTIFY_QUEUE, PROGRESSING)
        bus.publish(NOTIFY_QUEUE, SUCCEEDED)
        release_together(slack_api, lambda: leased(tmp_path / "state") == 2)
        assert_one_parent_showing_succeeded(slack_api)
    finally:
        stop.set()
        worker.join(15)
        bus.close()


def test_a_late_progressing_never_turns_a_newer_parent_back(tmp_path: Path, slack_api: SlackAPIServer) -> None:
    """A failed reconcile is retried at the same revision: Progressing, then Succeeded. If both
    read the parent's state before either changed it, the later chat.update wins, even when it
    carries the older event, and the channel says Progressing for a deployment that is done."""
    bus, stop, worker = run_notifier(tmp_path, slack_api, threads=2)
    try:
        bus.publish(NOTIFY_QUEUE, delivery("ReconciliationFailed", "2026-11-21T09:59:50.000Z", "error"))
        slack_api.wait_for(1, timeout=10)
        wait_until(lambda: bus.depth(NOTIFY_QUEUE) == 0, 10, "the failure delivered")
        slack_api.hold("/api/chat.update")
        bus.publish(NOTIFY_QUEUE, PROGRESSING)
        bus.publish(NOTIFY_QUEUE, SUCCEEDED)
        wait_until(lambda: leased(tmp_path / "state") == 2, 30, "both deliveries taken")
        slack_api.wait_held(1, timeout=30)
        time.sleep(GRACE)

        def succeeded(held: Held) -> bool:
            return "ReconciliationSucceeded" in held.text

        # The newer update lands first when both are waiting: the older must not follow it.
        if slack_api.release(succeeded):
            wait_until(lambda: len(slack_api.updates) == 1, 10, "the newer update")
            time.sleep(0.3)
        slack_api.release()
        wait_until(lambda: bus.depth(NOTIFY_QUEUE) == 0, 30, "both delivered")
    finally:
        stop.set()
        worker.join(15)
        bus.close()
    [parent] = slack_api.channel_messages("general")
    assert "ReconciliationSucceeded" in parent.content["text"], parent.content["text"]
    assert parent.color == "good"


# -- replicas ---------------------------------------------------------------------------------


def two_notifiers(tmp_path: Path, slack: SlackAPIServer, *broker: str):
    cfg = write_config(tmp_path / "n.yaml", slack)
    env = dict(os.environ, HERALD_LOG_LEVEL="DEBUG", HERALD_STATE_DIR=str(tmp_path / "state"),
               HERALD_NOTIFY_THREADS="1")  # one delivery at a time each: the race is between processes
    env.pop("HERALD_BROKER_URL", None)
    return [start_herald("notifier", cfg, tmp_path / f"notifier-{i}.log", env, *broker) for i in (1, 2)]


def stop_all(tmp_path: Path, processes) -> None:
    codes = [stop_herald(p) for p in processes]
    logs = "\n".join((tmp_path / f"notifier-{i}.log").read_text()[-3000:] for i in (1, 2))
    assert codes == [0, 0], logs


def test_two_notifier_processes_on_one_rabbitmq_make_one_parent(
        tmp_path: Path, slack_api: SlackAPIServer, vhost_url: str) -> None:
    """Replicas share nothing but the broker: each takes one of the two deliveries (one at a
    time each), and only a claim both can see keeps the second from posting a parent too."""
    processes = two_notifiers(tmp_path, slack_api, "--broker", vhost_url)
    probe = QueueProbe(vhost_url, NOTIFY_QUEUE)
    bus = open_bus(vhost_url, tmp_path)
    try:
        wait_until(lambda: probe.count("consumer_count") == 2, 60, "both notifiers consuming")
        slack_api.hold()
        bus.publish(NOTIFY_QUEUE, PROGRESSING)
        bus.publish(NOTIFY_QUEUE, SUCCEEDED)
        release_together(slack_api, lambda: probe.count("message_count") == 0)
        assert_one_parent_showing_succeeded(slack_api)
    finally:
        slack_api.release()
        bus.close()
        probe.close()
        stop_all(tmp_path, processes)


class QueueProbe:
    """A queue's ready messages and consumers, as a passive declare tells them (-1: no queue yet)."""

    def __init__(self, url: str, queue: str) -> None:
        self.queue = queue
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

    def count(self, field: str) -> int:
        try:
            declared = self.channel.queue_declare(self.queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.connection.channel()
            return -1
        return int(getattr(declared.method, field))

    def close(self) -> None:
        self.connection.close()


def test_two_notifier_processes_on_one_state_directory_make_one_parent(
        tmp_path: Path, slack_api: SlackAPIServer) -> None:
    """The embedded bus lets several processes share a state directory (`herald serve` and a
    `herald notifier`, or two notifiers on one volume): the claim must hold across them too."""
    (tmp_path / "state").mkdir()
    open_bus(None, tmp_path / "state").close()  # the bus file exists before both start
    processes = two_notifiers(tmp_path, slack_api)
    bus = open_bus(None, tmp_path / "state")
    try:
        slack_api.hold()
        bus.publish(NOTIFY_QUEUE, PROGRESSING)
        bus.publish(NOTIFY_QUEUE, SUCCEEDED)
        release_together(slack_api, lambda: leased(tmp_path / "state") == 2)
        assert_one_parent_showing_succeeded(slack_api)
    finally:
        slack_api.release()
        bus.close()
        stop_all(tmp_path, processes)


@pytest.fixture(autouse=True)
def _never_leave_slack_holding(slack_api: SlackAPIServer):
    yield
    slack_api.release()
