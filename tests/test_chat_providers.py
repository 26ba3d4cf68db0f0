"""The msteams, discord, generic and generic-hmac providers, against local services that speak
the real wire formats (tests/chatapis.py): one scenario per test.

Logs are captured at DEBUG with urllib3 held at WARNING, as `herald.logs.setup` holds it in
every Herald process (urllib3's DEBUG lines print request paths, which for a webhook are the
credential); everything Herald's own code logs is checked for secrets.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from herald.messages import Event
from herald.model import Meta, Provider
from notifier.providers import discord, generic, msteams
from notifier.providers.base import DeliveryError, Notification, SendFn
from receiver.types.base import Keys
from receiver.types.generic_hmac import signature_matches
from tests.chatapis import (
    DiscordWebhooks,
    ForwardProxy,
    GenericReceiver,
    LocalAPI,
    TeamsWorkflow,
    card_problems,
    json_reply,
    text_reply,
)
from tests.smtpserver import Certificate, self_signed

SHA = "0123456789abcdef0123456789abcdef01234567"
REVISION = f"main@sha1:{SHA}"
CHANGES = "Deployment/default/web created\nService/default/web configured"
HMAC_TOKEN = "hmac-s3cr3t-token"


def note(severity: str = "info", message: str = CHANGES, *, summary: str = "", template: str = "",
         reason: str = "ReconciliationSucceeded", **metadata: str) -> Notification:
    event = Event.for_object("Kustomization", "app", "default", severity=severity, reason=reason, message=message,
                             metadata={"revision": REVISION, **metadata})
    return Notification(event=event, alert="default/on-call", summary=summary, message=template)


def provider(kind: str, *, address: str = "", username: str = "", proxy: str = "", timeout: float = 5.0) -> Provider:
    return Provider(meta=Meta(name=kind), type=kind, address=address, username=username, proxy=proxy,
                    timeout=timeout)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def failing(send: SendFn, prov: Provider, secret: dict[str, str], n: Notification | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        send(prov, secret, n or note())
    return caught.value


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="urllib3")  # as herald.logs.setup does
    return caplog


@pytest.fixture
def teams() -> Iterator[TeamsWorkflow]:
    with TeamsWorkflow() as server:
        yield server


@pytest.fixture
def discord_api() -> Iterator[DiscordWebhooks]:
    with DiscordWebhooks() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[GenericReceiver]:
    with GenericReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def certificate() -> Certificate:
    return self_signed()


# -- Microsoft Teams ------------------------------------------------------------------------


def test_teams_gets_an_adaptive_card_that_the_workflow_accepts_and_posts(teams: TeamsWorkflow) -> None:
    assert msteams.send(provider("msteams"), {"address": teams.webhook_url}, note(summary="Production EU")) is None

    [accepted] = teams.wait_for(1)
    assert accepted.status == 202 and accepted.reply == b""
    assert accepted.headers["content-type"] == "application/json"
    envelope = accepted.body
    assert envelope["type"] == "message"
    [attachment] = envelope["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None  # the workflow's trigger schema requires the key
    assert [run.error for run in teams.runs] == [""]  # the flow posted it: Teams could render it
    [card] = teams.cards
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    [container] = card["body"]
    texts = [item.get("text") for item in container["items"] if item["type"] == "TextBlock"]
    assert texts[0] == "Kustomization/default/app"
    assert texts[1] == "ReconciliationSucceeded · info"
    assert "Production EU" in texts
    assert CHANGES in texts
    assert "alert default/on-call" in texts[-1]


@pytest.mark.parametrize(("severity", "colour"), [("error", "attention"), ("info", "good")])
def test_teams_colours_the_card_by_severity(teams: TeamsWorkflow, severity: str, colour: str) -> None:
    msteams.send(provider("msteams"), {"address": teams.webhook_url}, note(severity))

    [card] = teams.cards
    [container] = card["body"]
    assert container["style"] == colour
    assert container["items"][0]["color"] == colour


def test_teams_shows_a_template_as_written_and_a_change_list_in_monospace() -> None:
    def message_block(n: Notification) -> dict[str, Any]:
        [container] = msteams.card(n)["body"]
        [block] = [i for i in container["items"] if i.get("text", "").startswith(("Deploy", "App"))]
        return block

    assert message_block(note())["fontType"] == "monospace"
    templated = message_block(note(template="App **web** is live"))
    assert templated["text"] == "App **web** is live" and "fontType" not in templated


def test_teams_facts_start_with_the_revision_and_leave_out_routing_hints(teams: TeamsWorkflow) -> None:
    n = note(summary="from the Alert", env="prod", cluster="eu-1", commit_status="update")
    msteams.send(provider("msteams"), {"address": teams.webhook_url}, n)

    [card] = teams.cards
    [facts] = [i for i in card["body"][0]["items"] if i["type"] == "FactSet"]
    assert facts["facts"] == [{"title": "revision", "value": REVISION}, {"title": "cluster", "value": "eu-1"},
                              {"title": "env", "value": "prod"}]


def test_teams_cuts_a_huge_event_to_a_card_teams_still_posts(teams: TeamsWorkflow) -> None:
    changes = "\n".join(f"ConfigMap/default/config-{i:04d} created" for i in range(3000))
    metadata = {f"key{i:02d}": "v" * 2000 for i in range(40)}
    msteams.send(provider("msteams"), {"address": teams.webhook_url}, note(message=changes, **metadata))

    assert [run.error for run in teams.runs] == [""]  # under Teams' 28 KB, every element valid
    [card] = teams.cards
    items = card["body"][0]["items"]
    [message] = [i for i in items if i.get("text", "").startswith("ConfigMap/")]
    kept = message["text"].count(" created")
    assert message["text"].endswith(f"… and {3000 - kept} more")
    [facts] = [i for i in items if i["type"] == "FactSet"]
    assert len(facts["facts"]) == 20 and facts["facts"][-1]["value"] == "22 more metadata entries"  # 41 facts, 19 kept


@pytest.mark.parametrize(("break_url", "status", "words"), [
    (lambda t: t.webhook_url.replace(t.sig, "forged-signature"), 401, "authorization signature is not valid"),
    (lambda t: t.webhook_url.split("&sig=")[0], 401, "authenticated only by Shared Access scheme"),
    (lambda t: t.webhook_url.replace(t.workflow_id, "0" * 32), 404, "could not be found"),
], ids=["forged-sig", "no-sig", "deleted-workflow"])
def test_teams_refusals_are_final_in_power_automates_words(
        teams: TeamsWorkflow, logs: pytest.LogCaptureFixture, break_url: Callable[[TeamsWorkflow], str],
        status: int, words: str) -> None:
    error = failing(msteams.send, provider("msteams"), {"address": break_url(teams)})

    assert not error.retryable
    assert f"HTTP {status}" in str(error) and words in str(error)
    assert str(error).startswith("msteams workflow on 127.0.0.1:")
    assert teams.sig not in str(error) and teams.sig not in logs.text
    assert teams.workflow_id not in str(error) and teams.workflow_id not in logs.text


def test_teams_throttling_is_retried_after_the_workflows_delay(teams: TeamsWorkflow) -> None:
    teams.throttle_next(retry_after=30)
    error = failing(msteams.send, provider("msteams"), {"address": teams.webhook_url})

    assert error.retryable and error.retry_after == 30.0
    assert "HTTP 429" in str(error) and "exceeded the limit" in str(error)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_teams_outages_are_retried(teams: TeamsWorkflow, status: int) -> None:
    teams.fail_next(text_reply(status, "<html><body>Service Unavailable</body></html>", "text/html"))
    error = failing(msteams.send, provider("msteams"), {"address": teams.webhook_url})
    assert error.retryable and f"HTTP {status}" in str(error)


def test_the_local_teams_workflow_checks_the_envelope_and_the_card(teams: TeamsWorkflow) -> None:
    """The fake refuses what Power Automate refuses, so the tests above mean something."""
    no_attachments = requests.post(teams.webhook_url, json={"type": "message", "text": "hi"}, timeout=5)
    assert no_attachments.status_code == 400
    assert no_attachments.json()["error"]["code"] == "TriggerInputSchemaMismatch"
    assert "attachments" in no_attachments.json()["error"]["message"]

    no_content_url = {"type": "message", "attachments": [{"contentType": msteams.CARD_CONTENT_TYPE, "content": {}}]}
    assert requests.post(teams.webhook_url, json=no_content_url, timeout=5).status_code == 400

    bad_card = msteams.payload(note())
    bad_card["attachments"][0]["content"]["body"][0]["items"].append({"type": "Marquee", "text": "x"})
    accepted = requests.post(teams.webhook_url, json=bad_card, timeout=5)
    assert accepted.status_code == 202  # the trigger accepts it; the flow run fails later
    assert "unknown element type 'Marquee'" in teams.runs[-1].error
    assert card_problems({"type": "AdaptiveCard", "version": "2.0", "body": []}) == [
        "version '2.0' is not supported by Teams"]


# -- Discord --------------------------------------------------------------------------------


def test_discord_gets_one_embed_and_returns_the_saved_message_id(discord_api: DiscordWebhooks) -> None:
    n = note("error", reason="ReconciliationFailed", summary="Production EU", env="prod")
    message_id = discord.send(provider("discord", username="herald"), {"address": discord_api.webhook_url}, n)

    [posted] = discord_api.wait_for(1)
    assert posted.request.query == {"wait": "true"}  # Discord confirms the message was saved
    assert posted.status == 200 and message_id == discord_api.messages[0]["id"]
    assert posted.body["username"] == "herald"
    [embed] = posted.body["embeds"]
    assert embed["title"] == "Kustomization/default/app: ReconciliationFailed"
    assert embed["color"] == 0xED4245
    assert embed["description"] == f"**Production EU**\n```\n{CHANGES}\n```"
    assert embed["fields"] == [
        {"name": "Revision", "value": "main@sha1:0123456789ab", "inline": True},
        {"name": "env", "value": "prod", "inline": True},
    ]
    assert embed["footer"] == {"text": "herald-reconciler · alert default/on-call"}
    assert embed["timestamp"] == n.event.timestamp


def test_discord_info_is_green_and_a_template_is_shown_as_written(discord_api: DiscordWebhooks) -> None:
    discord.send(provider("discord"), {"address": discord_api.webhook_url}, note(template="App **web** is live"))

    [posted] = discord_api.wait_for(1)
    assert "username" not in posted.body  # the webhook's own name, as set up in Discord
    [embed] = posted.body["embeds"]
    assert embed["color"] == 0x57F287
    assert embed["description"] == "App **web** is live"


def test_the_secrets_username_overrides_the_providers(discord_api: DiscordWebhooks) -> None:
    secret = {"address": discord_api.webhook_url, "username": "flux-eu"}
    discord.send(provider("discord", username="herald"), secret, note())
    assert discord_api.wait_for(1)[0].body["username"] == "flux-eu"


def test_a_huge_event_is_fitted_to_every_discord_limit(discord_api: DiscordWebhooks) -> None:
    changes = "\n".join(f"ConfigMap/default/config-{i:04d} created 🚀" for i in range(3000))
    metadata = {f"key{i:02d}-" + "k" * 300: "v" * 3000 for i in range(40)}
    n = note(message=changes, summary="s" * 1000, reason="R" * 400, **metadata)
    discord.send(provider("discord"), {"address": discord_api.webhook_url}, n)

    [posted] = discord_api.wait_for(1)  # the local Discord refuses anything over its limits
    [embed] = posted.body["embeds"]
    sizes = [embed["title"], embed["description"], embed["footer"]["text"]]
    sizes += [f[k] for f in embed["fields"] for k in ("name", "value")]
    assert sum(discord.units(s) for s in sizes) <= 6000
    assert len(embed["fields"]) <= 25 and embed["fields"][-1]["name"] == "…"
    assert embed["description"].endswith(" more\n```")


def test_discord_form_errors_are_final_and_name_the_field(discord_api: DiscordWebhooks) -> None:
    error = failing(discord.send, provider("discord", username="Discord Notifier"),
                    {"address": discord_api.webhook_url})

    assert not error.retryable
    assert str(error) == (f"discord webhook on {discord_api.url.removeprefix('http://')}: HTTP 400: "
                          'Invalid Form Body (code 50035): username: Username cannot contain "discord"')


@pytest.mark.parametrize(("break_it", "status", "words"), [
    (lambda d: setattr(d, "deleted", True) or d.webhook_url, 404, "Unknown Webhook (code 10015)"),
    (lambda d: d.webhook_url[:-6] + "AAAAAA", 401, "Invalid Webhook Token (code 50027)"),
], ids=["deleted", "wrong-token"])
def test_a_dead_discord_webhook_is_final_and_its_token_never_shown(
        discord_api: DiscordWebhooks, logs: pytest.LogCaptureFixture, break_it: Callable[[DiscordWebhooks], str],
        status: int, words: str) -> None:
    url = break_it(discord_api)
    error = failing(discord.send, provider("discord"), {"address": url})

    assert not error.retryable and error.status == status
    assert f"HTTP {status}: {words}" in str(error)
    token = url.rsplit("/", 1)[1]
    assert token not in str(error) and token not in logs.text


@pytest.mark.parametrize(("body_seconds", "header", "is_global", "expected"), [
    (2.5, None, False, 3.0),  # the header is rounded up: the later of the two wins
    (7.25, "7", False, 7.25),  # the body is more precise and later
    (0.4, "1", True, 1.0),
])
def test_discord_rate_limits_are_retried_after_the_longer_delay(
        discord_api: DiscordWebhooks, body_seconds: float, header: str | None, is_global: bool,
        expected: float) -> None:
    discord_api.rate_limit_next(body_seconds, header=header, is_global=is_global)
    error = failing(discord.send, provider("discord"), {"address": discord_api.webhook_url})

    assert error.retryable and error.retry_after == expected and error.status == 429
    assert "HTTP 429: You are being rate limited." in str(error)
    assert ("global rate limit" in str(error)) == is_global


@pytest.mark.parametrize("reply", [
    json_reply(500, {"message": "500: Internal Server Error", "code": 0}),
    text_reply(502, "<html><head><title>502 Bad Gateway</title></head></html>", "text/html"),
], ids=["500-json", "502-cloudflare"])
def test_discord_outages_are_retried(discord_api: DiscordWebhooks, reply) -> None:
    discord_api.fail_next(reply)
    error = failing(discord.send, provider("discord"), {"address": discord_api.webhook_url})
    assert error.retryable and f"HTTP {reply.status}" in str(error)


def test_wait_is_added_without_losing_a_thread_id() -> None:
    assert discord.with_wait("https://discord.com/api/webhooks/1/t") == "https://discord.com/api/webhooks/1/t?wait=true"
    assert (discord.with_wait("https://discord.com/api/webhooks/1/t?thread_id=9&wait=false")
            == "https://discord.com/api/webhooks/1/t?thread_id=9&wait=true")


def test_the_local_discord_refuses_what_discord_refuses(discord_api: DiscordWebhooks) -> None:
    url = discord_api.webhook_url
    empty = requests.post(url, json={}, timeout=5)
    assert (empty.status_code, empty.json()["code"]) == (400, 50006)

    too_big = {"embeds": [{"title": "t" * 257, "fields": [{"name": "n", "value": "v" * 1025}] * 26}]}
    refused = requests.post(url, json=too_big, timeout=5).json()
    assert refused["code"] == 50035 and refused["message"] == "Invalid Form Body"
    embed_errors = refused["errors"]["embeds"]["0"]
    assert embed_errors["title"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
    assert embed_errors["fields"]["_errors"][0]["message"] == "Must be 25 or fewer in length."
    assert embed_errors["fields"]["0"]["value"]["_errors"][0]["message"] == "Must be 1024 or fewer in length."

    total = {"embeds": [{"description": "d" * 4000, "fields": [{"name": "n", "value": "v" * 1000}] * 3}]}
    assert "MAX_EMBED_SIZE_EXCEEDED" in requests.post(url, json=total, timeout=5).text

    assert requests.post(url, json={"content": "hi"}, timeout=5).status_code == 204
    assert requests.post(url + "?wait=true", json={"content": "hi"}, timeout=5).json()["content"] == "hi"


# -- generic and generic-hmac ---------------------------------------------------------------


def test_generic_posts_fluxs_event_json(receiver: GenericReceiver) -> None:
    n = note(env="prod")
    assert generic.send(provider("generic"), {"address": receiver.webhook_url}, n) is None

    [posted] = receiver.wait_for(1)
    assert posted.request.raw == n.event.to_json()  # byte for byte
    assert posted.body == n.event.to_dict()
    assert posted.headers["content-type"] == "application/json"
    assert posted.headers["gotk-component"] == "herald-reconciler"
    assert "x-signature" not in posted.headers


def test_generic_sends_the_secrets_headers(logs: pytest.LogCaptureFixture) -> None:
    with GenericReceiver(required_headers={"Authorization": "Bearer hdr-s3cr3t", "X-Tenant": "eu"}) as server:
        secret = {"address": server.webhook_url, "headers": "Authorization: Bearer hdr-s3cr3t\nX-Tenant: eu\n"}
        generic.send(provider("generic"), secret, note())
        assert len(server.wait_for(1)) == 1

        server.fail_next(text_reply(401, "token Bearer hdr-s3cr3t is revoked"))  # a receiver that echoes
        error = failing(generic.send, provider("generic"), secret)
    assert not error.retryable and "HTTP 401" in str(error)
    assert "hdr-s3cr3t" not in str(error) and "hdr-s3cr3t" not in logs.text


def test_the_secrets_headers_may_replace_the_defaults(receiver: GenericReceiver) -> None:
    secret = {"address": receiver.webhook_url, "headers": "content-type: application/json; charset=utf-8"}
    generic.send(provider("generic"), secret, note())
    assert receiver.wait_for(1)[0].headers["content-type"] == "application/json; charset=utf-8"


def test_generic_hmac_signs_the_exact_body_as_flux_documents() -> None:
    n = note("error", reason="ReconciliationFailed")
    with GenericReceiver(hmac_key=HMAC_TOKEN) as server:  # checks with hashlib, as Flux's docs do
        generic.send_hmac(provider("generic-hmac"), {"address": server.webhook_url, "token": HMAC_TOKEN}, n)
        [posted] = server.wait_for(1)

    signature = posted.headers["x-signature"]
    assert signature == generic.signature(n.event.to_json(), HMAC_TOKEN)
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    # ...and Herald's own generic-hmac Receiver accepts it, so one Herald can notify another.
    assert signature_matches({"X-Signature": signature}, posted.request.raw, Keys.of(HMAC_TOKEN))


def test_generic_hmac_without_a_token_sends_nothing(receiver: GenericReceiver) -> None:
    error = failing(generic.send_hmac, provider("generic-hmac"), {"address": receiver.webhook_url})
    assert not error.retryable and "token" in str(error)
    assert receiver.requests == []


def test_generic_hmac_with_the_wrong_token_is_refused_for_good(logs: pytest.LogCaptureFixture) -> None:
    with GenericReceiver(hmac_key=HMAC_TOKEN) as server:
        error = failing(generic.send_hmac, provider("generic-hmac"),
                        {"address": server.webhook_url, "token": "old-rotated-token"})
    assert not error.retryable
    assert "HTTP 401: failed to verify HMAC signature" in str(error)
    assert "old-rotated-token" not in str(error) and "old-rotated-token" not in logs.text


def test_the_secrets_address_overrides_the_providers(receiver: GenericReceiver) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}/hook"
    generic.send(provider("generic", address=nowhere), {"address": receiver.webhook_url}, note())
    assert len(receiver.wait_for(1)) == 1


@pytest.mark.parametrize("headers", [
    "Authorization: [unclosed s3cr3t",
    "- Authorization\n- s3cr3t",
    "Bad Name: s3cr3t",
    "Authorization: {nested: s3cr3t}",
    'Authorization: "s3cr3t\\r\\nX-Injected: 1"',
], ids=["not-yaml", "a-list", "bad-name", "nested", "line-break"])
def test_malformed_secret_headers_are_a_configuration_error(receiver: GenericReceiver, headers: str) -> None:
    error = failing(generic.send, provider("generic"), {"address": receiver.webhook_url, "headers": headers})
    assert not error.retryable and "headers" in str(error)
    assert "s3cr3t" not in str(error)
    assert receiver.requests == []


def test_a_generic_receiver_outage_is_retried_after_its_delay(receiver: GenericReceiver) -> None:
    receiver.fail_next(text_reply(503, "maintenance", **{"Retry-After": "12"}))
    error = failing(generic.send, provider("generic"), {"address": receiver.webhook_url})
    assert error.retryable and error.retry_after == 12.0 and "HTTP 503: maintenance" in str(error)


# -- what every HTTP provider does alike ----------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One provider type, the local service it talks to, and what must never be shown."""

    send: SendFn
    service: Callable[..., LocalAPI]
    secret: Callable[[Any], dict[str, str]]
    credentials: Callable[[Any], list[str]]


