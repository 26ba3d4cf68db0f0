"""Pulling a Flux OCI artifact (what `flux push artifact` pushes) for the `OCIRepository` source.

Why a module of its own: an OCIRepository is Flux's other way of delivering the YAML Herald
reconciles (a CI job pushes the manifests to a registry instead of committing them), and its
two halves have different callers. `resolve` is the cheap question asked on every interval and
every webhook: which manifest does `spec.ref` name now, and is its revision the one already
applied? `fetch` is the expensive one, asked only when the revision changed: download the
layer and unpack it. Both follow source-controller
(internal/controller/ocirepository_controller.go, api/v1/ocirepository_types.go) so an object
moved from Flux to Herald names the same artifact and reports the same revision:

- `spec.url` must start with `oci://` and name a repository: no tag, no digest.
- `spec.ref`: `digest` wins over `semver`, which wins over `tag`; nothing set means the tag
  `latest`. `semver` lists the repository's tags, keeps those `semverFilter` (a Go regexp,
  searched, not anchored) matches, and takes the highest version the Masterminds range allows
  (tags read as fluxcd/pkg/version does; pre-releases only for a range that names one). With
  the Helm chart layer type selected, `_` in a tag reads as `+`, as Helm writes versions.
- The revision is `<tag>@sha256:<hex>` for a tag or semver ref (the tag's manifest digest by
  HEAD), and `sha256:<hex>` for a digest ref, which Flux takes as given without asking the
  registry: a digest that is not there fails in `fetch`.
- The layer is the first one of `layerSelector.mediaType`, or with no selector the first layer
  whatever its type; `operation` is `extract` (the default: the tar+gzip unpacked) or `copy`
  (the compressed layer kept as it is, as `<manifest digest>.tgz`).

Herald is stricter than Flux where Flux trusts the archive. Flux streams the layer into its
untar as it downloads and learns of a digest mismatch at the end, after writing files; Herald
downloads the blob to a temporary file, checks its size and digest, and only then reads it.
Flux silently skips symlinks and turns a hard link into an empty file; Herald never creates a
link either, skips one that stays inside the artifact, and refuses the whole artifact when a
link leads out of it (an absolute target, or `..` past the root) since no artifact made by
`flux push` holds one. Absolute names, `..` components, backslashes (Flux's own refusals),
devices and FIFOs are refused, and source-controller's unlimited size becomes `max_bytes`
(fluxcd/pkg/tar's own default, 100 MiB) for the blob and for the files in it. A refused or
failed extraction leaves `dest` as it found it: absent, or empty.

Errors are `ArtifactError`s that say whether waiting helps: a registry's 429, 5xx or a lost
connection is retryable; 401/403, a missing tag or repository (404), a bad `spec.ref` and a
bad artifact are not: they wait for a fix to the configuration or to the artifact.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from herald.registry.client import RegistryClient
from herald.registry.errors import RegistryError
from herald.registry.names import ImageName, ImageNameError, parse_image
from reconciler.images.policy import PolicyError, compile_go_regex, parse_constraints, parse_version

OCI_PREFIX = "oci://"
DEFAULT_TAG = "latest"
FLUX_CONTENT_MEDIA_TYPE = "application/vnd.cncf.flux.content.v1.tar+gzip"
FLUX_CONFIG_MEDIA_TYPE = "application/vnd.cncf.flux.config.v1+json"
HELM_CHART_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
EXTRACT, COPY = "extract", "copy"
DEFAULT_MAX_BYTES = 100 << 20
"""fluxcd/pkg/tar's DefaultMaxUntarSize: the blob, and the files extracted from it, may each be this big."""

MAX_ENTRIES = 100_000
"""More entries than this is an archive made to exhaust the disk's inodes, not a set of manifests."""

ARTIFACT_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEX_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_LAYER_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_CHUNK = 1 << 20


