"""The notifier: route each event to its Alerts' providers, then deliver each one durably.

Two steps on the bus instead of one: an event fans out into one delivery message per
(Alert, Provider), and each delivery is retried on its own. A Slack outage then delays only the
Slack message; it never re-sends the same event to the providers that already got it.
"""

from __future__ import annotations

import json
import logging
import threading

from herald.bus import Bus, Delivery, Reject
from herald.config import Config
from herald.messages import EVENTS_QUEUE, NOTIFY_QUEUE, Event, MessageError
from notifier.providers import PROVIDERS, DeliveryError, Notification, SendFn
from notifier.routing import route, with_alert_metadata

log = logging.getLogger("herald.notifier")


class ProviderUnavailable(Exception):
    """A retryable delivery failure: the bus tries again later."""


class Notifier:
    def __init__(self, cfg: Config, bus: Bus, providers: dict[str, SendFn] | None = None):
        self.cfg = cfg
        self.bus = bus
        self.providers = PROVIDERS if providers is None else providers

    def _labels(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        obj = self.cfg.by_kind(kind).get((namespace, name))
        return dict(obj.meta.labels) if obj is not None else {}

    def handle_event(self, delivery: Delivery) -> None:
        try:
            event = Event.from_json(delivery.body)
        except MessageError as exc:
            raise Reject(str(exc)) from None
        alerts = route(list(self.cfg.alerts.values()), event, self._labels)
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
            body = json.dumps({
                "alert": f"{alert.meta.namespace}/{alert.meta.name}",
                "provider": f"{provider.meta.namespace}/{provider.meta.name}",
                "event": with_alert_metadata(alert, event).to_dict(),
            }, separators=(",", ":")).encode()
            self.bus.publish(NOTIFY_QUEUE, body, headers=dict(delivery.headers))

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
        send = self.providers.get(provider.type)
        if send is None:
            raise Reject(f"Provider {provider_key}: type {provider.type!r} is not supported")
        secret: dict[str, str] = {}
        if provider.secret_ref:
            found = self.cfg.secret(ns, provider.secret_ref.name)
            if found is None:
                raise Reject(f"Provider {provider_key}: Secret {ns}/{provider.secret_ref.name} not found")
            secret = {k: v.strip() for k, v in found.items()}
        alert = self.cfg.alerts.get(tuple(alert_key.split("/", 1)))  # type: ignore[arg-type]
        note = Notification(event=event, alert=alert_key, summary=alert.summary if alert else "")
        where = f"provider={provider_key} alert={alert_key} object={event.object_ref} attempt={delivery.attempt}"
        try:
            send(provider, secret, note)
        except DeliveryError as exc:
            if exc.retryable:
                log.warning("%s: delivery failed, will retry: %s", where, exc)
                raise ProviderUnavailable(str(exc)) from None
            log.error("%s: delivery refused, dead-lettered: %s", where, exc)
            raise Reject(str(exc)) from None
        log.info("%s: delivered", where)

    def run(self, stop: threading.Event) -> None:
        """Consume events and deliveries until `stop` is set (two threads, one per queue)."""
        threads = [
            threading.Thread(target=self.bus.consume, args=(EVENTS_QUEUE, self.handle_event, stop),
                             name="notifier-events", daemon=True),
            threading.Thread(target=self.bus.consume, args=(NOTIFY_QUEUE, self.handle_notification, stop),
                             name="notifier-deliveries", daemon=True),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
