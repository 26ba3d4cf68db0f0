"""The generic, generic-hmac, cloudevents and cdevents receiver types, as scenarios.

Each test is one delivery a sender could make (or an attacker could forge), checked on bytes
and headers alone: `verify` on the raw body, then `parse` into a Hook or a BadDelivery (400).
CloudEvents bodies are the published examples in tests/webhooks/cloudevents (SOURCES.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import Headers

from receiver.types import cloudevents, generic, generic_hmac
from receiver.types.base import BadDelivery, Keys

FIXTURES = Path(__file__).resolve().parent / "webhooks"
CE = FIXTURES / "cloudevents"
TOKEN = "s3cr3t-token"
STRUCTURED = {"Content-Type": "application/cloudevents+json; charset=utf-8"}


def fixture(name: str) -> bytes:
    return (CE / name).read_bytes()


def published_headers(name: str) -> dict[str, str]:
    """The headers index.json lists as published alongside a fixture body."""
    index = json.loads((FIXTURES / "index.json").read_text())
    (entry,) = [f for f in index["files"] if f["file"] == f"cloudevents/{name}"]
    return entry["headers_published_with_payload"]


def cdevent_binary_headers(body: bytes) -> Headers:
    """Binary mode as cdevents/spec cloudevents-binding.md maps a CDEvent's context."""
    context = json.loads(body)["context"]
    return Headers({"ce-specversion": "1.0", "ce-type": context["type"], "ce-id": context["id"],
                    "ce-source": context["source"], "Content-Type": "application/json"})


def sign(body: bytes, key: str = TOKEN, algorithm: str = "sha256") -> str:
    return f"{algorithm}=" + hmac.new(key.encode(), body, getattr(hashlib, algorithm)).hexdigest()


# --- generic ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"", b"{}", b"plain text", b"\xff\xfe\x00 not utf-8", b"[" * 100_000],
                         ids=["empty", "json", "text", "binary", "deeply-nested"])
def test_generic_accepts_any_body_at_the_secret_url(body: bytes) -> None:
    headers = Headers({"Content-Type": "application/octet-stream"})
    assert generic.TYPE.verify(headers, body, Keys.of(TOKEN))
    hook = generic.TYPE.parse(headers, body)
    assert (hook.event, hook.delivery_id, hook.ping, hook.ignore) == ("generic", "", False, "")


def test_generic_ignores_signature_headers_it_does_not_use() -> None:
    # No signature is checked: a stray, wrong X-Signature changes nothing.
    headers = Headers({"X-Signature": "sha256=" + "0" * 64})
    assert generic.TYPE.verify(headers, b"x", Keys.of(TOKEN))


# --- generic-hmac -----------------------------------------------------------------------------

BODY = b'{"ref":"refs/heads/main","note":"any body at all"}'


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_generic_hmac_verifies_each_flux_algorithm(algorithm: str) -> None:
    headers = Headers({"X-Signature": sign(BODY, algorithm=algorithm)})
    assert generic_hmac.TYPE.verify(headers, BODY, Keys.of(TOKEN))
    hook = generic_hmac.TYPE.parse(headers, BODY)
    assert (hook.event, hook.delivery_id) == ("generic-hmac", "")


def test_generic_hmac_prefix_and_hex_case_do_not_matter() -> None:
    hexdigest = sign(BODY).partition("=")[2]
    headers = Headers({"x-signature": f"SHA256={hexdigest.upper()}"})
    assert generic_hmac.TYPE.verify(headers, BODY, Keys.of(TOKEN))


def test_generic_hmac_refuses_a_signature_made_with_another_key() -> None:
    headers = Headers({"X-Signature": sign(BODY, key="not-the-token")})
    assert not generic_hmac.TYPE.verify(headers, BODY, Keys.of(TOKEN))


def test_generic_hmac_refuses_a_tampered_body() -> None:
    headers = Headers({"X-Signature": sign(BODY)})
    assert not generic_hmac.TYPE.verify(headers, BODY + b" ", Keys.of(TOKEN))


@pytest.mark.parametrize("value", [None, ""], ids=["absent", "empty"])
def test_generic_hmac_refuses_an_unsigned_delivery(value: str | None) -> None:
    headers = Headers() if value is None else Headers({"X-Signature": value})
    assert not generic_hmac.TYPE.verify(headers, BODY, Keys.of(TOKEN))


