"""CloudEvents over HTTP (type `cloudevents`) and CDEvents (type `cdevents`).

Two types share this module: TYPE (`cloudevents`, any CloudEvent) and CDEVENTS (`cdevents`, a
CloudEvent whose data is a CDEvent, as Flux's `cdevents` Receiver takes).

Content modes (CloudEvents HTTP protocol binding 1.0):
* Structured: `Content-Type: application/cloudevents+json`; the body is one event in the JSON
  format, attributes and data together. Any `ce-*` headers are then ignored: the body is the
  event (the binding lets senders copy attributes to headers, and the body wins).
* Binary: any other Content-Type; the attributes are `ce-<name>` headers and the body is the
  event data, which the `cloudevents` type never reads (it may be XML, protobuf, empty...).
  Header values are percent-encoded UTF-8, optionally inside an RFC 7230 quoted string (older
  senders): both are decoded, and a malformed escape or invalid UTF-8 is a 400.
* Batch (`application/cloudevents-batch+json`) is refused with a 400. A Hook is one event,
  filtered on one `type` against spec.events; a batch may mix types (the spec's own example
  does), and reconciling for all of them because one matched, or choosing one, would both be
  guesses. Senders can post each event on its own. Other event formats
  (`application/cloudevents+avro`, `+protobuf`, ...) are refused too.

The required attributes `specversion` (major version 1), `id`, `source` and `type` must be
non-empty strings without control characters (the spec forbids them, and they reach logs),
at most 1024 characters; a missing one is a 400 naming it. JSON `null` counts as missing, as
the JSON format says. In structured mode `data` and `data_base64` may not both be present and
`data_base64` must be valid base64.

Hook fields:
* `event` is the CloudEvents `type` (Flux's cdevents Receiver compares `Ce-Type` with
  spec.events the same way), e.g. `dev.cdevents.change.merged.0.3.0`.
* `delivery_id` is `<source> <id>`: the spec only makes `id` unique per `source`, so the id
  alone could collide between two senders posting to one Receiver.

CDEvents (`cdevents` type): the data must be a CDEvent, a JSON object with a `context` object
(`id`, `source`, `type` strings) and a `subject` object. In binary mode (what the CDEvents
binding describes) the body is that object; in structured mode it is `data` (or JSON inside
`data_base64`). The CDEvents binding requires the CloudEvent's type, id and source to be the
CDEvent's context type, id and source; they must match here (400 otherwise), which also means
that in binary mode, where the signature below covers only the body, the `ce-*` headers that
decide filtering are vouched for by the signed body. The type must start with `dev.cdevents.`
(or `dev.cdeventsx.`, CDEvents' custom events). A CloudEvent is required: a bare CDEvent with
no `ce-*` headers is refused, where Flux would take it with an empty event name. When the
CDEvent names an OCI artifact as a package URL (`pkg:oci/<name>@sha256%3A...?repository_url=
...&tag=...`, in `subject.id` for artifact events or `subject.content.artifactId`), the Hook
carries it as `image`/`digest`, for logs only.

Authentication: like Flux's cdevents Receiver, the secret URL is the credential by default.
An optional HMAC in generic-hmac's format, `X-Signature: sha1|sha256|sha512=<hex>` over the
raw body with the token or a rotation key, adds integrity:
* When the request carries a non-empty `X-Signature`, it must verify (401 otherwise): a sender
  that signs is never let through with a wrong signature just because signing is optional.
* When the Receiver's Secret has the key `requireSignature`, every delivery must carry a valid
  `X-Signature`; a missing one is a 401. Any value but `false` (any case) counts as asking
  for signatures, an empty or misspelt value included: a typo fails closed, visibly, rather
  than leaving a Receiver open that its operator meant to protect.
In binary mode of the `cloudevents` type the signature covers the data only, not the `ce-*`
headers: someone who captured a signed delivery could replay its body under another type or
id. Structured mode, or the `cdevents` type, has no such gap.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from receiver.types.base import BadDelivery, Hook, Keys, ReceiverType, json_object, text
from receiver.types.generic_hmac import HEADER as SIGNATURE_HEADER
from receiver.types.generic_hmac import signature_matches

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
FORMAT_PREFIX = "application/cloudevents"  # +json, +avro, +protobuf, -batch+json, ...
REQUIRED = ("specversion", "id", "source", "type")
MAX_ATTRIBUTE = 1024
# The Secret key that makes `X-Signature` mandatory (see the module docstring).
REQUIRE_SIGNATURE = "requireSignature"
CDEVENT_PREFIXES = ("dev.cdevents.", "dev.cdeventsx.")
_HEX = frozenset("0123456789abcdefABCDEF")


# --- verification ---------------------------------------------------------------------------

def signature_required(keys: Keys) -> bool:
    """Whether the Receiver's Secret asks for signed deliveries (`requireSignature`)."""
    value = keys.secret.get(REQUIRE_SIGNATURE)
    return value is not None and str(value).strip().lower() != "false"


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    if _header(headers, SIGNATURE_HEADER):
        return signature_matches(headers, body, keys)
    return not signature_required(keys)


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, "" when absent (or, from a careless caller, not a string)."""
    value = headers.get(name, "")
    return value if isinstance(value, str) else ""


# --- attributes -----------------------------------------------------------------------------

def _media_type(headers: Mapping[str, str]) -> str:
    return _header(headers, "Content-Type").split(";")[0].strip().lower()


def _check_attribute(name: str, value: Any, where: str) -> str:
    if value is None or value == "":
        raise BadDelivery(f"CloudEvent: required attribute {name!r} is missing ({where})")
    if not isinstance(value, str):
        raise BadDelivery(f"CloudEvent: attribute {name!r} must be a string ({where})")
    if len(value) > MAX_ATTRIBUTE:
        raise BadDelivery(f"CloudEvent: attribute {name!r} is longer than {MAX_ATTRIBUTE} characters")
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in value):
        raise BadDelivery(f"CloudEvent: attribute {name!r} contains control characters")
    return value


def _check_specversion(value: str) -> None:
    if value.split(".")[0] != "1":
        raise BadDelivery(f"CloudEvent: unsupported specversion {value[:20]!r} (expected 1.0)")


def _unquote_http(value: str, header: str) -> str:
    """The content of an RFC 7230 quoted string (`"..."` with backslash escapes)."""
    out: list[str] = []
    i, end = 1, len(value) - 1
    while i < end:
        c = value[i]
        if c == "\\":
            if i + 1 >= end:
                raise BadDelivery(f"{header} header: malformed quoted string")
            out.append(value[i + 1])
            i += 2
        elif c == '"':
            raise BadDelivery(f"{header} header: malformed quoted string")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def decode_header(value: str, header: str) -> str:
    """A `ce-*` header value as the binding encodes it: percent-encoded UTF-8, maybe quoted."""
    value = value.strip(" \t")
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            raise BadDelivery(f"{header} header: malformed quoted string")
        value = _unquote_http(value, header)
    if any(not " " <= c <= "~" for c in value):
        raise BadDelivery(f"{header} header: non-ASCII or control characters must be percent-encoded")
    raw = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "%":
            pair = value[i + 1:i + 3]
            if len(pair) != 2 or not all(c in _HEX for c in pair):
                raise BadDelivery(f"{header} header: malformed percent-encoding")
            raw.append(int(pair, 16))
            i += 3
        else:
            raw.append(ord(value[i]))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadDelivery(f"{header} header: percent-encoded bytes are not valid UTF-8") from None


def _binary_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    present = {name: _header(headers, f"ce-{name}") for name in REQUIRED}
    if not any(present.values()):
        raise BadDelivery(
            "not a CloudEvent: expected Content-Type application/cloudevents+json (structured mode) "
            "or ce-specversion, ce-id, ce-source and ce-type headers (binary mode)")
    attributes = {}
    for name, raw in present.items():
        if not raw:
            raise BadDelivery(f"CloudEvent: required attribute {name!r} is missing (no ce-{name} header)")
        attributes[name] = _check_attribute(name, decode_header(raw, f"ce-{name}"), f"ce-{name} header")
    _check_specversion(attributes["specversion"])
    return attributes


def _structured_event(body: bytes) -> dict[str, Any]:
    event = json_object(body, "structured CloudEvent")
    for name in REQUIRED:
        _check_attribute(name, event.get(name), "structured body")
    _check_specversion(event["specversion"])
    data_base64 = event.get("data_base64")
    if data_base64 is not None:
        if event.get("data") is not None:
            raise BadDelivery("CloudEvent: 'data' and 'data_base64' are mutually exclusive")
        _b64decode(data_base64)
    return event


def _b64decode(value: Any) -> bytes:
    if not isinstance(value, str):
        raise BadDelivery("CloudEvent: 'data_base64' must be a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadDelivery("CloudEvent: 'data_base64' is not valid base64") from None


def _read(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, str], dict[str, Any] | None]:
    """The event's required attributes, and its structured JSON when in structured mode."""
    media_type = _media_type(headers)
    if media_type == BATCH:
        raise BadDelivery(
            "batched CloudEvents (application/cloudevents-batch+json) are not supported: "
            "send one event per request, in structured or binary mode")
    if media_type == STRUCTURED:
        event = _structured_event(body)
        return {name: event[name] for name in REQUIRED}, event
    if media_type.startswith(FORMAT_PREFIX):
        raise BadDelivery(f"CloudEvents event format {media_type[:80]!r} is not supported; use JSON")
    return _binary_attributes(headers), None


