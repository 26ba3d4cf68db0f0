"""Discord: one embed posted through Discord's own webhook API.

Flux posts Slack-shaped attachments to Discord's `/slack` compatibility endpoint; Herald uses
the native "execute webhook" API instead (`POST <webhook url>` with `username` and `embeds`),
which has real embed fields, timestamps and error bodies. The webhook URL
(`https://discord.com/api/webhooks/<id>/<token>`) comes from the Secret's `address` (or the
Provider's), and `?wait=true` is added so that Discord confirms the message was saved (200
with the message, whose id is returned) instead of answering 204 before it knows.

The embed: the object and reason as title, coloured by severity; the Alert's summary and the
message as description (a rendered template as written, the event's change list in a code
block so that names like `my_app_config` are not read as markdown); the revision and the other
metadata as fields; the reporting controller and the Alert in the footer; the event's time as
timestamp. Discord refuses an embed over its limits (title 256, description 4096, 25 fields,
field name 256 and value 1024, footer 2048, 6000 in all), so the embed is fitted to them,
counted in UTF-16 units as the strictest reading of "characters".

Failures keep Discord's own words: 400 `Invalid Form Body` names the fields it refused, 404
`Unknown Webhook` (10015) and 401 `Invalid Webhook Token` (50027) are final (Discord asks
clients to stop using a webhook that answers 404), and 429 is retried after the longer of the
body's `retry_after` (seconds, a float) and the `Retry-After` header.

Secrets: the token is the last part of the URL's path, so messages and logs name only the host.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from herald.messages import ROUTING_METADATA, SEVERITY_ERROR, Event
from herald.model import Provider
from notifier.providers import generic, http
from notifier.providers.base import DeliveryError, Notification

# Discord's embed limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
USERNAME_MAX = 80

COLORS = {SEVERITY_ERROR: 0xED4245}  # Discord's red; anything else is its green
DEFAULT_COLOR = 0x57F287

_HIDDEN_METADATA = {"revision", "summary", *ROUTING_METADATA}  # shown elsewhere, or routing hints
_DESCRIPTION_RESERVE = 1500  # what the fields leave for the description, at least
_HEX_TAIL = re.compile(r"(sha\d+:[0-9a-f]{12})[0-9a-f]+")
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]])")
_HINTS = {
    10015: "the webhook was deleted: create one and put its URL in the Secret's address",
    50027: "the webhook URL's token is wrong",
}

log = logging.getLogger(__name__)


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str | None:
    """Execute the webhook; returns the message id Discord confirms with `?wait=true`."""
    url = secret.get("address") or provider.address
    if not url:
        raise DeliveryError("discord: no webhook URL in the Provider or its Secret", retryable=False)
    where = f"discord webhook on {http.host(url, 'discord')}"
    username = secret.get("username") or provider.username
    response = generic.post_webhook(
        provider, secret, with_wait(url), what=where, json_body=payload(note, username),
        on_refusal=lambda error, answer, secrets: refine(where, error, answer, secrets))
    log.debug("%s: posted %s for %s", where, note.event.reason, note.event.object_ref)
    return _message_id(response)


def with_wait(url: str) -> str:
    """The URL with `wait=true`, keeping any other query (a `thread_id`, say)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "wait"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("wait", "true")])))


def payload(note: Notification, username: str = "") -> dict[str, Any]:
    """The JSON body: one embed, and the username when the Provider or Secret names one."""
    body: dict[str, Any] = {"embeds": [embed(note)]}
    if username:
        body["username"] = clip(username, USERNAME_MAX)
    return body


def embed(note: Notification) -> dict[str, Any]:
    """The embed for one notification, within every one of Discord's limits."""
    event = note.event
    title = clip(f"{event.object_ref}: {event.reason}", TITLE_MAX)
    footer = clip(" · ".join(x for x in (event.reportingController, f"alert {note.alert}") if x), FOOTER_MAX)
    budget = EMBED_TOTAL_MAX - units(title) - units(footer)
    fields = fit_fields(_fields(event), budget - _DESCRIPTION_RESERVE)
    budget -= sum(units(f["name"]) + units(f["value"]) for f in fields)
    result: dict[str, Any] = {
        "title": title,
        "color": COLORS.get(event.severity, DEFAULT_COLOR),
        "description": description(note, min(DESCRIPTION_MAX, budget)),
        "fields": fields,
        "footer": {"text": footer},
    }
    if event.timestamp:
        result["timestamp"] = event.timestamp
    if not result["description"]:
        del result["description"]
    return result


def description(note: Notification, limit: int) -> str:
    """The summary in bold, then the message: a template as written, a change list as code."""
    summary = note.summary or note.event.metadata.get("summary", "")
    head = f"**{clip(escape_markdown(summary), 300)}**\n" if summary else ""
    room = limit - units(head)
    if note.message:
        return head + clip(note.message.strip(), room)
    return head + _code_block(note.event.message, room)


