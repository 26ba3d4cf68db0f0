"""The interval timer of image automation: each ImageRepository scanned every `spec.interval`,
as image-reflector-controller does, for registries that send no webhook.

Simpler than the reconciler's poller (`reconciler.poller`): a scan changes nothing by itself and
an automation run that finds every value current makes no commit, so two workers scanning the
same repository in one interval cost a registry listing, not a wrong result. Each due time is
jittered (up to `jitter` × interval later) so that workers and repositories spread out, and the
first scan comes one interval after the worker started: starting is not a reason to scan, and a
registry webhook scans at once anyway.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from herald.bus import Bus, BusError
from herald.config import Config
from herald.messages import IMAGE_QUEUE, ReconcileRequest

log = logging.getLogger("herald.reconciler.images.poller")


class ImagePoller:
    def __init__(self, cfg: Config, bus: Bus, *, jitter: float = 0.1, rng: random.Random | None = None,
                 clock=time.monotonic) -> None:
        self.cfg = cfg
        self.bus = bus
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.clock = clock
        self.due: dict[tuple[str, str], float] = {}
        self.published = 0

    def update(self, cfg: Config) -> None:
        self.cfg = cfg

    def _later(self, now: float, interval: float) -> float:
        return now + interval * (1 + self.jitter * self.rng.random())

    def tick(self) -> float:
        """Publish the scans that are due; seconds until the next one (at most 5)."""
        now = self.clock()
        repos = {k: r for k, r in self.cfg.image_repositories.items() if not r.suspend}
        for key in list(self.due):
            if key not in repos:
                del self.due[key]
        for key, repo in sorted(repos.items()):
            due = self.due.setdefault(key, self._later(now, repo.interval))
            if due > now:
                continue
            req = ReconcileRequest(kind="ImageRepository", name=key[1], namespace=key[0], reason="interval")
            try:
                self.bus.publish(IMAGE_QUEUE, req.to_json(), message_id=req.id)
            except BusError as exc:
                log.warning("interval scan of ImageRepository %s/%s: cannot publish (%s); trying again soon",
                            key[0], key[1], exc)
                self.due[key] = now + 5.0
                continue
            self.published += 1
            self.due[key] = self._later(now, repo.interval)
        upcoming = [d - now for d in self.due.values()]
        return max(0.05, min([5.0, *upcoming]))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            stop.wait(self.tick())