class ArtifactError(Exception):
    """Resolving or fetching an artifact failed; the message names the artifact (and the tar entry).

    `retryable`: whether the same call may succeed later (the registry was unavailable or rate
    limited) rather than only after a change to the configuration or to the artifact.
    `status`: the registry's HTTP status, when one caused this. `retry_after`: seconds the
    registry asked to wait, when it said.
    """

    def __init__(self, message: str, retryable: bool = False, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ArtifactError({self.message!r}, retryable={self.retryable!r}, status={self.status!r})"


@dataclass(frozen=True)
class Resolved:
    """The manifest `spec.ref` names: `tag` (None for a digest ref), its `digest`, and Flux's
    `revision` for it (`<tag>@sha256:<hex>`, or `sha256:<hex>` for a digest ref)."""

    tag: str | None
    digest: str
    revision: str


def parse_url(url: str) -> ImageName:
    """The repository `spec.url` names; ArtifactError (not retryable) in source-controller's
    words when it is not one."""
    def invalid(why: str) -> ArtifactError:
        return ArtifactError(f"URL validation failed for '{url}': {why}")

    if not isinstance(url, str) or not url.startswith(OCI_PREFIX):
        raise invalid("URL must be in format 'oci://<domain>/<org>/<repo>'")
    text = url.removeprefix(OCI_PREFIX)
    first, slash, rest = text.partition("/")
    path = rest if slash and ("." in first or ":" in first or first == "localhost") else text
    if ":" in path.split("@", 1)[0]:
        raise invalid(f"URL must not contain a tag; remove ':{path.split(':', 1)[1]}'")
    try:
        return parse_image(text)
    except ImageNameError as exc:
        raise invalid(str(exc).replace(f"image '{text}'", f"'{text}'")) from None


def resolve(client: RegistryClient, url: str, ref: Mapping[str, Any] | None,
            layer_selector: Mapping[str, Any] | None = None) -> Resolved:
    """The manifest `spec.ref` names in the repository `spec.url` names, as source-controller
    picks it (see the module docstring). `layer_selector` matters only for a Helm chart layer,
    whose tags spell a version's `+` as `_`. Asks the registry nothing for a digest ref; lists
    the tags for a semver ref; HEADs the tag's manifest for a tag (or semver) ref."""
    name = parse_url(url)
    ref = ref or {}
    digest, semver, semver_filter, tag = (_ref_field(ref, key, url)
                                          for key in ("digest", "semver", "semverFilter", "tag"))
    if digest:
        if not _SHA256.fullmatch(digest):
            raise ArtifactError(f"failed to determine artifact digest: '{digest}' in spec.ref.digest of '{url}' "
                                "is not a digest of the form sha256:<64 lowercase hex digits>")
        return Resolved(None, digest, digest)
    if semver:
        tag = _tag_by_semver(client, name, url, semver, semver_filter, _media_type(layer_selector, url))
    tag = tag or DEFAULT_TAG
    try:
        found = client.digest(name, tag)
    except ValueError:
        raise ArtifactError(f"failed to determine artifact digest: '{tag}' is not a valid tag (in '{url}')") from None
    except RegistryError as exc:
        raise _registry_failure(f"failed to determine artifact digest of tag '{tag}' in '{url}'", exc) from None
    if found is None:
        raise ArtifactError(f"failed to determine artifact digest: tag '{tag}' not found in '{url}' "
                            "(no such tag, or no such repository)", status=404)
    if not _SHA256.fullmatch(found):
        raise ArtifactError(f"failed to determine artifact digest: the registry gave tag '{tag}' in '{url}' "
                            f"the digest '{found}', not a sha256 one")
    return Resolved(tag, found, f"{tag}@{found}")


def copied_layer(dest: Path, resolved: Resolved) -> Path:
    """Where `fetch` with `operation: copy` puts the layer: `<manifest digest>.tgz` in `dest`, as
    source-controller names it."""
    return Path(dest) / f"{resolved.digest}.tgz"


def fetch(client: RegistryClient, url: str, resolved: Resolved, dest: Path,
          layer_selector: Mapping[str, Any] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Download the artifact `resolved` names and extract its layer into `dest` (or, with
    `operation: copy`, save the compressed layer as `copied_layer(dest, resolved)`).

    `dest` must be absent or an empty directory; after a failure it is so again. The layer is
    chosen, checked and unpacked as the module docstring says; `max_bytes` bounds the blob and,
    separately, the total size of the files extracted from it."""
    media_type = _media_type(layer_selector, url)
    operation = _operation(layer_selector, url)
    name = parse_url(url)
    artifact = f"artifact '{url}' revision '{resolved.revision}'"
    if not _SHA256.fullmatch(resolved.digest):
        raise ArtifactError(f"{artifact}: '{resolved.digest}' is not a sha256 digest")
    dest = Path(dest)
    made = _prepare(dest)
    try:
        layer = _choose_layer(_manifest(client, name, url, resolved, artifact), media_type, artifact)
        if operation == COPY:
            _copy(client, name, layer, copied_layer(dest, resolved), artifact, max_bytes)
        else:
            with tempfile.TemporaryFile(dir=dest.parent, prefix=".herald-oci-") as blob:
                _download(client, name, layer, blob, artifact, max_bytes)
                blob.seek(0)
                _extract(blob, dest, f"{artifact} (layer {layer['digest']})", max_bytes)
    except BaseException:
        _undo(dest, made)
        raise


# ---- resolving ----------------------------------------------------------------------------------


def _ref_field(ref: Mapping[str, Any], key: str, url: str) -> str:
    value = ref.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ArtifactError(f"spec.ref.{key} of '{url}' must be a string, not {type(value).__name__}")
    return value


def _media_type(layer_selector: Mapping[str, Any] | None, url: str) -> str:
    value = (layer_selector or {}).get("mediaType") or ""
    if not isinstance(value, str):
        raise ArtifactError(f"spec.layerSelector.mediaType of '{url}' must be a string")
    return value


def _operation(layer_selector: Mapping[str, Any] | None, url: str) -> str:
    value = (layer_selector or {}).get("operation") or EXTRACT
    if value not in (EXTRACT, COPY):
        raise ArtifactError(f"unsupported layer operation: {value} (in '{url}': extract or copy)")
    return value


def _tag_by_semver(client: RegistryClient, name: ImageName, url: str, semver: str, semver_filter: str,
                   media_type: str) -> str:
    failed = f"failed to determine the artifact tag for '{url}'"
    try:
        constraints = parse_constraints(semver)
    except PolicyError as exc:
        raise ArtifactError(f"{failed}: semver '{semver}' parse error: {exc}") from None
    try:
        pattern = compile_go_regex(semver_filter) if semver_filter else None
    except PolicyError as exc:
        raise ArtifactError(f"{failed}: semverFilter: {exc}") from None
    try:
        tags = client.tags(name)
    except RegistryError as exc:
        raise _registry_failure(failed, exc) from None
    helm = media_type == HELM_CHART_MEDIA_TYPE
    best = chosen = None
    for tag in tags:
        if pattern is not None and not pattern.search(tag):
            continue
        version = parse_version(tag.replace("_", "+") if helm else tag)
        # Of equal versions the first listed stays (Flux's sort leaves that choice unspecified).
        if version is not None and constraints.check(version) and (best is None or version.compare(best) > 0):
            best, chosen = version, tag
    if chosen is None:
        raise ArtifactError(f"{failed}: no match found for semver: {semver}")
    return chosen


def _registry_failure(doing: str, exc: RegistryError) -> ArtifactError:
    return ArtifactError(f"{doing}: {exc.message}", exc.retryable, status=exc.status, retry_after=exc.retry_after)


# ---- the manifest and its layer ---------------------------------------------------------------


def _manifest(client: RegistryClient, name: ImageName, url: str, resolved: Resolved, artifact: str) -> dict[str, Any]:
    failed = f"failed to pull {artifact}"
    try:
        manifest = client.manifest(name, resolved.digest, ARTIFACT_MEDIA_TYPES + _INDEX_MEDIA_TYPES)
    except RegistryError as exc:
        raise _registry_failure(failed, exc) from None
    if manifest is None:
        raise ArtifactError(f"{failed}: manifest {resolved.digest} not found in '{url}'", status=404)
    try:
        doc = json.loads(manifest.body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{failed}: the manifest is not a JSON object")
    media_type = doc.get("mediaType") or manifest.media_type
    if media_type in _INDEX_MEDIA_TYPES or "manifests" in doc:
        raise ArtifactError(f"{failed}: it is an image index ({media_type}), not an artifact: "
                            "point spec.ref at one of its manifests")
    if media_type not in ARTIFACT_MEDIA_TYPES:
        raise ArtifactError(f"{failed}: unsupported manifest media type '{media_type}'")
    return doc


def _choose_layer(manifest: Mapping[str, Any], media_type: str, artifact: str) -> dict[str, Any]:
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ArtifactError(f"{artifact}: no layers found in artifact")
    for i, layer in enumerate(layers):
        if not (isinstance(layer, dict) and isinstance(layer.get("mediaType"), str)
                and isinstance(layer.get("digest"), str) and _LAYER_DIGEST.fullmatch(layer["digest"])
                and type(layer.get("size")) is int and layer["size"] >= 0):
            raise ArtifactError(f"{artifact}: layer[{i}] of the manifest is not a descriptor "
                                "(mediaType, a sha256 or sha512 digest, a size)")
        if not media_type or layer["mediaType"] == media_type:
            return layer
    raise ArtifactError(f"{artifact}: failed to find layer with media type '{media_type}' in artifact")


def _download(client: RegistryClient, name: ImageName, layer: Mapping[str, Any], out: BinaryIO, artifact: str,
              max_bytes: int) -> None:
    if layer["size"] > max_bytes:
        raise ArtifactError(f"{artifact}: layer {layer['digest']} is {layer['size']} bytes, more than the limit "
                            f"of {max_bytes}")
    try:
        client.blob(name, layer["digest"], out, size=layer["size"], max_bytes=max_bytes)
    except RegistryError as exc:
        raise _registry_failure(f"failed to pull {artifact}", exc) from None


def _copy(client: RegistryClient, name: ImageName, layer: Mapping[str, Any], target: Path, artifact: str,
          max_bytes: int) -> None:
    """The compressed layer as it is, written under a temporary name and renamed once verified."""
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".herald-oci-")
    try:
        with os.fdopen(fd, "wb") as out:
            _download(client, name, layer, out, artifact, max_bytes)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


# ---- the destination --------------------------------------------------------------------------


def _prepare(dest: Path) -> bool:
    """Make sure `dest` is an empty directory (and not a link to one); whether it was created."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        dest.mkdir(parents=True)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{dest} is not a directory")
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty: an artifact is fetched into an empty directory")
    return False


def _undo(dest: Path, made: bool) -> None:
    """`dest` as `_prepare` found it: everything in it was written by this fetch."""
    if made:
        shutil.rmtree(dest, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        for child in dest.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# ---- extracting ---------------------------------------------------------------------------------


class _Bounded:
    """A read-only stream that refuses to give more than `limit` bytes in all, never reading more
    than one byte past it: a gzip bomb costs at most `limit` bytes of output, and a tar header
    claiming a huge extended header cannot make tarfile read it into memory."""

    def __init__(self, inner: IO[bytes], limit: int, artifact: str) -> None:
        self._inner = inner
        self._left = limit
        self._limit = limit
        self._artifact = artifact

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        data = self._inner.read(want)
        self._left -= len(data)
        if self._left < 0:
            raise ArtifactError(f"{self._artifact}: the layer decompresses to more than {self._limit} bytes")
        return data


def _entry_parts(member: tarfile.TarInfo, artifact: str) -> list[str]:
    """The path components of a tar entry inside the destination; ArtifactError for one that
    would lead out of it (or that no artifact should have)."""
    name = member.name
    refused = f"{artifact}: tar entry {name!r}"
    if not name or "\x00" in name:
        raise ArtifactError(f"{refused} has an invalid name")
    if name.startswith("/"):
        raise ArtifactError(f"{refused} is an absolute path")
    if "\\" in name:
        raise ArtifactError(f"{refused} contains a backslash")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"{refused} leads out of the artifact ('..')")
    return parts


def _link_leaves(member: tarfile.TarInfo, parts: list[str]) -> bool:
    """Whether a link entry's target is outside the artifact: an absolute target, or one whose
    `..` climb above the root (a symlink's from its own directory, a hard link's from the root)."""
    target = member.linkname
    if not target or target.startswith("/") or "\\" in target:
        return True
    depth = len(parts) - 1 if member.issym() else 0
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _directory(dest: Path, parts: list[str], refused: str) -> Path:
    """`dest`/`parts`, each component made a directory (or found one, never through a link)."""
    path = dest
    for part in parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ArtifactError(f"{refused} needs '{part}' to be a directory, and the archive made it a file")
    return path


def _extract(blob: IO[bytes], dest: Path, artifact: str, max_bytes: int) -> None:
    """Unpack the tar+gzip `blob` into the empty directory `dest`: regular files and directories
    only, nothing outside `dest`, at most `max_bytes` of file content and MAX_ENTRIES entries."""
    total = 0
    entries = 0
    refused = f"{artifact}: the first tar entry"
    # What a tar spends beyond its files' bytes: a 512-byte header per entry, padding, extended
    # headers for long names. A MiB, plus as much again as the content, is more than any real one.
    stream = _Bounded(gzip.GzipFile(fileobj=blob, mode="rb"), 2 * max_bytes + (1 << 20), artifact)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                entries += 1
                refused = f"{artifact}: tar entry {member.name!r}"
                if entries > MAX_ENTRIES:
                    raise ArtifactError(f"{refused}: the archive has more than {MAX_ENTRIES} entries")
                parts = _entry_parts(member, artifact)
                if member.issym() or member.islnk():
                    if _link_leaves(member, parts):
                        kind = "symlink" if member.issym() else "hard link"
                        raise ArtifactError(f"{refused} is a {kind} to {member.linkname!r}, outside the artifact")
                    continue  # links inside are skipped, never created (source-controller skips symlinks)
                if member.isdir():
                    _directory(dest, parts, refused)
                    continue
                if not member.isreg():
                    raise ArtifactError(f"{refused} is a {_kind(member)}: an artifact holds only files and "
                                        "directories")
                if not parts:
                    raise ArtifactError(f"{refused} is a file named as the artifact's root")
                total += member.size
                if total > max_bytes:
                    raise ArtifactError(f"{refused}: the files extracted come to more than the limit of "
                                        f"{max_bytes} bytes")
                _write(tar, member, _directory(dest, parts[:-1], refused) / parts[-1], refused)
    except ArtifactError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArtifactError(f"{artifact}: the layer is not a readable gzip-compressed tar archive ({exc})") from None
    except OSError as exc:
        raise ArtifactError(f"{refused}: writing it failed: {exc.strerror or exc}") from None


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, refused: str) -> None:
    source = tar.extractfile(member)
    assert source is not None  # a regular file always has content, if empty
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ArtifactError(f"{refused} would replace a directory with a file")
    # Permissions as tarfile's `data` filter keeps them: the owner may read and write, nobody
    # else may write, no setuid/setgid/sticky; executable bits stay.
    mode = (member.mode & 0o755) | 0o600
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)  # a repeated entry keeps the mode of its last copy
        left = member.size
        while left > 0:
            chunk = source.read(min(_CHUNK, left))
            if not chunk:
                raise ArtifactError(f"{refused} is cut short")
            out.write(chunk)
            left -= len(chunk)


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    return f"entry of type {member.type!r}"
