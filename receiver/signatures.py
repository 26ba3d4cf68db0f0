"""HMAC verification shared by the signed receiver types.

Everything goes through `cryptography`'s HMAC.verify, which compares in constant time, so a
sender cannot learn the expected MAC byte by byte from response timings.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha512": hashes.SHA512,
}


def hmac_matches(algorithm: str, key: bytes, body: bytes, hex_signature: str) -> bool:
    """Whether `hex_signature` is the HMAC of `body` under `key`; False for any malformed input."""
    try:
        expected = bytes.fromhex(hex_signature.strip())
    except ValueError:
        return False
    h = hmac.HMAC(key, ALGORITHMS[algorithm]())
    h.update(body)
    try:
        h.verify(expected)
    except InvalidSignature:
        return False
    return True


def prefixed_hmac_matches(header_value: str, key: bytes, body: bytes, algorithm: str) -> bool:
    """Checks a GitHub-style `sha256=<hex>` value; the prefix must name `algorithm` exactly."""
    prefix, sep, hex_signature = header_value.partition("=")
    if not sep or prefix.strip().lower() != algorithm:
        return False
    return hmac_matches(algorithm, key, body, hex_signature)
