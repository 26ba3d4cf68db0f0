"""The registry API calls image automation makes: list a repository's tags, and resolve a tag
to its manifest digest; and the two that pulling an OCI artifact adds: GET a manifest by tag or
digest, and stream a blob to a file, each checked against its digest.

The first two are reads that run on every scan interval of every ImageRepository, so they are kept
cheap: tags come in pages of 1,000 (following the registry's `Link: <…>; rel="next"`, as GHCR
and Docker Hub page), and a digest is a HEAD, which Docker Hub does not count as a pull
against its rate limit. Authentication (Basic, or Docker's Bearer token flow) is answered and
remembered by `auth.Authenticator`; failures are RegistryErrors that say whether to retry.

What a registry sends is not trusted to be what was asked for: a manifest's body is hashed and
compared with the digest it was asked by (or the one the registry announced for a tag), and a
blob is hashed while it streams, its size and digest compared with the manifest's descriptor
before the caller may use the file. A manifest is read whole but no larger than 4 MiB (the
distribution registry's own limit); a blob is never held in memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Self
from urllib.parse import urljoin, urlsplit

import requests

from herald.registry.auth import Authenticator
from herald.registry.credentials import Credentials
from herald.registry.errors import RegistryError, status_error, transport_error
from herald.registry.names import ImageName, api_base, parse_image
from herald.registry.tls import ContextAdapter, ssl_context

USER_AGENT = "herald-registry"
PAGE_SIZE = 1000
MAX_PAGES = 1000
"""A registry whose `next` links never end is broken; 1,000 pages of 1,000 tags is far past any real one."""

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
"""What a manifest HEAD accepts. Without the index and list types a registry answers for a
multi-arch tag with one platform's manifest (or 404), and its digest is not the tag's."""

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The distribution registry refuses manifests larger than this; nothing bigger is a manifest."""

BLOB_CHUNK = 1 << 20

_HASHES = {"sha256": 64, "sha512": 128}
"""The digest algorithms the OCI image spec registers, and their length in hex digits."""

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


@dataclass(frozen=True)
class Manifest:
    """A manifest (or index) as the registry served it; `digest` is the digest of `body`."""

    media_type: str  # the Content-Type the registry gave it (the body's own `mediaType` may differ)
    digest: str
    body: bytes


