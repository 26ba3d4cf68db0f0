"""GitRepository `spec.verify`: check the signature of the commit (and the tag) Herald applies.

Why: Flux's source-controller refuses to produce an artifact from a commit whose signature does
not verify against the public keys in `spec.verify.secretRef`. A companion that applied such a
commit anyway would apply exactly what the owner of the repository asked Flux to refuse, so
Herald must check signatures the way Flux does before it renders anything.

What Flux does (source-controller `internal/controller/gitrepository_controller.go`
`verifySignature`, `api/v1/gitrepository_types.go`, fluxcd/pkg `git/git.go` and
`git/signature/`), and this module with it:

- `spec.verify.mode`: `HEAD` (or the legacy `head`) verifies the commit that was checked out;
  `Tag` the tag object that `spec.ref` names (`tag`, `semver`, or `name: refs/tags/...`);
  `TagAndHEAD` both, the tag first. A tag mode without a tag reference stalls the object
  ("cannot verify tag object's signature if a tag reference is not specified"); a lightweight
  or unsigned tag fails ("cannot verify signature of tag '<tag>' since it is not signed").
  The CRD defaults an omitted mode to `HEAD`. See `check_mode`.
- The Secret's data: entries whose name ends in `.sshpub` are SSH public keys in
  authorized_keys format; every other entry (`.asc`, or any name, for backward compatibility)
  is an armored OpenPGP key ring. An entry that cannot be read is skipped, unless none can.
- The signature's type picks the key kind: `-----BEGIN PGP SIGNATURE-----` is OpenPGP,
  `-----BEGIN SSH SIGNATURE-----` SSH (namespace `git`); anything else, including no
  signature at all, is "unsupported signature type: <type>" (`empty`, `x509`, `unknown`).
- What a success reports: the OpenPGP *primary* key's 16-hex-digit key ID (upper case, also
  when a subkey signed), or the SSH key's `SHA256:` fingerprint; the SourceVerified condition
  reads "verified signature of\\n\\t- tag '<name>@<sha>' with key '<id>'\\n\\t- commit '<sha>'
  with key '<id>'" (`verified_message`).
- Failures read "signature verification of commit '<sha>' failed: <why>" (reason
  InvalidCommitSignature) or "signature verification of tag '<name>@<sha>' failed: <why>"
  (InvalidTagSignature). Flux's <why> for a wrong key and for an altered commit alike is
  "unable to verify payload with any of the given key rings: no matching key"; Herald keeps
  those words and adds, in parentheses, what gpg or ssh-keygen found (which unknown key signed
  it, or that the signature is bad), so that the message says what to fix.

How the signature is checked. The raw object is read from the bare cache with
`git cat-file --batch` (replace refs off, and its bytes re-hashed to the id asked for, so the
bytes verified are the object Herald will apply) and split exactly as git splits it: for a
commit the `gpgsig` header (`gpgsig-sha256` in a SHA-256 repository) is the signature and the
object without any signature header is the payload; for a tag the signature is the trailing
block from the last line that opens one, and the payload is what precedes it. The
cryptography is left to the reference tools rather than to a Python library (the maintained
ones only wrap gpg; PGPy is unmaintained):

- OpenPGP: `gpg` in a GNUPGHOME created for this one verification and removed afterwards,
  holding only the Secret's keys (never the user's keyring, options or agent:
  `--no-options`, `--no-autostart`), `--trust-model always` (the Secret is the trust
  anchor), and its `--status-fd` output parsed as git parses it: exactly one signature,
  GOODSIG with VALIDSIG; BADSIG, ERRSIG/NO_PUBKEY, EXPSIG, EXPKEYSIG, REVKEYSIG, or more than
  one signature (git refuses those too) fail. gpg itself refuses a "detached" signature that
  carries its own data.
- SSH: the signature's SSHSIG blob names its public key; if that key is one of the Secret's,
  `ssh-keygen -Y verify -n git` checks it against an allowed-signers file holding that key.

Runtime needs: `git`, `gpg` (Debian `gpg`, part of `gnupg`), `ssh-keygen` (`openssh-client`).
Nothing here fetches, integrates with the reconcile loop, or reads the Secret: the caller
passes the Secret's decoded data.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from herald.model import GitRef

# ---- Flux's vocabulary ----------------------------------------------------------------------

MODE_HEAD = "HEAD"
MODE_TAG = "Tag"
MODE_TAG_AND_HEAD = "TagAndHEAD"
# What the CRD's enum accepts for spec.verify.mode ("head" is the legacy spelling of HEAD).
MODES = ("head", MODE_HEAD, MODE_TAG, MODE_TAG_AND_HEAD)

PGP_KEY_SUFFIX = ".asc"
SSH_KEY_SUFFIX = ".sshpub"
SSH_NAMESPACE = "git"

CONDITION_TYPE = "SourceVerified"
SUCCEEDED_REASON = "Succeeded"
INVALID_MODE_REASON = "InvalidVerificationMode"
INVALID_OBJECT_REASON = "InvalidGitObject"
INVALID_COMMIT_REASON = "InvalidCommitSignature"
INVALID_TAG_REASON = "InvalidTagSignature"
ERROR_REASON = "VerificationError"

_TIMEOUT = 60.0
_HEX = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")

# Lines that open a signature, as git knows them (gpg-interface.c): a tag's signature starts at
# the last such line. Of these kinds, Flux verifies OpenPGP and SSH signatures only.
_PGP_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SSH_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
_SIGNATURE_STARTS = (_PGP_BEGIN, b"-----BEGIN PGP MESSAGE-----", b"-----BEGIN SIGNED MESSAGE-----", _SSH_BEGIN)
_X509_BEGIN = b"-----BEGIN SIGNED MESSAGE-----"
# Signature headers by hash algorithm, as in git's commit.c.
_SIG_HEADER = {40: b"gpgsig", 64: b"gpgsig-sha256"}
_ALL_SIG_HEADERS = (b"gpgsig", b"gpgsig-sha256")

_SSH_KEY_TYPES = frozenset({
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})


class VerificationError(Exception):
    """A signature did not verify, or could not be checked; the message is Flux's (see the module
    docstring) and names the commit or tag.

    `reason` is the SourceVerified condition's reason Flux records; `stalled` is true when only a
    change of the GitRepository can help (Flux's stalling errors: a tag mode without a tag ref).
    """

    def __init__(self, message: str, reason: str = ERROR_REASON, *, stalled: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.stalled = stalled


class _Failed(Exception):
    """Why one signature did not verify, before the commit or tag is named."""


# ---- modes ----------------------------------------------------------------------------------

def normalize_mode(mode: str | None) -> str:
    """`spec.verify.mode` as Flux acts on it: HEAD (also for "head" and when omitted, the CRD's
    default), Tag or TagAndHEAD. Anything else is refused as the API server's enum refuses it."""
    if mode in (None, "", "head", MODE_HEAD):
        return MODE_HEAD
    if mode in (MODE_TAG, MODE_TAG_AND_HEAD):
        return mode
    supported = ", ".join(f'"{m}"' for m in MODES)
    raise VerificationError(f'spec.verify.mode: Unsupported value: "{mode}": supported values: {supported}',
                            INVALID_MODE_REASON, stalled=True)


def verifies_head(mode: str) -> bool:
    """Whether `mode` (normalized) verifies the checked-out commit."""
    return mode in (MODE_HEAD, MODE_TAG_AND_HEAD)


def verifies_tag(mode: str) -> bool:
    """Whether `mode` (normalized) verifies the tag object."""
    return mode in (MODE_TAG, MODE_TAG_AND_HEAD)


def check_mode(mode: str | None, ref: GitRef) -> str:
    """The normalized mode, after Flux's rule for tag modes: the checkout must come from a tag.

    Flux (fluxcd/pkg gogit `Clone`) checks out by `commit` first, then `name`, `tag`, `semver`,
    `branch`; only `name: refs/tags/...`, `tag` and `semver` leave it a tag object to verify. A
    tag mode with any other ref stalls ("cannot verify tag object's signature if a tag reference
    is not specified"). With `commit` and `name: refs/tags/<t>` Flux checks out the commit and
    knows the tag only by name, so it reports the tag as unsigned; so does this function.
    """
    normalized = normalize_mode(mode)
    if not verifies_tag(normalized):
        return normalized
    if ref.commit:
        if ref.name.startswith("refs/tags/"):
            tag = ref.name.removeprefix("refs/tags/").removesuffix("^{}")
            raise VerificationError(f"cannot verify signature of tag '{tag}' since it is not signed",
                                    INVALID_OBJECT_REASON)
        tagged = False
    elif ref.name:
        tagged = ref.name.startswith("refs/tags/")
    else:
        tagged = bool(ref.tag or ref.semver)
    if not tagged:
        raise VerificationError("cannot verify tag object's signature if a tag reference is not specified",
                                INVALID_MODE_REASON, stalled=True)
    return normalized


def verified_message(*, tag: tuple[str, str] | None = None, commit: tuple[str, str] | None = None) -> str:
    """Flux's SourceVerified message (and Trace event) for what was verified.

    `tag` is (`tag_label(...)`, key) and `commit` is (sha, key), as returned by `verify_tag` and
    `verify_commit`.
    """
    lines = []
    if tag is not None:
        lines.append(f"\t- tag '{tag[0]}' with key '{tag[1]}'")
    if commit is not None:
        lines.append(f"\t- commit '{commit[0]}' with key '{commit[1]}'")
    if not lines:
        raise ValueError("nothing was verified")
    return "verified signature of\n" + "\n".join(lines)


# ---- reading and splitting objects ----------------------------------------------------------

def _git_env() -> dict[str, str]:
    # As reconciler.git runs git: none of the caller's GIT_* variables (GIT_DIR,
    # GIT_OBJECT_DIRECTORY... would point git at other objects) and no user or system config.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(LC_ALL="C", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0",
               GIT_NO_REPLACE_OBJECTS="1")
    return env