@pytest.mark.parametrize("value", [
    sign(BODY).partition("=")[2],  # bare hex, no prefix
    "sha384=" + sign(BODY).partition("=")[2],  # unknown algorithm
    "md5=" + hashlib.md5(BODY).hexdigest(),
    "sha256:" + sign(BODY).partition("=")[2],  # wrong separator
    "sha256=" + sign(BODY).partition("=")[2][:-2],  # truncated
    "sha256=" + "zz" * 32,  # not hex
    "sha256=" + "é" * 64,  # not ASCII
    "sha256=",
    "=",
    ",,,",
], ids=["bare-hex", "sha384", "md5", "colon", "truncated", "not-hex", "non-ascii", "empty-hex", "equals",
        "commas"])
def test_generic_hmac_refuses_a_malformed_signature(value: str) -> None:
    assert not generic_hmac.TYPE.verify(Headers({"X-Signature": value}), BODY, Keys.of(TOKEN))


def test_generic_hmac_sha256_signature_under_a_sha1_prefix_is_refused() -> None:
    # The prefix names the algorithm: a sha256 MAC claimed as sha1 has the wrong length.
    hexdigest = sign(BODY).partition("=")[2]
    assert not generic_hmac.TYPE.verify(Headers({"X-Signature": f"sha1={hexdigest}"}), BODY, Keys.of(TOKEN))


def test_generic_hmac_accepts_a_rotation_key() -> None:
    keys = Keys.of(TOKEN, "next-key", "older-key")
    for key in ("next-key", "older-key"):
        assert generic_hmac.TYPE.verify(Headers({"X-Signature": sign(BODY, key=key)}), BODY, keys)
    # ...but not once the key is no longer listed.
    assert not generic_hmac.TYPE.verify(Headers({"X-Signature": sign(BODY, key="older-key")}), BODY,
                                        Keys.of(TOKEN, "next-key"))


def test_generic_hmac_accepts_comma_separated_signatures_while_rotating() -> None:
    # The sender signs with its old and its new key at once; the receiver knows only the new one.
    value = f"{sign(BODY, key='old-key')}, {sign(BODY, key=TOKEN, algorithm='sha512')}"
    assert generic_hmac.TYPE.verify(Headers({"X-Signature": value}), BODY, Keys.of(TOKEN))
    both_wrong = f"{sign(BODY, key='old-key')},{sign(BODY, key='other-key')}"
    assert not generic_hmac.TYPE.verify(Headers({"X-Signature": both_wrong}), BODY, Keys.of(TOKEN))


def test_generic_hmac_with_no_keys_refuses_everything() -> None:
    assert not generic_hmac.TYPE.verify(Headers({"X-Signature": sign(BODY)}), BODY, Keys(tokens=()))


def test_generic_hmac_body_need_not_be_json() -> None:
    body = b"\x00\xff binary \xc3\x28"
    headers = Headers({"X-Signature": sign(body)})
    assert generic_hmac.TYPE.verify(headers, body, Keys.of(TOKEN))
    assert generic_hmac.TYPE.parse(headers, body).event == "generic-hmac"


# --- CloudEvents: the published examples ------------------------------------------------------

@pytest.mark.parametrize(("name", "event_id"), [
    ("structured-json-data.json", "C234-1234-1234"),
    ("structured-data_base64.json", "D234-1234-1234"),
    ("structured-xml-data.json", "B234-1234-1234"),
])
def test_structured_mode_examples(name: str, event_id: str) -> None:
    body = fixture(name)
    hook = cloudevents.TYPE.parse(Headers(STRUCTURED), body)
    assert hook.event == "com.example.someevent"
    assert hook.delivery_id == f"/mycontext {event_id}"
    assert (hook.ping, hook.ignore, hook.changes) == (False, "", ())


def test_binary_mode_example_with_its_published_headers() -> None:
    headers = Headers(published_headers("binary-json-data-body.json"))
    hook = cloudevents.TYPE.parse(headers, fixture("binary-json-data-body.json"))
    assert hook.event == "com.example.someevent"
    assert hook.delivery_id == "/mycontext C234-1234-1234"
    assert cloudevents.TYPE.delivery_id(headers) == "C234-1234-1234"  # for logs before verification


