"""Image scans from the bus: a registry push in, a Git commit and a reconcile of it out.

An image scan request is a ReconcileRequest on `herald.images` for one ImageRepository
(ARCHITECTURE.md; the receiver publishes one per ImageRepository a registry webhook concerns).
Handling it, with Flux's events at each step:

1. for a webhook, confirm the tag it names with one manifest `HEAD` (registries do not count it
   as a pull). A tag the registry does not serve yet is asked again a little later (the webhook
   came before the registry's replicas had it); one it serves is taken even when the tag list
   does not show it yet (Docker Hub's and GHCR's lists lag their manifests);
   then list the ImageRepository's tags (`herald.registry`), less its `exclusionList`;
2. select each of its ImagePolicies' latest tag (`reconciler.images.policy`), with the digest
   when the policy reflects digests: `Latest image tag for '<image>' resolved to <tag>`;
3. run every ImageUpdateAutomation whose `policySelector` selects one of those policies, with the
   latest image of each policy it selects (the other ImageRepositories those need are listed
   too): the changed values as one commit, pushed (`reconciler.images.automation`):
   `pushed commit '<sha7>' to branch '<branch>'` and the commit message;
4. publish a reconcile request for the GitRepository that follows that branch, naming the commit
   (so no second webhook is needed, and the delivery id of the registry's webhook follows the
   commit, the apply and the notifications).

A registry that cannot be reached, or answers 429/5xx, makes the bus try the request again; one
that refuses the credentials, or a policy that matches no tag, is reported and left for the next
push or the interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from herald.bus import Bus, Delivery, Reject, RetryLater
from herald.config import Config
from herald.logs import DELIVERY_HEADER, correlated, correlation_id
from herald.messages import (
    EVENTS_QUEUE,
    IMAGE_QUEUE,
    RECONCILE_QUEUE,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    STORY_KEY,
    STORY_TITLE_KEY,
    Event,
    MessageError,
    ReconcileRequest,
    utc_now,
)
from herald.history import History, Recorder, delivery_of, message
from herald.model import ImagePolicy, ImageRepository, ImageUpdateAutomation
from herald.registry import (
    RegistryClient,
    RegistryError,
    parse_image,
)
from herald.registry.configured import client_for
from reconciler import status
from reconciler.coalesce import ShuttingDown
from reconciler.git import GitCache
from reconciler.images import automation
from reconciler.images.policy import PolicyError, compile_go_regex, latest
from reconciler.images.setters import Change, PolicyValue
from reconciler.kube import Cluster, ClusterUnreachable
from reconciler.locks import parse_time

log = logging.getLogger(__name__)

CONFIRM_ATTEMPTS = 3
"""Deliveries of a webhook's scan that wait for the registry to serve the tag it announced; the
last one scans what the registry serves (the bus spaces them 1 s and 2 s apart)."""


def _key(namespace: str, name: str) -> str:
    return f"{namespace}:{name}"


def listed_tags(client: RegistryClient, repo: ImageRepository) -> list[str]:
    """The repository's tags, less those its `exclusionList` matches."""
    return [t for t in client.tags(parse_image(repo.image)) if not _excluded(repo, t)]


def _excluded(repo: ImageRepository, tag: str) -> bool:
    return any(compile_go_regex(p).search(tag) for p in repo.exclusion_list)


def story_title(changes: list[tuple[str, Change]], values: dict[str, PolicyValue | None]) -> str:
    """What an image update is about, for its thread: `ghcr.io/acme/web 1.4.2 → 1.5.0` per
    image, the old tag as Git had it."""
    parts = []
    for policy in dict.fromkeys(change.policy for _, change in changes):
        value = values.get(policy)
        if value is None:
            continue
        olds = sorted({_tag_in(c) for _, c in changes if c.policy == policy} - {"", value.tag})
        parts.append(f"{value.image} {', '.join(olds)} → {value.tag}" if olds else f"{value.image} {value.tag}")
    return "; ".join(parts)


def _tag_in(change: Change) -> str:
    """The tag a changed value held: the value of a `:tag` marker, the tag of a reference."""
    if change.field == "tag":
        return change.old
    if change.field != "image":
        return ""
    name, colon, tag = change.old.partition("@")[0].rpartition(":")
    return tag if colon and name and "/" not in tag else ""


