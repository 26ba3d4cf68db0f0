"""The Slack provider against a local Slack that speaks the real wire formats (tests/slackapi.py)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from herald.messages import Event
from herald.model import Meta, Provider
from notifier.providers import slack
from notifier.providers.base import DeliveryError, DictMemory, Memory, Notification
from tests.slackapi import WEBHOOK_BOT, WEBHOOK_TEAM, SlackAPIServer

TOKEN = "xoxb-test"
SHA = "0123456789abcdef0123456789abcdef01234567"
REVISION = f"main@sha1:{SHA}"
NEXT_REVISION = "main@sha1:" + "f" * 40
CHANGES = "Deployment/default/web created\nService/default/web configured"
THREAD_KEY = f"slack:thread:default/slack:general:default/on-call:Kustomization/default/app:{REVISION}"


def note(
    severity: str = "info",
    message: str = CHANGES,
    summary: str = "",
    reason: str = "ReconciliationSucceeded",
    *,
    revision: str = REVISION,
    memory: Memory | None = None,
    text: str = "",
    at: str = "",
    alert: str = "default/on-call",
    **metadata: str,
) -> Notification:
    """An event on its way; `text` is a template's output, `at` the event's timestamp."""
    event = Event.for_object(
        "Kustomization",
        "app",
        "default",
        severity=severity,
        reason=reason,
        message=message,
        metadata={"revision": revision, **metadata} if revision else metadata,
    )
    if at:
        event.timestamp = at
    return Notification(event=event, alert=alert, summary=summary, message=text, memory=memory or DictMemory())


def provider(
    address: str = "", channel: str = "general", timeout: float = 5.0, proxy: str = ""
) -> Provider:
    return Provider(
        meta=Meta(name="slack"), type="slack", address=address, channel=channel, username="herald", timeout=timeout,
        proxy=proxy,
    )


def attachment_text(body: dict) -> str:
    """Every text in the attachment's blocks, to look for what a reader would see."""
    return json.dumps(body["attachments"][0]["blocks"], ensure_ascii=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_failing(prov: Provider, secret: dict[str, str], n: Notification | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        slack.send(prov, secret, n or note())
    return caught.value


class SharedMemory(DictMemory):
    """A Memory over a store that outlives it, as the notifier's does: a new SharedMemory over
    the same dict is what a restarted notifier (or another replica) sees."""

    def __init__(self, store: dict[str, str]) -> None:
        super().__init__()
        self.data = store


class BrokenMemory(DictMemory):
    """A Memory whose store cannot be read or written, though its claim can be taken (a state
    file that fails to read while its lock works)."""

    def get(self, key: str) -> str | None:
        raise ConnectionError("state store unavailable")

    def put(self, key: str, value: str) -> None:
        raise ConnectionError("state store unavailable")


class UnclaimableMemory(DictMemory):
    """A Memory whose claims cannot be taken: its broker is away."""

    def hold(self, key: str, timeout: float) -> AbstractContextManager[None]:
        raise ConnectionError("broker unavailable")


class ForwardProxy:
    """An HTTP proxy for http:// addresses only (no CONNECT): it forwards absolute-URI requests
    and records them, which is enough to see that a provider goes through the proxy it is given."""

    _HOP = frozenset({"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "trailers",
                      "transfer-encoding", "upgrade", "content-length"})

    def __init__(self) -> None:
        self.seen: list[str] = []  # the absolute URLs asked for
        self.proxy_auth: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                proxy.seen.append(self.path)
                proxy.proxy_auth.append(self.headers.get("Proxy-Authorization", ""))
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if target.scheme != "http" or not target.hostname:
                    self.send_error(400, "absolute http:// URLs only")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ForwardProxy._HOP}
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
                try:
                    upstream.request("POST", target.path + (f"?{target.query}" if target.query else ""), body, headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ForwardProxy._HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._thread.join()
        self._http.server_close()


@pytest.fixture
def forward_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)  # only the proxy a test names is in play
    with ForwardProxy() as proxy:
        yield proxy


# -- bot token: chat.postMessage ------------------------------------------------------------


def test_a_bot_token_posts_to_chat_postmessage_with_bearer_auth(slack_api: SlackAPIServer) -> None:
    ts = slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, note())

    [posted] = slack_api.wait_for(1)
    assert posted.path == "/api/chat.postMessage"
    assert posted.headers["authorization"] == f"Bearer {TOKEN}"
    assert posted.headers["content-type"].startswith("application/json")
    assert posted.body["channel"] == "general"
    assert posted.body["username"] == "herald"
    assert posted.body["text"] == f"Kustomization/default/app: ReconciliationSucceeded at {REVISION}"
    assert posted.body["attachments"][0]["color"] == "good"
    shown = attachment_text(posted.body)
    assert "Deployment/default/web created\\nService/default/web configured" in shown
    assert "main@sha1:0123456789ab" in shown
    assert "default/on-call" in shown
    assert ts and ts.count(".") == 1