class RegistryClient:
    """Reads tags and digests from OCI/Docker registries (any number of them, one session).

    `credentials`: by registry host, as `credentials.parse_dockerconfigjson` gives them.
    `ca_pem` replaces the system's CAs; `cert_pem`/`key_pem` are a client pair for mTLS.
    `insecure` speaks plain http to registries other than Docker Hub (Flux's `spec.insecure`).
    Use it as a context manager, or call `close()`, to release its connections.
    """

    def __init__(self, credentials: Mapping[str, Credentials] | None = None, *, ca_pem: str | None = None,
                 cert_pem: str | None = None, key_pem: str | None = None, insecure: bool = False,
                 timeout: float = 30.0) -> None:
        self.insecure = insecure
        self.timeout = timeout
        self._session = requests.Session()
        # The registry's Secret decides credentials and CAs, not ~/.netrc or REQUESTS_CA_BUNDLE.
        self._session.trust_env = False
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.mount("https://", ContextAdapter(ssl_context(ca_pem, cert_pem, key_pem)))
        self._session.mount("http://", ContextAdapter(None))
        self._auth = Authenticator(self._session, credentials, timeout=timeout)

    def tags(self, image: ImageName | str) -> list[str]:
        """Every tag of `image`, in the registry's order, each once."""
        name = _image(image)
        base = api_base(name, self.insecure)
        doing = f"listing the tags of {name} (registry {base})"
        url: str | None = f"{base}/v2/{name.repository}/tags/list?n={PAGE_SIZE}"
        seen: set[str] = set()
        tags: dict[str, None] = {}  # an ordered set: some registries repeat a page's last tag
        while url:
            if url in seen or len(seen) >= MAX_PAGES:
                raise RegistryError(f"{doing}: the registry's pages do not end ({len(seen)} read)", None, False)
            seen.add(url)
            response = self._request("GET", name, url, doing, {"Accept": "application/json"})
            assert response is not None
            for tag in _page_tags(response, doing):
                tags[tag] = None
            url = _next_page(response, url, base, doing)
        return list(tags)

    def digest(self, image: ImageName | str, tag: str) -> str | None:
        """The digest of the manifest (or index) `tag` names, by HEAD; None when there is no such tag."""
        name = _image(image)
        if not _TAG.fullmatch(tag):
            raise ValueError(f"'{tag}' is not a tag")
        base = api_base(name, self.insecure)
        doing = f"resolving {name}:{tag} (registry {base})"
        url = f"{base}/v2/{name.repository}/manifests/{tag}"
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = self._request("HEAD", name, url, doing, accept, missing_ok=True)
        if response is None:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            # A registry that leaves the header off a HEAD: the digest of the body is the same.
            response = self._request("GET", name, url, doing, accept, missing_ok=True)
            if response is None:
                return None
            digest = response.headers.get("Docker-Content-Digest") or \
                "sha256:" + hashlib.sha256(response.content).hexdigest()
        if not _DIGEST.fullmatch(digest):
            raise RegistryError(f"{doing}: the registry answered a malformed digest", response.status_code, False)
        return digest

    def manifest(self, image: ImageName | str, reference: str,
                 media_types: Sequence[str] = MANIFEST_TYPES) -> Manifest | None:
        """The manifest `reference` (a tag, or a digest such as `sha256:…`) names, by GET; None
        when the registry has no such manifest (or no such repository).

        The body is checked against the digest it was asked by, or for a tag against the
        `Docker-Content-Digest` the registry announced: RegistryError (not retryable, no status:
        the registry answered, wrongly) when it differs. `media_types` is the Accept header, most
        wanted first."""
        name = _image(image)
        by_digest = _DIGEST.fullmatch(reference) is not None
        if not by_digest and not _TAG.fullmatch(reference):
            raise ValueError(f"'{reference}' is neither a tag nor a digest")
        if by_digest and not _verifiable(reference):
            raise ValueError(f"'{reference}' is not a sha256 or sha512 digest")
        base = api_base(name, self.insecure)
        shown = f"{name}@{reference}" if by_digest else f"{name}:{reference}"
        doing = f"getting the manifest of {shown} (registry {base})"
        url = f"{base}/v2/{name.repository}/manifests/{reference}"
        response = self._request("GET", name, url, doing, {"Accept": ", ".join(media_types)},
                                 missing_ok=True, stream=True)
        if response is None:
            return None
        with response:
            body = bytearray()
            for chunk in _chunks(response, doing):
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"{doing}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes",
                                        None, False)
        announced = response.headers.get("Docker-Content-Digest", "")
        # A tag's manifest is checked against the digest the registry announced, when it is one
        # we can compute; without one, its digest is the sha256 of what was served.
        expected = reference if by_digest else (announced if _verifiable(announced) else "")
        algorithm = expected.partition(":")[0] or "sha256"
        digest = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
        if expected and digest != expected:
            raise RegistryError(f"{doing}: the manifest's content does not match its digest {expected} "
                                f"(it hashes to {digest})", None, False)
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return Manifest(media_type, digest, bytes(body))

    def blob(self, image: ImageName | str, digest: str, out: BinaryIO, *, size: int | None = None,
             max_bytes: int | None = None) -> int:
        """Stream the blob `digest` into `out` (written from its current position); the number of
        bytes written. The content is hashed as it arrives: RegistryError (not retryable) when it
        does not hash to `digest`, is not `size` bytes (when given), or passes `max_bytes`. A
        missing blob is a 404 RegistryError; whatever was written to `out` is then not the blob."""
        name = _image(image)
        if not _verifiable(digest):
            raise ValueError(f"'{digest}' is not a sha256 or sha512 digest")
        algorithm = digest.partition(":")[0]
        if size is not None and max_bytes is not None and size > max_bytes:
            raise RegistryError(f"blob {digest} of {name} is {size} bytes, more than the limit of {max_bytes}",
                                None, False)
        base = api_base(name, self.insecure)
        doing = f"getting blob {digest} of {name} (registry {base})"
        url = f"{base}/v2/{name.repository}/blobs/{digest}"
        response = self._request("GET", name, url, doing, {"Accept": "application/octet-stream, */*"}, stream=True)
        assert response is not None
        limit = size if size is not None else max_bytes
        hasher = hashlib.new(algorithm)
        written = 0
        with response:
            for chunk in _chunks(response, doing):
                written += len(chunk)
                if limit is not None and written > limit:
                    what = f"its size {size}" if size is not None else f"the limit of {max_bytes} bytes"
                    raise RegistryError(f"{doing}: the registry sent more than {what}", None, False)
                hasher.update(chunk)
                out.write(chunk)
        if size is not None and written != size:
            raise RegistryError(f"{doing}: the registry sent {written} bytes, not its size {size}", None, False)
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != digest:
            raise RegistryError(f"{doing}: the content does not match its digest (it hashes to {actual})",
                                None, False)
        return written

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, name: ImageName, url: str, doing: str, headers: dict[str, str], *,
                 missing_ok: bool = False, stream: bool = False) -> requests.Response | None:
        """One API call, answering a 401 once; the 2xx response, None for a 404 when `missing_ok`.
        With `stream` the body of a 2xx response is left unread: the caller reads and closes it."""
        response = self._send(method, url, doing, headers, self._auth.authorization(name, doing), stream)
        if response.status_code == 401:
            response.close()
            response = self._send(method, url, doing, headers, self._auth.answer(name, response, doing), stream)
        if missing_ok and response.status_code == 404:
            response.close()
            return None
        if not 200 <= response.status_code < 300:
            try:
                raise status_error(doing, response, self._auth.secrets())
            finally:
                response.close()
        return response

    def _send(self, method: str, url: str, doing: str, headers: dict[str, str],
              authorization: str | None, stream: bool = False) -> requests.Response:
        if authorization:
            headers = {**headers, "Authorization": authorization}
        try:
            return self._session.request(method, url, headers=headers, timeout=self.timeout, stream=stream)
        except requests.RequestException as exc:
            raise transport_error(doing, exc) from None


