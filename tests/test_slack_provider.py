"""The Slack provider against a local Slack that speaks the real wire formats (tests/slackapi.py)."""

from __future__ import annotations

import json
import logging
import socket

import pytest
import requests

from herald.messages import Event
from herald.model import Meta, Provider
from notifier.providers import slack
from notifier.providers.base import DeliveryError, Notification
from tests.slackapi import WEBHOOK_BOT, WEBHOOK_TEAM, SlackAPIServer

TOKEN = "xoxb-test"
SHA = "0123456789abcdef0123456789abcdef01234567"
REVISION = f"main@sha1:{SHA}"
CHANGES = "Deployment/default/web created\nService/default/web configured"


def note(
    severity: str = "info",
    message: str = CHANGES,
    summary: str = "",
    reason: str = "ReconciliationSucceeded",
    **metadata: str,
) -> Notification:
    event = Event.for_object(
        "Kustomization",
        "app",
        "default",
        severity=severity,
        reason=reason,
        message=message,
        metadata={"revision": REVISION, **metadata},
    )
    return Notification(event=event, alert="default/on-call", summary=summary)


def provider(address: str = "", channel: str = "general", timeout: float = 5.0) -> Provider:
    return Provider(
        meta=Meta(name="slack"), type="slack", address=address, channel=channel, username="herald", timeout=timeout
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

