"""Slack: a bot token posts with chat.postMessage; without one, the address is an incoming webhook.

As in Flux, the Secret's `token` selects the Web API (the address is then the full method URL,
Slack's own by default, so GovSlack or a test server only change the address) and the Secret's
`address` overrides the Provider's. Both paths go through slack-sdk, with the Provider's
`timeout`, its proxy (the Secret's `proxy`, else `spec.proxy`) and the Secret's `ca.crt`.

The message is Flux's coloured attachment (`good`/`danger`) carrying Block Kit: the text to show
(`Notification.text`: a template's output, or the event's change list in monospace), the
revision linked to its commit where the repository is known, the other metadata as fields. The
top-level `text` is the one-line headline that notifications and screen readers use.

Threads (bot token only: a webhook returns no `ts` to reply to). The events of one object at one
revision tell one story (Progressing, then Succeeded or Failed, then maybe retries), so they go
to one thread per (Provider, channel, Alert, object, revision):
- the first event is posted as the parent, and its channel ID and `ts` are kept in the
  notifier's Memory, so the thread survives restarts and is shared by replicas;
- each later event first updates the parent with chat.update, so the channel always shows the
  object's latest state and colour, then is posted in the thread as the history; a failure is
  broadcast to the channel too (`reply_broadcast`), so it is never hidden in a thread.
The update comes first on purpose: Slack answers `ok` to a reply whose `thread_ts` names no
message and then shows that reply nowhere, so the update is how a deleted parent is noticed
(`message_not_found`) before a reply is lost; a new thread is started then. The update is also
the step that may safely run twice when a retried delivery repeats it. Events without a
revision are posted on their own. The cost: what the first event said is replaced on the
parent by later ones and is not in the thread (reading it back would need a history scope the
bot does not otherwise need).

An image update is one story across objects (`herald.messages.STORY_KEY`): the ImagePolicy
that resolved the new tag, the ImageUpdateAutomation's commit and the Kustomizations applying
that commit share one thread, whose parent is headed by the story's title ("ghcr.io/acme/web
1.4.2 → 1.5.0") and shows the latest step, so the channel reads as the rollout of that image;
every step, the first included, is a reply in the thread.

Deliveries of one thread take turns. After an outage their retries come due together, on two
delivery threads or two replicas; both found no thread and both posted a parent. So reading
the thread, the Slack calls and remembering the thread happen under the Memory's claim on the
thread's key (Memory.hold: a lock in the process, and a claim every replica sharing the store
sees; notifier/memory.py says how). The second delivery waits, then finds the first one's
parent. One that cannot get the claim within three Provider timeouts, or whose claim store is
down, is retried later rather than risk a second parent.

The parent never goes back to an earlier state: the states of a thread are ordered by the
event's timestamp, and at the same instant Progressing comes before an outcome. An event older
than the one the parent shows (a retry arriving late) is still added to the thread, but does
not change the parent.

Secrets: a webhook URL is a credential, so messages and logs name only its host, and slack-sdk's
own log lines (which print request URLs) are kept back. Every Secret value (the token, a proxy
URL with a password) is scrubbed from network error texts.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from herald.messages import (
    ROUTING_METADATA,
    SEVERITY_ERROR,
    STORY_KEY,
    STORY_TITLE_KEY,
    Event,
)
from herald.model import Provider
from notifier.providers.base import DeliveryError, Memory, Notification
from notifier.providers.http import retry_after

DEFAULT_ADDRESS = "https://slack.com/api/chat.postMessage"
SOURCE_URL_KEY = "source_url"
"""Event metadata naming the https URL of the revision's repository, used to link the commit."""
THREAD_KEY_PREFIX = "slack:thread"
"""Memory keys of threads: `slack:thread:<provider ns/name>:<channel>:<alert ns/name>:<Kind/ns/name>:<revision>`,
or `…:<alert ns/name>:story:<story>` for the events of one story (`herald.messages.STORY_KEY`)."""

_METHOD = "chat.postMessage"
_PROGRESSING = ("Progressing", "ProgressingWithRetry")
_UPDATE = "chat.update"
_COLORS = {SEVERITY_ERROR: "danger"}  # anything else is "good", as Flux colours it
_HIDDEN_METADATA = {"revision", SOURCE_URL_KEY, *ROUTING_METADATA}  # shown otherwise, or routing hints

# Block Kit limits: a section's text, one of its fields, and how many fields one section holds.
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_FIELDS_PER_SECTION = 10

