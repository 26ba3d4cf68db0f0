"""Generic webhooks signed with an HMAC (type `generic-hmac`), in Flux's format.

Signature: `X-Signature: <algorithm>=<hex HMAC of the raw body>`, the algorithm being `sha1`,
`sha256` or `sha512`, keyed with the Receiver's token (or any of its `rotationKeys`). Several
comma-separated values are accepted while a sender moves to a new key; any one matching any
key verifies. A missing header, an unknown prefix or a value that is not hex of the right
length is refused (401): an operator who chose this type asked for signatures, so there is
no unsigned fallback.

HMAC-SHA1 is accepted here without `insecureAllowSHA1`, unlike GitHub's legacy header: it is
half of Flux's documented `generic-hmac` format (`openssl dgst -sha1 -hmac`), so refusing it
would break senders configured for Flux, and the collision attacks on SHA-1 do not carry
over to HMAC-SHA1 as a MAC. Senders that can choose should still use sha256.

As with `generic`, the body is only the input of the MAC: it need not be JSON, or even text,
so `parse` never fails. The event is always `generic-hmac` (EVENT); Flux does not support
filtering this type on `spec.events`, so leave `spec.events` empty (or list `generic-hmac`).
There is no delivery id.
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.signatures import prefixed_hmac_matches
from receiver.types.base import Hook, Keys, ReceiverType

# The fixed event name of every generic-hmac delivery, compared with spec.events.
EVENT = "generic-hmac"
HEADER = "X-Signature"
ALGORITHMS = ("sha1", "sha256", "sha512")


def signature_matches(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    """Whether `X-Signature` is present and is the HMAC of `body` under one of `keys`.

    Shared with the CloudEvents types, whose optional signature uses the same header.
    """
    try:
        signature = headers.get(HEADER, "")
        return (isinstance(signature, str) and bool(signature)
                and prefixed_hmac_matches(signature, keys.tokens, body, ALGORITHMS))
    except (TypeError, ValueError):  # hostile header values: never an exception, only "no"
        return False


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    return signature_matches(headers, body, keys)


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    """One reconcile of every selected resource; the body is not parsed."""
    return Hook(event=EVENT)


TYPE = ReceiverType(name="generic-hmac", verify=verify, parse=parse, delivery_headers=(), has_events=False)
