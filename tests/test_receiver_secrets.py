"""No secret and no expected MAC ever appears in a response or a log line.

The real `herald receiver -c CONFIG` runs as its own process at log level DEBUG, with a
Receiver of every registered type (tests/receiver_types_config.py). Each gets right deliveries
(signed with the token and with each rotation key, every algorithm its type accepts),
redeliveries, and wrong ones: a MAC under a wrong key, a valid MAC of another body, the valid
MAC with one digit changed or under another algorithm, a token one character off, no
credentials at all, and correctly signed bodies that are malformed. Then every response (status
line, headers, body) and every line the process logged is searched for:

* each configured credential: the token, each rotation key, ACR's username, password, Basic
  credentials (base64) and header token, Harbor's Authorization value (the token);
* the hex HMAC of each body sent, under each key, with SHA-1, SHA-256 and SHA-512: the value a
  valid signature would have had (case-insensitively);
* the secret hook paths, which are the only credential of URL-only types.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest
import requests

from tests.receiver_types_config import (
    ACR_USERNAME,
    KEYS,
    RECEIVERS,
    ROTATION_KEYS,
    TOKEN,
    URL_ONLY,
    base_headers,
    credentials,
    every_secret_value,
    expected_macs,
    load_types_config,
    mac,
    receiver_process,
    sample_bodies,
    valid_delivery,
)

MALFORMED = b'{"ref": "refs/heads/main", "after": '  # truncated JSON


@dataclass
class Sent:
    label: str
    headers: dict[str, str]
    body: bytes
    allowed: set[int]


@dataclass
class Transcript:
    bodies: list[bytes] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)


def _deliveries(name: str) -> list[Sent]:
    rtype = RECEIVERS[name][0]
    out: list[Sent] = []
    url_only = name in URL_ONLY
    ok = {200, 202}  # 200: a redelivery of an accepted delivery id
    keys = KEYS if not url_only and name not in ("acr-basic", "acr-bearer") else (TOKEN,)
    algorithms = ("sha1", "sha256", "sha512") if name in ("generic-hmac", "cloudevents-signed", "cdevents-signed") \
        else ("",)
    for i, body in enumerate(sample_bodies(name)):
        for key in keys:
            for algorithm in algorithms:
                headers, body = valid_delivery(name, key, i, algorithm)
                out.append(Sent(f"right, key {key[:4]}, {algorithm or 'default'}", headers, body, ok))
        headers, body = valid_delivery(name, TOKEN, i)
        out.append(Sent("redelivery", headers, body, ok))
        out.append(Sent("redelivery", headers, body, ok))
        if url_only and rtype not in ("cloudevents", "cdevents"):
            continue
        other = body + b" "
        bad: list[tuple[str, dict[str, str]]] = []
        if name not in ("acr-basic", "acr-bearer", "gitlab", "harbor"):
            good = credentials(name, body, TOKEN) if not url_only else {"X-Signature": "sha256=" + mac(body)}
            header, value = next(iter(good.items()))
            bad += [
                ("wrong key", {header: value.replace(mac(body, TOKEN, "sha1"), mac(body, "wrong", "sha1"))
                               .replace(mac(body), mac(body, "wrong"))}),
                ("valid MAC of another body", {header: value.replace(mac(body, TOKEN, "sha1"), mac(other, TOKEN, "sha1"))
                                               .replace(mac(body), mac(other))}),
                ("one digit off", {header: value[:-1] + ("0" if value[-1] != "0" else "1")}),
                ("sha512 under sha256's name", {header: "sha256=" + mac(body, TOKEN, "sha512")}),
                ("empty", {header: ""}),
            ]
            if header != "X-Signature" and name != "github-sha1":  # types that refuse SHA-1
                bad.append(("sha1 for sha256", {header: "sha1=" + mac(body, TOKEN, "sha1")}))
        elif name in ("gitlab", "harbor"):
            header = next(iter(credentials(name, body)))
            bad += [("token one off", {header: TOKEN[:-1] + "x"}), ("rotation key one off", {header: ROTATION_KEYS[0] + "x"}),
                    ("bearer", {header: f"Bearer {TOKEN}"}), ("empty", {header: ""})]
        elif name == "acr-basic":
            bad += [("wrong password", {"Authorization": "Basic " + base64.b64encode(
                f"{ACR_USERNAME}:{TOKEN}".encode()).decode()}), ("bearer", {"Authorization": f"Bearer {TOKEN}"})]
        else:
            bad += [("wrong bearer", {"Authorization": f"Bearer {TOKEN}"}), ("empty", {"Authorization": ""})]
        for label, creds in bad:
            base = base_headers(name, body)
            if not creds.get("X-Signature", "x") and name in ("cloudevents", "cdevents"):
                continue  # an empty optional signature is no signature: accepted
            out.append(Sent(label, base | creds, body, {401}))
        if not url_only:
            out.append(Sent("unsigned", base_headers(name, body), body, {401}))
    # Correctly signed, malformed: the 400 explains what is wrong with the body, nothing more.
    malformed_headers = base_headers(name, sample_bodies(name)[0])
    if rtype in ("cloudevents", "cdevents"):
        malformed_headers["Content-Type"] = "application/cloudevents+json"
    allowed = {202} if rtype in ("generic", "generic-hmac") else {400}
    for key in (TOKEN, ROTATION_KEYS[-1]):
        out.append(Sent("malformed", malformed_headers | credentials(name, MALFORMED, key), MALFORMED, allowed))
    return out


def _record(transcript: Transcript, resp: requests.Response, body: bytes) -> None:
    transcript.bodies.append(body)
    head = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    transcript.responses.append(f"{resp.status_code} {resp.reason}\n{head}\n\n{resp.text}")


@pytest.fixture(scope="module")
def exercised(tmp_path_factory: pytest.TempPathFactory):
    """Every delivery sent to the real process; its transcript and log (the process has exited)."""
    tmp = tmp_path_factory.mktemp("secrets")
    types = load_types_config(tmp)
    transcript = Transcript()
    wrong_answers: list[str] = []
    with receiver_process(types.path, tmp, log_level="DEBUG") as (base, log):
        for name in RECEIVERS:
            url = base + types.hook(name)
            for sent in _deliveries(name):
                resp = requests.post(url, data=sent.body, headers=sent.headers, timeout=20)
                _record(transcript, resp, sent.body)
                if resp.status_code not in sent.allowed:
                    wrong_answers.append(f"{name} {sent.label}: {resp.status_code} {resp.text[:200]}")
        for path in ("/healthz", "/readyz", "/metrics"):
            _record(transcript, requests.get(base + path, timeout=20), b"")
        _record(transcript, requests.post(base + "/hook/" + "0" * 64, data=b"{}", timeout=20), b"")
    return types, transcript, log.read_text(errors="replace"), wrong_answers


def test_every_delivery_got_the_answer_its_credentials_deserve(exercised) -> None:
    _, transcript, log, wrong_answers = exercised
    assert wrong_answers == []
    assert len(transcript.responses) > 300
    assert "signature or token missing or invalid (401)" in log and "malformed delivery (400)" in log
    assert ": published " in log and "duplicate of a delivery" in log


def test_no_secret_appears_in_any_response_or_log_line(exercised) -> None:
    _, transcript, log, _ = exercised
    lines = [*log.splitlines(), *transcript.responses]
    for secret in every_secret_value():
        hits = [line for line in lines if secret in line]
        assert hits == [], f"the secret {secret[:6]}... appears: {hits[:3]}"


def test_no_expected_mac_appears_in_any_response_or_log_line(exercised) -> None:
    _, transcript, log, _ = exercised
    text = "\n".join([log, *transcript.responses]).lower()
    macs = {m for body in transcript.bodies for m in expected_macs(body)}
    assert len(macs) > 200  # 9 per distinct body: 3 keys x 3 algorithms
    leaked = sorted(m for m in macs if m in text)
    assert leaked == [], f"{len(leaked)} expected MAC(s) appear, e.g. {leaked[:2]}"


def test_no_hook_path_appears_in_any_response_or_log_line(exercised) -> None:
    """The hook URL is derived from the token and is the only credential of URL-only types."""
    types, transcript, log, _ = exercised
    text = "\n".join([log, *transcript.responses])
    leaked = sorted(name for name, path in types.hooks.items() if path.removeprefix("/hook/") in text)
    assert leaked == []


def test_the_log_names_each_receiver_and_delivery_without_its_credentials(exercised) -> None:
    """The log is still useful: every Receiver shows up by name, and refusals name the delivery."""
    log = exercised[2]
    for name in RECEIVERS:
        assert f"receiver=flux-system/{name} " in log, name
    refusal = next(line for line in log.splitlines() if "receiver=flux-system/github " in line and "(401)" in line)
    assert "delivery=" in refusal and TOKEN not in refusal
