"""pytest plugin: `slack_api`, a started local Slack (see tests/slackapi.py) for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.slackapi import SlackAPIServer


@pytest.fixture
def slack_api() -> Iterator[SlackAPIServer]:
    with SlackAPIServer() as server:
        yield server
