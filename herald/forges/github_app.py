"""GitHub App authentication: an installation token from the App's private key.

Shared by the notifier's commit statuses (`notifier.providers.github`) and the forges'
pull-request comments (`herald.forges.github`): one token cache for both.

Secret keys, as Flux names them (fluxcd/pkg `git/github`): `githubAppID`,
`githubAppInstallationID`, `githubAppPrivateKey` (the PEM GitHub gives, PKCS#1 or PKCS#8) and
optional `githubAppBaseURL` (the API base, such as `https://ghe.example.com/api/v3`). Without
`githubAppBaseURL` the token is asked of the same API as the repository (Flux asks
api.github.com, which is wrong for GitHub Enterprise Server).

The dance (docs.github.com, "Authenticating as a GitHub App installation"): a JWT signed RS256
with the private key (`iat` 60 s in the past against clock drift, `exp` 9 minutes ahead, under
GitHub's 10-minute ceiling, `iss` the App ID) is sent to
`POST /app/installations/{id}/access_tokens`, which answers an installation token valid for an
hour. The token is cached in this process until 5 minutes before its `expires_at`, keyed by a
hash of the App's credentials, so a burst of events costs one token request; a 401 with a
cached token drops it (`forget`) so the next delivery asks for a fresh one.

Secrets: the private key, the JWT and the installation token are credentials. They are passed
to `http.send` as Secret values so that anything the server echoes is scrubbed, and they are
never logged. A private key that does not load is reported without its content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from herald import http
from herald.http import DeliveryError
from herald.model import Provider

KEY_APP_ID = "githubAppID"
KEY_INSTALLATION_ID = "githubAppInstallationID"
KEY_PRIVATE_KEY = "githubAppPrivateKey"
KEY_BASE_URL = "githubAppBaseURL"

JWT_BACKDATE = 60  # seconds: GitHub's advice against clock drift
JWT_LIFETIME = 9 * 60  # seconds after now; GitHub refuses more than 10 minutes
REFRESH_MARGIN = 5 * 60  # seconds before expires_at when a cached token is replaced

log = logging.getLogger("herald.notifier.github")


@dataclass(frozen=True)
class AppCredentials:
    app_id: str
    installation_id: str
    private_key: str = field(repr=False)
    base_url: str = ""  # githubAppBaseURL, "" for the repository's API

    @property
    def cache_key(self) -> str:
        raw = f"{self.app_id}\0{self.installation_id}\0{self.base_url}\0{self.private_key}"
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: float  # epoch seconds


_cache: dict[str, InstallationToken] = {}
_cache_lock = threading.Lock()


def credentials(secret: Mapping[str, str]) -> AppCredentials | None:
    """The App's credentials from the Secret; None when it names no App (`githubAppID`)."""
    app_id = secret.get(KEY_APP_ID, "").strip()
    if not app_id:
        return None
    installation_id = secret.get(KEY_INSTALLATION_ID, "").strip()
    private_key = secret.get(KEY_PRIVATE_KEY, "")
    if not installation_id.isdigit():
        raise DeliveryError(f"github app: the Secret's {KEY_INSTALLATION_ID} must be a number", retryable=False)
    if not private_key.strip():
        raise DeliveryError(f"github app: the Secret has {KEY_APP_ID} but no {KEY_PRIVATE_KEY}", retryable=False)
    return AppCredentials(app_id, installation_id, private_key, secret.get(KEY_BASE_URL, "").strip().rstrip("/"))


def installation_token(
    provider: Provider,
    secret: Mapping[str, str],
    app: AppCredentials,
    api_base: str,
    *,
    session: requests.Session | None = None,
    now: float | None = None,
) -> str:
    """A valid installation token: the cached one, or a new one from GitHub."""
    now = time.time() if now is None else now
    with _cache_lock:
        cached = _cache.get(app.cache_key)
        if cached and cached.expires_at - REFRESH_MARGIN > now:
            return cached.token
    token = _fetch(provider, secret, app, app.base_url or api_base, session, now)
    with _cache_lock:
        _cache[app.cache_key] = token
    return token.token


def forget(app: AppCredentials) -> None:
    """Drop the App's cached token (GitHub refused it: revoked, or the App was reinstalled)."""
    with _cache_lock:
        _cache.pop(app.cache_key, None)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def make_jwt(app_id: str, private_key_pem: str, now: float) -> str:
    """The App's JWT: RS256 over `{"iat", "exp", "iss"}`, as GitHub documents it."""
    key = _private_key(private_key_pem)
    header = {"alg": "RS256", "typ": "JWT"}
    payload = {"iat": int(now) - JWT_BACKDATE, "exp": int(now) + JWT_LIFETIME, "iss": app_id}
    signing_input = f"{_b64_json(header)}.{_b64_json(payload)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _fetch(
    provider: Provider,
    secret: Mapping[str, str],
    app: AppCredentials,
    api_base: str,
    session: requests.Session | None,
    now: float,
) -> InstallationToken:
    jwt = make_jwt(app.app_id, app.private_key, now)
    url = f"{api_base}/app/installations/{app.installation_id}/access_tokens"
    what = f"github app token on {http.host(url, 'github app')}"
    response = http.send(
        provider,
        {**secret, "_jwt": jwt},  # so that an echoed JWT is scrubbed like any Secret value
        "POST",
        url,
        what=what,
        headers={
            "Authorization": f"Bearer {jwt}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
        http=session,
    )
    try:
        data = response.json()
        token = str(data["token"])
    except (ValueError, KeyError, TypeError):
        raise DeliveryError(f"{what}: the answer has no token", retryable=True) from None
    expires_at = _parse_time(data.get("expires_at")) or now + 3600
    log.debug("%s: installation token for app %s valid until %s", what, app.app_id,
              datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds"))
    return InstallationToken(token, expires_at)


def _private_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.strip().encode() + b"\n", password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DeliveryError(
            f"github app: the Secret's {KEY_PRIVATE_KEY} is not an unencrypted PEM RSA private key",
            retryable=False,
        )
    return key


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()  # Python 3.11 reads GitHub's trailing Z
    except ValueError:
        return None


def _b64_json(data: dict[str, object]) -> str:
    return _b64(json.dumps(data, separators=(",", ":")).encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