CASES = {
    "msteams": Case(msteams.send, TeamsWorkflow, lambda s: {"address": s.webhook_url}, lambda s: [s.sig]),
    "discord": Case(discord.send, DiscordWebhooks, lambda s: {"address": s.webhook_url}, lambda s: [s.token]),
    "generic": Case(generic.send, GenericReceiver, lambda s: {"address": s.webhook_url},
                    lambda s: [s.path.rsplit("/", 1)[1]]),
    "generic-hmac": Case(generic.send_hmac, lambda **kw: GenericReceiver(hmac_key=HMAC_TOKEN, **kw),
                         lambda s: {"address": s.webhook_url, "token": HMAC_TOKEN},
                         lambda s: [s.path.rsplit("/", 1)[1], HMAC_TOKEN]),
}
each_provider = pytest.mark.parametrize("kind", list(CASES))


@each_provider
def test_every_provider_trusts_the_secrets_ca_crt_over_https(kind: str, certificate: Certificate,
                                                              logs: pytest.LogCaptureFixture) -> None:
    case = CASES[kind]
    with case.service(certificate=certificate) as service:
        assert service.url.startswith("https://")
        untrusted = failing(case.send, provider(kind), case.secret(service))
        assert untrusted.retryable and "ca.crt" in str(untrusted)  # http.py reads TLS failures as outages
        assert service.requests == []

        case.send(provider(kind), {**case.secret(service), "ca.crt": certificate.cert_pem}, note())
        assert len(service.wait_for(1)) == 1
    for credential in case.credentials(service):
        assert credential not in str(untrusted) and credential not in logs.text


