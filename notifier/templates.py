"""Message templates: an Alert's or Provider's `template`, in Jinja2 (which Flask brings).

The default is no template: each provider lays out the event its own way (Slack blocks, an
email body, a Teams card) around the event's message. A template replaces only that message
text, so a team can say "web is live on prod" instead of a change list.

Variables (all strings unless said):
  kind, name, namespace      the object the event is about
  object                     "Kind/namespace/name"
  severity, reason, message  as in the event ("info"/"error", "ReconciliationSucceeded", …)
  revision                   e.g. "main@sha1:…", "" when the event has none
  sha                        the 40- or 64-hex commit of the revision, "" when none
  metadata                   dict of the event's metadata (with the Alert's eventMetadata)
  summary                    the Alert's summary
  alert, provider            "namespace/name" of each
  timestamp                  the event's time (RFC 3339)
  event                      the whole event as Flux's JSON (a dict)

The sandbox keeps a template from reaching Python internals; an error while rendering falls
back to the plain message (a notification is never lost to a template), and `herald
validate` reports templates that do not compile, with their file and line.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from herald.messages import Event

log = logging.getLogger("herald.notifier")

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_SHA = re.compile(r"(?:sha1|sha256):([0-9a-f]{40}(?:[0-9a-f]{24})?)\b")
MAX_TEMPLATE_OUTPUT = 40_000


class TemplateProblem(ValueError):
    """A template that does not compile; the message says where in it."""


def check(source: str) -> None:
    """Compile `source`; raise TemplateProblem naming the line of the template at fault."""
    try:
        _ENV.from_string(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise TemplateProblem(f"{exc.message or exc}" + (f" (template line {line})" if line else "")) from None


def variables(event: Event, *, alert: str, provider: str, summary: str) -> dict[str, Any]:
    obj = event.involvedObject
    found = _SHA.search(event.revision)
    return {
        "kind": obj.get("kind", ""), "name": obj.get("name", ""), "namespace": obj.get("namespace", ""),
        "object": str(event.object_ref), "severity": event.severity, "reason": event.reason,
        "message": event.message, "revision": event.revision, "sha": found[1] if found else "",
        "metadata": dict(event.metadata), "summary": summary, "alert": alert, "provider": provider,
        "timestamp": event.timestamp, "event": event.to_dict(),
    }


def render(source: str, event: Event, *, alert: str, provider: str, summary: str) -> str:
    """The message text for people: the template's output, or the event's message."""
    if not source:
        return event.message
    try:
        text = _ENV.from_string(source).render(variables(event, alert=alert, provider=provider, summary=summary))
    except Exception as exc:  # noqa: BLE001 - any template failure falls back, never loses the event
        log.warning("template of alert=%s provider=%s failed (%s: %s); sending the plain message",
                    alert, provider, type(exc).__name__, exc)
        return event.message
    text = text.strip()
    if len(text) > MAX_TEMPLATE_OUTPUT:
        text = text[:MAX_TEMPLATE_OUTPUT] + " …"
    return text or event.message