def test_binary_mode_never_reads_the_data() -> None:
    headers = Headers(published_headers("binary-json-data-body.json"))
    headers["Content-Type"] = "application/vnd.apache.thrift.binary"
    for body in (b"", b"\xff\xfe\x00\x01", b"<much wow=\"xml\"/>"):
        assert cloudevents.TYPE.parse(headers, body).event == "com.example.someevent"


def test_structured_mode_ignores_ce_headers_the_body_overrides() -> None:
    headers = Headers({**STRUCTURED, "ce-type": "header.type", "ce-id": "header-id"})
    hook = cloudevents.TYPE.parse(headers, fixture("structured-json-data.json"))
    assert (hook.event, hook.delivery_id) == ("com.example.someevent", "/mycontext C234-1234-1234")


@pytest.mark.parametrize("name", ["cdevents-artifact_published-binary-body.json",
                                  "cdevents-change_merged-binary-body.json"])
def test_cdevents_conformance_bodies_in_binary_mode(name: str) -> None:
    body = fixture(name)
    headers = cdevent_binary_headers(body)
    context = json.loads(body)["context"]
    for rtype in (cloudevents.CDEVENTS, cloudevents.TYPE):  # a CDEvent is a CloudEvent too
        hook = rtype.parse(headers, body)
        assert hook.event == context["type"]
        assert hook.delivery_id == "/event/source/123 271069a8-fc18-44f1-b38f-9d70a1695819"
    # The artifact is a Go package (pkg:golang/...), not an OCI image: no image reported.
    assert cloudevents.CDEVENTS.parse(headers, body).image == ""


def test_cdevents_event_names_match_flux_style_spec_events() -> None:
    body = fixture("cdevents-change_merged-binary-body.json")
    hook = cloudevents.CDEVENTS.parse(cdevent_binary_headers(body), body)
    assert hook.event.lower() in {"dev.cdevents.change.merged.0.3.0"}


def test_batch_is_refused_with_a_clear_400() -> None:
    headers = Headers({"Content-Type": "application/cloudevents-batch+json; charset=utf-8"})
    for rtype in (cloudevents.TYPE, cloudevents.CDEVENTS):
        with pytest.raises(BadDelivery, match="batch.*not supported.*one event per request"):
            rtype.parse(headers, fixture("batch.json"))


def test_batch_body_sent_as_structured_is_refused() -> None:
    with pytest.raises(BadDelivery, match="JSON object"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), fixture("batch.json"))


# --- CloudEvents: attributes ------------------------------------------------------------------

def structured(**changes: object) -> bytes:
    event = json.loads(fixture("structured-json-data.json"))
    for name, value in changes.items():
        if value is ...:
            event.pop(name, None)
        else:
            event[name] = value
    return json.dumps(event).encode()


@pytest.mark.parametrize("name", ["specversion", "id", "source", "type"])
@pytest.mark.parametrize("value", [..., None, ""], ids=["absent", "null", "empty"])
def test_structured_event_without_a_required_attribute_is_refused(name: str, value: object) -> None:
    with pytest.raises(BadDelivery, match=f"required attribute '{name}' is missing"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), structured(**{name: value}))


@pytest.mark.parametrize("name", ["specversion", "id", "source", "type"])
@pytest.mark.parametrize("value", [5, True, ["a"], {"a": "b"}], ids=["number", "bool", "list", "object"])
def test_structured_attribute_of_the_wrong_json_type_is_refused(name: str, value: object) -> None:
    with pytest.raises(BadDelivery, match=f"'{name}' must be a string"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), structured(**{name: value}))


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_attributes_with_control_characters_are_refused(name: str) -> None:
    # They would reach logs (a newline forges a log line); the spec forbids them anyway.
    with pytest.raises(BadDelivery, match="control characters"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), structured(**{name: "a\nforged=line"}))


def test_overlong_attribute_is_refused() -> None:
    with pytest.raises(BadDelivery, match="longer than"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), structured(type="x" * 5000))


@pytest.mark.parametrize("version", ["0.3", "2.0", "one"])
def test_other_spec_versions_are_refused(version: str) -> None:
    with pytest.raises(BadDelivery, match="specversion"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), structured(specversion=version))


def test_data_and_data_base64_together_are_refused() -> None:
    with pytest.raises(BadDelivery, match="mutually exclusive"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), structured(data_base64="eyJ9"))