def fit_fields(fields: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Keep fields in order while they fit `budget` characters and the 25-field limit; say how
    many were left out in a last field, so a reader knows the list is incomplete."""
    kept: list[dict[str, Any]] = []
    used = 0
    marker = 40  # room for the "… and N more" field
    for index, field in enumerate(fields):
        size = units(field["name"]) + units(field["value"])
        last = index == len(fields) - 1
        if len(kept) >= FIELDS_MAX - (0 if last else 1) or used + size > budget - (0 if last else marker):
            more = len(fields) - len(kept)
            kept.append({"name": "…", "value": f"and {more} more", "inline": False})
            break
        kept.append(field)
        used += size
    return kept


def escape_markdown(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def units(text: str) -> int:
    """Length in UTF-16 code units: never less than Discord's count, however it counts."""
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 units, with an ellipsis when cut."""
    if units(text) <= limit:
        return text
    if limit <= 0:
        return ""
    out: list[str] = []
    used = 0
    for char in text:
        size = units(char)
        if used + size > limit - 1:
            break
        out.append(char)
        used += size
    return "".join(out) + "…"


def _fields(event: Event) -> list[dict[str, Any]]:
    fields = []
    if event.revision:
        fields.append(_field("Revision", _HEX_TAIL.sub(r"\1", event.revision), inline=True))
    for key in sorted(event.metadata.keys() - _HIDDEN_METADATA):
        fields.append(_field(key, event.metadata[key], inline=len(event.metadata[key]) <= 40))
    return fields


def _field(name: str, value: str, *, inline: bool) -> dict[str, Any]:
    """Discord refuses an empty name or value, so those show as a dash."""
    return {"name": clip(name.strip() or "-", FIELD_NAME_MAX), "value": clip(value.strip() or "-", FIELD_VALUE_MAX),
            "inline": inline}


def _code_block(message: str, limit: int) -> str:
    """Whole lines in a code block that fits `limit`, saying how many more there were."""
    fence = "```"
    lines = [line.rstrip().replace(fence, "`\u200b``") for line in message.splitlines() if line.strip()]
    if not lines or limit <= 2 * len(fence) + 2:
        return ""
    budget = limit - units(fence + "\n" + "\n" + fence) - units("\n… and 99999999 more")
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + units(line) + 1 > budget:
            break
        kept.append(line)
        used += units(line) + 1
    if not kept:  # one line longer than the budget, such as a build error
        kept = [clip(lines[0], budget)]
    more = len(lines) - len(kept)
    return fence + "\n" + "\n".join(kept) + (f"\n… and {more} more" if more else "") + "\n" + fence


def refine(where: str, error: DeliveryError, response: requests.Response, secrets: Iterable[str]) -> DeliveryError:
    """The DeliveryError in Discord's words: message, code, refused fields, rate-limit delay."""
    try:
        data = response.json()
    except ValueError:
        return error
    if not isinstance(data, dict) or not ("message" in data or "code" in data or "retry_after" in data):
        return error
    status = response.status_code
    code = data.get("code")
    said = str(data.get("message") or "").strip()
    if isinstance(code, int):
        said += f" (code {code})"
    problems = list(_form_errors(data.get("errors")))[:5]
    if problems:
        said += ": " + "; ".join(problems)
    hint = _HINTS.get(code) if isinstance(code, int) else None
    if hint:
        said += f" ({hint})"
    said = _clip_detail(http.scrub(said, secrets))
    if status == 429:
        delays = [d for d in (http.retry_after(response.headers), _seconds(data.get("retry_after"))) if d is not None]
        scope = " (global rate limit)" if data.get("global") else ""
        return DeliveryError(f"{where}: HTTP 429: {said}{scope}", retryable=True,
                             retry_after=max(delays) if delays else None, status=status)
    return DeliveryError(f"{where}: HTTP {status}: {said}", retryable=error.retryable, retry_after=error.retry_after,
                         status=status)


def _form_errors(errors: Any, path: str = "") -> Iterator[str]:
    """Discord's nested `errors` object as `embeds.0.title: Must be 256 or fewer in length.`"""
    if not isinstance(errors, dict):
        return
    for key, value in errors.items():
        if key == "_errors" and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield f"{path or 'body'}: {item.get('message') or item.get('code') or '?'}"
        else:
            yield from _form_errors(value, f"{path}.{key}" if path else str(key))


def _message_id(response: requests.Response) -> str | None:
    """The id of the message Discord saved (200 with `wait=true`); None after a bare 204."""
    if response.status_code != 200:
        return None
    try:
        message = response.json()
    except ValueError:
        return None
    message_id = message.get("id") if isinstance(message, dict) else None
    return str(message_id) if message_id else None


def _clip_detail(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return max(0.0, float(value))
