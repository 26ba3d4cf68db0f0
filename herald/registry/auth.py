"""Answering a registry's 401: Basic credentials, or the Docker token flow.

Registries say how they want to be asked in `Www-Authenticate`. `Basic` wants the user and
password on every request. `Bearer realm=…,service=…,scope=…` (Docker Hub, GHCR, Quay,
Harbor, GitLab, and distribution's own token auth) wants a short-lived token: GET the realm
with the service and scope (and Basic credentials when we have some; anonymous pulls of public
images get a token too), take `token` (or the OAuth2 `access_token`) from the JSON, and send it
as `Authorization: Bearer`.

Scans run on an interval and page through tags, so a 401 round trip and a token request per
call would double the requests a registry sees (and Docker Hub rate-limits them). The
Authenticator therefore remembers, per registry host, which scheme and realm it asked for, and
caches tokens per (realm, service, scope, user) until shortly before `expires_in` (60 s when
absent, as the token spec says): later requests carry the Authorization from the start.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from herald.registry.credentials import Credentials, credentials_for, registry_key
from herald.registry.errors import RegistryError, status_error, transport_error
from herald.registry.names import ImageName

DEFAULT_EXPIRES_IN = 60.0
"""The token spec's lifetime of a token whose answer gives no `expires_in`."""

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(rf"[\s,]*({_TOKEN})")
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `Www-Authenticate` header: `scheme` and parameter names in lower case."""

    scheme: str
    params: Mapping[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges in a `Www-Authenticate` value (RFC 9110: a scheme, then `name=value` or
    `name="quoted"` parameters; several challenges may share one header, comma-separated)."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        scheme = _SCHEME.match(header, pos)
        if not scheme:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while param := _PARAM.match(header, pos):
            value = param.group(2)
            if value.startswith('"'):
                value = _ESCAPE.sub(r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        challenges.append(Challenge(scheme.group(1).lower(), params))
        if pos < len(header) and not params:
            pos = _skip_token68(header, pos)
    return challenges


def basic(credentials: Credentials) -> str:
    """The `Authorization` value for HTTP Basic."""
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def default_scope(image: ImageName) -> str:
    """The token scope for reading `image`: what a tag list or a manifest HEAD needs."""
    return f"repository:{image.repository}:pull"


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Authorization headers for one RegistryClient's requests; safe to share between threads.

    `authorization(image)` gives the header to send up front (from what the registry asked
    before); `answer(image, response)` answers a 401 and remembers how.
    """

    def __init__(self, session: requests.Session, credentials: Mapping[str, Credentials] | None, *,
                 timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        # Keyed by bare host, however the caller spelled them (`https://ghcr.io`, Docker Hub's aliases).
        self._credentials = {registry_key(k): v for k, v in (credentials or {}).items()}
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}       # registry host -> how it asked (scope dropped)
        self._scopes: dict[ImageName, str] = {}           # the scope the registry asked for, per repository
        self._tokens: dict[tuple[str, str, str, str], _Token] = {}

    def credentials(self, image: ImageName) -> Credentials | None:
        return credentials_for(self._credentials, image.registry)

    def secrets(self) -> list[str]:
        """Every credential and token this Authenticator holds, to scrub from quoted text."""
        with self._lock:
            tokens = [t.value for t in self._tokens.values()]
        return [*(c.password for c in self._credentials.values()), *tokens]

    def authorization(self, image: ImageName, doing: str) -> str | None:
        """The header to send with a request for `image`, when its registry asked for one before.

        `doing` says what the request is for, to begin any error message with."""
        with self._lock:
            challenge = self._challenges.get(image.registry)
            scope = self._scopes.get(image) or default_scope(image)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials(image)
            return basic(creds) if creds else None
        return "Bearer " + self._token(image, challenge, scope, doing, fresh=False)

    def answer(self, image: ImageName, response: requests.Response, doing: str) -> str:
        """The Authorization that answers `response`'s 401 challenge; RegistryError when there is none.

        A Bearer answer always fetches a new token: the one sent (if any) was refused.
        """
        challenges = parse_challenges(response.headers.get("Www-Authenticate", ""))
        by_scheme = {c.scheme: c for c in challenges}
        challenge = by_scheme.get("bearer") or by_scheme.get("basic")
        if challenge is None:
            raise RegistryError(f"{doing}: unauthorized (HTTP {response.status_code} without a Basic or "
                                "Bearer challenge)", response.status_code, False)
        if challenge.scheme == "basic":
            creds = self.credentials(image)
            if creds is None:
                raise RegistryError(f"{doing}: unauthorized (the registry asks for credentials, and none "
                                    f"are given for {image.registry})", response.status_code, False)
            with self._lock:
                self._challenges[image.registry] = challenge
            return basic(creds)
        if not challenge.params.get("realm"):
            raise RegistryError(f"{doing}: unauthorized (a Bearer challenge without a realm)",
                                response.status_code, False)
        scope = challenge.params.get("scope") or default_scope(image)
        remembered = Challenge("bearer", {k: v for k, v in challenge.params.items() if k != "scope"})
        with self._lock:
            self._challenges[image.registry] = remembered
            self._scopes[image] = scope
        return "Bearer " + self._token(image, remembered, scope, doing, fresh=True)

    def _token(self, image: ImageName, challenge: Challenge, scope: str, doing: str, *, fresh: bool) -> str:
        realm, service = challenge.params["realm"], challenge.params.get("service", "")
        creds = self.credentials(image)
        key = (realm, service, scope, creds.username if creds else "")
        now = self._clock()
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not fresh and cached.expires_at > now:
                return cached.value
        token, expires_in = self._fetch(realm, service, scope, creds, doing)
        # Keep a margin so that a token is still good when the request carrying it arrives.
        lifetime = expires_in - min(5.0, expires_in / 10)
        with self._lock:
            for stale in [k for k, t in self._tokens.items() if t.expires_at <= now]:
                del self._tokens[stale]  # one entry per repository scanned: drop the dead ones
            self._tokens[key] = _Token(token, now + lifetime)
        return token

    def _fetch(self, realm: str, service: str, scope: str, creds: Credentials | None,
               doing: str) -> tuple[str, float]:
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(f"{doing}: the registry's token realm is not an http(s) URL", None, False)
        doing = f"{doing}: getting a token from {parts.netloc}"
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params += [("scope", s) for s in scope.split()]
        headers = {"Accept": "application/json"}
        if creds:
            params.append(("account", creds.username))
            headers["Authorization"] = basic(creds)
        try:
            response = self._session.get(realm, params=params, headers=headers, timeout=self._timeout,
                                         allow_redirects=True)
        except requests.RequestException as exc:
            raise transport_error(doing, exc) from None
        if response.status_code != 200:
            raise status_error(doing, response, self.secrets())
        try:
            body = response.json()
        except ValueError:
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{doing}: the answer holds no token", response.status_code, False)
        expires_in = body.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
            expires_in = DEFAULT_EXPIRES_IN
        return token, float(expires_in)


def _skip_token68(header: str, pos: int) -> int:
    """Past a `Scheme token68` challenge's token68 (no registry sends one; skip it whole)."""
    comma = header.find(",", pos)
    return len(header) if comma < 0 else comma + 1