@pytest.mark.parametrize("value", ["... base64 encoded string ...", 12, "abc"])
def test_invalid_data_base64_is_refused(value: object) -> None:
    # The batch example's placeholder is exactly this: not base64.
    with pytest.raises(BadDelivery, match="data_base64"):
        cloudevents.TYPE.parse(Headers(STRUCTURED), structured(data=..., data_base64=value))


BINARY = published_headers("binary-json-data-body.json")


@pytest.mark.parametrize("name", ["specversion", "id", "source", "type"])
def test_binary_event_without_a_required_header_is_refused(name: str) -> None:
    headers = Headers({k: v for k, v in BINARY.items() if k != f"ce-{name}"})
    with pytest.raises(BadDelivery, match=f"'{name}' is missing"):
        cloudevents.TYPE.parse(headers, b"{}")


def test_plain_json_without_ce_headers_is_not_a_cloudevent() -> None:
    with pytest.raises(BadDelivery, match="not a CloudEvent"):
        cloudevents.TYPE.parse(Headers({"Content-Type": "application/json"}), fixture("structured-json-data.json"))


def test_a_bare_cdevent_without_cloudevents_headers_is_refused() -> None:
    with pytest.raises(BadDelivery, match="not a CloudEvent"):
        cloudevents.CDEVENTS.parse(Headers({"Content-Type": "application/json"}),
                                   fixture("cdevents-change_merged-binary-body.json"))


def test_other_event_formats_are_refused() -> None:
    with pytest.raises(BadDelivery, match="not supported"):
        cloudevents.TYPE.parse(Headers({"Content-Type": "application/cloudevents+protobuf"}), b"\x0a\x01")


# --- CloudEvents: header encoding -------------------------------------------------------------

def binary(**ce: str) -> Headers:
    headers = Headers(BINARY)
    for name, value in ce.items():
        headers[f"ce-{name}"] = value
    return headers


def test_percent_encoded_header_values_are_decoded() -> None:
    # The binding's own example: "Euro € 😀".
    hook = cloudevents.TYPE.parse(binary(type="Euro%20%E2%82%AC%20%F0%9F%98%80", source="/my%2fcontext"), b"")
    assert hook.event == "Euro \u20ac \U0001f600"
    assert hook.delivery_id == "/my/context C234-1234-1234"


def test_quoted_header_values_from_older_senders_are_unescaped() -> None:
    hook = cloudevents.TYPE.parse(binary(type='"com.example.some event"', id='"a\\"b"'), b"")
    assert (hook.event, hook.delivery_id) == ("com.example.some event", '/mycontext a"b')


@pytest.mark.parametrize("value", [
    "%C0%A0",  # overlong encoding of a space: the binding says it MUST be rejected
    "%ED%A0%80",  # a UTF-16 surrogate
    "%FF",
    "abc%2",  # truncated escape
    "abc%zz",
    "caf\u00e9",  # raw non-ASCII: should have been percent-encoded
    '"unterminated',
    '"bad"quote"',
    '"trailing\\"',
    "a%0Ab",  # decodes to a control character
])
def test_malformed_header_values_are_refused(value: str) -> None:
    with pytest.raises(BadDelivery):
        cloudevents.TYPE.parse(binary(type=value), b"")


# --- CDEvents ---------------------------------------------------------------------------------

CHANGE_MERGED = fixture("cdevents-change_merged-binary-body.json")


def cdevent(**context: object) -> dict:
    event = json.loads(CHANGE_MERGED)
    event["context"].update(context)
    return event


def test_cdevent_in_structured_mode() -> None:
    data = cdevent()
    envelope = {"specversion": "1.0", "type": data["context"]["type"], "id": data["context"]["id"],
                "source": data["context"]["source"], "datacontenttype": "application/json", "data": data}
    hook = cloudevents.CDEVENTS.parse(Headers(STRUCTURED), json.dumps(envelope).encode())
    assert hook.event == "dev.cdevents.change.merged.0.3.0"
    # ...and the same CDEvent carried base64-encoded.
    del envelope["data"]
    envelope["data_base64"] = base64.b64encode(json.dumps(data).encode()).decode()
    assert cloudevents.CDEVENTS.parse(Headers(STRUCTURED), json.dumps(envelope).encode()).event == hook.event


