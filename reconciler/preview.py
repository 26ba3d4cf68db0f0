"""Planning a revision: fetch it, build each Kustomization as a reconcile would, plan against
the live cluster. The I/O edge of pull-request plans and of `herald plan`.

A plan fetches into a Git cache of its own (`<state dir>/git-plans`), never the reconciler's:
fetching a pull request's head there would move the refs a reconcile negotiates from, and
take the cache's lock while a reconcile waits for it. It reads the cluster and dry-runs only
(`reconciler.plan`); it takes no apply Lease.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from herald.config import Config
from herald.model import GitRef, GitRepository, Kustomization
from reconciler.build import build
from reconciler.git import GitCache, GitError, Revision, resolve_url
from reconciler.inventory import InventoryStore, owner_labels
from reconciler.kube import ApiRefusal, Cluster, ClusterUnreachable, acting_as
from reconciler.order import sort_key
from reconciler.plan import Plan, plan_kustomization
from reconciler.postbuild import reader
from reconciler.render import Manifest, RenderError

log = logging.getLogger(__name__)

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def git_ref(text: str) -> GitRef:
    """What `--revision` names: a commit (40 or 64 hex), a full reference (`refs/pull/7/head`,
    `refs/heads/main`), else a branch name."""
    text = text.strip()
    if _SHA.fullmatch(text):
        return GitRef(commit=text)
    if text.startswith("refs/"):
        return GitRef(name=text)
    return GitRef(branch=text)


@dataclass
class KustomizationPlan:
    """One Kustomization's plan of one revision: `plan` when it could be made, else `error`
    (the fetch, the build, or the cluster failed). `manifests` is the render, when there was
    one; `compared` is False when there is no cluster to compare with."""

    ks: Kustomization
    revision: str = ""
    plan: Plan | None = None
    error: str = ""
    manifests: list[Manifest] = dataclasses.field(default_factory=list)
    compared: bool = True

    @property
    def target(self) -> str:
        return f"{self.ks.meta.namespace}/{self.ks.meta.name}"


class Planner:
    """Plans revisions for the Kustomizations of `cfg`; `cluster` None: render only."""

    def __init__(self, cfg: Config, state_dir: Path, cluster: Cluster | None) -> None:
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.git = GitCache(self.state_dir / "git-plans")
        self.cluster = cluster

    def source(self, ks: Kustomization) -> GitRepository | None:
        if ks.source_ref.kind != "GitRepository":
            return None
        return self.cfg.git_repositories.get((ks.source_ref.namespace or ks.meta.namespace, ks.source_ref.name))

    def fetch(self, repo: GitRepository, ref: GitRef, *, url: str | None = None, want_sha: str = "") -> Revision:
        """`ref` of `repo`, with the repository's credentials and timeout, from its URL or
        `url` (a fork's, for hosts that publish no pull-request ref). `want_sha`: the commit a
        webhook named, fetched too when the ref has moved on (see GitCache.fetch)."""
        credentials = self.cfg.secret(repo.meta.namespace, repo.secret_ref.name) if repo.secret_ref else None
        wanted = dataclasses.replace(repo, ref=ref)
        source = url or resolve_url(repo.url, repo.meta.source)
        revision = self.git.fetch(wanted, source, credentials, want_sha)
        if repo.recurse_submodules:
            self.git.fetch_submodules(wanted, source, credentials, revision.sha)
        return revision

    def plan_fetched(self, kustomizations: list[Kustomization], repo: GitRepository,
                     revision: Revision) -> list[KustomizationPlan]:
        """Each Kustomization's plan of `revision`, already fetched from `repo`."""
        out = []
        for ks in kustomizations:
            result = KustomizationPlan(ks, revision=str(revision))
            self._plan_one(result, repo, revision)
            out.append(result)
        return out

    def plan(self, kustomizations: list[Kustomization], ref: GitRef) -> list[KustomizationPlan]:
        """Each Kustomization's plan of `ref` in its GitRepository (each repository fetched once)."""
        fetched: dict[tuple[str, str], Revision | str] = {}
        out = []
        for ks in kustomizations:
            result = KustomizationPlan(ks)
            out.append(result)
            repo = self.source(ks)
            if repo is None:
                result.error = f"its source {ks.source_ref.kind}/{ks.source_ref.name} is not a GitRepository " \
                               "of the configuration"
                continue
            key = (repo.meta.namespace, repo.meta.name)
            if key not in fetched:
                try:
                    fetched[key] = self.fetch(repo, ref)
                except GitError as exc:
                    fetched[key] = f"fetching {ref_text(ref)} from GitRepository {key[0]}/{key[1]} failed: {exc}"
            revision = fetched[key]
            if isinstance(revision, str):
                result.error = revision
                continue
            out[-1] = self.plan_fetched([ks], repo, revision)[0]
        return out

    def _plan_one(self, result: KustomizationPlan, repo: GitRepository, revision: Revision) -> None:
        ks = result.ks
        workdir = (self.state_dir / "work-plans" / f"{os.getpid()}-{threading.get_ident()}"
                   / ks.meta.namespace / ks.meta.name)
        try:
            rendered = build(self.git, ks, repo, revision.sha, workdir, reader(self.cluster, self.cfg))
        except (GitError, RenderError) as exc:
            result.error = f"build failed: {exc}"
            return
        result.manifests = sorted(rendered.manifests, key=sort_key)
        if self.cluster is None:
            result.compared = False
            return
        try:
            inventory = InventoryStore(self.cluster, ks.meta.namespace, ks.meta.name).load().inventory
            result.plan = plan_kustomization(
                acting_as(self.cluster, ks), result.manifests, inventory, owner_labels(ks.meta.name, ks.meta.namespace),
                prune=ks.prune, protected_namespaces={k.meta.namespace for k in self.cfg.kustomizations.values()})
        except ClusterUnreachable as exc:
            result.error = f"the cluster cannot be reached: {exc}"
        except ApiRefusal as exc:  # reading the inventory
            result.error = f"the Kubernetes API server refused a request: {exc.message}"


def ref_text(ref: GitRef) -> str:
    return ref.commit or ref.name or (f"branch {ref.branch}" if ref.branch else f"tag {ref.tag}")
