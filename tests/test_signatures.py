"""Published HMAC vectors verify, and their published negatives are rejected.

The vectors come from GitHub's docs, octokit and drone/go-scm (tests/webhooks); they only
hold on the exact bytes, so the payload files are read, never re-serialised.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from receiver.signatures import hmac_matches, prefixed_hmac_matches
from receiver.types import github
from receiver.types.base import Keys
from tests.fixtures_herald import FIXTURES

VECTORS = json.loads((FIXTURES / "signature-vectors.json").read_text())["hmac_vectors"]


def _payload(v: dict) -> bytes:
    if "payload_file" in v:
        data = (FIXTURES / v["payload_file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == v["payload_file_sha256"], "fixture was altered"
        return data
    return bytes.fromhex(v["payload_hex"])


def _split(header_value: str, algorithm: str) -> str:
    prefix = algorithm.removeprefix("hmac-") + "="
    return header_value.removeprefix(prefix)


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_published_vector_verifies(v: dict) -> None:
    algorithm = v["algorithm"].removeprefix("hmac-")
    assert hmac_matches(algorithm, [v["secret"]], _payload(v), [_split(v["expected_header_value"], v["algorithm"])])


@pytest.mark.parametrize(
    "v,negative",
    [(v, n["header_value"]) for v in VECTORS for n in v.get("published_negative_values", [])],
    ids=lambda x: x["id"] if isinstance(x, dict) else repr(x),
)
def test_published_negative_is_rejected(v: dict, negative: str) -> None:
    algorithm = v["algorithm"].removeprefix("hmac-")
    assert not hmac_matches(algorithm, [v["secret"]], _payload(v), [_split(negative, v["algorithm"])])
    if v["header"] == "X-Hub-Signature-256":
        assert not github.verify({"X-Hub-Signature-256": negative}, _payload(v), Keys.of(v["secret"]))


GITHUB = [v for v in VECTORS if v["header"] == "X-Hub-Signature-256"]


@pytest.mark.parametrize("v", GITHUB, ids=[v["id"] for v in GITHUB])
def test_github_receiver_accepts_published_signature(v: dict) -> None:
    headers = {"X-Hub-Signature-256": v["expected_header_value"]}
    assert github.verify(headers, _payload(v), Keys.of(v["secret"]))
    assert not github.verify(headers, _payload(v), Keys.of(v["secret"] + "x")), "wrong key must fail"
    assert not github.verify(headers, _payload(v) + b" ", Keys.of(v["secret"])), "changed body must fail"


def test_github_receiver_rejects_missing_and_sha1_only_signatures() -> None:
    sha1 = next(v for v in VECTORS if v["id"] == "go-scm-github-push-sha1")
    body = _payload(sha1)
    assert not github.verify({}, body, Keys.of(sha1["secret"]))
    # The legacy sha1 header alone is not enough: it is opt-in (a later Receiver option).
    assert not github.verify({"X-Hub-Signature": sha1["expected_header_value"]}, body, Keys.of(sha1["secret"]))
    # A sha1 value smuggled into the sha256 header is not a sha256 signature.
    assert not prefixed_hmac_matches(sha1["expected_header_value"], [sha1["secret"]], body, ("sha256",))
    # Allowed explicitly (spec.insecureAllowSHA1), the legacy header verifies.
    assert github.verify({"X-Hub-Signature": sha1["expected_header_value"]}, body, Keys.of(sha1["secret"], allow_sha1=True))


def test_malformed_signatures_are_rejected_not_crashing() -> None:
    for value in ["", "sha256=", "sha256=zz", "sha256=" + "0" * 63, "=abc", "sha256", "sha512=" + "0" * 128]:
        assert not github.verify({"X-Hub-Signature-256": value}, b"{}", Keys.of("key"))
