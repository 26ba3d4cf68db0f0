"""The hostile-delivery fuzz of tests/test_receiver_fuzz.py for the registries' and event
senders' receiver types (the git hosts' half is there): the same check, in a file of its own so
that the two halves run on two test workers at once."""

from __future__ import annotations

import pytest

from tests.receiver_types_config import RECEIVERS
from tests.test_receiver_fuzz import REGISTRIES, World, hostile, world  # noqa: F401 - the fixture

assert set(REGISTRIES) <= set(RECEIVERS), "a registry type here that the configuration does not have"


@pytest.mark.parametrize("name", REGISTRIES)
def test_hostile_registry_deliveries_are_refused_with_4xx_and_publish_nothing(world: World, name: str) -> None:
    hostile(world, name)
