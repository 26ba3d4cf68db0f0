"""pytest fixtures for tests that talk to Kubernetes.

Each test gets its own in-process API server (see ``tests/kubeapi.py``), so
tests cannot see each other's objects and need no cluster.  Add this module to
``pytest_plugins`` to use the fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .kubeapi import KubeAPIServer


@pytest.fixture
def kube_api() -> Iterator[KubeAPIServer]:
    """A started ``KubeAPIServer``; stopped after the test.

    A bug inside the fake server answers 500 and is recorded; the test then
    fails here too, so such a bug is never mistaken for the code under test
    handling an error.
    """
    server = KubeAPIServer().start()
    try:
        yield server
    finally:
        server.stop()
    if server.internal_errors:
        pytest.fail("the fake Kubernetes API server failed internally:\n" + "\n".join(server.internal_errors))


@pytest.fixture
def kubeconfig(kube_api: KubeAPIServer, tmp_path: Path) -> Path:
    """Path of a kubeconfig whose current context points at ``kube_api``."""
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig")
