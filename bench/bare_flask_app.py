"""The floor for a Flask receiver under gunicorn: check the GitHub HMAC, answer 202, nothing else.

bench/receiver_vs_webhook.py serves this with the same gunicorn command, configuration,
worker class, workers and threads as Herald, so the difference between the two is Herald's
own request path (routing, parsing, dedupe, publishing and waiting for the broker's confirm)
and not gunicorn's or Flask's. It stores nothing: a 202 here means only "signature good".

    BARE_FLASK_SECRET=... gunicorn 'bare_flask_app:create_app()'   # with bench/ on PYTHONPATH
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Flask, jsonify, request


def create_app() -> Flask:
    secret = os.environ["BARE_FLASK_SECRET"].encode()
    app = Flask("bare-flask")

    @app.get("/readyz")
    def readyz():  # noqa: ANN202
        return jsonify(status="ready")

    @app.post("/hook")
    def hook():  # noqa: ANN202
        body = request.get_data()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        given = request.headers.get("X-Hub-Signature-256", "")
        if not hmac.compare_digest(expected, given):
            return jsonify(error="signature missing or invalid"), 401
        return jsonify(status="accepted"), 202

    return app