@dataclass
class _Scan:
    """What this request learnt: tags per ImageRepository, latest value per policy."""

    tags: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # One client per ImageRepository for the whole request: the tag listing and the digests
    # share its registry token instead of asking the token service again.
    clients: dict[tuple[str, str], RegistryClient] = field(default_factory=dict)

    def client(self, cfg: Config, repo: ImageRepository) -> RegistryClient:
        key = (repo.meta.namespace, repo.meta.name)
        if key not in self.clients:
            self.clients[key] = client_for(cfg, repo)
        return self.clients[key]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
    values: dict[str, PolicyValue | None] = field(default_factory=dict)
    # The tag a registry webhook announced, once a manifest HEAD confirmed it, per ImageRepository.
    confirmed: dict[tuple[str, str], str] = field(default_factory=dict)


class ImageWorker:
    """Consumes `herald.images`; `git` is a Git cache of its own (`<state>/git-automation`)."""

    def __init__(self, cfg: Config, bus: Bus, state_dir: Path, *, window: float = 0.0,
                 stop: threading.Event | None = None, cluster: Callable[[], Cluster | None] | None = None,
                 recorder: Recorder | None = None) -> None:
        """`window`: how long after a registry webhook was received its scan starts, so that the
        pushes of one release (several images within a second or so) are seen by one scan and
        become one commit; `stop` ends that wait (the request is handed back to the bus).
        `cluster`: where the image kinds' objects may be, to write their status as Flux's
        image controllers do (reconciler.status). `recorder`: the history (herald.history)."""
        self.recorder = recorder or Recorder(History())
        self.cluster = cluster or (lambda: None)
        self.cfg = cfg
        self.bus = bus
        self.window = window
        self.stop = stop or threading.Event()
        self.git = GitCache(Path(state_dir) / "git-automation")
        self._previous: dict[str, str] = {}  # policy → the tag it last resolved to (for the message)
        self._lock = threading.Lock()

    def update(self, cfg: Config) -> None:
        self.cfg = cfg

    # -- the bus handler -----------------------------------------------------------------

    def handle(self, delivery: Delivery) -> None:
        try:
            req = ReconcileRequest.from_json(delivery.body)
        except MessageError as exc:
            raise Reject(str(exc)) from None
        cfg = self.cfg
        repo = cfg.image_repositories.get((req.namespace, req.name)) if req.kind == "ImageRepository" else None
        if repo is None:
            why = f"image scan: ImageRepository {req.namespace}/{req.name} is not in the configuration"
            self.recorder.request(req, IMAGE_QUEUE, "rejected", why)
            raise Reject(why)
        headers = {"x-herald-request": req.id,
                   DELIVERY_HEADER: str(req.origin.get("delivery") or correlation_id() or req.id)}
        self._wait_for_the_window(req)
        events: list[Event] = []
        follow_ups: list[ReconcileRequest] = []
        error, result = "", "ran"
        try:
            self._handle(cfg, repo, req, events, follow_ups, delivery.attempt)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            result = ("retrying" if isinstance(exc, RetryLater) else
                      "handed back" if isinstance(exc, ShuttingDown) else "failed")
            raise
        finally:
            # The events first: the notifier links an image update's commit to its story from
            # them, before the reconcile of that commit reports anything (notifier.stories).
            for event in events:
                self.bus.publish(EVENTS_QUEUE, event.to_json(), headers=headers)
                self.recorder.event(event, headers)
            for follow in follow_ups:
                self.bus.publish(RECONCILE_QUEUE, follow.to_json(), message_id=follow.id, headers={
                    DELIVERY_HEADER: str(req.origin.get("delivery") or correlation_id() or follow.id)})
            self._record(req, repo, events, follow_ups, result, error)

    def _record(self, req: ReconcileRequest, repo: ImageRepository, events: list[Event],
                follow_ups: list[ReconcileRequest], result: str, error: str) -> None:
        """The scan → policy → commit path of one request, for the status page."""
        self.recorder.request(req, IMAGE_QUEUE, result, error)
        self.recorder.history.put("image", req.id, {
            "request": req.id, "delivery": delivery_of(req), "reason": req.reason,
            "target": f"ImageRepository/{repo.meta.namespace}/{repo.meta.name}", "image": repo.image,
            "tag": str(req.origin.get("tag") or ""), "error": message(error),
            "steps": [{"kind": e.involvedObject.get("kind", ""), "namespace": e.involvedObject.get("namespace", ""),
                       "name": e.involvedObject.get("name", ""), "severity": e.severity, "reason": e.reason,
                       "message": message(e.message), "revision": e.metadata.get("revision", "")} for e in events],
            "followUps": [f.id for f in follow_ups]})

    def _wait_for_the_window(self, req: ReconcileRequest) -> None:
        """A webhook's scan waits until `window` after the webhook came: the other images of the
        same release, pushed meanwhile, are then in the same scan and the same commit (a later
        scan finds every value current and commits nothing)."""
        if req.reason != "webhook" or self.window <= 0:
            return
        came = parse_time(req.requestedAt)
        delay = self.window if came is None else came + self.window - time.time()
        if delay > 0 and self.stop.wait(min(delay, self.window)):
            raise ShuttingDown("worker shutting down; handing the image scan back")

    def _handle(self, cfg: Config, repo: ImageRepository, req: ReconcileRequest, events: list[Event],
                follow_ups: list[ReconcileRequest], attempt: int = 1) -> None:
        where = f"image scan request={req.id} ImageRepository/{repo.meta.namespace}/{repo.meta.name}"
        if repo.suspend:
            log.info("%s: suspended; not scanned", where)
            return
        scan = _Scan()
        try:
            self._confirm(cfg, repo, req, scan, attempt, where)
            self._work(cfg, repo, req, scan, events, follow_ups, where)
        finally:
            scan.close()

    def _work(self, cfg: Config, repo: ImageRepository, req: ReconcileRequest, scan: _Scan, events: list[Event],
              follow_ups: list[ReconcileRequest], where: str) -> None:
        if not self._scan(cfg, repo, scan, events, where):
            return
        policies = self._policies_of(cfg, repo)
        for policy in policies:
            self._resolve(cfg, policy, repo, scan, events)
        changed = {_key(p.meta.namespace, p.meta.name) for p in policies}
        for auto in sorted(cfg.image_update_automations.values(), key=lambda a: a.meta.key):
            selected = automation.selected_policies(cfg, auto)
            if auto.suspend or not changed & {_key(p.meta.namespace, p.meta.name) for p in selected}:
                continue
            for policy in selected:  # the values of the other policies it selects
                key = _key(policy.meta.namespace, policy.meta.name)
                if key not in scan.values:
                    other = self._repository_of(cfg, policy)
                    if other is not None and (other.meta.namespace, other.meta.name) not in scan.tags:
                        self._scan(cfg, other, scan, events, where)
                    self._resolve(cfg, policy, other, scan, events)
            self._automate(cfg, auto, {k: scan.values.get(k) for k in
                                       (_key(p.meta.namespace, p.meta.name) for p in selected)}, req, events,
                           follow_ups, where)

    # -- steps ---------------------------------------------------------------------------

    def _confirm(self, cfg: Config, repo: ImageRepository, req: ReconcileRequest, scan: _Scan, attempt: int,
                 where: str) -> None:
        """Confirm the tag a registry webhook names with one manifest HEAD (see the module
        docstring); a failure to ask is left to the scan, which reports it."""
        tag = str(req.origin.get("tag") or "")
        if req.reason != "webhook" or not tag:
            return
        try:
            digest = scan.client(cfg, repo).digest(parse_image(repo.image), tag)
        except (ValueError, RegistryError) as exc:
            log.info("%s: the pushed tag %r could not be confirmed (%s); scanning", where, tag, exc)
            return
        if digest is not None:
            scan.confirmed[(repo.meta.namespace, repo.meta.name)] = tag
            return
        if attempt < CONFIRM_ATTEMPTS:
            raise RetryLater(f"{repo.image}:{tag}, which the webhook announced, is not served by the registry yet")
        log.warning("%s: %s:%s, which the webhook announced, is still not served by the registry after %d tries; "
                    "scanning what it serves", where, repo.image, tag, attempt)

    def _scan(self, cfg: Config, repo: ImageRepository, scan: _Scan, events: list[Event], where: str) -> bool:
        try:
            tags = listed_tags(scan.client(cfg, repo), repo)
            confirmed = scan.confirmed.get((repo.meta.namespace, repo.meta.name))
            if confirmed and confirmed not in tags and not _excluded(repo, confirmed):
                log.info("%s: %s is served but not listed yet; taken as the webhook announced it", where, confirmed)
                tags.append(confirmed)
        except RegistryError as exc:
            log.warning("%s: %s", where, exc)
            reason = "AuthenticationFailed" if exc.status in (401, 403) else "ScanFailed"
            events.append(self._event("ImageRepository", repo.meta.namespace, repo.meta.name, SEVERITY_ERROR,
                                      reason, str(exc)))
            if exc.retryable:
                raise RetryLater(str(exc), exc.retry_after) from None
            return False
        except PolicyError as exc:  # an exclusionList entry that does not compile
            events.append(self._event("ImageRepository", repo.meta.namespace, repo.meta.name, SEVERITY_ERROR,
                                      "ScanFailed", f"spec.exclusionList: {exc}"))
            return False
        scan.tags[(repo.meta.namespace, repo.meta.name)] = tags
        events.append(self._event("ImageRepository", repo.meta.namespace, repo.meta.name, SEVERITY_INFO,
                                  "Succeeded", f"successful scan: found {len(tags)} tags"))
        self._status("ImageRepository", repo.meta.namespace, repo.meta.name, f"successful scan: found {len(tags)} tags",
                     {"canonicalImageName": str(parse_image(repo.image)),
                      "lastScanResult": {"tagCount": len(tags), "scanTime": utc_now(),
                                         "latestTags": sorted(tags, reverse=True)[:10]}})
        return True

    def _resolve(self, cfg: Config, policy: ImagePolicy, repo: ImageRepository | None, scan: _Scan,
                 events: list[Event]) -> None:
        key = _key(policy.meta.namespace, policy.meta.name)
        scan.values[key] = None
        tags = scan.tags.get((repo.meta.namespace, repo.meta.name)) if repo is not None else None
        if repo is None or tags is None:
            return
        try:
            selection = latest(tags, policy)
        except PolicyError as exc:
            events.append(self._event("ImagePolicy", policy.meta.namespace, policy.meta.name, SEVERITY_ERROR,
                                      "PolicyFailed", f"spec.policy: {exc}"))
            return
        if selection.tag is None:
            events.append(self._event("ImagePolicy", policy.meta.namespace, policy.meta.name, SEVERITY_ERROR,
                                      "PolicyFailed", selection.reason))
            return
        digest = ""
        if policy.digest_reflection_policy != "Never":
            try:
                digest = scan.client(cfg, repo).digest(parse_image(repo.image), selection.tag) or ""
            except RegistryError as exc:
                events.append(self._event("ImagePolicy", policy.meta.namespace, policy.meta.name, SEVERITY_ERROR,
                                          "PolicyFailed", f"cannot read the digest of {selection.tag}: {exc}"))
                return
        scan.values[key] = PolicyValue(repo.image, selection.tag, digest)
        with self._lock:
            previous = self._previous.get(key, "")
            self._previous[key] = selection.tag
        latest_ref = {"name": repo.image, "tag": selection.tag, **({"digest": digest} if digest else {})}
        self._status("ImagePolicy", policy.meta.namespace, policy.meta.name,
                     f"Latest image tag for {repo.image} resolved to {selection.tag}", {"latestRef": latest_ref})
        if previous != selection.tag:
            said = f" (previously {previous})" if previous else ""
            events.append(self._event("ImagePolicy", policy.meta.namespace, policy.meta.name, SEVERITY_INFO,
                                      "Succeeded", f"Latest image tag for '{repo.image}' resolved to "
                                                   f"{selection.tag}{said}"))

    def _automate(self, cfg: Config, auto: ImageUpdateAutomation, values: dict[str, PolicyValue | None],
                  req: ReconcileRequest, events: list[Event], follow_ups: list[ReconcileRequest], where: str) -> None:
        ns, name = auto.meta.namespace, auto.meta.name
        result = automation.run(cfg, self.git, auto, values)
        problems = [f"{path}:{p.line}: {p.message}" for path, p in result.problems]
        if result.error:
            log.error("%s: ImageUpdateAutomation %s/%s: %s", where, ns, name, result.error)
            events.append(self._event("ImageUpdateAutomation", ns, name, SEVERITY_ERROR, "UpdateFailed",
                                      "\n".join([result.error, *problems])))
            if not result.permanent:
                raise RetryLater(result.error) from None
            return
        if problems:
            events.append(self._event("ImageUpdateAutomation", ns, name, SEVERITY_INFO, "MarkersNotApplied",
                                      "\n".join(problems)))
        if not result.commit:
            log.info("%s: ImageUpdateAutomation %s/%s: nothing to change", where, ns, name)
            return
        log.info("%s: ImageUpdateAutomation %s/%s pushed %s to %s", where, ns, name, result.commit[:7], result.branch)
        now = utc_now()
        self._status("ImageUpdateAutomation", ns, name, f"pushed commit '{result.commit[:7]}' to branch "
                     f"'{result.branch}'", {"lastAutomationRunTime": now, "lastPushCommit": result.commit,
                                           "lastPushTime": now})
        story = {STORY_KEY: f"image-update:{ns}/{name}@{result.commit}",
                 STORY_TITLE_KEY: story_title(result.changes, values)}
        olds: dict[str, set[str]] = {}
        for _, change in result.changes:
            olds.setdefault(change.policy, set()).add(_tag_in(change))
        for event in events:  # the new tags that made this commit open its story
            o = event.involvedObject
            policy = _key(o.get("namespace", ""), o.get("name", ""))
            if (o.get("kind") == "ImagePolicy" and event.reason == "Succeeded" and STORY_KEY not in event.metadata
                    and policy in olds):
                event.metadata.update(story)
                old = sorted(olds[policy] - {""})
                if old and "(previously" not in event.message:  # this process had not seen it (a restart)
                    event.message += f" (previously {', '.join(old)})"
        events.append(self._event("ImageUpdateAutomation", ns, name, SEVERITY_INFO, "Succeeded",
                                  f"pushed commit '{result.commit[:7]}' to branch '{result.branch}'\n{result.message}",
                                  {"revision": f"{result.branch}@sha1:{result.commit}", **story}))
        follow = self._reconcile(cfg, auto, result, req)
        if follow is not None:
            follow_ups.append(follow)

    def _reconcile(self, cfg: Config, auto: ImageUpdateAutomation, result: automation.Result,
                   req: ReconcileRequest) -> ReconcileRequest | None:
        """The commit, reconciled like a push: for the GitRepository when it follows that branch
        (with a separate push branch, merging is left to people, and so is the deploy)."""
        src = auto.source_ref
        repo = cfg.git_repositories.get((src.namespace or auto.meta.namespace, src.name))
        if repo is None or repo.ref.branch != result.branch:
            return None
        return ReconcileRequest(kind="GitRepository", name=repo.meta.name, namespace=repo.meta.namespace,
                                  reason="image-update", origin={
                                      "delivery": str(req.origin.get("delivery") or ""),
                                      "revision": f"{result.branch}@sha1:{result.commit}",
                                      "automation": f"{auto.meta.namespace}/{auto.meta.name}",
                                      "image": str(req.origin.get("image") or "")})

    def _status(self, kind: str, namespace: str, name: str, message: str, fields: dict[str, object]) -> None:
        """The object's status as Flux's image controllers write it, when it is in the cluster;
        never a failure of the scan (reconciler.status logs what it cannot write)."""
        try:
            cluster = self.cluster()
        except ClusterUnreachable:
            return
        if cluster is None:
            return
        status.write_configured(cluster, ("image.toolkit.fluxcd.io/v1", "herald.dev/v1"), kind, namespace, name,
                                message, fields)

    # -- lookups -------------------------------------------------------------------------

    @staticmethod
    def _policies_of(cfg: Config, repo: ImageRepository) -> list[ImagePolicy]:
        return [p for _, p in sorted(cfg.image_policies.items()) if not p.suspend
                and (p.image_repository_ref.namespace or p.meta.namespace, p.image_repository_ref.name)
                == (repo.meta.namespace, repo.meta.name)]

    @staticmethod
    def _repository_of(cfg: Config, policy: ImagePolicy) -> ImageRepository | None:
        ref = policy.image_repository_ref
        return cfg.image_repositories.get((ref.namespace or policy.meta.namespace, ref.name))

    @staticmethod
    def _event(kind: str, namespace: str, name: str, severity: str, reason: str, message: str,
               metadata: dict[str, str] | None = None) -> Event:
        return Event.for_object(kind, name, namespace, severity=severity, reason=reason, message=message,
                                metadata=metadata)

    def run(self, stop: threading.Event) -> None:
        self.bus.consume(IMAGE_QUEUE, correlated(self.handle), stop)