# chat.update's answers that mean the remembered parent cannot carry the thread any more: it was
# deleted, was posted by another app or token, or its channel went away (IDs are never reused).
_THREAD_GONE = {"message_not_found", "cant_update_message", "channel_not_found", "is_inactive"}
# The parent stays and may take replies, but the workspace forbids editing it.
_PARENT_FROZEN = {"edit_window_closed"}
# chat.postMessage refusing a reply (not a top-level post): a new thread can still be started.
_REPLY_REFUSED = {
    "cannot_reply_to_message",
    "restricted_action_thread_locked",
    "restricted_action_non_threadable_channel",
}
# Errors Slack documents as failures on its side: trying again later can succeed.
_SLACK_SIDE = {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "update_failed"}
_HINTS = {
    "not_authed": "the Secret's token was not sent",
    "invalid_auth": "Slack rejected the Secret's token",
    "token_revoked": "the Secret's token was revoked",
    "token_expired": "the Secret's token expired",
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
    """Post the notification; returns the message's `ts` with a bot token (the parent or reply)."""
    text, attachment = render(note)
    if secret.get("token"):
        return _WebAPI(provider, secret).deliver(note, text, attachment)
    if note.event.reason in _PROGRESSING:
        # A webhook cannot update what it posted: "starting" would be a second message per
        # push with nothing to add once the outcome follows. Only threads show progress.
        log.debug("slack webhook: %s is Progressing; only the outcome is posted", note.event.object_ref)
        return None
    _post_webhook(provider, secret, text, attachment)
    return None


def render(note: Notification) -> tuple[str, dict[str, Any]]:
    """The headline text and the coloured attachment; Slack-compatible providers may reuse it."""
    event = note.event
    headline = f"{event.object_ref}: {event.reason}"
    title = event.metadata.get(STORY_TITLE_KEY, "")
    if title:  # the parent of a story's thread says what the story is about, whatever its last step
        headline = f"{title} · {headline}"
    if event.revision:
        headline += f" at {event.revision}"
    blocks: list[dict[str, Any]] = []
    if note.summary:
        blocks.append(_section(f"*{_clip(_escape(note.summary), _SECTION_MAX - 2)}*"))
    body = _body(note)
    if body:
        blocks.append(_section(body))
    fields = _fields(event)
    for start in range(0, len(fields), _FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + _FIELDS_PER_SECTION]})
    footer = " · ".join(x for x in (event.reportingController, f"alert {note.alert}", event.timestamp) if x)
    blocks.append({"type": "context", "elements": [_mrkdwn(_escape(footer))]})
    attachment = {"color": _COLORS.get(event.severity, "good"), "blocks": blocks}
    return _escape(headline), attachment


def thread_key(provider: Provider, note: Notification) -> str:
    """The Memory key of the notification's thread, or "" for an event that is not threaded.

    The Alert is part of it: two Alerts sending one object to one Provider each keep their own
    coherent thread (their summaries differ) instead of replying twice into one.
    """
    event = note.event
    story = event.metadata.get(STORY_KEY, "")
    if not (event.revision or story) or not provider.channel:
        return ""
    owner = note.provider or f"{provider.meta.namespace}/{provider.meta.name}"
    if story:  # an image update: its policy, its commit and the rollout of that commit, together
        return f"{THREAD_KEY_PREFIX}:{owner}:{provider.channel}:{note.alert}:story:{story}"
    return ":".join((THREAD_KEY_PREFIX, owner, provider.channel, note.alert, str(event.object_ref), event.revision))


@dataclass(frozen=True)
class Thread:
    """A thread's parent as Memory keeps it: its channel ID (chat.update takes no channel names),
    its `ts`, and the timestamp and reason of the event it shows, so a late event cannot turn it
    back."""

    channel: str
    ts: str
    shown: str = ""
    reason: str = ""

    def dump(self) -> str:
        data = {"channel": self.channel, "ts": self.ts, "shown": self.shown}
        if self.reason:
            data["reason"] = self.reason
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def load(cls, value: str | None) -> Thread | None:
        """The remembered thread; None for nothing, or for a value this version cannot read."""
        try:
            data = json.loads(value) if value else None
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        channel, ts = data.get("channel"), data.get("ts")
        shown, reason = data.get("shown", ""), data.get("reason", "")
        if not (isinstance(channel, str) and channel and isinstance(ts, str) and ts and isinstance(shown, str)
                and isinstance(reason, str)):
            return None
        return cls(channel, ts, shown, reason)


class _Refused(Exception):
    """Slack answered a Web API call with an error code; `error` is what the caller reports."""

    def __init__(self, code: str, error: DeliveryError) -> None:
        super().__init__(code)
        self.code = code
        self.error = error


