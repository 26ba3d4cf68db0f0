"""Email: one message per notification, sent over SMTP with the standard library's smtplib.

The Provider's `address` (or the Secret's `address`, which overrides it as Flux's Secrets do
for other providers) names the server, and says how it is protected:

- `smtps://host[:port]` — implicit TLS from the first byte (RFC 8314), port 465 by default.
- `smtp://host[:port]` — STARTTLS, required: a server that does not offer it is refused, so a
  network attacker cannot strip it and read the password. Port 587 (submission) by default.
- `smtp://host[:port]?starttls=false` — plain text, for a relay that trusts its network (a
  sidecar, a cluster-internal relay). No password is ever sent this way: a Secret with a
  `password` and this address is a configuration error.

TLS checks the server's certificate and name; a private CA goes in the Secret's `ca.crt`
(from the Provider's certSecretRef). The Secret's `username` and `password` are used for
AUTH (smtplib picks PLAIN or LOGIN as the server offers); without a password there is no AUTH.
An HTTP proxy cannot carry SMTP, so a Provider or Secret `proxy` is refused rather than
silently bypassed. `provider.timeout` bounds the connection and each reply.

The message: `From` is the Provider's `from`, `To` and `Cc` its `to` and `cc`; the subject
names severity, object, reason and revision
(`[herald] error: Kustomization/default/app ReconciliationFailed at main@sha1:abc1234`); the
body is multipart/alternative, plain text and HTML (every value html-escaped) with the same
content: the summary, the message, the metadata, and who sent it. `Auto-Submitted:
auto-generated` (RFC 3834) keeps vacation responders from answering it.

Failures: connection errors, timeouts and 4xx replies are retryable; 5xx replies (535 bad
credentials, 550 no such mailbox, 554 refused) and a certificate the CA does not vouch for are
final. Messages quote the server's reply, scrubbed of every Secret value (and the base64 forms
AUTH sends), so a password never reaches a log.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import parse_qsl, urlsplit

from herald.messages import ROUTING_METADATA, SEVERITY_ERROR, Event
from herald.model import Provider
from notifier.providers import http
from notifier.providers.base import DeliveryError, Notification

DEFAULT_PORTS = {"smtp": 587, "smtps": 465}
SUBJECT_PREFIX = "[herald]"

_HIDDEN_METADATA = {"revision", "summary", *ROUTING_METADATA}  # shown elsewhere, or routing hints
_SUBJECT_MAX = 250
_SHORT_REVISION = re.compile(r"(sha\d+:[0-9a-f]{7})[0-9a-f]+")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_FALSE = {"false", "no", "off", "0"}
_TRUE = {"true", "yes", "on", "1"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Server:
    """Where to connect and how: implicit TLS (smtps), STARTTLS, or plain text to a relay."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool

    @property
    def name(self) -> str:
        """For messages: host and port, never anything from the Secret."""
        return f"{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.implicit_tls or self.starttls


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str:
    """Send the notification; returns the message's Message-ID."""
    server = parse_address(secret.get("address") or provider.address)
    where = f"email via {server.name}"
    if secret.get("proxy") or provider.proxy:
        raise DeliveryError(f"{where}: SMTP cannot go through an HTTP proxy; remove the proxy setting",
                            retryable=False)
    password = secret.get("password", "")
    username = secret.get("username") or provider.username
    if password and not server.tls:
        raise DeliveryError(f"{where}: refusing to send the password without TLS "
                            "(use smtps://, or smtp:// with STARTTLS)", retryable=False)
    if password and not username:
        raise DeliveryError(f"{where}: the Secret has a password but no username", retryable=False)
    try:
        message = build_message(provider, note)
        sender = envelope_address(provider.sender)
        recipients = [envelope_address(a) for a in (*provider.to, *provider.cc)]
    except ValueError as exc:
        raise DeliveryError(f"{where}: {exc}", retryable=False) from None
    context = tls_context(secret) if server.tls else None
    secrets = _secrets(secret, username)
    try:
        refused = _deliver(server, context, provider.timeout, (username, password) if password else None,
                           message, sender, recipients)
    except (smtplib.SMTPException, OSError) as exc:
        raise failure(where, exc, secrets) from None
    if refused:
        # The others got it: trying again would send them a second copy, so this is only logged.
        log.warning("%s: delivered, but %d recipient(s) refused: %s", where, len(refused),
                    http.scrub(_replies(refused), secrets))
    log.debug("%s: sent %s for %s to %d recipient(s)", where, note.event.reason, note.event.object_ref,
              len(recipients) - len(refused))
    return str(message["Message-ID"])


# -- configuration ---------------------------------------------------------------------------


