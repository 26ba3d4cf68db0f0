"""Generic webhooks (type `generic`): any request to the secret URL triggers a reconcile.

As in Flux, the only credential is the URL itself: `/hook/<sha256(token + name + namespace)>`
cannot be guessed without the Secret's token, so whoever knows it may trigger the Receiver's
resources. There is no signature to check, so `verify` accepts every delivery. Operators who
can make their sender sign should use `generic-hmac` instead.

The body is never read. Flux's generic receiver accepts any body, and the senders this type
exists for (CI jobs running curl, Bitbucket Cloud, tools with no webhook format of their own)
post anything: an empty body, form fields, plain text, JSON, binary. None of it says anything
Herald could act on, so rejecting a body Herald does not use would only break those senders.
`parse` therefore never fails, whatever the bytes.

The event is always `generic` (EVENT). Flux's generic receiver does not support filtering on
`spec.events`; here a Receiver whose `spec.events` is empty (the sensible setting) takes every
delivery, and one that lists `generic` does too. Listing anything else makes every delivery
answer 200 "not in spec.events", as the sender gives no event name to match. There is no
delivery id either (the sender names none).
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.types.base import Hook, Keys, ReceiverType

# The fixed event name of every generic delivery, compared with spec.events.
EVENT = "generic"


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    """Always true: the secret URL that routed the request here is the only credential."""
    return True


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    """One reconcile of every selected resource; the body is deliberately not looked at."""
    return Hook(event=EVENT)


TYPE = ReceiverType(name="generic", verify=verify, parse=parse, delivery_headers=(), has_events=False)