def test_error_events_are_coloured_danger(slack_api: SlackAPIServer) -> None:
    failed = note("error", "kustomize build failed: accumulating resources", reason="BuildFailed")
    slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, failed)

    [posted] = slack_api.wait_for(1)
    assert posted.body["attachments"][0]["color"] == "danger"
    assert "BuildFailed" in posted.body["text"]
    assert "kustomize build failed" in attachment_text(posted.body)


def test_the_secret_address_overrides_the_providers(slack_api: SlackAPIServer) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}/api/chat.postMessage"
    slack.send(provider(nowhere), {"token": TOKEN, "address": slack_api.post_message_url}, note())
    assert len(slack_api.wait_for(1)) == 1


def test_summary_revision_link_and_metadata_fields(slack_api: SlackAPIServer) -> None:
    n = note(summary="Production <eu>", source_url="https://github.com/acme/app.git", env="prod", commit_status="update")
    slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, n)

    [posted] = slack_api.wait_for(1)
    blocks = posted.body["attachments"][0]["blocks"]
    assert blocks[0]["text"]["text"] == "*Production &lt;eu&gt;*"
    fields = [f["text"] for f in blocks[2]["fields"]]
    assert fields == [
        f"*Revision*\n<https://github.com/acme/app/commit/{SHA}|main@sha1:0123456789ab>",
        "*env*\nprod",
    ]
    assert blocks[-1]["type"] == "context"


@pytest.mark.parametrize(
    ("source_url", "link"),
    [
        ("https://gitlab.example.com/acme/app", f"https://gitlab.example.com/acme/app/-/commit/{SHA}"),
        ("http://github.com/acme/app", ""),  # not https
        ("https://git.example.com/acme/app", ""),  # a forge whose commit URLs are unknown
    ],
)
def test_the_revision_links_only_to_known_https_forges(source_url: str, link: str) -> None:
    _, attachment = slack.render(note(source_url=source_url))
    revision = attachment["blocks"][1]["fields"][0]["text"]
    assert revision == (f"*Revision*\n<{link}|main@sha1:0123456789ab>" if link else "*Revision*\n`main@sha1:0123456789ab`")


def test_slack_markup_in_event_text_is_escaped(slack_api: SlackAPIServer) -> None:
    n = note(message="ConfigMap/default/a&b created <!channel>", reason="Progressing<>")
    slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, n)

    [posted] = slack_api.wait_for(1)
    assert "Progressing&lt;&gt;" in posted.body["text"]
    assert "ConfigMap/default/a&amp;b created &lt;!channel&gt;" in attachment_text(posted.body)
    assert "<!channel>" not in json.dumps(posted.body)


def test_a_long_change_list_is_cut_to_whole_lines_that_slack_accepts(slack_api: SlackAPIServer) -> None:
    changes = "\n".join(f"ConfigMap/default/config-{i:04d} created" for i in range(2000))
    many_fields = {f"key{i:02d}": "v" * 3000 for i in range(12)}
    slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, note(message=changes, **many_fields))

    [posted] = slack_api.wait_for(1)  # the local Slack rejects blocks over Slack's limits
    text = posted.body["attachments"][0]["blocks"][0]["text"]["text"]
    assert len(text) <= 3000
    assert text.startswith("```ConfigMap/default/config-0000 created\n")
    assert text.endswith(" more```")
    kept = text.count(" created")
    assert f"… and {2000 - kept} more" in text


def test_one_huge_line_is_clipped(slack_api: SlackAPIServer) -> None:
    slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, note(message="x<" * 5000))
    [posted] = slack_api.wait_for(1)
    text = posted.body["attachments"][0]["blocks"][0]["text"]["text"]
    assert len(text) <= 3000
    assert text.endswith("…```") and "&l…" not in text


def test_an_invalid_token_is_not_retried_and_not_shown(slack_api: SlackAPIServer) -> None:
    token = "xoxb-1234-revoked-secret"
    error = send_failing(provider(slack_api.post_message_url), {"token": token})

    assert not error.retryable
    assert "invalid_auth" in str(error)
    assert token not in str(error)
    assert slack_api.messages == []
    assert [r.error for r in slack_api.requests] == ["invalid_auth"]


@pytest.mark.parametrize(("channel", "code"), [("nope", "channel_not_found"), ("old", "is_archived")])
def test_channel_errors_are_not_retried(slack_api: SlackAPIServer, channel: str, code: str) -> None:
    slack_api.channels.add("old")
    slack_api.archived.add("old")
    error = send_failing(provider(slack_api.post_message_url, channel=channel), {"token": TOKEN})

    assert not error.retryable
    assert code in str(error) and repr(channel) in str(error)


