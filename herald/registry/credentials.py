"""Registry credentials from a `kubernetes.io/dockerconfigjson` Secret, as Flux reads them.

An ImageRepository's `spec.secretRef` names such a Secret; its `.dockerconfigjson` value is
Docker's config.json: `{"auths": {KEY: {"auth": base64("user:pass")} or {"username", "password"}}}`.
KEY is spelled in whatever way the tool that wrote it liked: `ghcr.io`, `https://ghcr.io`,
`ghcr.io/v2/`, and for Docker Hub the legacy `https://index.docker.io/v1/`. Keys are folded to
a bare host (Docker Hub's aliases to `docker.io`) so that lookup by an ImageName's registry finds
them however they were written.

Nothing here puts a credential in an exception message or a repr: these values end up in
conditions, events and logs.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from herald.registry.names import DOCKER_HUB, DOCKER_HUB_ALIASES


class CredentialsError(ValueError):
    """The Secret's value is not a usable docker config; the message names no credential."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry."""

    username: str
    password: str = field(repr=False)


def registry_key(key: str) -> str:
    """The host a config.json `auths` key stands for: scheme, path and case dropped, Docker Hub folded."""
    key = key.strip()
    host = urlsplit(key if "://" in key else f"//{key}").netloc.lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def parse_dockerconfigjson(value: str | bytes) -> dict[str, Credentials]:
    """Credentials by registry host from a `.dockerconfigjson` value (the decoded Secret data)."""
    try:
        config = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(".dockerconfigjson is not JSON") from None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        raise CredentialsError(".dockerconfigjson has no 'auths' object")
    found: dict[str, Credentials] = {}
    for key, entry in auths.items():
        host = registry_key(key)
        if not host or not isinstance(entry, dict):
            raise CredentialsError(f".dockerconfigjson: the entry for '{key}' is not a registry's credentials")
        found[host] = _entry(key, entry)
    return found


def credentials_for(credentials: Mapping[str, Credentials] | None, registry: str) -> Credentials | None:
    """The credentials for `registry` (an ImageName's host), if the Secret has some."""
    if not credentials:
        return None
    return credentials.get(registry_key(registry))


def _entry(key: str, entry: Mapping[str, object]) -> Credentials:
    # Docker's own reader lets `auth` win over username/password when both are present.
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(f".dockerconfigjson: 'auth' for '{key}' is not base64") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise CredentialsError(f".dockerconfigjson: 'auth' for '{key}' is not base64 of user:password")
        return Credentials(username, password)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and username and isinstance(password, str):
        return Credentials(username, password)
    raise CredentialsError(f".dockerconfigjson: the entry for '{key}' has neither 'auth' nor 'username' and 'password'")