@pytest.mark.parametrize("header", ["ce-type", "ce-id", "ce-source"])
def test_cdevent_whose_headers_contradict_its_context_is_refused(header: str) -> None:
    # The signature covers the body only: headers that disagree with it cannot be trusted.
    headers = cdevent_binary_headers(CHANGE_MERGED)
    headers[header] = "dev.cdevents.artifact.published.0.3.0" if header == "ce-type" else "other"
    with pytest.raises(BadDelivery, match="differs from context"):
        cloudevents.CDEVENTS.parse(headers, CHANGE_MERGED)


def test_cloudevent_that_is_not_a_cdevent_is_refused_by_cdevents() -> None:
    with pytest.raises(BadDelivery, match="CDEvent"):
        cloudevents.CDEVENTS.parse(Headers(BINARY), fixture("binary-json-data-body.json"))
    with pytest.raises(BadDelivery, match="CDEvent"):
        cloudevents.CDEVENTS.parse(Headers(STRUCTURED), fixture("structured-xml-data.json"))


def test_cdevent_type_must_be_a_cdevents_type() -> None:
    body = json.dumps(cdevent(type="com.example.someevent")).encode()
    with pytest.raises(BadDelivery, match="not a CDEvents type"):
        cloudevents.CDEVENTS.parse(cdevent_binary_headers(body), body)


@pytest.mark.parametrize("mutate", [
    lambda e: e.pop("context"),
    lambda e: e.pop("subject"),
    lambda e: e.update(context="string"),
    lambda e: e["context"].update(id=7),
    lambda e: e["context"].pop("source"),
], ids=["no-context", "no-subject", "context-not-object", "id-not-string", "no-source"])
def test_malformed_cdevent_is_refused(mutate) -> None:
    headers = cdevent_binary_headers(CHANGE_MERGED)
    event = json.loads(CHANGE_MERGED)
    mutate(event)
    with pytest.raises(BadDelivery):
        cloudevents.CDEVENTS.parse(headers, json.dumps(event).encode())


def test_cdevent_naming_an_oci_artifact_reports_its_image_and_digest() -> None:
    digest = "sha256:" + "ab" * 32
    event = json.loads(fixture("cdevents-artifact_published-binary-body.json"))
    event["subject"]["id"] = (f"pkg:oci/podinfo@{digest.replace(':', '%3A')}"
                              "?repository_url=ghcr.io/stefanprodan/podinfo&tag=6.6.2")
    body = json.dumps(event).encode()
    hook = cloudevents.CDEVENTS.parse(cdevent_binary_headers(body), body)
    assert (hook.event, hook.image, hook.digest) == ("dev.cdevents.artifact.published.0.3.0",
                                                     "ghcr.io/stefanprodan/podinfo:6.6.2", digest)


def test_cdevent_artifact_without_repository_or_tag() -> None:
    event = cdevent(type="dev.cdevents.service.deployed.0.2.0")
    event["subject"]["content"] = {"artifactId": "pkg:oci/myapp@sha256%3Anot-a-digest"}
    body = json.dumps(event).encode()
    hook = cloudevents.CDEVENTS.parse(cdevent_binary_headers(body), body)
    assert (hook.image, hook.digest) == ("myapp", "")


# --- CloudEvents: optional signature ----------------------------------------------------------

def test_unsigned_cloudevent_is_accepted_by_default() -> None:
    # As Flux's cdevents Receiver: the secret URL is the credential.
    for rtype in (cloudevents.TYPE, cloudevents.CDEVENTS):
        assert rtype.verify(Headers(BINARY), b"{}", Keys.of(TOKEN))


def test_a_signature_present_must_verify_even_when_optional() -> None:
    body = fixture("structured-json-data.json")
    keys = Keys.of(TOKEN, "rotated")
    assert cloudevents.TYPE.verify(Headers({**STRUCTURED, "X-Signature": sign(body)}), body, keys)
    assert cloudevents.TYPE.verify(Headers({**STRUCTURED, "X-Signature": sign(body, "rotated", "sha512")}),
                                   body, keys)
    assert not cloudevents.TYPE.verify(Headers({**STRUCTURED, "X-Signature": sign(body, "wrong")}), body, keys)
    assert not cloudevents.TYPE.verify(Headers({**STRUCTURED, "X-Signature": "garbage"}), body, keys)


