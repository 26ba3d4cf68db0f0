"""Signature and token checks shared by the receiver types.

HMACs come from `cryptography`, and every comparison goes through its constant-time
`bytes_eq`, so a sender cannot learn the expected MAC or token byte by byte from response
timings. Several keys (rotation) and several signatures (a sender signing with old and new
keys at once, comma-separated) are accepted: any key matching any signature verifies.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable

from cryptography.hazmat.primitives import constant_time, hashes, hmac

ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha512": hashes.SHA512,
}
_DIGEST_SIZES = {name: alg.digest_size for name, alg in ((n, a()) for n, a in ALGORITHMS.items())}

# More than this many signatures in one header is not a rotation but an attempt to make us
# compute MACs: the rest are ignored.
MAX_SIGNATURES = 8


def digest(algorithm: str, key: str | bytes, body: bytes) -> bytes:
    k = key.encode() if isinstance(key, str) else key
    h = hmac.HMAC(k, ALGORITHMS[algorithm]())
    h.update(body)
    return h.finalize()


def split_signatures(header_value: str) -> list[str]:
    """`a, b,c` -> ["a", "b", "c"]: the comma-separated form senders use while rotating."""
    return [s.strip() for s in header_value.split(",") if s.strip()][:MAX_SIGNATURES]


def _unhex(value: str, algorithm: str) -> bytes | None:
    if len(value) != 2 * _DIGEST_SIZES[algorithm]:
        return None
    try:
        return binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return None


def hmac_matches(algorithm: str, keys: Iterable[str | bytes], body: bytes,
                 hex_signatures: Iterable[str]) -> bool:
    """Whether any of `hex_signatures` is the HMAC of `body` under any of `keys`."""
    wanted = [b for b in (_unhex(s.lower(), algorithm) for s in hex_signatures) if b is not None]
    if not wanted:
        return False
    found = False
    for key in keys:
        mac = digest(algorithm, key, body)
        for candidate in wanted:
            # No early exit: the time taken does not depend on which pair matched.
            found |= constant_time.bytes_eq(mac, candidate)
    return found


def prefixed_hmac_matches(header_value: str, keys: Iterable[str | bytes], body: bytes,
                          algorithms: Iterable[str]) -> bool:
    """Checks GitHub-style `sha256=<hex>` values (comma-separated allowed).

    Each value's prefix must name one of `algorithms`; values with another prefix are
    ignored, so `sha1=` is refused wherever SHA-1 is not explicitly allowed.
    """
    allowed = {a.lower() for a in algorithms}
    by_alg: dict[str, list[str]] = {}
    for value in split_signatures(header_value):
        prefix, sep, hex_signature = value.partition("=")
        prefix = prefix.strip().lower()
        if sep and prefix in allowed and prefix in ALGORITHMS:
            by_alg.setdefault(prefix, []).append(hex_signature.strip())
    keys = list(keys)
    return any(hmac_matches(alg, keys, body, sigs) for alg, sigs in by_alg.items())


def token_matches(presented: str, keys: Iterable[str]) -> bool:
    """Whether `presented` equals one of `keys`, in time independent of where they differ.

    Both sides are hashed first so that even the length of the expected token does not show.
    """
    if not presented:
        return False
    probe = digest("sha256", b"herald-token-compare", presented.encode("utf-8", "surrogatepass"))
    found = False
    for key in keys:
        found |= constant_time.bytes_eq(probe, digest("sha256", b"herald-token-compare", key.encode("utf-8", "surrogatepass")))
    return found