def parse_address(address: str) -> Server:
    """`smtp://host[:port][?starttls=false]` or `smtps://host[:port]`, checked strictly: an
    option Herald does not know is an error, never silently ignored."""
    if not address:
        raise DeliveryError("email: no address (smtp://host:port or smtps://host:port) in the Provider "
                            "or its Secret", retryable=False)
    parts = urlsplit(address)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise DeliveryError("email: the address must be smtp://host[:port] or smtps://host[:port]",
                            retryable=False)
    where = f"email via {parts.hostname}"
    if parts.username is not None or parts.password is not None:
        raise DeliveryError(f"{where}: put the credentials in the Secret's username and password keys, "
                            "not in the address", retryable=False)
    if parts.path not in ("", "/") or parts.fragment:
        raise DeliveryError(f"{where}: the address takes no path", retryable=False)
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise DeliveryError(f"{where}: the address has an invalid port", retryable=False) from None
    starttls = scheme == "smtp"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "starttls" or scheme != "smtp":
            raise DeliveryError(f"{where}: unknown address option {key!r} (smtp:// takes starttls=false)",
                                retryable=False)
        if value.lower() in _FALSE:
            starttls = False
        elif value.lower() not in _TRUE:
            raise DeliveryError(f"{where}: starttls must be true or false", retryable=False)
    return Server(parts.hostname, port, implicit_tls=scheme == "smtps", starttls=starttls)