def _delivery_id(attributes: Mapping[str, str]) -> str:
    return f"{attributes['source']} {attributes['id']}"


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    attributes, _ = _read(headers, body)
    return Hook(event=attributes["type"], delivery_id=_delivery_id(attributes))


# --- CDEvents -------------------------------------------------------------------------------

def _cdevent_data(body: bytes, event: dict[str, Any] | None) -> dict[str, Any]:
    if event is None:  # binary mode: the body is the CDEvent
        return json_object(body, "CDEvent body")
    if event.get("data_base64") is not None:
        return json_object(_b64decode(event["data_base64"]), "CDEvent in 'data_base64'")
    data = event.get("data")
    if not isinstance(data, dict):
        raise BadDelivery("CDEvent: the CloudEvent's 'data' must be the CDEvent JSON object")
    return data


def _oci_artifact(purl: str) -> tuple[str, str]:
    """(image, digest) from `pkg:oci/<name>@<digest>?repository_url=...&tag=...`, else ("", "")."""
    if not purl.startswith("pkg:oci/"):
        return "", ""
    rest, _, qualifiers = purl.removeprefix("pkg:oci/").partition("#")[0].partition("?")
    name, _, version = rest.partition("@")
    if not name or "/" in name:
        return "", ""
    try:
        params = dict(parse_qsl(qualifiers, max_num_fields=32))
    except ValueError:
        return "", ""
    repository = params.get("repository_url", "").strip()
    repository = repository.split("://", 1)[-1].rstrip("/") or unquote(name).lower()
    tag = params.get("tag", "").strip()
    image = f"{repository}:{tag}" if tag else repository
    version = unquote(version).lower()
    algorithm, _, hex_digest = version.partition(":")
    well_formed = algorithm == "sha256" and len(hex_digest) == 64 and all(c in _HEX for c in hex_digest)
    digest = version if well_formed else ""
    if any(c <= " " or c == "\x7f" for c in image):
        return "", ""
    return image[:512], digest


