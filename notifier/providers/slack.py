"""Slack: a bot token posts with chat.postMessage; without one, the address is an incoming webhook.

As in Flux, the Secret's `token` selects the Web API (the address is then the full method URL,
Slack's own by default, so GovSlack or a test server only change the address) and the Secret's
`address` overrides the Provider's. Both paths go through slack-sdk.

The message is Flux's coloured attachment (`good`/`danger`) carrying Block Kit: the change list
as monospace text, the revision linked to its commit where the repository is known, the other
metadata as fields. The top-level `text` is the one-line headline that notifications and
screen readers use.

Secrets: a webhook URL is a credential, so messages and logs name only its host, and slack-sdk's
own log lines (which print request URLs) are kept back.
"""

from __future__ import annotations

import http.client
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from herald.messages import SEVERITY_ERROR, Event
from herald.model import Provider
from notifier.providers.base import DeliveryError, Notification

DEFAULT_ADDRESS = "https://slack.com/api/chat.postMessage"
SOURCE_URL_KEY = "source_url"
"""Event metadata naming the https URL of the revision's repository, used to link the commit."""

_METHOD = "chat.postMessage"
_COLORS = {SEVERITY_ERROR: "danger"}  # anything else is "good", as Flux colours it
_HIDDEN_METADATA = {"revision", SOURCE_URL_KEY, "commit_status"}  # shown otherwise, or routing hints

# Block Kit limits: a section's text, one of its fields, and how many fields one section holds.
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_FIELDS_PER_SECTION = 10

# Errors Slack documents as failures on its side: trying again later can succeed.
_SLACK_SIDE = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_HINTS = {
    "not_authed": "the Secret's token was not sent",
    "invalid_auth": "Slack rejected the Secret's token",
    "token_revoked": "the Secret's token was revoked",
    "account_inactive": "the token's app or workspace was deactivated",
    "missing_scope": "the token lacks the chat:write scope",
    "not_in_channel": "invite the app to the channel",
    "is_archived": "the channel is archived",
    "channel_not_found": "no such channel, or the app cannot see it",
    "no_service": "the webhook was removed or disabled",
    "invalid_token": "the webhook URL's token is wrong",
    "channel_is_archived": "the webhook's channel is archived",
}
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")  # anything else in a body is not Slack's and not shown
_HEX_TAIL = re.compile(r"(sha\d+:[0-9a-f]{12})[0-9a-f]+")
_COMMIT = re.compile(r"sha1:([0-9a-f]{40})")
_NOT_IN_LINK = re.compile(r"[\s<>|]")

log = logging.getLogger(__name__)

# slack-sdk logs each request's URL at DEBUG and a retried request's URL at INFO; for a webhook
# that URL is the credential. Its failures reach the caller as DeliveryError anyway.
_SDK_LOG = logging.getLogger(f"{__name__}.sdk")
_SDK_LOG.setLevel(logging.CRITICAL)


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str | None:
    """Post the notification; returns the message's `ts` with a bot token (to thread replies)."""
    text, attachment = render(note)
    if secret.get("token"):
        return _post_message(provider, secret, text, attachment)
    _post_webhook(provider, secret, text, attachment)
    return None


def render(note: Notification) -> tuple[str, dict[str, Any]]:
    """The headline text and the coloured attachment; Slack-compatible providers may reuse it."""
    event = note.event
    headline = f"{event.object_ref}: {event.reason}"
    if event.revision:
        headline += f" at {event.revision}"
    blocks: list[dict[str, Any]] = []
    if note.summary:
        blocks.append(_section(f"*{_clip(_escape(note.summary), _SECTION_MAX - 2)}*"))
    if event.message.strip():
        blocks.append(_section(_change_list(event.message)))
    fields = _fields(event)
    for start in range(0, len(fields), _FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + _FIELDS_PER_SECTION]})
    footer = " · ".join(x for x in (event.reportingController, f"alert {note.alert}", event.timestamp) if x)
    blocks.append({"type": "context", "elements": [_mrkdwn(_escape(footer))]})
    attachment = {"color": _COLORS.get(event.severity, "good"), "blocks": blocks}
    return _escape(headline), attachment


def _post_message(provider: Provider, secret: dict[str, str], text: str, attachment: dict[str, Any]) -> str:
    address = secret.get("address") or provider.address or DEFAULT_ADDRESS
    where = f"slack {_METHOD} on {_host(address)}"
    if not provider.channel:
        raise DeliveryError(f"{where}: a bot token needs the Provider's spec.channel", retryable=False)
    if not address.endswith(f"/{_METHOD}"):
        raise DeliveryError(f"{where}: with a token, the address must end in /{_METHOD}", retryable=False)
    token = secret["token"]
    client = WebClient(
        token=token,
        base_url=address.removesuffix(_METHOD),
        timeout=provider.timeout,  # type: ignore[arg-type]  # urllib takes float seconds
        proxy=provider.proxy or None,
        logger=_SDK_LOG,
        retry_handlers=[],  # the delivery loop owns retries and their backoff
    )
    try:
        response = client.chat_postMessage(
            channel=provider.channel,
            username=provider.username or None,
            text=text,
            attachments=[attachment],
        )
    except SlackApiError as exc:
        raise _api_failure(where, exc.response, provider.channel) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _network_failure(where, exc, (token,)) from None
    log.debug("%s: posted to %s", where, provider.channel)
    return str(response.get("ts", ""))