def tls_context(secret: Mapping[str, str]) -> ssl.SSLContext:
    """The system's roots, plus the Secret's `ca.crt` for a private CA; names are checked."""
    context = ssl.create_default_context()
    ca = secret.get("ca.crt") or secret.get("caFile")
    if ca:
        try:
            context.load_verify_locations(cadata=ca)
        except (ssl.SSLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or "not a PEM certificate"
            raise DeliveryError(f"email: the Secret's ca.crt is not usable: {reason}", retryable=False) from None
    return context


def envelope_address(value: str) -> str:
    """The bare address of `Name <a@b>` or `a@b`, for MAIL FROM and RCPT TO; ValueError if
    there is none, or if the value would break out of its header (a line break)."""
    _, address = parseaddr(value)
    if "@" not in address or _LINE_BREAKS.search(value) or any(c.isspace() for c in address):
        raise ValueError(f"{value!r} is not an email address")
    return address


# -- the message -----------------------------------------------------------------------------


def build_message(provider: Provider, note: Notification) -> EmailMessage:
    """The whole message, headers and both bodies: plain data in, a message out (ValueError
    when the Provider's `from`, `to` or `cc` cannot make one)."""
    if not provider.sender:
        raise ValueError("the Provider needs `from`, the sender's address")
    if not provider.to:
        raise ValueError("the Provider needs `to`, at least one recipient")
    sender_domain = envelope_address(provider.sender).rsplit("@", 1)[1]
    for address in (*provider.to, *provider.cc):
        envelope_address(address)
    message = EmailMessage(policy=SMTP_POLICY)
    message["Subject"] = subject(note)
    message["From"] = provider.sender
    message["To"] = ", ".join(provider.to)
    if provider.cc:
        message["Cc"] = ", ".join(provider.cc)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid("herald", domain=sender_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text_body(note), cte="quoted-printable")
    message.add_alternative(html_body(note), subtype="html", cte="quoted-printable")
    return message


def subject(note: Notification) -> str:
    """`[herald] error: Kustomization/default/app ReconciliationFailed at main@sha1:abc1234`."""
    event = note.event
    text = f"{SUBJECT_PREFIX} {event.severity}: {event.object_ref} {event.reason}"
    if event.revision:
        text += " at " + _SHORT_REVISION.sub(r"\1", event.revision)
    text = _LINE_BREAKS.sub(" ", text)
    return text if len(text) <= _SUBJECT_MAX else text[: _SUBJECT_MAX - 1] + "…"


def text_body(note: Notification) -> str:
    event = note.event
    lines = [f"{event.object_ref}: {event.reason} ({event.severity})"]
    summary = _summary(note)
    if summary:
        lines.append(summary)
    lines += ["", note.text.rstrip() or "(no message)", ""]
    lines += [f"{name}: {value}" for name, value in _facts(event)]
    lines += ["", "-- ", _signature(note)]
    return "\n".join(lines) + "\n"


def html_body(note: Notification) -> str:
    """The same content as the text body; every value from the event is escaped."""
    event = note.event
    esc = html.escape
    colour = "#b3261e" if event.severity == SEVERITY_ERROR else "#1e7b34"
    parts = [
        '<!DOCTYPE html><html><body style="font-family: sans-serif">',
        f'<h2 style="color: {colour}; margin-bottom: 0">{esc(str(event.object_ref))}: {esc(event.reason)}</h2>',
        f'<p style="margin-top: 4px"><strong>{esc(event.severity)}</strong></p>',
    ]
    summary = _summary(note)
    if summary:
        parts.append(f"<p><strong>{esc(summary)}</strong></p>")
    font = "sans-serif" if note.message else "monospace"
    parts.append(f'<pre style="white-space: pre-wrap; font-family: {font}">{esc(note.text.rstrip())}</pre>')
    facts = _facts(event)
    if facts:
        rows = "".join(f'<tr><th align="left" style="padding-right: 1em">{esc(name)}</th><td>{esc(value)}</td></tr>'
                       for name, value in facts)
        parts.append(f"<table>{rows}</table>")
    parts.append(f'<p style="color: #666; font-size: small">{esc(_signature(note))}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(note: Notification) -> str:
    return note.summary or note.event.metadata.get("summary", "")


def _facts(event: Event) -> list[tuple[str, str]]:
    facts = [("revision", event.revision)] if event.revision else []
    facts += [(key, event.metadata[key]) for key in sorted(event.metadata.keys() - _HIDDEN_METADATA)]
    return facts


def _signature(note: Notification) -> str:
    event = note.event
    sent = f"Sent by {event.reportingController or 'herald'} for Alert {note.alert}"
    return sent + (f" at {event.timestamp}" if event.timestamp else "")


# -- SMTP ------------------------------------------------------------------------------------


def _deliver(server: Server, context: ssl.SSLContext | None, timeout: float, login: tuple[str, str] | None,
             message: EmailMessage, sender: str, recipients: list[str]) -> dict[str, tuple[int, bytes]]:
    """One SMTP session; returns the recipients the server refused while accepting others."""
    client: smtplib.SMTP
    if server.implicit_tls:
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        client.ehlo()
        if server.starttls:
            client.starttls(context=context)
            client.ehlo()
        if login:
            client.login(*login)
        return client.send_message(message, from_addr=sender, to_addrs=recipients)
    finally:
        _close(client)


def _close(client: smtplib.SMTP) -> None:
    """QUIT politely; the message is already accepted, so nothing here is a failure."""
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def failure(where: str, exc: BaseException, secrets: Iterable[str]) -> DeliveryError:
    """An SMTP or network failure as a DeliveryError: 4xx and outages retryable, 5xx final."""
    secrets = list(secrets)

    def said(code: int, reply: bytes | str) -> str:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        return http.scrub(f"{code} {' '.join(text.split())}".strip(), secrets)

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        message = f"{where}: every recipient was refused: {http.scrub(_replies(exc.recipients), secrets)}"
        return DeliveryError(message, retryable=bool(codes) and all(400 <= c < 500 for c in codes))
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        hint = " (check the Secret's username and password)" if exc.smtp_code >= 500 else ""
        return DeliveryError(f"{where}: authentication failed: {said(exc.smtp_code, exc.smtp_error)}{hint}",
                             retryable=400 <= exc.smtp_code < 500)
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(f"{where}: {_stage(exc)}: {said(exc.smtp_code, exc.smtp_error)}",
                             retryable=not 500 <= exc.smtp_code < 600)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        reason = str(exc)
        if "STARTTLS" in reason:
            reason = "the server does not offer STARTTLS (use smtps://, or ?starttls=false for a local relay)"
        elif "AUTH" in reason:
            reason = "the server does not offer AUTH, but the Secret has a password"
        return DeliveryError(f"{where}: {http.scrub(reason, secrets)}", retryable=False)
    if type(exc) is smtplib.SMTPException and "authentication method" in str(exc):
        return DeliveryError(f"{where}: the server offers no AUTH mechanism smtplib can use "
                             "(PLAIN, LOGIN, CRAM-MD5)", retryable=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(f"{where}: TLS certificate verification failed: {exc.verify_message} "
                             "(set ca.crt in the Secret for a private CA)", retryable=False)
    if isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(exc.__context__, TimeoutError):
        # smtplib reports a reply that never came as SMTPServerDisconnected, raised from the timeout.
        return DeliveryError(f"{where}: timed out", retryable=True)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(f"{where}: the server closed the connection", retryable=True)
    if isinstance(exc, ConnectionRefusedError):
        return DeliveryError(f"{where}: connection refused", retryable=True)
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"{where}: TLS failed: {exc.reason or type(exc).__name__}", retryable=True)
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return DeliveryError(f"{where}: {http.scrub(reason, secrets)}", retryable=True)
    return DeliveryError(f"{where}: {http.scrub(str(exc) or type(exc).__name__, secrets)}", retryable=True)


def _stage(exc: smtplib.SMTPResponseException) -> str:
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return "sender refused"
    if isinstance(exc, smtplib.SMTPDataError):
        return "message refused"
    if isinstance(exc, smtplib.SMTPConnectError):
        return "connection refused by the server"
    if isinstance(exc, smtplib.SMTPHeloError):
        return "EHLO refused"
    return "the server said"


def _replies(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{rcpt}: {code} {reply.decode('utf-8', 'replace') if isinstance(reply, bytes) else reply}"
                     for rcpt, (code, reply) in refused.items())


def _secrets(secret: Mapping[str, str], username: str) -> list[str]:
    """Every Secret value, and the base64 forms in which AUTH PLAIN and LOGIN send them, in case
    a server quotes the command it refused."""
    values = [v for v in secret.values() if v]
    password = secret.get("password", "")
    if password:
        for raw in (password, f"\0{username}\0{password}", f"{username}\0{username}\0{password}"):
            values.append(base64.b64encode(raw.encode()).decode())
    return values