def read_object(git_dir: Path, sha: str) -> tuple[str, bytes]:
    """The type and raw bytes of object `sha` (a full hex id) in the repository `git_dir`.

    Replace refs are ignored, and the bytes are hashed again: what is verified is the object
    whose id was asked for, whatever the repository's refs/replace or a corrupt pack say.
    """
    if not _HEX.match(sha):
        raise ValueError(f"not a full object id: {sha!r}")
    try:
        done = subprocess.run(["git", f"--git-dir={git_dir}", "--no-replace-objects", "cat-file", "--batch"],
                              input=f"{sha}\n".encode(), capture_output=True, env=_git_env(), timeout=_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VerificationError(f"unable to read object '{sha}': {e}") from None
    out = done.stdout
    header, _, rest = out.partition(b"\n")
    fields = header.split()
    if done.returncode != 0 or len(fields) != 3 or fields[0].decode() != sha:
        why = (done.stderr.decode(errors="replace").strip() or header.decode(errors="replace")).splitlines()
        raise VerificationError(f"unable to read object '{sha}' from the repository: {why[-1] if why else '?'}")
    kind, size = fields[1].decode(), int(fields[2])
    raw = rest[:size]
    algo = hashlib.sha1 if len(sha) == 40 else hashlib.sha256
    if len(raw) != size or algo(b"%s %d\0" % (kind.encode(), size) + raw).hexdigest() != sha:
        raise VerificationError(f"object '{sha}' in the repository does not hash to its id")
    return kind, raw


def _lines(buf: bytes) -> list[tuple[int, int]]:
    """(start, end) of each line, the newline included."""
    spans, pos = [], 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        end = len(buf) if nl < 0 else nl + 1
        spans.append((pos, end))
        pos = end
    return spans


def split_commit(raw: bytes, header: bytes = b"gpgsig") -> tuple[bytes, bytes]:
    """(payload, signature) of a commit object, as git's parse_buffer_signed_by_header does.

    The signature is the value of `header` (`gpgsig`; `gpgsig-sha256` in a SHA-256 repository)
    with its continuation lines unindented; the payload is the object without that header and
    without any other `gpgsig*` header (a signature over the other hash). Only the header block
    is parsed: the message is payload, whatever it contains. No signature: (raw, b"").
    """
    payload, signature = bytearray(), bytearray()
    in_signature = other_signature = False
    pos = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl + 1
        line = raw[pos:end]
        sig: bytes | None = None
        if in_signature and line.startswith(b" "):
            sig = line[1:]
        elif line.startswith(header + b" "):
            sig = line[len(header) + 1:]
            other_signature = False
        elif line.startswith(b"gpgsig"):
            other_signature = True
        elif other_signature and not line.startswith(b" "):
            other_signature = False
        if sig is not None:
            signature += sig
            in_signature = True
        else:
            if line.startswith(b"\n"):
                end = len(raw)  # the end of the headers: the rest is the message, all payload
            if not other_signature:
                payload += raw[pos:end]
            in_signature = False
        pos = end
    return bytes(payload), bytes(signature)


def _remove_header_signatures(buf: bytes) -> bytes:
    """A tag payload without `gpgsig`/`gpgsig-sha256` headers (git's remove_signature: a tag
    made in a repository with two hash algorithms signs the other one's form in a header)."""
    spans: list[list[int]] = []
    in_signature = False
    pos = 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        end = len(buf) if nl < 0 else nl + 1
        line = buf[pos:end]
        if in_signature and line.startswith(b" "):
            spans[-1][1] = end
        elif line.startswith(b"gpgsig"):
            if any(line.startswith(h + b" ") for h in _ALL_SIG_HEADERS) and len(spans) < 2:
                spans.append([pos, end])
                in_signature = True
        else:
            if line.startswith(b"\n"):
                end = len(buf)
            in_signature = False
        pos = end
    for start, stop in reversed(spans):
        buf = buf[:start] + buf[stop:]
    return buf


def split_tag(raw: bytes) -> tuple[bytes, bytes]:
    """(payload, signature) of a tag object, as git's parse_signature does: the signature runs
    from the last line that opens one to the end. No signature: (raw, b"")."""
    match = len(raw)
    for start, _ in _lines(raw):
        if raw.startswith(_SIGNATURE_STARTS, start):
            match = start
    if match == len(raw):
        return raw, b""
    return _remove_header_signatures(raw[:match]), raw[match:]


def signature_type(signature: bytes) -> str:
    """Flux's name for a signature's kind: openpgp, ssh, x509, empty or unknown."""
    text = signature.strip()
    if text.startswith(_PGP_BEGIN):
        return "openpgp"
    if text.startswith(_SSH_BEGIN):
        return "ssh"
    if text.startswith(_X509_BEGIN):
        return "x509"
    if not signature:
        return "empty"
    return "unknown"


def _tag_name(raw: bytes) -> str:
    for start, end in _lines(raw):
        line = raw[start:end]
        if line == b"\n":
            break
        if line.startswith(b"tag "):
            return line[4:].rstrip(b"\n").decode(errors="replace")
    return ""


def tag_label(git_dir: Path, tag_object_sha: str) -> str:
    """How Flux names a tag in its messages: `<name>@<tag object sha>`."""
    kind, raw = read_object(Path(git_dir), tag_object_sha)
    if kind != "tag":
        raise VerificationError(f"object '{tag_object_sha}' is a {kind}, not a tag")
    return f"{_tag_name(raw)}@{tag_object_sha}"


# ---- the Secret's keys ------------------------------------------------------------------------

def split_keys(keys: Mapping[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The Secret's entries as Flux sorts them: (OpenPGP key rings, SSH authorized keys), each a
    list of (entry name, text). `.sshpub` entries are SSH keys; every other one is a key ring."""
    rings, authorized = [], []
    for name, value in keys.items():
        text = value.decode() if isinstance(value, bytes) else value
        (authorized if name.endswith(SSH_KEY_SUFFIX) else rings).append((name, text))
    return rings, authorized


# ---- OpenPGP --------------------------------------------------------------------------------

def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise _Failed(f"{name} is not installed (Debian package {package})")
    return path


def _run(args: list[str], *, stdin: bytes = b"", env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(args, input=stdin, capture_output=True, env=env, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise _Failed(f"{Path(args[0]).name} did not answer within {_TIMEOUT:.0f}s") from None
    except OSError as e:
        raise _Failed(f"cannot run {Path(args[0]).name}: {e}") from None


def _tool_env(home: Path) -> dict[str, str]:
    # Nothing of the user's: no GNUPGHOME, agent or ssh-agent, and a HOME that is ours.
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "HOME": str(home)}


def _status(out: bytes) -> list[list[str]]:
    """gpg's --status-fd lines, split into keyword and arguments."""
    return [line[len("[GNUPG:] "):].split(" ") for line in out.decode(errors="replace").splitlines()
            if line.startswith("[GNUPG:] ")]


_GPG_CHATTER = ("keybox", "Total number", "Signature made", "using ", "issuer ", "WARNING: no command",
                "directory ", "trustdb")


def _gpg_error(stderr: bytes) -> str:
    """gpg's own words for what went wrong: its first `gpg:` line that is not mere information
    (what follows is often advice, such as which file to name first)."""
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("gpg: ") and (text := line[5:].strip()) and not text.startswith(_GPG_CHATTER):
            return text.rstrip(".")
    return "no reason given"


def _key_id(fingerprint: str) -> str:
    """The key ID of a fingerprint, as go-crypto's KeyIdString prints it: the last 8 bytes of a
    v4 fingerprint, the first 8 of a v5/v6 one, in upper-case hex."""
    fpr = fingerprint.upper()
    return fpr[-16:] if len(fpr) == 40 else fpr[:16]


_EXCLUSIVE = ("GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG")


def _verify_pgp(signature: bytes, payload: bytes, rings: list[tuple[str, str]], kind: str) -> str:
    prefix = f"unable to verify Git {kind}"
    no_match = f"{prefix}: unable to verify payload with any of the given key rings: no matching key"
    gpg = _tool("gpg", "gnupg")
    home = Path(tempfile.mkdtemp(prefix="herald-gpg-"))  # 0700, ours alone
    try:
        env = _tool_env(home)
        base = [gpg, "--homedir", str(home), "--no-options", "--batch", "--no-tty", "--no-autostart",
                "--no-auto-key-retrieve", "--trust-model", "always", "--status-fd", "1"]
        imported, unreadable = 0, ""
        for name, text in rings:
            done = _run([*base, "--import"], stdin=text.encode(), env=env)
            if any(s[0] == "IMPORT_OK" for s in _status(done.stdout)):
                imported += 1
            elif not unreadable:
                unreadable = f"{name}: {_gpg_error(done.stderr)}"
        if not imported:
            raise _Failed(f"{prefix}: unable to read armored key ring: {unreadable}")
        sig_file = home / "signature.asc"
        sig_file.write_bytes(signature)
        done = _run([*base, "--verify", str(sig_file), "-"], stdin=payload, env=env)
        status = _status(done.stdout)
        results = [s for s in status if s[0] in _EXCLUSIVE]
        if len(results) > 1 or sum(s[0] == "NEWSIG" for s in status) > 1:
            raise _Failed(f"{no_match} (the signature holds {max(len(results), 2)} signatures; "
                          "git accepts exactly one)")
        if not results:
            raise _Failed(f"{no_match} (gpg found no signature to check: {_gpg_error(done.stderr)})")
        word, args = results[0][0], results[0][1:]
        keyid = args[0] if args else "?"
        if word == "GOODSIG":
            valid = next((s[1:] for s in status if s[0] == "VALIDSIG"), None)
            if valid is None or done.returncode != 0 or any(s[0] == "PLAINTEXT" for s in status):
                raise _Failed(f"{no_match} (gpg did not confirm the signature: {_gpg_error(done.stderr)})")
            primary = valid[9] if len(valid) >= 10 else valid[0]
            return _key_id(primary)
        if word == "BADSIG":
            raise _Failed(f"{no_match} (BAD signature from key {keyid}: the {kind} is not what was signed)")
        if word == "ERRSIG":
            code = args[5] if len(args) > 5 else ""
            if code == "9":
                raise _Failed(f"{no_match} (signed by unknown key {keyid}, which is not in the Secret)")
            if code == "4":
                raise _Failed(f"{no_match} (key {keyid} uses an algorithm gpg does not support)")
            raise _Failed(f"{no_match} (gpg cannot check the signature by key {keyid}: "
                          f"{_gpg_error(done.stderr)})")
        if word == "EXPKEYSIG":
            raise _Failed(f"{no_match} (signed by key {keyid}, which has expired)")
        if word == "REVKEYSIG":
            raise _Failed(f"{no_match} (signed by key {keyid}, which has been revoked)")
        raise _Failed(f"{no_match} (the signature by key {keyid} has expired)")  # EXPSIG
    finally:
        _discard_gnupghome(home)


def _discard_gnupghome(home: Path) -> None:
    # --no-autostart keeps gpg from starting an agent; should one be listening all the same
    # (a gpg that ignores it), stop that one, by its home directory, before removing the home.
    if any(home.glob("S.*")) and (gpgconf := shutil.which("gpgconf")):
        subprocess.run([gpgconf, "--homedir", str(home), "--kill", "all"], capture_output=True,
                       env=_tool_env(home), timeout=_TIMEOUT, check=False)
    shutil.rmtree(home, ignore_errors=True)


# ---- SSH ------------------------------------------------------------------------------------

def _ssh_string(blob: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(blob):
        raise ValueError("truncated")
    n = int.from_bytes(blob[at:at + 4], "big")
    if at + 4 + n > len(blob):
        raise ValueError("truncated")
    return blob[at + 4:at + 4 + n], at + 4 + n


def ssh_fingerprint(key_blob: bytes) -> str:
    """`SHA256:<base64>` of an SSH public key blob, as ssh-keygen -l and Flux print it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def _parse_sshsig(signature: bytes) -> tuple[bytes, str, str]:
    """(public key blob, namespace, hash algorithm) of an armored SSHSIG signature."""
    lines = signature.decode("ascii", errors="replace").strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != _SSH_BEGIN.decode() or lines[-1].strip() != "-----END SSH SIGNATURE-----":
        raise ValueError("not an armored SSH signature")
    blob = base64.b64decode("".join(ln.strip() for ln in lines[1:-1]), validate=True)
    if not blob.startswith(b"SSHSIG") or int.from_bytes(blob[6:10], "big") != 1:
        raise ValueError("not an SSHSIG version 1 signature")
    key, at = _ssh_string(blob, 10)
    namespace, at = _ssh_string(blob, at)
    _, at = _ssh_string(blob, at)  # reserved
    hash_algorithm, at = _ssh_string(blob, at)
    _ssh_string(blob, at)  # the signature itself: ssh-keygen checks it
    return key, namespace.decode(errors="replace"), hash_algorithm.decode(errors="replace")


def _key_blob(b64: str) -> bytes | None:
    try:
        blob = base64.b64decode(b64, validate=True)
        key_type, _ = _ssh_string(blob, 0)
    except (ValueError, TypeError):
        return None
    name = key_type.decode(errors="replace")
    return blob if name in _SSH_KEY_TYPES or name.removesuffix("-cert-v01@openssh.com") in _SSH_KEY_TYPES else None


def _authorized_key(line: str) -> bytes | None:
    """The key blob of one authorized_keys line, read as golang.org/x/crypto/ssh reads it: the
    key type field is skipped and the base64 after it is the key; failing that, a leading
    options field (commas, double quotes) is skipped first. Options are ignored, as in Flux."""
    fields = line.split(None, 2)
    if len(fields) >= 2 and (blob := _key_blob(fields[1])) is not None:
        return blob
    in_quote, i = False, 0
    while i < len(line):
        c = line[i]
        if not in_quote and c in " \t":
            break
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            in_quote = not in_quote
        i += 1
    rest = line[i:].split(None, 2)
    if in_quote or len(rest) < 2:
        return None
    return _key_blob(rest[1])


def parse_authorized_keys(text: str) -> list[bytes]:
    """The key blobs of an authorized_keys text; blank and `#` lines are skipped, and any other
    line that is no key makes the whole text unreadable (ValueError), as in Flux."""
    blobs = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        blob = _authorized_key(line)
        if blob is None:
            raise ValueError(f"unable to parse authorized key: {line[:60]!r}")
        blobs.append(blob)
    return blobs


def _verify_ssh(signature: bytes, payload: bytes, authorized: list[tuple[str, str]], kind: str) -> str:
    prefix = f"unable to verify Git {kind} SSH signature"
    no_match = f"{prefix}: unable to verify payload with any of the given authorized keys: no matching key"
    try:
        signer, _, _ = _parse_sshsig(signature)
        signer_type, _ = _ssh_string(signer, 0)
    except ValueError as e:
        raise _Failed(f"{prefix}: unable to unarmor SSH signature: {e}") from None
    known: list[bytes] = []
    unreadable = ""
    for name, text in authorized:
        try:
            known.extend(parse_authorized_keys(text))
        except ValueError as e:
            unreadable = unreadable or f"{name}: {e}"
    if not known and unreadable:
        raise _Failed(f"{prefix}: unable to parse authorized keys: {unreadable}")
    fingerprint = ssh_fingerprint(signer)
    if signer not in known:
        raise _Failed(f"{no_match} (signed by unknown key {fingerprint}, which is not in the Secret)")
    if signer_type.decode(errors="replace").endswith("-cert-v01@openssh.com"):
        raise _Failed(f"{no_match} (signed with an SSH certificate, {fingerprint}; plain keys only)")
    ssh_keygen = _tool("ssh-keygen", "openssh-client")
    home = Path(tempfile.mkdtemp(prefix="herald-sshsig-"))
    try:
        allowed = home / "allowed_signers"
        allowed.write_text(f'flux namespaces="{SSH_NAMESPACE}" {signer_type.decode()} '
                           f"{base64.b64encode(signer).decode()}\n")
        sig_file = home / "signature.sig"
        sig_file.write_bytes(signature)
        done = _run([ssh_keygen, "-Y", "verify", "-n", SSH_NAMESPACE, "-f", str(allowed), "-I", "flux",
                     "-s", str(sig_file)], stdin=payload, env=_tool_env(home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    out = done.stdout.decode(errors="replace")
    if done.returncode == 0 and out.startswith(f'Good "{SSH_NAMESPACE}" signature for flux with ') \
            and out.rstrip().endswith(fingerprint):
        return fingerprint
    why = " ".join(done.stderr.decode(errors="replace").split()) or out.strip() or "no reason given"
    raise _Failed(f"{no_match} (key {fingerprint}: {why})")


# ---- the entry points -------------------------------------------------------------------------

def _verify(signature: bytes, payload: bytes, keys: Mapping[str, str], kind: str) -> str:
    rings, authorized = split_keys(keys)
    kind_of_signature = signature_type(signature)
    if kind_of_signature == "openpgp":
        if not rings:
            raise _Failed("PGP signature detected but no PGP public keys found in secret "
                          f"(keys with {PGP_KEY_SUFFIX} suffix)")
        return _verify_pgp(signature, payload, rings, kind)
    if kind_of_signature == "ssh":
        if not authorized:
            raise _Failed("SSH signature detected but no SSH public keys found in secret "
                          f"(keys with {SSH_KEY_SUFFIX} suffix)")
        return _verify_ssh(signature, payload, authorized, kind)
    if kind_of_signature == "empty":
        raise _Failed(f"unsupported signature type: empty (the {kind} is not signed)")
    raise _Failed(f"unsupported signature type: {kind_of_signature}")


def verify_commit(git_dir: Path, sha: str, keys: Mapping[str, str]) -> str:
    """Verify the signature of commit `sha` in `git_dir` against the Secret's data `keys`.

    Returns what Flux reports as the key: the OpenPGP primary key ID or the SSH `SHA256:`
    fingerprint. Raises VerificationError ("signature verification of commit '<sha>' failed:
    ...", reason InvalidCommitSignature) when it does not verify.
    """
    kind, raw = read_object(Path(git_dir), sha)
    if kind != "commit":
        raise VerificationError(f"signature verification of commit '{sha}' failed: the object is a {kind}",
                                INVALID_COMMIT_REASON)
    payload, signature = split_commit(raw, _SIG_HEADER[len(sha)])
    try:
        return _verify(signature, payload, keys, "commit")
    except _Failed as e:
        raise VerificationError(f"signature verification of commit '{sha}' failed: {e}",
                                INVALID_COMMIT_REASON) from None


def verify_tag(git_dir: Path, tag_object_sha: str, keys: Mapping[str, str], *, name: str = "") -> str:
    """Verify the signature of the annotated tag object `tag_object_sha` in `git_dir`.

    Returns the key as `verify_commit` does. A tag that is not signed fails as Flux fails it
    ("cannot verify signature of tag '<name>@<sha>' since it is not signed", reason
    InvalidGitObject); so does a lightweight tag, whose ref points at a commit: pass that
    commit's sha and the tag's `name`. A bad signature raises "signature verification of tag
    '<name>@<sha>' failed: ..." (reason InvalidTagSignature).
    """
    kind, raw = read_object(Path(git_dir), tag_object_sha)
    if kind != "tag":
        label = name or tag_object_sha
        raise VerificationError(f"cannot verify signature of tag '{label}' since it is not signed",
                                INVALID_OBJECT_REASON)
    label = f"{_tag_name(raw) or name}@{tag_object_sha}"
    payload, signature = split_tag(raw)
    if not signature:
        raise VerificationError(f"cannot verify signature of tag '{label}' since it is not signed",
                                INVALID_OBJECT_REASON)
    try:
        return _verify(signature, payload, keys, "tag")
    except _Failed as e:
        raise VerificationError(f"signature verification of tag '{label}' failed: {e}",
                                INVALID_TAG_REASON) from None


@dataclass(frozen=True)
class Verified:
    """What `verify_revision` verified, for the SourceVerified condition and the event."""

    mode: str
    message: str


def verify_revision(git_dir: Path, mode: str | None, ref: GitRef, commit_sha: str,
                    keys: Mapping[str, str], *, tag_object_sha: str = "", tag_name: str = "") -> Verified:
    """Everything Flux's verifySignature does for one checkout, in its order: the mode against
    `spec.ref`, the tag (when the mode says so), then the commit; and the message it records.

    `tag_object_sha` is what the tag ref points at (the commit itself for a lightweight tag).
    """
    normalized = check_mode(mode, ref)
    tag_result: tuple[str, str] | None = None
    commit_result: tuple[str, str] | None = None
    if verifies_tag(normalized):
        key = verify_tag(git_dir, tag_object_sha or commit_sha, keys, name=tag_name)
        tag_result = (tag_label(git_dir, tag_object_sha), key)
    if verifies_head(normalized):
        commit_result = (commit_sha, verify_commit(git_dir, commit_sha, keys))
    return Verified(normalized, verified_message(tag=tag_result, commit=commit_result))
