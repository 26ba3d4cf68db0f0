"""`herald suspend` / `herald resume`: an operator's suspensions, kept and applied everywhere.

Flux's `flux suspend` writes `spec.suspend: true` on the object in the cluster. Herald's
objects mostly live in files or in a render, where an operator cannot (and should not) edit
them in the middle of an incident, so Herald keeps the operator's word beside the
configuration: a keyed log on the bus (`herald.bus.deliveries`), the stream `herald.operator`
when there is a broker (every replica reads it, it outlives restarts, and it has no age
limit) and `<state dir>/operator.sqlite3` on the embedded bus.

The configuration a component sees is its own with the suspended objects' `suspend` set
(`overlay`): the receiver answers 503 for a suspended Receiver, the reconciler skips a
suspended source or Kustomization, the notifier drops what a suspended Alert would send, the
image worker leaves a suspended automation alone — each with the code that already honours
`spec.suspend`. A configuration's own `suspend: true` always wins: resume only lifts what
an operator suspended.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from herald.bus.deliveries import DeliveryLog, open_delivery_log
from herald.config import Config

log = logging.getLogger("herald.suspensions")

# The kinds an operator may suspend, and the Config table of each.
KINDS = {"Kustomization": "kustomizations", "GitRepository": "git_repositories",
         "OCIRepository": "oci_repositories", "Receiver": "receivers", "Alert": "alerts", "Provider": "providers",
         "ImageRepository": "image_repositories", "ImageUpdateAutomation": "image_update_automations"}
FOREVER = 100 * 365 * 24 * 3600.0

Key = tuple[str, str, str]  # kind, namespace, name


class Suspensions:
    """The operator's suspensions. Each key records `{"suspended": bool, "by", "at"}`; the
    newest record of a key wins, so suspend and resume from two replicas end as the last said."""

    def __init__(self, log_: DeliveryLog) -> None:
        self.log = log_

    def set(self, kind: str, namespace: str, name: str, suspended: bool, by: str = "") -> None:
        self.log.record(f"{kind}/{namespace}/{name}",
                        json.dumps({"suspended": suspended, "by": by, "at": time.time()}))

    def get(self, kind: str, namespace: str, name: str) -> dict[str, object] | None:
        text = self.log.value(f"{kind}/{namespace}/{name}")
        return _load(text) if text else None

    def suspended(self) -> dict[Key, dict[str, object]]:
        """Every object an operator has suspended (and not resumed since), with who and when."""
        out: dict[Key, dict[str, object]] = {}
        for key, (_, text) in self.log.items("").items():
            kind, _, rest = key.partition("/")
            namespace, _, name = rest.partition("/")
            record = _load(text)
            if record and record.get("suspended") and kind in KINDS and name:
                out[(kind, namespace, name)] = record
        return out

    def close(self) -> None:
        self.log.close()


def _load(text: str) -> dict[str, object] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def open_suspensions(broker_url: str | None, state_dir: str | Path) -> Suspensions:
    return Suspensions(open_delivery_log(broker_url, state_dir, FOREVER, name="operator", quiet=True,
                                         max_age=None))


def overlay(cfg: Config, suspended: set[Key] | dict[Key, object]) -> Config:
    """`cfg` with `suspend: true` on every suspended object it has; `cfg` itself when none."""
    changed: dict[str, dict] = {}
    ours: set[Key] = set()
    for kind, ns, name in suspended:
        table_name = KINDS.get(kind)
        if table_name is None:
            continue
        table = changed.get(table_name) or getattr(cfg, table_name)
        obj = table.get((ns, name))
        if obj is None or obj.suspend:
            continue
        table = changed.setdefault(table_name, dict(table))
        table[(ns, name)] = dataclasses.replace(obj, suspend=True)
        ours.add((kind, ns, name))
    return dataclasses.replace(cfg, **changed, operator_suspended=frozenset(ours)) if changed else cfg


class Applier:
    """Hands each component its configuration with the operator's suspensions applied: again
    when the configuration changes (`update`) and when a suspension does (`watch`, polling the
    log every `poll` seconds: a dictionary read on a stream, one indexed query on SQLite; so a
    suspend reaches every replica within a fraction of a second)."""

    def __init__(self, store: Suspensions, cfg: Config, updates: list[Callable[[Config], None]],
                 poll: float = 0.2) -> None:
        self.store = store
        self.base = cfg
        self.updates = updates
        self.poll = poll
        self._lock = threading.Lock()
        self._current: frozenset[Key] = frozenset()
        self._failing = False

    def initial(self) -> Config:
        """The configuration to start the components with."""
        self._current = frozenset(self._read())
        return overlay(self.base, self._current)

    def update(self, cfg: Config) -> None:
        with self._lock:
            self.base = cfg
            self._push()

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.poll):
            now = frozenset(self._read())
            if now != self._current:
                with self._lock:
                    added, lifted = now - self._current, self._current - now
                    self._current = now
                    for k in sorted(added):
                        log.info("%s %s/%s suspended by an operator", *k)
                    for k in sorted(lifted):
                        log.info("%s %s/%s resumed by an operator", *k)
                    self._push()

    def _read(self) -> set[Key]:
        try:
            found = set(self.store.suspended())
        except Exception:  # noqa: BLE001 - keep the last known suspensions
            if not self._failing:  # once per outage, not five times a second
                log.warning("cannot read the operator's suspensions; keeping the last known", exc_info=True)
            self._failing = True
            return set(self._current)
        if self._failing:
            log.info("the operator's suspensions can be read again")
        self._failing = False
        return found

    def _push(self) -> None:
        cfg = overlay(self.base, self._current)
        for update in self.updates:
            try:
                update(cfg)
            except Exception:  # noqa: BLE001 - one component's failure must not starve the others
                log.exception("could not hand the configuration to a component")