@each_provider
@pytest.mark.parametrize("where", ["provider", "secret"])
def test_every_provider_goes_through_the_configured_proxy(kind: str, where: str) -> None:
    case = CASES[kind]
    with case.service() as service, ForwardProxy() as proxy:
        secret = case.secret(service)
        if where == "secret":  # the Secret's proxy overrides the Provider's, as in Flux
            secret["proxy"] = proxy.url
            prov = provider(kind, proxy=f"http://127.0.0.1:{closed_port()}")
        else:
            prov = provider(kind, proxy=proxy.url)
        case.send(prov, secret, note())
        assert len(service.wait_for(1)) == 1
    assert len(proxy.seen) == 1 and proxy.seen[0].startswith(service.url)


@each_provider
def test_an_unreachable_service_is_retried_and_its_url_never_shown(kind: str, logs: pytest.LogCaptureFixture) -> None:
    case = CASES[kind]
    with case.service() as service:
        secret = case.secret(service)
    secret["address"] = secret["address"].replace(service.url, f"http://127.0.0.1:{closed_port()}")
    error = failing(case.send, provider(kind), secret)

    assert error.retryable and "connection failed" in str(error)
    assert str(error).startswith(f"{kind} ")
    for credential in case.credentials(service):
        assert credential not in str(error) and credential not in logs.text


