"""TLS for a registry: its CA as the whole trust store, and a client certificate for mTLS.

Flux's ImageRepository `spec.certSecretRef` gives `ca.crt`, `tls.crt` and `tls.key` as PEM
text. They become one SSLContext, mounted on the client's session, rather than files handed to
requests' `verify=` and `cert=`: Python reads a certificate chain only from files, so the client
pair is written to a private temporary directory just long enough to be loaded and then
removed, and no key is left on disk for the life of the client.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Any

from requests.adapters import HTTPAdapter


def ssl_context(ca_pem: str | None = None, cert_pem: str | None = None,
                key_pem: str | None = None) -> ssl.SSLContext | None:
    """A verifying context trusting only `ca_pem` (else the system's CAs) and presenting the
    client pair; None when nothing is given (requests' defaults serve). ValueError for PEM that
    does not load, naming the field, never its content."""
    if key_pem and not cert_pem:
        raise ValueError("a client key (tls.key) needs its certificate (tls.crt)")
    if not (ca_pem or cert_pem):
        return None
    try:
        context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    except (ssl.SSLError, ValueError):
        raise ValueError("the CA (ca.crt) is not a PEM certificate") from None
    if cert_pem:
        _load_client_pair(context, cert_pem, key_pem)
    return context


def _load_client_pair(context: ssl.SSLContext, cert_pem: str, key_pem: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="herald-registry-tls-") as directory:  # mode 0700
        cert_file = os.path.join(directory, "tls.crt")
        key_file = os.path.join(directory, "tls.key") if key_pem else None
        _write_private(cert_file, cert_pem)
        if key_file and key_pem:
            _write_private(key_file, key_pem)
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, ValueError):
            raise ValueError("the client certificate and key (tls.crt, tls.key) are not a PEM certificate "
                             "and its private key") from None


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class ContextAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections use the given SSLContext, and that never retries on its
    own: the scan loop owns retries, with the registry's Retry-After."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self._context = context
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(*args, **kwargs)