class _WebAPI:
    """One delivery through the Web API: a client with the Provider's settings, and the thread logic."""

    def __init__(self, provider: Provider, secret: Mapping[str, str]) -> None:
        address = secret.get("address") or provider.address or DEFAULT_ADDRESS
        self.provider = provider
        self.host = _host(address)
        if not provider.channel:
            raise DeliveryError(f"slack {_METHOD} on {self.host}: a bot token needs the Provider's spec.channel",
                                retryable=False)
        if not address.endswith(f"/{_METHOD}"):
            raise DeliveryError(f"slack {_METHOD} on {self.host}: with a token, the address must end in /{_METHOD}",
                                retryable=False)
        self.secrets = [*secret.values(), address]
        self.client = WebClient(
            token=secret["token"],
            base_url=address.removesuffix(_METHOD),
            timeout=provider.timeout,  # type: ignore[arg-type]  # urllib takes float seconds
            ssl=_ssl_context(secret, f"slack {_METHOD} on {self.host}"),
            proxy=_proxy(provider, secret),
            logger=_SDK_LOG,
            retry_handlers=[],  # the delivery loop owns retries and their backoff
        )

    def deliver(self, note: Notification, text: str, attachment: dict[str, Any]) -> str:
        key = thread_key(self.provider, note)
        if not key:
            return self._deliver(note, text, attachment, "")
        with ExitStack() as claimed:
            try:
                claimed.enter_context(note.memory.hold(key, _claim_timeout(self.provider)))
            except TimeoutError:
                raise DeliveryError(f"slack: another delivery to the thread of {note.event.object_ref} at "
                                    f"{note.event.revision} is still in progress; will retry",
                                    retryable=True) from None
            except Exception as exc:  # noqa: BLE001 (whatever backs it: a second parent is worse than later)
                raise DeliveryError(f"slack: the thread memory cannot be claimed ({type(exc).__name__}: {exc}); "
                                    "will retry", retryable=True) from None
            return self._deliver(note, text, attachment, key)

    def _deliver(self, note: Notification, text: str, attachment: dict[str, Any], key: str) -> str:
        """Continue the remembered thread, or post a new parent (and remember it)."""
        thread = _recall(note.memory, key) if key else None
        if thread is not None:
            ts = self._continue(thread, key, note, text, attachment)
            if ts is not None:
                return ts
        try:
            posted = self._call(_METHOD, channel=self.provider.channel, text=text, attachments=[attachment],
                                username=self.provider.username or None)
        except _Refused as refused:
            raise refused.error from None
        ts = str(posted.get("ts") or "")
        channel = str(posted.get("channel") or "")
        if key and ts and channel:
            _remember(note.memory, key, Thread(channel, ts, note.event.timestamp, note.event.reason))
            if STORY_KEY in note.event.metadata:
                # A story's thread is its whole history, the step that opened it included (its
                # parent moves on to the later steps). Should this reply fail, the retry finds
                # the thread and replies then.
                try:
                    self._call(_METHOD, channel=channel, thread_ts=ts, text=text, attachments=[attachment],
                               username=self.provider.username or None)
                except _Refused as refused:
                    raise refused.error from None
        log.debug("slack %s on %s: posted to %s", _METHOD, self.host, self.provider.channel)
        return ts

    def _continue(self, thread: Thread, key: str, note: Notification, text: str,
                  attachment: dict[str, Any]) -> str | None:
        """Update the parent and reply in its thread; None when a new thread must be started."""
        event = note.event
        if _is_older(event, thread):
            log.debug("slack: %s is older than the state thread %s shows; replying only", event.reason, thread.ts)
        else:
            try:
                self._call(_UPDATE, channel=thread.channel, ts=thread.ts, text=text, attachments=[attachment])
            except _Refused as refused:
                if refused.code in _THREAD_GONE:
                    log.info("slack: thread %s in %s is gone (%s); starting a new one", thread.ts, thread.channel,
                             refused.code)
                    return None
                if refused.code not in _PARENT_FROZEN:
                    raise refused.error from None
                log.info("slack: thread %s in %s cannot be edited (%s); replying only", thread.ts, thread.channel,
                         refused.code)
            else:
                _remember(note.memory, key, Thread(thread.channel, thread.ts, event.timestamp, event.reason))
        try:
            reply = self._call(_METHOD, channel=thread.channel, thread_ts=thread.ts, text=text,
                               attachments=[attachment], username=self.provider.username or None,
                               reply_broadcast=True if event.severity == SEVERITY_ERROR else None)
        except _Refused as refused:
            if refused.code in _REPLY_REFUSED:
                log.info("slack: thread %s in %s takes no replies (%s); starting a new one", thread.ts,
                         thread.channel, refused.code)
                return None
            raise refused.error from None
        return str(reply.get("ts") or "")

    def _call(self, method: str, **args: Any) -> SlackResponse:
        where = f"slack {method} on {self.host}"
        try:
            if method == _UPDATE:
                return self.client.chat_update(**args)
            return self.client.chat_postMessage(**args)
        except SlackApiError as exc:
            code = _error_code(exc.response.data.get("error") if isinstance(exc.response.data, dict) else None)
            raise _Refused(code, _api_failure(where, exc.response, self.provider.channel)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _network_failure(where, exc, self.secrets) from None


def _post_webhook(provider: Provider, secret: dict[str, str], text: str, attachment: dict[str, Any]) -> None:
    url = secret.get("address") or provider.address
    if not url:
        raise DeliveryError("slack: no token and no webhook address in the Provider or its Secret", retryable=False)
    where = f"slack webhook on {_host(url)}"
    client = WebhookClient(
        url,
        timeout=provider.timeout,  # type: ignore[arg-type]
        ssl=_ssl_context(secret, where),
        proxy=_proxy(provider, secret),
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
        raise _network_failure(where, exc, [*secret.values(), url, urlsplit(url).path]) from None
    if response.status_code != 200:
        raise _failure(where, response.status_code, _error_code(response.body), response.headers)
    log.debug("%s: posted", where)


def _recall(memory: Memory, key: str) -> Thread | None:
    """The remembered thread; a Memory outage costs threading, never the delivery."""
    try:
        return Thread.load(memory.get(key))
    except Exception as exc:  # noqa: BLE001 (whatever store backs it, posting goes on)
        log.warning("slack: thread memory unavailable (%s: %s); posting without a thread", type(exc).__name__, exc)
        return None


def _remember(memory: Memory, key: str, thread: Thread) -> None:
    """Keep the thread; failing to is logged, not raised, as a retry would post the event twice."""
    try:
        memory.put(key, thread.dump())
    except Exception as exc:  # noqa: BLE001
        log.warning("slack: could not remember thread %s (%s: %s); the next event starts a new one",
                    thread.ts, type(exc).__name__, exc)


def _is_older(event: Event, thread: Thread) -> bool:
    """Whether an event comes before the one the parent shows: it happened earlier, or at the
    same instant as an outcome while it is only Progressing. Unreadable times are not older."""
    try:
        happened, shown = _instant(event.timestamp), _instant(thread.shown)
    except ValueError:
        return False
    if happened != shown:
        return happened < shown
    return _stage(event.reason) < _stage(thread.reason)


def _stage(reason: str) -> int:
    """Progressing comes before the outcome it announces."""
    return 0 if reason in _PROGRESSING else 1


def _claim_timeout(provider: Provider) -> float:
    """How long a delivery waits for another one of its thread: up to three Slack calls (an
    update, a reply, and a new parent when the thread is gone) at the Provider's timeout."""
    return 3 * float(provider.timeout or 15.0) + 2.0


def _instant(timestamp: str) -> datetime:
    when = datetime.fromisoformat(timestamp)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _proxy(provider: Provider, secret: Mapping[str, str]) -> str | None:
    """The Secret's proxy (it may carry a password), else the Provider's, as for every provider.

    Without either, slack-sdk and urllib fall back to HTTPS_PROXY / HTTP_PROXY / NO_PROXY from
    the environment; notifier/providers/http.py ignores the environment, but slack-sdk offers no
    public switch for that."""
    return secret.get("proxy") or provider.proxy or None


def _ssl_context(secret: Mapping[str, str], where: str) -> ssl.SSLContext | None:
    """The system's roots plus the Secret's `ca.crt`, for a Slack behind a private CA or a proxy
    that inspects TLS; None (urllib's default) without one."""
    ca = secret.get("ca.crt") or secret.get("caFile")
    if not ca:
        return None
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cadata=ca)
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or "no certificate found"
        raise DeliveryError(f"{where}: the Secret's ca.crt is not a PEM certificate: {reason}",
                            retryable=False) from None
    return context


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
        return DeliveryError(message, retryable=True, retry_after=retry_after(headers or {}))
    return DeliveryError(message, retryable=status >= 500 or code in _SLACK_SIDE)


def _network_failure(where: str, exc: BaseException, secrets: Iterable[str]) -> DeliveryError:
    """A refused, reset or timed-out connection; the reason is scrubbed as it is not our text."""
    cause = getattr(exc, "reason", exc)
    if isinstance(cause, ssl.SSLError):
        reason = f"TLS verification failed (set ca.crt in the Secret for a private CA): {cause.reason or cause}"
    else:
        reason = str(cause) or type(exc).__name__
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
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


def _body(note: Notification) -> str:
    """What the event says, as people should read it: a template's output as text, the event's
    own message (a change list, one object a line) in monospace."""
    text = note.text
    if not text.strip():
        return ""
    if text == note.event.message:
        return _change_list(text)
    return _clip(_escape(text.strip()), _SECTION_MAX)


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