def _post_webhook(provider: Provider, secret: dict[str, str], text: str, attachment: dict[str, Any]) -> None:
    url = secret.get("address") or provider.address
    if not url:
        raise DeliveryError("slack: no token and no webhook address in the Provider or its Secret", retryable=False)
    where = f"slack webhook on {_host(url)}"
    client = WebhookClient(
        url,
        timeout=provider.timeout,  # type: ignore[arg-type]
        proxy=provider.proxy or None,
        logger=_SDK_LOG,
        retry_handlers=[],
    )
    # Legacy webhooks honour channel and username, as Flux sends them; app webhooks ignore them.
    body = {
        "text": text,
        "attachments": [attachment],
        "channel": provider.channel or None,
        "username": provider.username or None,
    }
    try:
        response = client.send_dict(body)
    except (OSError, http.client.HTTPException) as exc:
        raise _network_failure(where, exc, (url, urlsplit(url).path)) from None
    if response.status_code != 200:
        raise _failure(where, response.status_code, _error_code(response.body), response.headers)
    log.debug("%s: posted", where)


def _api_failure(where: str, response: SlackResponse, channel: str) -> DeliveryError:
    data = response.data if isinstance(response.data, dict) else {}
    code = _error_code(data.get("error"))
    hint = f"channel {channel!r}" if code in ("channel_not_found", "not_in_channel", "is_archived") else ""
    return _failure(where, response.status_code, code, response.headers, hint)


def _failure(where: str, status: int, code: str, headers: Mapping[str, Any], about: str = "") -> DeliveryError:
    """Rate limits and Slack's own failures are worth retrying; the rest needs a config fix."""
    detail = ": ".join(x for x in (about, _HINTS.get(code, "")) if x)
    said = " ".join(x for x in ("" if status == 200 else f"HTTP {status}", code) if x)  # the Web API says 200
    message = f"{where}: {said}" + (f" ({detail})" if detail else "")
    if status == 429 or code in ("ratelimited", "rate_limited"):
        return DeliveryError(message, retryable=True, retry_after=_retry_after(headers))
    return DeliveryError(message, retryable=status >= 500 or code in _SLACK_SIDE)


def _network_failure(where: str, exc: BaseException, secrets: Iterable[str]) -> DeliveryError:
    """A refused, reset or timed-out connection; the reason is scrubbed as it is not our text."""
    reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "***")
    return DeliveryError(f"{where}: {reason}", retryable=True)


def _host(url: str) -> str:
    """The only part of an address that may be shown: a webhook URL's path is its credential."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError("slack: the address is not an http(s) URL", retryable=False)
    return parts.hostname


def _error_code(value: object) -> str:
    code = value.strip() if isinstance(value, str) else ""
    return code if _ERROR_CODE.fullmatch(code) else ""


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date, which Slack does not send
        return None


def _change_list(message: str) -> str:
    """The message, one change a line, in monospace; cut to whole lines that fit one section."""
    lines = [_escape(line.rstrip()).replace("```", "`\u200b``") for line in message.splitlines() if line.strip()]
    budget = _SECTION_MAX - len("``````") - len("\n… and 99999999 more")
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    if not kept:  # a single line longer than a section, such as a build error
        kept = [_clip(lines[0], budget)]
    more = len(lines) - len(kept)
    return "```" + "\n".join(kept) + (f"\n… and {more} more" if more else "") + "```"


def _fields(event: Event) -> list[dict[str, str]]:
    fields = []
    if event.revision:
        shown = _escape(_HEX_TAIL.sub(r"\1", event.revision))
        url = _commit_url(event)
        fields.append(_mrkdwn(f"*Revision*\n<{url}|{shown}>" if url else f"*Revision*\n`{shown}`"))
    for key in sorted(event.metadata.keys() - _HIDDEN_METADATA):
        fields.append(_mrkdwn(_clip(f"*{_escape(key)}*\n{_escape(event.metadata[key])}", _FIELD_MAX)))
    return fields


def _commit_url(event: Event) -> str:
    """The commit's page when the event names an https GitHub or GitLab repository."""
    commit = _COMMIT.search(event.revision)
    repo = event.metadata.get(SOURCE_URL_KEY, "").rstrip("/").removesuffix(".git")
    parts = urlsplit(repo)
    if not commit or parts.scheme != "https" or not parts.hostname or _NOT_IN_LINK.search(repo):
        return ""
    forge = parts.hostname.split(".")[0]
    if forge == "github":
        return f"{repo}/commit/{commit[1]}"
    if forge == "gitlab":
        return f"{repo}/-/commit/{commit[1]}"
    return ""


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _escape(text: str) -> str:
    """Slack reads &, < and > as markup (links, mentions like <!channel>); its docs ask for entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    """Cut escaped text to `limit` characters without leaving half an entity such as `&am`."""
    if len(text) <= limit:
        return text
    return re.sub(r"&[a-z]*$", "", text[: limit - 1]) + "…"