def _verifiable(digest: str) -> bool:
    """Whether `digest` is one this client can check content against: sha256 or sha512, in lowercase hex."""
    algorithm, _, hexa = digest.partition(":")
    return _HASHES.get(algorithm) == len(hexa) and re.fullmatch(r"[0-9a-f]+", hexa) is not None


def _chunks(response: requests.Response, doing: str) -> Iterator[bytes]:
    """A streamed response's body in chunks; a connection lost on the way is a retryable RegistryError."""
    try:
        yield from response.iter_content(BLOB_CHUNK)
    except requests.RequestException as exc:
        raise transport_error(doing, exc) from None


def _image(image: ImageName | str) -> ImageName:
    return image if isinstance(image, ImageName) else parse_image(image)


def _page_tags(response: requests.Response, doing: str) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    tags = body.get("tags", ()) if isinstance(body, dict) else None
    if tags is None and isinstance(body, dict):
        return []  # distribution answers `"tags": null` for a repository whose tags were all deleted
    if not isinstance(tags, list):
        raise RegistryError(f"{doing}: the answer is not a tag list", response.status_code, False)
    return [t for t in tags if isinstance(t, str)]


def _next_page(response: requests.Response, url: str, base: str, doing: str) -> str | None:
    """The absolute URL of the next page from `Link: <…>; rel="next"` (relative to this page's
    URL, or absolute), or None. A link to another host is refused: it would carry our token."""
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    following = urljoin(url, link)
    there, here = urlsplit(following), urlsplit(base)
    if (there.scheme, there.netloc) != (here.scheme, here.netloc):
        raise RegistryError(f"{doing}: the next page's link leads away from the registry, to {there.netloc}",
                            None, False)
    return following
