"""What a receiver type module provides.

Each module (one per Git host or registry) exposes two pure functions, so verification and
parsing are tested on bytes and headers alone, with no HTTP server:

    verify(headers, body, token) -> bool      # on the raw bytes, before any parsing
    parse(headers, body) -> Hook              # raises BadDelivery for a malformed body
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Mapping


class BadDelivery(ValueError):
    """A correctly signed delivery whose body or headers make no sense: answered 400."""


@dataclass(frozen=True)
class Hook:
    """What a verified delivery says, in the terms the receiver needs to act on it."""

    event: str  # the host's event name, compared with a Receiver's spec.events
    delivery_id: str = ""
    ping: bool = False  # a liveness check from the sender: answered, never published
    ref_kind: str = ""  # "branch" or "tag" when the delivery names a Git ref
    ref: str = ""  # branch or tag name
    revision: str = ""  # "<ref>@sha1:<sha>", as Flux writes revisions


@dataclass(frozen=True)
class ReceiverType:
    name: str
    verify: Callable[[Mapping[str, str], bytes, str], bool]
    parse: Callable[[Mapping[str, str], bytes], Hook]