@pytest.mark.parametrize("value", ["true", "True", "", "yes", "treu"])
def test_require_signature_in_the_secret_refuses_unsigned_deliveries(value: str) -> None:
    # Anything but "false" asks for signatures: a typo fails closed.
    body = CHANGE_MERGED
    keys = Keys.of(TOKEN, requireSignature=value)
    assert cloudevents.signature_required(keys)
    headers = cdevent_binary_headers(body)
    assert not cloudevents.CDEVENTS.verify(headers, body, keys)
    headers["X-Signature"] = sign(body, algorithm="sha1")
    assert cloudevents.CDEVENTS.verify(headers, body, keys)
    headers["X-Signature"] = sign(body, key="wrong")
    assert not cloudevents.CDEVENTS.verify(headers, body, keys)


@pytest.mark.parametrize("value", ["false", "FALSE", " false "])
def test_require_signature_false_keeps_signatures_optional(value: str) -> None:
    keys = Keys.of(TOKEN, requireSignature=value)
    assert not cloudevents.signature_required(keys)
    assert cloudevents.TYPE.verify(Headers(BINARY), b"{}", keys)


# --- malformed input: BadDelivery, never another exception ------------------------------------

ALL_PARSERS = [generic.TYPE, generic_hmac.TYPE, cloudevents.TYPE, cloudevents.CDEVENTS]


@pytest.mark.parametrize("content_type", ["application/cloudevents+json", "application/json"])
@pytest.mark.parametrize("body", [
    b"", b"\xff\xfe\xfd", b"\xc3\x28", b"null", b"[]", b"42", b'"text"', b"{", b"[" * 50_000,
    b'{"a":' * 50_000, b'{"specversion": "1.0"', "\ufeff{}".encode(),
], ids=["empty", "latin1", "bad-utf8", "null", "array", "number", "string", "truncated", "nested-array",
        "nested-object", "truncated-event", "bom"])
def test_malformed_bodies_are_bad_deliveries(content_type: str, body: bytes) -> None:
    headers = Headers({"Content-Type": content_type, **{k: v for k, v in BINARY.items() if k.startswith("ce-")}})
    for rtype in ALL_PARSERS:
        try:
            rtype.parse(headers, body)
        except BadDelivery:
            pass
        assert rtype.verify(headers, body, Keys.of(TOKEN)) in (True, False)


HEADER_NAMES = st.sampled_from(["Content-Type", "ce-specversion", "ce-id", "ce-source", "ce-type",
                                "X-Signature", "ce-time"])
HEADER_VALUES = st.one_of(
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40),
    st.sampled_from(["application/cloudevents+json", "application/cloudevents-batch+json", "1.0",
                     "sha256=", "sha1=" + "0" * 40, "%", "%C3", '"', "dev.cdevents.x"]),
)
CE_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.sampled_from(["1.0", "dev.cdevents.change.merged.0.3.0", "/event/source/123"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["specversion", "id", "source", "type", "data", "data_base64",
                                       "context", "subject", "content", "artifactId"]), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8),
       body=st.one_of(st.binary(max_size=200), CE_JSON.map(lambda v: json.dumps(v).encode())))
def test_fuzzed_deliveries_never_raise_anything_but_bad_delivery(headers, body) -> None:
    h = Headers()
    for name, value in headers:
        h.add(name, value)
    keys = Keys.of(TOKEN, requireSignature="true")
    for rtype in ALL_PARSERS:
        assert rtype.verify(h, body, keys) in (True, False)
        assert rtype.verify(h, body, Keys(tokens=())) in (True, False)
        try:
            hook = rtype.parse(h, body)
        except BadDelivery:
            continue
        assert isinstance(hook.event, str) and hook.event


def test_header_values_that_are_not_strings_are_treated_as_absent() -> None:
    # A careless caller (or a fuzzer) passing a plain dict: still only True/False or BadDelivery.
    headers = {"X-Signature": b"sha256=00", "Content-Type": None, "ce-type": 5, "ce-id": ["x"]}
    for rtype in ALL_PARSERS:
        assert rtype.verify(headers, b"{}", Keys.of(TOKEN, requireSignature="true")) in (True, False)
        try:
            rtype.parse(headers, b"{}")
        except BadDelivery:
            pass
    assert not generic_hmac.TYPE.verify(headers, b"{}", Keys.of(TOKEN))
    assert not cloudevents.TYPE.verify(headers, b"{}", Keys.of(TOKEN, requireSignature="true"))
