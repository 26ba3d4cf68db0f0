"""The notifier: route each event to its Alerts' providers, then deliver each one durably.

Two steps on the bus instead of one: an event fans out into one delivery message per
(Alert, Provider), and each delivery is retried on its own. A Slack outage then delays only the
Slack message; it never re-sends the same event to the providers that already got it.

Delivery, where Flux gives up after ~15 s and forgets on restart:
- a retryable failure (network, 408/425/429/5xx) is tried again with exponential backoff and
  jitter, no sooner than the provider's Retry-After, for a budget of about an hour
  (HERALD_NOTIFY_RETRY_BUDGET), then dead-lettered with its last error;
- a refusal (400/401/403/404/422) is dead-lettered at once with the provider's own words;
- what was delivered is recorded (notifier.memory), so a redelivered message, a restarted
  notifier or the same event announced twice within the dedupe window
  (HERALD_NOTIFY_DEDUPE_WINDOW, 5 minutes) sends nothing twice.
The message is acknowledged only after the provider accepted it and the record was written:
a notifier killed in between resends at most that one message, and never loses one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from herald.bus import FAILING_SINCE_HEADER, Bus, Delivery, Reject, RetryLater, RetryPolicy
from herald.config import Config
from herald.history import History, message
from herald.logs import DELIVERY_HEADER, correlated
from herald.messages import EVENTS_QUEUE, NOTIFY_QUEUE, STORY_KEY, Event, MessageError
from herald.model import Alert, Provider
from herald.settings import env_seconds
from notifier import metrics, plan_comments, stories, templates
from notifier.memory import DEFAULT_DEDUPE_WINDOW, NotifierMemory, dedupe_key
from notifier.plan_comments import wants_comment
from notifier.providers import (
    COMMIT_STATUS_TYPES,
    PROVIDERS,
    DeliveryError,
    Notification,
    SendFn,
    kind_of,
)
from notifier.providers.base import KeyLocks
from notifier.providers.commitstatus import is_plan_event
from notifier.routing import route, wants, with_alert_metadata

log = logging.getLogger("herald.notifier")


@dataclass(frozen=True)
class NotifierSettings:
    """How deliveries are retried and deduplicated; each from an environment variable."""

    dedupe_window: float = DEFAULT_DEDUPE_WINDOW  # HERALD_NOTIFY_DEDUPE_WINDOW; 0 turns dedupe off
    retry_budget: float = 3600.0  # HERALD_NOTIFY_RETRY_BUDGET: how long a delivery is retried
    first_retry: float = 2.0  # HERALD_NOTIFY_FIRST_RETRY: the first backoff delay
    max_retry_delay: float = 300.0  # HERALD_NOTIFY_MAX_RETRY_DELAY: the backoff's cap
    threads: int = 4  # HERALD_NOTIFY_THREADS: deliveries sent at once

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> NotifierSettings:
        env = dict(os.environ if env is None else env)
        d = cls()

        def seconds(name: str, default: float) -> float:
            return env_seconds(env, name, default)

        return cls(
            dedupe_window=max(0.0, seconds("HERALD_NOTIFY_DEDUPE_WINDOW", d.dedupe_window)),
            retry_budget=max(1.0, seconds("HERALD_NOTIFY_RETRY_BUDGET", d.retry_budget)),
            first_retry=max(0.05, seconds("HERALD_NOTIFY_FIRST_RETRY", d.first_retry)),
            max_retry_delay=max(0.05, seconds("HERALD_NOTIFY_MAX_RETRY_DELAY", d.max_retry_delay)),
            threads=max(1, int(env.get("HERALD_NOTIFY_THREADS") or d.threads)),
        )

    @property
    def retry(self) -> RetryPolicy:
        # Attempts are bounded by the budget; the count is only a backstop against a hot loop.
        return RetryPolicy(max_attempts=1000, base_delay=self.first_retry, factor=2.0,
                           max_delay=max(self.first_retry, self.max_retry_delay),
                           budget=self.retry_budget, jitter=0.2)


@dataclass
class _Record:
    """One notification's line in the history (herald.history): its attempts and how it ended.
    A retry the bus will not make (attempts or budget spent) is written as dead-lettered."""

    history: History
    delivery: Delivery
    provider: Provider
    provider_key: str
    alert_key: str
    event: Event
    key: str
    policy: RetryPolicy

    def put(self, state: str, error: str = "") -> None:
        now = time.time()
        try:
            since = float(self.delivery.headers.get(FAILING_SINCE_HEADER) or now)
        except ValueError:
            since = now
        if state == "retrying" and self.policy.exhausted(self.delivery.attempt, since, now):
            state = "dead-lettered"
        obj = self.event.involvedObject
        self.history.put("notification", hashlib.sha256(self.key.encode()).hexdigest()[:24], {
            "at": since, "updated": now, "delivery": str(self.delivery.headers.get(DELIVERY_HEADER, "")),
            "request": str(self.delivery.headers.get("x-herald-request", "")),
            "provider": self.provider_key, "type": self.provider.type, "alert": self.alert_key,
            "object": f"{obj.get('kind', '')}/{obj.get('namespace', '')}/{obj.get('name', '')}",
            "reason": self.event.reason, "revision": self.event.metadata.get("revision", ""),
            "commitStatus": self.provider.type in COMMIT_STATUS_TYPES, "attempts": self.delivery.attempt,
            "state": state, "error": message(error)})


class Notifier:
    def __init__(self, cfg: Config, bus: Bus, providers: dict[str, SendFn] | None = None, *,
                 memory: NotifierMemory | None = None, settings: NotifierSettings | None = None,
                 history: History | None = None):
        self.cfg = cfg
        self.history = history or History()  # each notification's attempts, for the operator
        self.bus = bus
        self.providers = PROVIDERS if providers is None else providers
        self.settings = settings or NotifierSettings.from_env()
        # The memory lives where the bus does (the broker, or beside the embedded bus's file),
        # so every notifier sharing a bus shares what was sent.
        self.memory = memory or NotifierMemory.for_bus(bus, self.settings.dedupe_window)
        # Two copies of one notification handled at once by this process's delivery threads
        # take turns, so the second sees the first's record (replicas can still race; rare).
        # Different notifications that share a Slack thread are serialised by the provider,
        # through the memory's claim (Memory.hold), which also holds across replicas.
        self._sending = KeyLocks()

    def update(self, cfg: Config) -> None:
        """A new configuration (`--from-cluster`): events and deliveries handled from now on use it."""
        self.cfg = cfg

    def _labels(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        obj = self.cfg.by_kind(kind).get((namespace, name))
        return dict(obj.meta.labels) if obj is not None else {}

    # -- step 1: an event fans out -------------------------------------------------------

    def handle_event(self, delivery: Delivery) -> None:
        try:
            event = Event.from_json(delivery.body)
        except MessageError as exc:
            raise Reject(str(exc)) from None
        alerts = route(list(self.cfg.alerts.values()), event, self._labels)
        if event.metadata.get(STORY_KEY) or self._threaded(alerts):
            event = stories.follow(self.memory.providers, event)  # an image update's rollout joins its thread
        # One line per event (log collectors split on newlines); the change list stays readable.
        message = "; ".join(event.message.splitlines())
        if len(message) > 2000:
            message = message[:2000] + " …"
        log.info("event %s %s %s revision=%s: %s | alerts: %s", event.object_ref, event.severity,
                 event.reason, event.revision or "-", message,
                 ", ".join(f"{a.meta.namespace}/{a.meta.name}" for a in alerts) or "none")
        for alert in alerts:
            provider = self.cfg.providers.get((alert.meta.namespace, alert.provider_ref))
            if provider is None or provider.suspend:
                continue
            if not wants(kind_of(provider.type), event):
                continue
            if is_plan_event(event) and kind_of(provider.type) != "commit-status" and not alert.include_plans:
                continue  # plans go to chat, email and webhooks only when the Alert asks (includePlans)
            alert_key = f"{alert.meta.namespace}/{alert.meta.name}"
            provider_key = f"{provider.meta.namespace}/{provider.meta.name}"
            routed = with_alert_metadata(alert, event)
            if self.memory.sent.first_seen(dedupe_key(alert_key, provider_key, routed)) is not None:
                log.info("provider=%s alert=%s object=%s: the same event was sent within the dedupe "
                         "window; not sent again", provider_key, alert_key, event.object_ref)
                continue
            body = json.dumps({"alert": alert_key, "provider": provider_key, "event": routed.to_dict()},
                              separators=(",", ":")).encode()
            self.bus.publish(NOTIFY_QUEUE, body, headers=dict(delivery.headers))

    def _threaded(self, alerts: list[Alert]) -> bool:
        """Whether one of the Alerts sends to a provider that threads (and so tells stories)."""
        for alert in alerts:
            provider = self.cfg.providers.get((alert.meta.namespace, alert.provider_ref))
            if provider is not None and kind_of(provider.type) == "threaded":
                return True
        return False

    # -- step 2: one delivery to one provider ----------------------------------------------

    def handle_notification(self, delivery: Delivery) -> None:
        try:
            data = json.loads(delivery.body)
            event = Event.from_dict(data["event"])
            alert_key, provider_key = str(data["alert"]), str(data["provider"])
        except (ValueError, KeyError, TypeError, MessageError) as exc:
            raise Reject(f"malformed notification: {exc}") from None
        ns, _, name = provider_key.partition("/")
        provider = self.cfg.providers.get((ns, name))
        if provider is None:
            raise Reject(f"Provider {provider_key} is no longer configured")
        where = f"provider={provider_key} alert={alert_key} object={event.object_ref} attempt={delivery.attempt}"
        key = dedupe_key(alert_key, provider_key, event)
        record = _Record(self.history, delivery, provider, provider_key, alert_key, event, key,
                         self.settings.retry)
        if provider.suspend:
            log.info("%s: the Provider is suspended; dropped", where)
            metrics.NOTIFICATIONS.labels(provider.type, provider_key, "suspended").inc()
            record.put("dropped", "the Provider is suspended")
            return
        send = self.providers.get(provider.type)
        if send is None:
            record.put("dead-lettered", f"type {provider.type!r} is not supported")
            raise Reject(f"Provider {provider_key}: type {provider.type!r} is not supported")
        try:
            with self._sending.hold(key):
                state = self._deliver(send, provider, event, alert_key, provider_key, key, where)
        except RetryLater as exc:
            record.put("retrying", str(exc))
            raise
        except Reject as exc:
            record.put("dead-lettered", str(exc))
            raise
        except Exception as exc:
            record.put("retrying", f"{type(exc).__name__}: {exc}")
            raise
        record.put(state)

    def _deliver(self, send: SendFn, provider: Provider, event: Event, alert_key: str, provider_key: str,
                 key: str, where: str) -> str:
        """"delivered", or "duplicate" when it was already; raises RetryLater or Reject."""
        if self.memory.sent.first_seen(key) is not None:
            log.info("%s: already delivered; not sent again", where)
            metrics.NOTIFICATIONS.labels(provider.type, provider_key, "duplicate").inc()
            return "duplicate"
        secret = self._secret(provider)
        alert = self.cfg.alerts.get(tuple(alert_key.split("/", 1)))  # type: ignore[arg-type]
        summary = alert.summary if alert else ""
        source = (alert.template if alert else "") or provider.template
        note = Notification(
            event=event, alert=alert_key, summary=summary, provider=provider_key,
            message=templates.render(source, event, alert=alert_key, provider=provider_key, summary=summary),
            memory=self.memory.providers,
        )
        started = time.monotonic()
        try:
            send(provider, secret, note)
        except DeliveryError as exc:
            metrics.SEND_SECONDS.labels(provider.type).observe(time.monotonic() - started)
            if exc.retryable:
                log.warning("%s: delivery failed, will retry: %s", where, exc)
                metrics.NOTIFICATIONS.labels(provider.type, provider_key, "retry").inc()
                raise RetryLater(str(exc), exc.retry_after) from None
            log.error("%s: delivery refused, dead-lettered: %s", where, exc)
            metrics.NOTIFICATIONS.labels(provider.type, provider_key, "refused").inc()
            raise Reject(str(exc)) from None
        if provider.type in COMMIT_STATUS_TYPES and wants_comment(event.reason, event.metadata):
            # After the status: the check is final before the comment is written. A comment
            # that fails retries the whole notification (the status is not posted twice).
            try:
                plan_comments.post(provider, provider_key, secret, note)
            except DeliveryError as exc:
                if exc.retryable:
                    log.warning("%s: plan comment failed, will retry: %s", where, exc)
                    raise RetryLater(str(exc), exc.retry_after) from None
                log.error("%s: plan comment refused, dead-lettered: %s", where, exc)
                raise Reject(str(exc)) from None
        metrics.SEND_SECONDS.labels(provider.type).observe(time.monotonic() - started)
        self.memory.sent.record(key)
        metrics.NOTIFICATIONS.labels(provider.type, provider_key, "delivered").inc()
        log.info("%s: delivered", where)
        return "delivered"

    def _secret(self, provider: Provider) -> dict[str, str]:
        """The Provider's Secret, with its certSecretRef's CA added as `ca.crt`."""
        ns, where = provider.meta.namespace, f"Provider {provider.meta.namespace}/{provider.meta.name}"
        secret: dict[str, str] = {}
        if provider.secret_ref:
            found = self.cfg.secret(ns, provider.secret_ref.name)
            if found is None:
                raise Reject(f"{where}: Secret {ns}/{provider.secret_ref.name} not found")
            # Values keep their inner newlines (a PEM key, a YAML map of headers); only the
            # trailing newline that `echo` and editors add to mounted files goes.
            secret = {k: v.strip() for k, v in found.items()}
        if provider.cert_secret_ref:
            certs = self.cfg.secret(ns, provider.cert_secret_ref.name)
            if certs is None:
                raise Reject(f"{where}: Secret {ns}/{provider.cert_secret_ref.name} not found")
            ca = certs.get("ca.crt") or certs.get("caFile")
            if ca:
                secret["ca.crt"] = ca
        return secret

    def run(self, stop: threading.Event) -> None:
        """Consume events and deliveries until `stop` is set: one thread fans events out,
        `threads` deliver, so one slow provider does not hold back the others."""
        threads = [threading.Thread(target=self.bus.consume, args=(EVENTS_QUEUE, correlated(self.handle_event), stop),
                                    name="notifier-events", daemon=True)]
        threads += [
            threading.Thread(target=self.bus.consume, args=(NOTIFY_QUEUE, correlated(self.handle_notification), stop),
                             kwargs={"retry": self.settings.retry}, name=f"notifier-deliveries-{i}", daemon=True)
            for i in range(self.settings.threads)
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        finally:
            self.memory.close()
