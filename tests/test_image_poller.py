"""ImageRepositories scanned every `spec.interval` without a webhook (issue 15): the timer alone,
on a clock the scenario moves, publishing scan requests onto a real embedded bus."""

from __future__ import annotations

import textwrap
from pathlib import Path

from herald import config
from herald.bus import open_bus
from herald.messages import IMAGE_QUEUE
from reconciler.images.poller import ImagePoller


def test_each_image_repository_is_scanned_once_per_interval_and_suspended_ones_never(tmp_path: Path) -> None:
    path = tmp_path / "herald.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: web, namespace: flux-system}
        spec: {image: ghcr.io/acme/web, interval: 1m}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: api, namespace: flux-system}
        spec: {image: ghcr.io/acme/api, interval: 2m}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: old, namespace: flux-system}
        spec: {image: ghcr.io/acme/old, interval: 1m, suspend: true}
        """))
    bus = open_bus(None, tmp_path / "state")
    now = [1000.0]
    poller = ImagePoller(config.load([path]), bus, jitter=0.0, clock=lambda: now[0])
    try:
        poller.tick()
        assert poller.published == 0  # starting is not a reason to scan
        now[0] += 61
        poller.tick()
        assert poller.published == 1 and bus.depth(IMAGE_QUEUE) == 1  # web
        now[0] += 60
        poller.tick()
        assert poller.published == 3  # web again, and api
        now[0] += 1
        assert poller.tick() <= 5.0 and poller.published == 3
    finally:
        bus.close()