def test_a_token_without_a_channel_is_a_configuration_error(slack_api: SlackAPIServer) -> None:
    error = send_failing(provider(slack_api.post_message_url, channel=""), {"token": TOKEN})
    assert not error.retryable
    assert "channel" in str(error)
    assert slack_api.requests == []


def test_a_token_needs_a_chat_postmessage_address(slack_api: SlackAPIServer) -> None:
    error = send_failing(provider(slack_api.webhook_url), {"token": TOKEN})
    assert not error.retryable
    assert "chat.postMessage" in str(error)
    assert slack_api.webhook_path not in str(error)


def test_a_rate_limit_is_retried_after_slacks_delay(slack_api: SlackAPIServer) -> None:
    slack_api.fail_next(429, retry_after=3)
    error = send_failing(provider(slack_api.post_message_url), {"token": TOKEN})

    assert error.retryable
    assert error.retry_after == 3.0
    assert "ratelimited" in str(error)
    assert len(slack_api.requests) == 1  # slack-sdk's own retries are off: the caller backs off


def test_a_server_error_is_retried(slack_api: SlackAPIServer) -> None:
    slack_api.fail_next(500)
    error = send_failing(provider(slack_api.post_message_url), {"token": TOKEN})
    assert error.retryable
    assert "HTTP 500" in str(error)
    assert "html" not in str(error).lower()


def test_a_timeout_is_retried(slack_api: SlackAPIServer) -> None:
    slack_api.fail_next(200, delay=1.0)
    error = send_failing(provider(slack_api.post_message_url, timeout=0.2), {"token": TOKEN})
    assert error.retryable


def test_slack_down_is_retried_and_the_token_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    address = f"http://127.0.0.1:{closed_port()}/api/chat.postMessage"
    error = send_failing(provider(address), {"token": TOKEN})

    assert error.retryable
    assert "refused" in str(error).lower()
    assert TOKEN not in caplog.text


# -- threads: one per object and revision ---------------------------------------------------


def calls(slack_api: SlackAPIServer) -> list[str]:
    """The Web API calls made, in order, with a reply marked as such."""
    return [
        ("reply" if r.body and r.body.get("thread_ts") else "post") if r.path.endswith("postMessage") else "update"
        for r in slack_api.requests
    ]


