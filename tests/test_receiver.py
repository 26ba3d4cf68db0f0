"""The GitHub receiver answers as ARCHITECTURE.md says, and publishes only what it should."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from herald import config
from herald.bus import open_bus
from herald.bus.amqp import AmqpBus
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from herald.settings import Settings
from receiver.app import create_app
from tests.fixtures_herald import (
    FIXTURES,
    TOKEN,
    github_headers,
    github_push,
    write_config,
)


class Published:
    """Reads what reached the bus, through the bus's own consume API."""

    def __init__(self, bus):
        self.bus = bus

    def drain(self) -> list[ReconcileRequest]:
        import threading

        got: list[ReconcileRequest] = []
        stop = threading.Event()

        def handler(d):
            got.append(ReconcileRequest.from_json(d.body))

        t = threading.Thread(target=self.bus.consume, args=(RECONCILE_QUEUE, handler, stop))
        t.start()
        t.join(timeout=0.5)
        stop.set()
        t.join()
        return got


@pytest.fixture
def setup(tmp_path: Path):
    cfg_path = write_config(tmp_path / "herald.yaml", "https://example.com/app.git")
    cfg = config.load([cfg_path])
    bus = open_bus(None, tmp_path / "state")
    app = create_app(cfg, bus, Settings(max_body=64 * 1024, state_dir=tmp_path / "state"))
    hook = cfg.hook_path(cfg.receivers[("flux-system", "github-app")])
    yield app.test_client(), hook, Published(bus)
    bus.close()


def test_signed_push_is_published_and_answered_202(setup) -> None:
    client, hook, published = setup
    body = github_push("a" * 40)
    resp = client.post(hook, data=body, headers=github_headers(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958"))
    assert resp.status_code == 202, resp.json
    [req] = published.drain()
    assert resp.json["requests"] == [req.id]
    assert (req.kind, req.name, req.namespace, req.reason) == ("GitRepository", "app", "flux-system", "webhook")
    assert req.origin == {"receiver": "flux-system/github-app", "type": "github", "event": "push",
                          "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                          "revision": f"main@sha1:{'a' * 40}"}


def test_form_encoded_delivery_is_accepted(setup) -> None:
    """GitHub's 'application/x-www-form-urlencoded' content type puts the JSON in `payload`."""
    client, hook, published = setup
    body = urlencode({"payload": github_push("b" * 40).decode()}).encode()
    headers = github_headers(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    assert client.post(hook, data=body, headers=headers).status_code == 202
    assert published.drain()[0].origin["revision"] == f"main@sha1:{'b' * 40}"


def test_wrong_signature_is_401_and_says_nothing_about_the_expected_value(setup, caplog) -> None:
    client, hook, published = setup
    body = github_push("a" * 40)
    caplog.set_level(logging.DEBUG)
    for headers in (github_headers(body, token="wrong-token"), {"X-GitHub-Event": "push"}):
        resp = client.post(hook, data=body, headers=headers)
        assert resp.status_code == 401
        assert resp.json == {"error": "signature or token missing or invalid"}
    expected = github_headers(body)["X-Hub-Signature-256"]
    for text in (caplog.text, resp.get_data(as_text=True)):
        assert expected not in text and expected[7:] not in text and TOKEN not in text
    assert published.drain() == []


def test_ping_is_answered_200_and_publishes_nothing(setup) -> None:
    client, hook, published = setup
    body = (FIXTURES / "github" / "ping.json").read_bytes()
    resp = client.post(hook, data=body, headers=github_headers(body, event="ping"))
    assert (resp.status_code, resp.json) == (200, {"message": "pong"})
    assert published.drain() == []


def test_event_not_in_spec_events_is_answered_200_and_publishes_nothing(setup) -> None:
    client, hook, published = setup
    body = (FIXTURES / "github" / "pull_request-opened.json").read_bytes()
    resp = client.post(hook, data=body, headers=github_headers(body, event="pull_request"))
    assert resp.status_code == 200
    assert "not in spec.events" in resp.json["message"]
    assert published.drain() == []


def test_push_to_a_branch_nobody_follows_publishes_nothing(setup) -> None:
    client, hook, published = setup
    body = github_push("c" * 40, branch="feature/x")
    resp = client.post(hook, data=body, headers=github_headers(body))
    assert resp.status_code == 200
    assert resp.json["skipped"] == ["GitRepository flux-system/app follows 'main', not branch 'feature/x'"]
    assert published.drain() == []


def test_unknown_path_is_404(setup) -> None:
    client, hook, _ = setup
    body = github_push("a" * 40)
    assert client.post("/hook/" + "0" * 64, data=body, headers=github_headers(body)).status_code == 404


@pytest.mark.parametrize("body,why", [
    (b"{not json", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (json.dumps({"ref": "refs/heads/main"}).encode(), "'after' must be a 40-hex commit sha"),
])
def test_malformed_body_with_valid_signature_is_400(setup, body: bytes, why: str) -> None:
    client, hook, published = setup
    resp = client.post(hook, data=body, headers=github_headers(body))
    assert resp.status_code == 400 and why in resp.json["error"]
    assert published.drain() == []


def test_body_over_the_limit_is_413(setup) -> None:
    client, hook, published = setup
    body = b"{" + b" " * (64 * 1024) + b"}"
    assert client.post(hook, data=body, headers=github_headers(body)).status_code == 413
    assert published.drain() == []


def test_broker_unreachable_is_503_with_retry_after(tmp_path: Path) -> None:
    cfg = config.load([write_config(tmp_path / "herald.yaml", "https://example.com/app.git")])
    bus = AmqpBus("amqp://guest:guest@127.0.0.1:1/%2F")  # nothing listens on port 1
    client: FlaskClient = create_app(cfg, bus, Settings(state_dir=tmp_path / "state")).test_client()
    hook = cfg.hook_path(cfg.receivers[("flux-system", "github-app")])
    body = github_push("a" * 40)
    resp = client.post(hook, data=body, headers=github_headers(body))
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_a_bug_on_the_delivery_path_is_a_json_500_and_the_hook_url_stays_out_of_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class BrokenBus:
        """Fails as no bus should: not BusUnavailable or BusError, which are answered 503."""

        def publish(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug")

        def ping(self) -> bool:
            return True

        def close(self) -> None:
            pass

    cfg = config.load([write_config(tmp_path / "herald.yaml", "https://example.com/app.git")])
    client = create_app(cfg, BrokenBus(), Settings(state_dir=tmp_path / "state")).test_client()
    hook = cfg.hook_path(cfg.receivers[("flux-system", "github-app")])
    body = github_push("a" * 40)
    with caplog.at_level(logging.ERROR, logger="herald.receiver"):
        resp = client.post(hook, data=body, headers=github_headers(body))
    assert resp.status_code == 500 and resp.content_type == "application/json"
    assert "internal error" in resp.json["error"]
    assert "RuntimeError: a bug" in caplog.text  # the traceback, for whoever fixes it
    assert hook not in caplog.text and hook.rsplit("/", 1)[1] not in caplog.text
    # The server goes on serving.
    assert client.post(hook, data=body, headers=github_headers(body, token="nope")).status_code == 401


def test_metrics_count_deliveries_by_status(setup) -> None:
    client, hook, _ = setup
    body = github_push("a" * 40)
    client.post(hook, data=body, headers=github_headers(body, token="nope"))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'herald_receiver_requests_total{code="401",receiver="flux-system/github-app",type="github"}' in text
    assert 'herald_receiver_verification_failures_total{receiver="flux-system/github-app",type="github"}' in text
