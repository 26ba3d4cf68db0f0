"""The email provider against a real SMTP server (aiosmtpd, tests/smtpserver.py): STARTTLS and
implicit TLS with a self-signed certificate trusted through the Secret's ca.crt, AUTH PLAIN and
LOGIN, and the refusals mail servers send. One scenario per test.

Herald's own log lines are captured at DEBUG; the local server's ("mail.log") are held at
WARNING, since what it logs is the server's business, not the provider's.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator

import pytest

from herald.messages import Event
from herald.model import Meta, Provider
from notifier.providers import email
from notifier.providers.base import DeliveryError, Notification
from tests.smtpserver import SMTPServer

USER = "herald"
PASSWORD = "smtp-pa55word-s3cret"
SHA = "abc1234def5678abc1234def5678abc1234def56"
REVISION = f"main@sha1:{SHA}"
CHANGES = "Deployment/default/web configured\nService/default/web unchanged"


def note(severity: str = "error", message: str = CHANGES, *, reason: str = "ReconciliationFailed", summary: str = "",
         template: str = "", revision: str = REVISION, **metadata: str) -> Notification:
    event = Event.for_object("Kustomization", "app", "default", severity=severity, reason=reason, message=message,
                             metadata={**({"revision": revision} if revision else {}), **metadata})
    return Notification(event=event, alert="default/on-call", summary=summary, message=template)


def provider(address: str = "", **fields: object) -> Provider:
    defaults: dict[str, object] = {"sender": "Herald <herald@example.com>", "to": ("ops@example.com",),
                                   "cc": ("dev@example.com",), "timeout": 5.0}
    return Provider(meta=Meta(name="mail"), type="email", address=address, **{**defaults, **fields})


def secret_for(server: SMTPServer, **extra: str) -> dict[str, str]:
    return {"username": USER, "password": PASSWORD, "ca.crt": server.ca_pem, **extra}


def failing(prov: Provider, secret: dict[str, str], n: Notification | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        email.send(prov, secret, n or note())
    return caught.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def never_shows_the_password(text: str) -> bool:
    forms = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode(),
             base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()]
    return not any(form in text for form in forms)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="mail.log")
    return caplog


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    """A submission server: STARTTLS, then AUTH."""
    with SMTPServer(tls="starttls", users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture
def smtps() -> Iterator[SMTPServer]:
    with SMTPServer(tls="smtps", users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture
def relay() -> Iterator[SMTPServer]:
    """A plain relay that trusts its network: no STARTTLS, no AUTH."""
    with SMTPServer(tls="none") as server:
        yield server


# -- delivering -----------------------------------------------------------------------------


def test_a_notification_is_mailed_over_starttls_after_auth(smtp: SMTPServer) -> None:
    n = note(summary="Production EU", env="prod")
    message_id = email.send(provider(smtp.address), secret_for(smtp), n)

    assert smtp.commands[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]  # the password went over TLS
    [mail] = smtp.messages
    assert (mail.login, mail.tls) == (USER, True)
    assert mail.mail_from == "herald@example.com"
    assert mail.rcpt_tos == ["ops@example.com", "dev@example.com"]
    headers = mail.message
    assert headers["Subject"] == "[herald] error: Kustomization/default/app ReconciliationFailed at main@sha1:abc1234"
    assert (headers["From"], headers["To"], headers["Cc"]) == ("Herald <herald@example.com>", "ops@example.com",
                                                              "dev@example.com")
    assert headers["Message-ID"] == message_id and message_id.endswith("@example.com>")
    assert headers["Auto-Submitted"] == "auto-generated"
    assert headers.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in headers.iter_parts()] == ["text/plain", "text/html"]
    for body in (mail.text, mail.html):
        for shown in ("Kustomization/default/app", "Production EU", "Deployment/default/web configured",
                      REVISION, "env", "prod", "default/on-call"):
            assert shown in body


def test_smtps_is_tls_from_the_first_byte(smtps: SMTPServer) -> None:
    email.send(provider(smtps.address), secret_for(smtps), note())

    assert "STARTTLS" not in smtps.commands
    [mail] = smtps.messages
    assert (mail.login, mail.tls) == (USER, True)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_works_with_whichever_mechanism_the_server_offers(mechanism: str) -> None:
    with SMTPServer(tls="starttls", users={USER: PASSWORD}, mechanisms=(mechanism,)) as server:
        email.send(provider(server.address), secret_for(server), note())
    assert [m.login for m in server.messages] == [USER]
    assert server.logins == [(USER, True)]


def test_the_secrets_address_overrides_the_providers(smtp: SMTPServer) -> None:
    elsewhere = f"smtps://127.0.0.1:{closed_port()}"
    email.send(provider(elsewhere), secret_for(smtp, address=smtp.address), note())
    assert len(smtp.messages) == 1


def test_a_plain_relay_takes_mail_without_credentials(relay: SMTPServer) -> None:
    assert relay.address.endswith("?starttls=false")
    email.send(provider(relay.address, cc=()), {}, note("info", reason="ReconciliationSucceeded"))

    [mail] = relay.messages
    assert (mail.login, mail.tls, mail.rcpt_tos) == (None, False, ["ops@example.com"])
    assert "Cc" not in mail.message
    assert mail.message["Subject"].startswith("[herald] info: ")


def test_one_refused_recipient_does_not_stop_the_others(smtp: SMTPServer, logs: pytest.LogCaptureFixture) -> None:
    smtp.refuse_recipient("dev@example.com")
    email.send(provider(smtp.address), secret_for(smtp), note())

    [mail] = smtp.messages
    assert mail.rcpt_tos == ["ops@example.com"]  # sent once; a retry would send ops a second copy
    assert "dev@example.com: 550 5.1.1 Recipient address rejected" in logs.text


# -- the message itself ---------------------------------------------------------------------


@pytest.mark.parametrize(("n", "expected"), [
    (note(), "[herald] error: Kustomization/default/app ReconciliationFailed at main@sha1:abc1234"),
    (note("info", reason="ReconciliationSucceeded", revision=""),
     "[herald] info: Kustomization/default/app ReconciliationSucceeded"),
    (note(reason="Bad\r\nBcc: victim@example.com"), "[herald] error: Kustomization/default/app Bad Bcc: "
                                                     "victim@example.com at main@sha1:abc1234"),
], ids=["error-with-revision", "info-without-revision", "line-breaks-flattened"])
def test_the_subject_names_severity_object_reason_and_revision(n: Notification, expected: str) -> None:
    assert email.subject(n) == expected


def test_a_long_subject_is_cut() -> None:
    subject = email.subject(note(reason="R" * 500))
    assert len(subject) == 250 and subject.endswith("…")


def test_the_html_body_escapes_everything_from_the_event() -> None:
    n = note(message="<script>alert(1)</script> & co", summary="<b>EU</b>", **{"team<x>": "a&b"})
    message = email.build_message(provider(), n)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()

    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "&lt;b&gt;EU&lt;/b&gt;" in html and "team&lt;x&gt;" in html and "a&amp;b" in html
    assert "<script>alert(1)</script> & co" in text  # plain text stays as written


def test_a_template_is_written_as_prose_and_a_change_list_as_code() -> None:
    prose = email.html_body(note(template="App *web* is live"))
    code = email.html_body(note())
    assert "App *web* is live" in prose and "font-family: sans-serif\">App" in prose
    assert "font-family: monospace\">Deployment/default/web" in code


# -- refusals and outages -------------------------------------------------------------------


def test_a_wrong_password_is_final_and_never_shown(smtp: SMTPServer, logs: pytest.LogCaptureFixture) -> None:
    error = failing(provider(smtp.address), secret_for(smtp, password="wrong-" + PASSWORD))

    assert not error.retryable
    assert "authentication failed: 535 5.7.8" in str(error) and "username and password" in str(error)
    assert smtp.messages == [] and "MAIL" not in smtp.commands
    assert never_shows_the_password(str(error)) and never_shows_the_password(logs.text)
    assert "wrong-" not in str(error)


@pytest.mark.parametrize(("stage", "reply", "retryable"), [
    ("MAIL", "550 5.7.1 Sender address rejected: not owned by user herald", False),
    ("MAIL", "451 4.3.0 Temporary lookup failure", True),
    ("RCPT", "550 5.1.1 Recipient address rejected: User unknown", False),
    ("RCPT", "452 4.2.2 Mailbox full, try again later", True),
    ("DATA", "554 5.7.1 Message rejected as spam", False),
    ("DATA", "451 4.7.1 Greylisted, please try again", True),
])
def test_4xx_replies_are_retried_and_5xx_replies_are_final(relay: SMTPServer, stage: str, reply: str,
                                                           retryable: bool) -> None:
    relay.reply_next(stage, reply)  # type: ignore[arg-type]
    error = failing(provider(relay.address, cc=()), {})

    assert error.retryable is retryable
    assert reply in str(error)  # the server's own words
    assert str(error).startswith(f"email via 127.0.0.1:{relay.port}: ")
    assert relay.messages == []


@pytest.mark.parametrize("server", ["smtp", "smtps"])
def test_an_untrusted_certificate_is_final_and_no_password_is_sent(server: str, request: pytest.FixtureRequest) -> None:
    mail_server: SMTPServer = request.getfixturevalue(server)
    secret = secret_for(mail_server)
    del secret["ca.crt"]
    error = failing(provider(mail_server.address), secret)

    assert not error.retryable
    assert "certificate verification failed" in str(error) and "ca.crt" in str(error)
    assert "AUTH" not in mail_server.commands and mail_server.logins == []


def test_a_server_that_does_not_offer_starttls_never_sees_the_password(relay: SMTPServer) -> None:
    address = relay.address.removesuffix("?starttls=false")  # STARTTLS required, as by default
    error = failing(provider(address), {"username": USER, "password": PASSWORD})

    assert not error.retryable and "does not offer STARTTLS" in str(error)
    assert relay.commands == ["EHLO"] and relay.messages == []


def test_a_password_is_never_sent_in_plain_text(relay: SMTPServer) -> None:
    error = failing(provider(relay.address), {"username": USER, "password": PASSWORD})

    assert not error.retryable and "without TLS" in str(error)
    assert relay.commands == []  # refused before connecting


def test_a_server_that_is_down_is_retried() -> None:
    error = failing(provider(f"smtp://127.0.0.1:{closed_port()}"), {"username": USER, "password": PASSWORD})
    assert error.retryable and "connection refused" in str(error)
    assert never_shows_the_password(str(error))


def test_a_server_with_no_usable_auth_mechanism_is_a_configuration_error() -> None:
    import smtplib

    error = email.failure("email via mail.example.com:587", smtplib.SMTPException(
        "No suitable authentication method found."), [PASSWORD])
    assert not error.retryable and "no AUTH mechanism" in str(error)


def test_a_slow_server_times_out_and_is_retried(relay: SMTPServer) -> None:
    relay.delay_data(1.5)
    error = failing(provider(relay.address, timeout=0.3), {})
    assert error.retryable and "timed out" in str(error)


# -- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "secret", "words"), [
    ({"address": ""}, {}, "no address"),
    ({"address": "https://mail.example.com"}, {}, "smtp://host[:port] or smtps://host[:port]"),
    ({"address": f"smtp://{USER}:{PASSWORD}@mail.example.com"}, {}, "Secret's username and password"),
    ({"address": "smtp://mail.example.com?tls=off"}, {}, "unknown address option 'tls'"),
    ({"address": "smtps://mail.example.com?starttls=false"}, {}, "unknown address option 'starttls'"),
    ({"address": "smtp://mail.example.com?starttls=maybe"}, {}, "starttls must be true or false"),
    ({"address": "smtp://mail.example.com/inbox"}, {}, "takes no path"),
    ({"address": "smtp://mail.example.com", "sender": ""}, {}, "needs `from`"),
    ({"address": "smtp://mail.example.com", "to": ()}, {}, "needs `to`"),
    ({"address": "smtp://mail.example.com", "to": ("not-an-address",)}, {}, "'not-an-address' is not an email"),
    ({"address": "smtp://mail.example.com", "cc": ("a@example.com\r\nBcc: x@example.com",)}, {}, "not an email"),
    ({"address": "smtp://mail.example.com", "proxy": "http://proxy:3128"}, {}, "HTTP proxy"),
    ({"address": "smtp://mail.example.com"}, {"password": PASSWORD}, "no username"),
    ({"address": "smtps://mail.example.com"}, {"ca.crt": "not a certificate"}, "ca.crt is not usable"),
], ids=["no-address", "http", "credentials-in-url", "unknown-option", "starttls-on-smtps", "bad-starttls",
        "path", "no-from", "no-to", "bad-to", "header-injection", "proxy", "password-no-username", "bad-ca"])
def test_configuration_errors_are_final_and_say_what_to_fix(fields: dict[str, object], secret: dict[str, str],
                                                            words: str) -> None:
    error = failing(provider(**fields), secret)  # type: ignore[arg-type]
    assert not error.retryable
    assert words in str(error)
    assert never_shows_the_password(str(error))


def test_the_local_server_refuses_mail_before_auth(smtp: SMTPServer) -> None:
    """The fake insists on AUTH as a submission server does, so the tests above mean something."""
    import smtplib
    import ssl

    context = ssl.create_default_context(cadata=smtp.ca_pem)
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # AUTH only after STARTTLS
        client.starttls(context=context)
        client.ehlo()
        assert client.has_extn("auth")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("herald@example.com", ["ops@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
        assert refused.value.smtp_code == 530