def test_progressing_then_succeeded_updates_one_parent_and_replies_in_its_thread(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    progressing = note(reason="Progressing", message="Deployment/default/web configured", memory=memory,
                       at="2026-11-21T10:00:00.100Z")
    succeeded = note(reason="ReconciliationSucceeded", message="Health check passed", memory=memory,
                     at="2026-11-21T10:00:20.300Z")

    parent_ts = slack.send(prov, secret, progressing)
    reply_ts = slack.send(prov, secret, succeeded)

    assert calls(slack_api) == ["post", "update", "reply"]
    [parent] = slack_api.channel_messages("general")  # one message in the channel
    assert parent.ts == parent_ts and parent.edits == 1
    assert "ReconciliationSucceeded" in parent.content["text"]  # the latest state...
    assert "Health check passed" in json.dumps(parent.content["attachments"])
    assert parent.content["username"] == "herald"  # chat.update keeps who posted it
    [reply] = slack_api.thread("general", parent_ts)  # ...and the history in its thread
    assert reply.ts == reply_ts != parent_ts
    assert "Health check passed" in json.dumps(reply.content) and not reply.broadcast
    assert json.loads(memory.data[THREAD_KEY]) == {
        "channel": slack_api.channel_id("general"),  # the ID: chat.update takes no names
        "ts": parent_ts,
        "shown": "2026-11-21T10:00:20.300Z",  # the event the parent shows now
        "reason": "ReconciliationSucceeded",
    }


def test_a_failure_turns_the_parent_red_and_is_broadcast_to_the_channel(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    parent_ts = slack.send(prov, secret, note(reason="Progressing", memory=memory))
    slack.send(prov, secret, note("error", "apply failed: webhook denied", reason="ReconciliationFailed",
                                  memory=memory))

    parent = slack_api.message("general", parent_ts)
    assert parent.color == "danger"
    [failure] = slack_api.thread("general", parent_ts)
    assert failure.broadcast and failure.color == "danger"
    shown = slack_api.channel_messages("general")
    assert [m.ts for m in shown] == [parent_ts, failure.ts]  # not hidden in the thread


def test_a_new_revision_starts_a_new_thread(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    first = slack.send(prov, secret, note(memory=memory))
    second = slack.send(prov, secret, note(revision=NEXT_REVISION, memory=memory))

    assert calls(slack_api) == ["post", "post"]
    assert [m.ts for m in slack_api.channel_messages("general")] == [first, second]
    assert len(memory.data) == 2


def test_each_alert_keeps_its_own_thread(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    slack.send(prov, secret, note(memory=memory, alert="default/all"))
    slack.send(prov, secret, note(memory=memory, alert="default/prod", summary="Production"))
    assert calls(slack_api) == ["post", "post"]


def test_the_thread_survives_a_notifier_restart(slack_api: SlackAPIServer) -> None:
    store: dict[str, str] = {}  # what the notifier's state directory or broker keeps
    prov, secret = provider(slack_api.post_message_url), {"token": TOKEN}
    parent_ts = slack.send(prov, secret, note(reason="Progressing", memory=SharedMemory(store)))

    after_restart = SharedMemory(store)  # a new process: nothing in common but the store
    slack.send(prov, secret, note(memory=after_restart))

    assert calls(slack_api) == ["post", "update", "reply"]
    assert len(slack_api.thread("general", parent_ts)) == 1


def test_events_without_a_revision_are_not_threaded(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    for _ in range(2):
        slack.send(prov, secret, note("error", "git fetch failed", reason="GitOperationFailed", revision="",
                                      memory=memory))
    assert calls(slack_api) == ["post", "post"]
    assert memory.data == {}


def test_a_deleted_parent_starts_a_new_thread_and_no_reply_is_lost(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    old = slack.send(prov, secret, note(reason="Progressing", memory=memory))
    slack_api.delete("general", old)

    new = slack.send(prov, secret, note(memory=memory))
    slack.send(prov, secret, note(reason="ReconciliationSucceeded", message="again", memory=memory))

    assert calls(slack_api) == ["post", "update", "post", "update", "reply"]
    assert [r.error for r in slack_api.requests] == ["", "message_not_found", "", "", ""]
    assert json.loads(memory.data[THREAD_KEY])["ts"] == new != old
    assert len(slack_api.thread("general", new)) == 1
    assert slack_api.lost == []


@pytest.mark.parametrize("gone", ["another app's message", "an unknown channel"])
def test_a_remembered_parent_that_cannot_be_updated_starts_a_new_thread(slack_api: SlackAPIServer, gone: str) -> None:
    slack_api.tokens.add("xoxb-other-app")
    theirs = requests.post(slack_api.post_message_url, json={"channel": "general", "text": "theirs"},
                           headers={"Authorization": "Bearer xoxb-other-app"}, timeout=5).json()
    channel = theirs["channel"] if gone == "another app's message" else "C0GONE0000"
    memory = DictMemory()
    memory.put(THREAD_KEY, slack.Thread(channel, theirs["ts"]).dump())

    ts = slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, note(memory=memory))

    assert [r.error for r in slack_api.requests[1:]] == [
        "cant_update_message" if gone == "another app's message" else "channel_not_found", ""
    ]
    assert calls(slack_api)[1:] == ["update", "post"]
    assert json.loads(memory.data[THREAD_KEY])["ts"] == ts


@pytest.mark.parametrize("value", ["", "not json", "[]", '{"channel": "C1"}', '{"channel": 1, "ts": "2"}'])
def test_an_unreadable_memory_value_starts_a_new_thread(slack_api: SlackAPIServer, value: str) -> None:
    memory = DictMemory()
    memory.put(THREAD_KEY, value)
    ts = slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, note(memory=memory))
    assert calls(slack_api) == ["post"]
    assert json.loads(memory.data[THREAD_KEY])["ts"] == ts


def test_a_parent_past_the_edit_window_still_gets_replies(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    first = note(reason="Progressing", memory=memory)
    parent_ts = slack.send(prov, secret, first)
    slack_api.edit_window = 0  # the workspace forbids edits

    slack.send(prov, secret, note(memory=memory))

    assert [r.error for r in slack_api.requests] == ["", "edit_window_closed", ""]
    assert slack_api.message("general", parent_ts).edits == 0
    assert len(slack_api.thread("general", parent_ts)) == 1
    assert json.loads(memory.data[THREAD_KEY])["shown"] == first.event.timestamp


def test_a_locked_thread_starts_a_new_one(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    old = slack.send(prov, secret, note(reason="Progressing", memory=memory))
    slack_api.lock("general", old)

    new = slack.send(prov, secret, note(memory=memory))

    assert [r.error for r in slack_api.requests] == ["", "", "restricted_action_thread_locked", ""]
    assert json.loads(memory.data[THREAD_KEY])["ts"] == new != old


def test_a_late_event_joins_the_thread_without_turning_the_parent_back(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    parent_ts = slack.send(prov, secret, note(reason="ReconciliationSucceeded", at="2026-11-21T10:00:05.000Z",
                                              memory=memory))
    slack.send(prov, secret, note(reason="Progressing", at="2026-11-21T10:00:01.000Z", memory=memory))

    assert calls(slack_api) == ["post", "reply"]
    assert "ReconciliationSucceeded" in slack_api.message("general", parent_ts).content["text"]
    assert json.loads(memory.data[THREAD_KEY])["shown"] == "2026-11-21T10:00:05.000Z"


def test_at_the_same_instant_progressing_never_replaces_the_outcome_on_the_parent(slack_api: SlackAPIServer) -> None:
    """Timestamps tie (a reconcile that ends within its clock's resolution): Progressing is the
    earlier state of the two, so it joins the thread and the parent keeps the outcome."""
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    at = "2026-11-21T10:00:05.000Z"
    parent_ts = slack.send(prov, secret, note(reason="ReconciliationSucceeded", at=at, memory=memory))
    slack.send(prov, secret, note(reason="Progressing", at=at, memory=memory))

    assert calls(slack_api) == ["post", "reply"]
    assert "ReconciliationSucceeded" in slack_api.message("general", parent_ts).content["text"]


def test_a_thread_held_by_another_delivery_too_long_is_retried_not_posted_alongside(
        slack_api: SlackAPIServer) -> None:
    """The other delivery of this thread may still be waiting on Slack: posting now could make
    a second parent, so this one is tried again later."""
    memory, prov = DictMemory(), provider(slack_api.post_message_url, timeout=0.1)
    first = note(reason="Progressing", memory=memory)
    with memory.hold(THREAD_KEY, 1):  # another delivery thread holds it throughout
        error = send_failing(prov, {"token": TOKEN}, first)
    assert error.retryable and "still in progress" in str(error)
    assert slack_api.requests == []


def test_a_thread_whose_claim_cannot_be_taken_is_retried_not_posted(slack_api: SlackAPIServer) -> None:
    """A broker away for the claim is away for the delivery's own ack too: a post now would be
    sent again on redelivery, or start a second parent beside another replica's."""
    error = send_failing(provider(slack_api.post_message_url), {"token": TOKEN}, note(memory=UnclaimableMemory()))
    assert error.retryable and "cannot be claimed" in str(error)
    assert slack_api.requests == []


def test_a_rate_limited_update_is_retried_after_slacks_delay_and_then_completes(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    parent_ts = slack.send(prov, secret, note(reason="Progressing", memory=memory))
    slack_api.fail_next(429, retry_after=4, path="/api/chat.update")
    succeeded = note(memory=memory)

    error = send_failing(prov, secret, succeeded)
    assert error.retryable and error.retry_after == 4.0
    assert "chat.update" in str(error) and "ratelimited" in str(error)
    assert slack_api.thread("general", parent_ts) == []

    slack.send(prov, secret, succeeded)  # the delivery loop's retry
    assert len(slack_api.thread("general", parent_ts)) == 1


def test_a_failed_reply_is_retried_without_a_second_thread(slack_api: SlackAPIServer) -> None:
    memory, prov, secret = DictMemory(), provider(slack_api.post_message_url), {"token": TOKEN}
    parent_ts = slack.send(prov, secret, note(reason="Progressing", memory=memory))
    slack_api.fail_next(503, path="/api/chat.postMessage")
    succeeded = note(memory=memory)

    assert send_failing(prov, secret, succeeded).retryable
    slack.send(prov, secret, succeeded)

    assert [m.ts for m in slack_api.channel_messages("general")] == [parent_ts]
    assert len(slack_api.thread("general", parent_ts)) == 1
    assert slack_api.message("general", parent_ts).edits == 2  # the update ran twice, harmlessly


def test_a_refused_update_is_reported_like_a_refused_post(slack_api: SlackAPIServer) -> None:
    memory, prov = DictMemory(), provider(slack_api.post_message_url)
    slack.send(prov, {"token": TOKEN}, note(reason="Progressing", memory=memory))
    slack_api.tokens = {"xoxb-rotated"}

    error = send_failing(prov, {"token": TOKEN}, note(memory=memory))
    assert not error.retryable
    assert "chat.update" in str(error) and "invalid_auth" in str(error) and TOKEN not in str(error)


def test_a_memory_outage_costs_the_thread_not_the_message(
    slack_api: SlackAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    n = note(memory=BrokenMemory())
    assert slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, n)
    assert calls(slack_api) == ["post"]
    assert "memory" in caplog.text and TOKEN not in caplog.text


def test_the_message_shows_the_notifications_text(slack_api: SlackAPIServer) -> None:
    templated = note(text="Deployed *app* to <prod> & friends", summary="Production")
    slack.send(provider(slack_api.post_message_url), {"token": TOKEN}, templated)

    [posted] = slack_api.wait_for(1)
    blocks = posted.body["attachments"][0]["blocks"]
    assert blocks[1]["text"]["text"] == "Deployed *app* to &lt;prod&gt; &amp; friends"  # prose, not a code block
    assert "Deployment/default/web created" not in attachment_text(posted.body)


def test_without_a_template_the_text_is_the_change_list_in_monospace() -> None:
    """The notifier passes the event's own message as the text when no template applies."""
    _, attachment = slack.render(note(text=CHANGES))
    assert attachment["blocks"][0]["text"]["text"] == f"```{CHANGES}```"


# -- incoming webhooks -----------------------------------------------------------------------


def test_without_a_token_the_secret_address_is_an_incoming_webhook(slack_api: SlackAPIServer) -> None:
    assert slack.send(provider(), {"address": slack_api.webhook_url}, note("error")) is None

    [posted] = slack_api.wait_for(1)
    assert posted.path == slack_api.webhook_path
    assert "authorization" not in posted.headers
    assert posted.body["attachments"][0]["color"] == "danger"
    assert posted.body["channel"] == "general"  # honoured by legacy webhooks, as Flux sends it
    assert REVISION in posted.body["text"]
    assert "Service/default/web configured" in attachment_text(posted.body)


def test_the_providers_address_serves_as_webhook_without_a_secret(slack_api: SlackAPIServer) -> None:
    slack.send(provider(slack_api.webhook_url), {}, note())
    assert len(slack_api.wait_for(1)) == 1


@pytest.mark.parametrize(
    ("break_it", "status", "code"),
    [
        (lambda srv: srv.webhook_url.replace(WEBHOOK_TEAM, "T0OTHER999"), 404, "no_service"),
        (lambda srv: srv.webhook_url[:-4] + "AAAA", 403, "invalid_token"),
        (lambda srv: srv.archived.add("general") or srv.webhook_url, 410, "channel_is_archived"),
    ],
)
def test_webhook_refusals_are_not_retried_and_hide_the_url(
    slack_api: SlackAPIServer, caplog: pytest.LogCaptureFixture, break_it, status: int, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url = break_it(slack_api)
    error = send_failing(provider(), {"address": url})

    assert not error.retryable
    assert f"HTTP {status} {code}" in str(error)
    assert "127.0.0.1" in str(error)
    secret_part = url.split(f"/{WEBHOOK_BOT}/")[-1]
    assert secret_part not in str(error) and secret_part not in caplog.text


@pytest.mark.parametrize(("status", "retry_after"), [(429, 2.0), (500, None), (503, None)])
def test_webhook_outages_are_retried(slack_api: SlackAPIServer, status: int, retry_after: float | None) -> None:
    slack_api.fail_next(status, retry_after=retry_after)
    error = send_failing(provider(), {"address": slack_api.webhook_url})
    assert error.retryable
    assert error.retry_after == retry_after


def test_an_unreachable_webhook_is_retried_and_its_url_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_path = "/services/T0HERALD01/B0HERALD01/s3cr3tw3bh00kt0k3n"
    error = send_failing(provider(), {"address": f"http://127.0.0.1:{closed_port()}{secret_path}"})

    assert error.retryable
    assert "s3cr3t" not in str(error) and "s3cr3t" not in caplog.text


@pytest.mark.parametrize("address", ["", "hooks.slack.com/services/T/B/s3cr3t", "ftp://x/s3cr3t"])
def test_a_missing_or_malformed_webhook_address_is_a_configuration_error(address: str) -> None:
    error = send_failing(provider(), {"address": address} if address else {})
    assert not error.retryable
    assert "s3cr3t" not in str(error)


def test_webhooks_cannot_thread_and_keep_posting_plain_messages(slack_api: SlackAPIServer) -> None:
    memory = DictMemory()
    for reason in ("ReconciliationFailed", "ReconciliationSucceeded"):
        assert slack.send(provider(), {"address": slack_api.webhook_url}, note(reason=reason, memory=memory)) is None

    assert [m.path for m in slack_api.wait_for(2)] == [slack_api.webhook_path] * 2
    assert all("thread_ts" not in m.body for m in slack_api.messages)
    assert memory.data == {}


# -- proxies and private CAs -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["provider", "secret"])
def test_the_web_api_goes_through_the_configured_proxy(
    slack_api: SlackAPIServer, forward_proxy: ForwardProxy, where: str
) -> None:
    secret = {"token": TOKEN, **({"proxy": forward_proxy.url} if where == "secret" else {})}
    prov = provider(slack_api.post_message_url, proxy=forward_proxy.url if where == "provider" else "")
    memory = DictMemory()
    slack.send(prov, secret, note(reason="Progressing", memory=memory))
    slack.send(prov, secret, note(memory=memory))

    assert forward_proxy.seen == [slack_api.post_message_url, slack_api.update_url, slack_api.post_message_url]
    assert calls(slack_api) == ["post", "update", "reply"]


def test_the_secrets_proxy_wins_over_the_providers(slack_api: SlackAPIServer, forward_proxy: ForwardProxy) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    slack.send(provider(slack_api.post_message_url, proxy=nowhere), {"token": TOKEN, "proxy": forward_proxy.url},
               note())
    assert forward_proxy.seen == [slack_api.post_message_url]


def test_a_webhook_goes_through_the_configured_proxy(slack_api: SlackAPIServer, forward_proxy: ForwardProxy) -> None:
    slack.send(provider(proxy=forward_proxy.url), {"address": slack_api.webhook_url}, note())
    assert forward_proxy.seen == [slack_api.webhook_url]
    assert len(slack_api.wait_for(1)) == 1


def test_an_unreachable_proxy_is_retried_and_its_password_never_shown(
    forward_proxy: ForwardProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = f"http://herald:pr0xyp4ss@127.0.0.1:{closed_port()}"
    error = send_failing(provider("http://slack.invalid/api/chat.postMessage"), {"token": TOKEN, "proxy": proxy})
    assert error.retryable
    assert "pr0xyp4ss" not in str(error) and "pr0xyp4ss" not in caplog.text and TOKEN not in caplog.text


def test_the_secrets_ca_is_trusted_for_an_https_slack(slack_api_tls: SlackAPIServer, slack_ca: str) -> None:
    assert slack_api_tls.post_message_url.startswith("https://127.0.0.1:")
    memory, prov = DictMemory(), provider(slack_api_tls.post_message_url)
    parent_ts = slack.send(prov, {"token": TOKEN, "ca.crt": slack_ca}, note(reason="Progressing", memory=memory))
    slack.send(prov, {"token": TOKEN, "ca.crt": slack_ca}, note(memory=memory))

    assert calls(slack_api_tls) == ["post", "update", "reply"]
    assert len(slack_api_tls.thread("general", parent_ts)) == 1


def test_the_secrets_ca_is_trusted_for_an_https_webhook(slack_api_tls: SlackAPIServer, slack_ca: str) -> None:
    slack.send(provider(), {"address": slack_api_tls.webhook_url, "ca.crt": slack_ca}, note())
    assert len(slack_api_tls.wait_for(1)) == 1


@pytest.mark.parametrize("kind", ["token", "webhook"])
def test_an_untrusted_certificate_is_retried_with_a_hint(
    slack_api_tls: SlackAPIServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = {"token": TOKEN} if kind == "token" else {"address": slack_api_tls.webhook_url}
    error = send_failing(provider(slack_api_tls.post_message_url), secret)

    assert error.retryable
    assert "TLS verification failed" in str(error) and "ca.crt" in str(error)
    assert TOKEN not in str(error) and slack_api_tls.webhook_path not in str(error)
    assert slack_api_tls.webhook_path not in caplog.text
    assert slack_api_tls.requests == []


def test_a_ca_crt_that_is_not_pem_is_a_configuration_error(slack_api_tls: SlackAPIServer) -> None:
    error = send_failing(provider(slack_api_tls.post_message_url), {"token": TOKEN, "ca.crt": "not a certificate"})
    assert not error.retryable
    assert "ca.crt" in str(error) and TOKEN not in str(error)


# -- the local Slack itself ------------------------------------------------------------------


def test_the_local_slack_answers_like_slack(slack_api: SlackAPIServer) -> None:
    api = slack_api.post_message_url
    no_auth = requests.post(api, json={"channel": "general", "text": "hi"}, timeout=5)
    assert no_auth.status_code == 200
    assert no_auth.headers["Content-Type"] == "application/json; charset=utf-8"
    assert no_auth.json() == {"ok": False, "error": "not_authed"}

    bad = requests.post(api, json={"channel": "general", "text": "hi"}, headers={"Authorization": "Bearer x"}, timeout=5)
    assert (bad.status_code, bad.json()["error"]) == (200, "invalid_auth")

    form = requests.post(api, data={"token": TOKEN, "channel": "general", "text": "hi"}, timeout=5)
    assert form.json()["ok"] is True and form.json()["message"]["text"] == "hi"

    empty = requests.post(api, json={"channel": "C123"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert empty.json()["error"] == "no_text"

    too_long = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    blocks = requests.post(
        api, json={"channel": "C123", "blocks": [too_long]}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert blocks.json()["error"] == "invalid_blocks"

    slack_api.fail_next(429, retry_after=7)
    limited = requests.post(api, json={}, timeout=5)
    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["error"]) == (429, "7", "ratelimited")

    hook = slack_api.webhook_url
    assert (requests.post(hook, json={"text": "hi"}, timeout=5).text) == "ok"
    garbled = requests.post(hook, data=b"{", headers={"Content-Type": "application/json"}, timeout=5)
    assert (garbled.status_code, garbled.text) == (400, "invalid_payload")
    assert requests.post(hook, json={}, timeout=5).text == "no_text"

    assert [m.body.get("text") for m in slack_api.wait_for(2)] == ["hi", "hi"]


def test_the_local_slack_waits_for_messages_posted_later(slack_api: SlackAPIServer) -> None:
    with pytest.raises(TimeoutError):
        slack_api.wait_for(1, timeout=0.1)



def test_the_local_slack_updates_messages_as_slack_documents(slack_api: SlackAPIServer) -> None:
    api, update = slack_api.post_message_url, slack_api.update_url
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first = {"color": "good", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "first"}}]}
    posted = requests.post(api, json={"channel": "general", "text": "v1", "attachments": [first]}, headers=auth,
                           timeout=5).json()
    cid, ts = posted["channel"], posted["ts"]
    assert cid == slack_api.channel_id("general") != "general"

    def call(headers: dict[str, str] = auth, **args: Any) -> dict[str, Any]:
        return requests.post(update, json=args, headers=headers, timeout=5).json()

    assert call(headers={}, channel=cid, ts=ts, text="x")["error"] == "not_authed"
    assert call(headers={"Authorization": "Bearer xoxb-nope"}, channel=cid, ts=ts, text="x")["error"] == "invalid_auth"
    assert call(channel="general", ts=ts, text="x")["error"] == "channel_not_found"  # names are not IDs
    assert call(channel=cid, ts="1.000001", text="x")["error"] == "message_not_found"
    assert call(channel=cid, ts=ts)["error"] == "no_text"
    assert call(channel=cid, ts=ts, text="x" * 4001)["error"] == "msg_too_long"

    done = call(channel=cid, ts=ts, text="v2")  # attachments not given: kept, as documented
    assert done["ok"] is True and (done["channel"], done["ts"], done["text"]) == (cid, ts, "v2")
    assert slack_api.message("general", ts).content == {"text": "v2", "attachments": [first]}
    assert slack_api.message("general", ts).edits == 1 and len(slack_api.updates) == 1

    slack_api.tokens.add("xoxb-other-app")
    assert call(headers={"Authorization": "Bearer xoxb-other-app"}, channel=cid, ts=ts, text="x")["error"] == (
        "cant_update_message"
    )
    slack_api.edit_window = 0
    assert call(channel=cid, ts=ts, text="x")["error"] == "edit_window_closed"
    slack_api.edit_window = None
    slack_api.delete("general", ts)
    assert call(channel=cid, ts=ts, text="x")["error"] == "message_not_found"
    slack_api.archived.add("general")
    assert call(channel=cid, ts=ts, text="x")["error"] == "is_inactive"

    slack_api.fail_next(429, retry_after=5, path="/api/chat.update")
    limited = requests.post(update, json={}, headers=auth, timeout=5)
    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["error"]) == (429, "5", "ratelimited")


def test_the_local_slack_threads_replies_as_slack_does(slack_api: SlackAPIServer) -> None:
    api, auth = slack_api.post_message_url, {"Authorization": f"Bearer {TOKEN}"}

    def post(**args: Any) -> dict[str, Any]:
        return requests.post(api, json={"channel": "general", **args}, headers=auth, timeout=5).json()

    parent = post(text="parent")["ts"]
    quiet = post(text="in the thread", thread_ts=parent)
    loud = post(text="everyone sees this", thread_ts=parent, reply_broadcast=True)
    assert quiet["message"]["thread_ts"] == loud["message"]["thread_ts"] == parent
    nested = post(text="reply to a reply", thread_ts=quiet["ts"])  # Slack threads it under the parent
    assert [m.content["text"] for m in slack_api.thread("general", parent)] == [
        "in the thread", "everyone sees this", "reply to a reply"
    ]
    assert [m.content["text"] for m in slack_api.channel_messages("general")] == ["parent", "everyone sees this"]
    assert nested["message"]["thread_ts"] == parent

    # An unknown thread_ts is answered ok, and the reply is shown nowhere: Slack's behaviour.
    lost = post(text="into the void", thread_ts="1600000000.000100")
    assert lost["ok"] is True and lost["ts"]
    assert [r.body["text"] for r in slack_api.lost] == ["into the void"]
    assert "into the void" not in json.dumps([m.content for m in slack_api.store.values()])

    slack_api.lock("general", parent)
    assert post(text="too late", thread_ts=parent)["error"] == "restricted_action_thread_locked"
    assert post(text="a new top-level message")["ok"] is True


def test_a_webhook_posts_only_outcomes_since_it_cannot_update_a_progressing_message(slack_api) -> None:
    hook = provider(address=slack_api.webhook_url, channel="")
    assert slack.send(hook, {}, note(reason="Progressing", message="Reconciliation in progress")) is None
    slack.send(hook, {}, note())
    [posted] = slack_api.wait_for(1)
    assert "ReconciliationSucceeded" in posted.body["text"]
