"""A registry client for an object of the configuration that names a registry (an
ImageRepository, an OCIRepository): Flux's `secretRef` (a `kubernetes.io/dockerconfigjson`
Secret), `certSecretRef` (`ca.crt`, and `tls.crt`/`tls.key` for mTLS), `insecure` and `timeout`."""

from __future__ import annotations

from typing import Any

from herald.config import Config
from herald.registry.client import RegistryClient
from herald.registry.credentials import CredentialsError, parse_dockerconfigjson
from herald.registry.errors import RegistryError


def client_for(cfg: Config, obj: Any) -> RegistryClient:
    """The client `obj`'s spec asks for; RegistryError (not retryable) naming the field when a
    Secret is missing or unreadable."""
    ns, kind = obj.meta.namespace, type(obj).__name__
    where = f"{kind} {ns}/{obj.meta.name}"
    credentials = None
    if obj.secret_ref:
        secret = cfg.secret(ns, obj.secret_ref.name)
        if secret is None:
            raise RegistryError(f"{where}: spec.secretRef: Secret {ns}/{obj.secret_ref.name} not found", None,
                                retryable=False)
        try:
            credentials = parse_dockerconfigjson(secret.get(".dockerconfigjson", "") or "{}")
        except CredentialsError as exc:
            raise RegistryError(f"{where}: spec.secretRef: Secret {ns}/{obj.secret_ref.name}: {exc}", None,
                                retryable=False) from None
    tls: dict[str, str] = {}
    if obj.cert_secret_ref:
        found = cfg.secret(ns, obj.cert_secret_ref.name)
        if found is None:
            raise RegistryError(f"{where}: spec.certSecretRef: Secret {ns}/{obj.cert_secret_ref.name} not found",
                                None, retryable=False)
        tls = found
    return RegistryClient(credentials, ca_pem=tls.get("ca.crt"), cert_pem=tls.get("tls.crt"),
                          key_pem=tls.get("tls.key"), insecure=obj.insecure, timeout=obj.timeout)
