"""A local SMTP server for the email provider's tests: aiosmtpd on 127.0.0.1.

It behaves as a mail submission server does, so a provider that passes here would pass there:
- `tls="starttls"` (port-587 style): plain until STARTTLS, which uses a certificate made on the
  fly by `self_signed()` for 127.0.0.1; AUTH is offered only after STARTTLS (538 before).
- `tls="smtps"`: implicit TLS from the first byte (port-465 style).
- `tls="none"`: a plain relay that offers neither STARTTLS nor AUTH.
With `users`, AUTH PLAIN and LOGIN check username and password (535 5.7.8 when wrong) and
MAIL before AUTH is refused (530 5.7.0). Replies can be injected per stage (MAIL, RCPT, DATA)
to play 4xx/5xx refusals, and every accepted message is kept, parsed, with its envelope.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import os
import ssl
import tempfile
import threading
import warnings
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fixtures_herald import free_port

TLSMode = Literal["starttls", "smtps", "none"]


# -- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate and its key, as PEM: the key stays with the server, the
    certificate goes to the client as its `ca.crt`."""

    cert_pem: str
    key_pem: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files; they need not stay
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            with open(cert, "w") as f:
                f.write(self.cert_pem)
            with open(key, "w") as f:
                f.write(self.key_pem)
            context.load_cert_chain(cert, key)
        return context


def self_signed(hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certificate:
    """A certificate for `hosts` (IP addresses and DNS names), signed by itself, valid a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald-test")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode(),
    )


# -- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope, who logged in, whether TLS carried it, the message."""

    mail_from: str
    rcpt_tos: list[str]
    login: str | None
    tls: bool
    message: EmailMessage

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        return part.get_content()

    @property
    def text(self) -> str:
        return self.body("plain")

    @property
    def html(self) -> str:
        return self.body("html")


@dataclass
class _Rules:
    next_replies: dict[str, deque[str]] = field(default_factory=lambda: {s: deque() for s in ("MAIL", "RCPT", "DATA")})
    refused_recipients: dict[str, str] = field(default_factory=dict)
    data_delay: float = 0.0


class SMTPServer:
    """Start it, point a Provider at `address` with `ca_pem` as the Secret's ca.crt, read `messages`."""

    def __init__(self, *, tls: TLSMode = "starttls", users: dict[str, str] | None = None,
                 mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"), certificate: Certificate | None = None) -> None:
        self.tls = tls
        self.users = dict(users or {})
        self.certificate = certificate or self_signed()
        self.messages: list[Received] = []
        self.logins: list[tuple[str, bool]] = []  # every AUTH attempt: (username, succeeded)
        self.commands: list[str] = []  # every command verb the server received, in order
        self._rules = _Rules()
        self._lock = threading.Lock()
        self.port = free_port()
        context = self.certificate.server_context() if tls != "none" else None
        kwargs: dict[str, Any] = {}
        if self.users:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=tls == "starttls",  # smtps is TLS from the start
                          auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN") if m not in mechanisms])
        self._controller = _Controller(
            self, _Handler(self), hostname="127.0.0.1", port=self.port,
            ssl_context=context if tls == "smtps" else None,
            tls_context=context if tls == "starttls" else None,
            require_starttls=False, server_hostname="mail.herald.test", **kwargs,
        )

    @property
    def address(self) -> str:
        if self.tls == "smtps":
            return f"smtps://127.0.0.1:{self.port}"
        if self.tls == "none":
            return f"smtp://127.0.0.1:{self.port}?starttls=false"
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        return self.certificate.cert_pem

    def start(self) -> SMTPServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reply_next(self, stage: Literal["MAIL", "RCPT", "DATA"], reply: str) -> None:
        """Answer the next MAIL, RCPT or DATA with `reply` (e.g. "451 4.3.0 try later")."""
        self._rules.next_replies[stage].append(reply)

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 Recipient address rejected: User unknown") -> None:
        self._rules.refused_recipients[address.lower()] = reply

    def delay_data(self, seconds: float) -> None:
        """Wait this long before answering DATA, as a server under load does."""
        self._rules.data_delay = seconds

    # -- what the server does -----------------------------------------------------------------

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = self.users.get(username) == password
        with self._lock:
            self.logins.append((username, ok))
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Error: authentication failed")

    def _take(self, stage: str) -> str | None:
        replies = self._rules.next_replies[stage]
        return replies.popleft() if replies else None

    def _accept(self, server: SMTP, session: Session, envelope: Envelope) -> None:
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data
        login = auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else None
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), login, tls, message))


class _Handler:
    """aiosmtpd's handler hooks: inject replies, refuse recipients, keep what was accepted."""

    def __init__(self, owner: SMTPServer) -> None:
        self.owner = owner

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,  # noqa: N802
                          mail_options: list[str]) -> str:
        self.owner.commands.append("MAIL")
        reply = self.owner._take("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        self.owner.commands.append("RCPT")
        reply = self.owner._take("RCPT") or self.owner._rules.refused_recipients.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.owner.commands.append("DATA")
        if self.owner._rules.data_delay:
            await asyncio.sleep(self.owner._rules.data_delay)
        reply = self.owner._take("DATA")
        if reply:
            return reply
        self.owner._accept(server, session, envelope)
        return "250 2.0.0 OK: queued"


class _Controller(Controller):
    """aiosmtpd's Controller, counting EHLO/STARTTLS/AUTH too so tests can see the dialogue."""

    def __init__(self, owner: SMTPServer, *args: Any, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        owner = self.owner

        class RecordingSMTP(SMTP):
            async def smtp_EHLO(self, arg: str) -> None:  # noqa: N802
                owner.commands.append("EHLO")
                await super().smtp_EHLO(arg)

            async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
                owner.commands.append("STARTTLS")
                await super().smtp_STARTTLS(arg)

            async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802
                owner.commands.append("AUTH")
                await super().smtp_AUTH(arg)

        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH is allowed without STARTTLS; with smtps it is TLS throughout.
            warnings.simplefilter("ignore", UserWarning)
            return RecordingSMTP(self.handler, **self.SMTP_kwargs)
