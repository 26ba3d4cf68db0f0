"""Microsoft Teams: an Adaptive Card posted to a Teams Workflows (Power Automate) webhook.

Office 365 connectors (`*.webhook.office.com`) are retired; their replacement is a workflow
built from the "Send webhook alerts to a channel" template, whose URL is the address. As with
Flux's msteams provider, the body is a `message` whose one attachment is an Adaptive Card
(version 1.4, the newest Teams renders everywhere). The attachment carries `contentUrl: null`
because the workflow's trigger schema now lists it as required and answers 400
TriggerInputSchemaMismatch without it.

The workflow answers 202 Accepted as soon as the trigger accepts the envelope; the card is
posted by the flow run afterwards, so a card Teams cannot render never comes back as an
error here. That is why the card is built conservatively: known elements only, texts clipped,
and the whole payload kept well under Teams' 28 KB message limit.

The card: the object as title, reason and severity beneath it (red for errors, as Flux colours
the message `attention`), the Alert's summary, the message itself (the rendered template, or
the event's change list in monospace), a FactSet with the revision first and the rest of the
metadata sorted, and a footer naming the reporting controller, the Alert and the time.

Secrets: the workflow URL carries its signature (`sig=`) in the query, so it is a credential:
messages and logs name only the host, and generic.post_webhook scrubs the URL's token-like
parts from whatever the workflow answers.
"""

from __future__ import annotations

import logging
from typing import Any

from herald.messages import ROUTING_METADATA, SEVERITY_ERROR, Event
from herald.model import Provider
from notifier.providers import generic, http
from notifier.providers.base import DeliveryError, Notification

CARD_VERSION = "1.4"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"

_HIDDEN_METADATA = {"revision", "summary", *ROUTING_METADATA}  # shown elsewhere, or routing hints
_MESSAGE_MAX = 8000  # characters of message text
_MESSAGE_LINES = 60
_FACTS_MAX = 20
_FACT_TITLE_MAX = 100
_FACT_VALUE_MAX = 500
_SUMMARY_MAX = 500

log = logging.getLogger(__name__)


def send(provider: Provider, secret: dict[str, str], note: Notification) -> None:
    """Post the card to the workflow; the workflow answers 202 and posts it to its channel."""
    url = secret.get("address") or provider.address
    if not url:
        raise DeliveryError("msteams: no workflow URL in the Provider or its Secret", retryable=False)
    where = f"msteams workflow on {http.host(url, 'msteams')}"
    generic.post_webhook(provider, secret, url, what=where, json_body=payload(note))
    log.debug("%s: posted %s for %s", where, note.event.reason, note.event.object_ref)


def payload(note: Notification) -> dict[str, Any]:
    """The workflow's envelope: a `message` with the card as its only attachment."""
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card(note)}],
    }


def card(note: Notification) -> dict[str, Any]:
    """The Adaptive Card for one notification; plain data, so it can be checked without Teams."""
    event = note.event
    error = event.severity == SEVERITY_ERROR
    items: list[dict[str, Any]] = [
        _text(str(event.object_ref), size="large", weight="bolder", color="attention" if error else "good"),
        _text(f"{event.reason} · {event.severity}", isSubtle=True, spacing="none"),
    ]
    summary = note.summary or event.metadata.get("summary", "")
    if summary:
        items.append(_text(_clip(summary, _SUMMARY_MAX), weight="bolder"))
    message = message_text(note)
    if message:
        style: dict[str, Any] = {} if note.message else {"fontType": "monospace"}
        items.append(_text(message, color="attention" if error else "default", **style))
    facts = _facts(event)
    if facts:
        items.append({"type": "FactSet", "facts": facts})
    footer = " · ".join(x for x in (event.reportingController, f"alert {note.alert}", event.timestamp) if x)
    items.append(_text(footer, size="small", isSubtle=True))
    return {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": [{"type": "Container", "style": "attention" if error else "good", "items": items}],
    }


def message_text(note: Notification) -> str:
    """The text to show, cut to whole lines that fit, saying how many were left out."""
    lines = [line.rstrip() for line in note.text.splitlines() if line.strip()]
    kept: list[str] = []
    used = 0
    for line in lines[:_MESSAGE_LINES]:
        if used + len(line) + 1 > _MESSAGE_MAX:
            break
        kept.append(line)
        used += len(line) + 1
    if lines and not kept:  # one line longer than the budget, such as a build error
        kept = [_clip(lines[0], _MESSAGE_MAX)]
    more = len(lines) - len(kept)
    return "\n".join(kept) + (f"\n… and {more} more" if more else "")


def _facts(event: Event) -> list[dict[str, str]]:
    facts = []
    if event.revision:
        facts.append({"title": "revision", "value": _clip(event.revision, _FACT_VALUE_MAX)})
    for key in sorted(event.metadata.keys() - _HIDDEN_METADATA):
        facts.append({"title": _clip(key, _FACT_TITLE_MAX), "value": _clip(event.metadata[key], _FACT_VALUE_MAX)})
    if len(facts) > _FACTS_MAX:
        more = len(facts) - (_FACTS_MAX - 1)
        facts = facts[: _FACTS_MAX - 1] + [{"title": "…", "value": f"{more} more metadata entries"}]
    return facts


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
