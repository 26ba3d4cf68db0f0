"""Slow clients cannot starve real ones: `serve` (the scenario is in tests/slow_clients.py)."""

from __future__ import annotations

from pathlib import Path

from tests.slow_clients import (
    check_a_real_delivery_is_answered_at_once_during_a_slow_client_flood,
    serving,
)


def test_a_real_delivery_is_answered_at_once_during_a_slow_client_flood(tmp_path: Path, repo) -> None:
    with serving("serve", tmp_path, repo) as front:
        check_a_real_delivery_is_answered_at_once_during_a_slow_client_flood(front)
