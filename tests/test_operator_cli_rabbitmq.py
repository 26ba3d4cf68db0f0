"""The operator's commands against Herald on RabbitMQ: a gunicorn receiver, a worker and a
notifier as separate processes sharing one broker (tests/test_operator_cli.py's scenarios)."""

from __future__ import annotations

import pytest

from tests.test_operator_cli import *  # noqa: F403 - the same scenarios, collected here too
from tests.test_operator_cli import Running


@pytest.fixture
def herald(on_rabbitmq: Running) -> Running:
    return on_rabbitmq
