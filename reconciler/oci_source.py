"""An OCIRepository as a Kustomization's source: its artifact, pulled once per digest.

source-controller resolves `spec.ref` to a manifest digest, pulls the artifact's layer and
serves it as a tarball the kustomize-controller unpacks. Herald does the same in one process
(`reconciler.oci`: resolve, then fetch and extract safely) and keeps the extracted tree under
the state directory, one folder per digest: a reconcile of an unchanged artifact asks the
registry one HEAD (or nothing, for a digest ref) and pulls nothing. Only the newest tree of
each OCIRepository is kept.

The credentials are Flux's: `secretRef` is a `kubernetes.io/dockerconfigjson` Secret,
`certSecretRef` holds `ca.crt` (and `tls.crt`/`tls.key` for mTLS), `insecure` allows plain HTTP.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from herald.config import Config
from herald.model import OCIRepository
from herald.registry.configured import client_for
from reconciler.oci import fetch, resolve

_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArtifactRevision:
    """What a reconcile of an OCIRepository applies: Flux's revision text, its digest (`sha`, as
    a Git revision's commit is, for coalescing), and the extracted tree."""

    revision: str  # "<tag>@sha256:<hex>", or "sha256:<hex>" for a digest ref
    sha: str  # "sha256:<hex>"
    root: Path

    def __str__(self) -> str:
        return self.revision


def pull(cfg: Config, repo: OCIRepository, cache: Path) -> ArtifactRevision:
    """The artifact `spec.ref` names now, extracted under `cache` (reused when already there).
    Raises ArtifactError or RegistryError (`retryable` says whether trying again may help)."""
    folder = Path(cache) / repo.meta.namespace / repo.meta.name
    with client_for(cfg, repo) as client:
        resolved = resolve(client, repo.url, repo.ref, repo.layer_selector)
        root = folder / resolved.digest.replace(":", "-")
        with _LOCK:  # one pull per tree; a second reconcile of it waits and reuses it
            if not root.is_dir():
                partial = folder / f".{root.name}.partial"
                shutil.rmtree(partial, ignore_errors=True)
                partial.parent.mkdir(parents=True, exist_ok=True)
                fetch(client, repo.url, resolved, partial, repo.layer_selector)
                partial.rename(root)
            for old in folder.iterdir():  # keep the newest tree only
                if old != root and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
    return ArtifactRevision(resolved.revision, resolved.digest, root)