@each_provider
def test_a_slow_service_times_out_and_is_retried(kind: str) -> None:
    case = CASES[kind]
    with case.service() as service:
        service.fail_next(text_reply(200, "ok"), delay=1.0)
        error = failing(case.send, provider(kind, timeout=0.2), case.secret(service))
    assert error.retryable and "timed out" in str(error)


@each_provider
@pytest.mark.parametrize("address", ["", "discord.com/api/webhooks/1/s3cr3t", "ftp://example.com/s3cr3t"])
def test_a_missing_or_non_http_address_is_a_configuration_error(kind: str, address: str) -> None:
    case = CASES[kind]
    secret = {"token": HMAC_TOKEN, **({"address": address} if address else {})}
    error = failing(case.send, provider(kind), secret)
    assert not error.retryable and "s3cr3t" not in str(error)


@each_provider
def test_no_error_or_log_line_shows_a_credential(kind: str, logs: pytest.LogCaptureFixture) -> None:
    """Every answer a service can give, and the Secret's values never in what Herald says."""
    case = CASES[kind]
    errors: list[str] = []
    with case.service() as service:
        secret = case.secret(service)
        echo = " ".join([secret["address"], *case.credentials(service)])  # a service that quotes the request
        for reply in (json_reply(400, {"message": echo, "error": {"message": echo}}), text_reply(403, echo),
                      text_reply(429, echo, **{"Retry-After": "1"}), text_reply(500, echo)):
            service.fail_next(reply)
            errors.append(str(failing(case.send, provider(kind), secret)))
        case.send(provider(kind), secret, note())
    said = "\n".join(errors) + "\n" + logs.text
    assert "127.0.0.1" in said
    for credential in [*case.credentials(service), service.url + "/"]:
        assert credential not in said
    assert json.dumps(secret["address"])[1:-1] not in said