def parse_cdevent(headers: Mapping[str, str], body: bytes) -> Hook:
    attributes, event = _read(headers, body)
    cdevent = _cdevent_data(body, event)
    context = cdevent.get("context")
    if not isinstance(context, dict):
        raise BadDelivery("CDEvent: missing 'context' object")
    if not isinstance(cdevent.get("subject"), dict):
        raise BadDelivery("CDEvent: missing 'subject' object")
    for name in ("type", "id", "source"):
        value = context.get(name)
        if not isinstance(value, str) or not value:
            raise BadDelivery(f"CDEvent: context.{name} must be a non-empty string")
        if value != attributes[name]:
            raise BadDelivery(
                f"CDEvent: the CloudEvent {name} {attributes[name][:200]!r} differs from "
                f"context.{name} {value[:200]!r} (the CDEvents binding requires them equal)")
    if not attributes["type"].startswith(CDEVENT_PREFIXES):
        raise BadDelivery(f"CDEvent: type {attributes['type'][:200]!r} is not a CDEvents type (dev.cdevents.*)")
    image, digest = _oci_artifact(text(cdevent, "subject", "id"))
    if not image:
        image, digest = _oci_artifact(text(cdevent, "subject", "content", "artifactId"))
    return Hook(event=attributes["type"], delivery_id=_delivery_id(attributes), image=image, digest=digest)


TYPE = ReceiverType(name="cloudevents", verify=verify, parse=parse, delivery_headers=("ce-id",))
CDEVENTS = ReceiverType(name="cdevents", verify=verify, parse=parse_cdevent, delivery_headers=("ce-id",))
