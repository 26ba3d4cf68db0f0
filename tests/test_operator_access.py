"""Who may use the operator API: tokens, and how fast a token can be guessed."""

from __future__ import annotations

import textwrap
from pathlib import Path

from herald import config
from herald.bus import open_bus
from herald.settings import Settings
from receiver.app import create_app
from receiver.operator.access import Guesses
from tests.fixtures_herald import write_config

TOKEN = "operator-token-for-access-tests"


def test_an_address_that_guesses_too_often_waits_out_the_window(tmp_path: Path) -> None:
    now = [1000.0]
    guesses = Guesses(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert guesses.wait("10.0.0.1") == 0
        guesses.wrong("10.0.0.1")
    assert guesses.wait("10.0.0.1") == 60
    assert guesses.wait("10.0.0.2") == 0, "another address is not held back"
    now[0] += 61
    assert guesses.wait("10.0.0.1") == 0


def test_the_api_answers_429_to_an_address_guessing_tokens(tmp_path: Path) -> None:
    extra = textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: herald-operator, namespace: default}}
        stringData: {{token: {TOKEN}}}
        """)
    cfg = config.load([write_config(tmp_path / "h.yaml", "file:///nowhere.git", extra=extra)])
    bus = open_bus(None, tmp_path / "state")
    try:
        app = create_app(cfg, bus, Settings(state_dir=tmp_path / "state", operator_secret="default/herald-operator"))
        client = app.test_client()
        body = {"kind": "Kustomization", "namespace": "flux-system", "name": "app"}
        answers = [client.post("/api/v1/suspend", json=body, headers={"Authorization": f"Bearer guess-{i}"})
                   for i in range(12)]
        assert [a.status_code for a in answers[:10]] == [401] * 10
        assert answers[10].status_code == 429 and int(answers[10].headers["Retry-After"]) > 0
        held = client.post("/api/v1/suspend", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert held.status_code == 429, "while held back, even the right token waits"
        assert TOKEN not in held.get_data(as_text=True)
        assert client.get("/api/v1/get/kustomizations").status_code == 429
    finally:
        bus.close()
