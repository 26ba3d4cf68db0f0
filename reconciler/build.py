"""A Kustomization's objects at one commit: the one build both a reconcile and a plan use.

A pull-request plan must show what the reconciler would apply, so both render through this
function and nothing else. Plain YAML is read straight from the Git cache's objects; only
kustomize (which reads a folder, and may reach outside `spec.path`) and trees with symlinks
or submodules get a checkout on disk, under `workdir`, removed afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from herald.model import GitRepository, Kustomization
from reconciler.generate import GenerateError, apply_common_metadata, generate, prune_ignored
from reconciler.git import GitCache
from reconciler.postbuild import Read, finish

SOURCEIGNORE = ".sourceignore"
Includes = tuple[tuple[GitRepository, str, str, str], ...]  # reconciler.git.Revision.includes
from reconciler.render import (
    Manifest,
    Rendered,
    RenderError,
    plain_files,
    render,
    render_files,
    tree_folder,
)


def build(git: GitCache, ks: Kustomization, repo: GitRepository, sha: str, workdir: Path,
          read: Read | None = None, includes: Includes = ()) -> Rendered:
    """`ks`'s render at `sha` of `repo` (fetched into `git` already), decrypted and substituted
    as its spec asks (`reconciler.postbuild`; `read` finds the ConfigMaps and Secrets those
    name). Raises GitError or RenderError with a message for the user."""
    rendered = (_generated(git, ks, repo, sha, workdir, includes) if ks.generator
                else _build(git, ks, repo, sha, workdir, includes))
    return _finished(ks, rendered, read)


def build_tree(ks: Kustomization, tree: Path, workdir: Path, read: Read | None = None) -> Rendered:
    """`ks`'s render from an extracted artifact (an OCIRepository's), the same way: the tree is
    copied under `workdir` first (the generator writes into it; the artifact stays as pulled)."""
    try:
        shutil.copytree(tree, workdir, symlinks=True)
        if ks.generator:
            _generate(ks, workdir)
            rendered = render(workdir, ks.path)
        else:
            rendered = render(workdir, ks.path, ks.target_namespace)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _finished(ks, rendered, read)


def _finished(ks: Kustomization, rendered: Rendered, read: Read | None) -> Rendered:
    rendered.manifests = finish(ks, rendered.manifests, read)
    if ks.common_metadata:  # after the substitution, as kustomize-controller sets it
        objs = apply_common_metadata([m.obj for m in rendered.manifests], ks.common_metadata)
        rendered.manifests = [Manifest(obj, m.source) for obj, m in zip(objs, rendered.manifests, strict=True)]
    return rendered


def _generate(ks: Kustomization, root: Path) -> None:
    spec = dict(ks.generator)
    if ks.target_namespace:
        spec["targetNamespace"] = ks.target_namespace
    try:
        generate(root, root / tree_folder(ks.path), spec)
    except GenerateError as exc:
        raise RenderError(str(exc)) from None


def _generated(git: GitCache, ks: Kustomization, repo: GitRepository, sha: str, workdir: Path,
               includes: Includes = ()) -> Rendered:
    """A Kustomization with patches, images, components or a name prefix or suffix: built by
    kustomize from the kustomization.yaml Flux's generator would write (`reconciler.generate`),
    in a checkout of its own, the namespace included (kustomize's transformer, as in Flux)."""
    try:
        _export(git, repo, sha, workdir, includes)
        _generate(ks, workdir)
        return render(workdir, ks.path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


_SOURCEIGNORE_SEEN: dict[tuple[str, str], bool] = {}  # (repository, commit) -> has a .sourceignore


def _has_sourceignore(git: GitCache, repo: GitRepository, sha: str) -> bool:
    """Whether the commit holds a .sourceignore anywhere: once per commit, not per Kustomization
    (a fleet's hundred Kustomizations read one commit)."""
    key = (str(git.git_dir(repo)), sha)
    found = _SOURCEIGNORE_SEEN.get(key)
    if found is None:
        found = any(e.path.rsplit("/", 1)[-1] == SOURCEIGNORE for e in git.list_tree(repo, sha, ""))
        if len(_SOURCEIGNORE_SEEN) > 1024:
            _SOURCEIGNORE_SEEN.clear()
        _SOURCEIGNORE_SEEN[key] = found
    return found


def _export(git: GitCache, repo: GitRepository, sha: str, workdir: Path, includes: Includes = ()) -> None:
    """The commit checked out under `workdir` as source-controller's artifact holds it: without
    what `.sourceignore` and `spec.ignore` (or Flux's default exclusions) leave out, with the
    submodules (`recurseSubmodules`) and the included repositories' files (`include`: each one's
    `fromPath`, as its own artifact holds it, copied over `toPath`)."""
    git.export(repo, sha, workdir, submodules=repo.recurse_submodules)
    prune_ignored(workdir, repo.ignore or None)
    for other, other_sha, from_path, to_path in includes:
        scratch = workdir.parent / f".{workdir.name}.include-{other.meta.name}"
        try:
            git.export(other, other_sha, scratch, submodules=other.recurse_submodules)
            prune_ignored(scratch, other.ignore or None)
            source = (scratch / tree_folder(from_path)).resolve()
            target = (workdir / tree_folder(to_path or other.meta.name)).resolve()
            if not source.is_relative_to(scratch.resolve()) or not target.is_relative_to(workdir.resolve()):
                raise RenderError(f"spec.include of GitRepository {other.meta.name}: fromPath and toPath must stay "
                                  "inside the repositories")
            if not source.is_dir():
                raise RenderError(f"spec.include: GitRepository {other.meta.name} has no folder {from_path!r}")
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


KEPT_CHECKOUTS = 2  # per repository: the commit being applied and the one before (a slow run may still read it)
_CHECKOUT_LOCK = threading.Lock()


def shared_checkout(git: GitCache, repo: GitRepository, sha: str, includes: Includes = ()) -> Path:
    """The commit checked out once (`_export`), for every Kustomization that reads it without
    writing: a fleet's Kustomizations mostly share one repository and one commit, and writing
    the whole tree for each of them was most of a fleet's reconcile (bench/RESULTS.md, fleet
    reconcile). Kept under the Git cache, the newest KEPT_CHECKOUTS per repository."""
    key = sha + "".join(f"+{other.meta.name}@{other_sha}:{f}:{t}" for other, other_sha, f, t in includes)
    folder = git.root / "checkouts" / repo.meta.namespace / repo.meta.name
    root = folder / hashlib.sha256(key.encode()).hexdigest()[:24]
    with _CHECKOUT_LOCK:
        if root.is_dir():
            os.utime(root)
            return root
        scratch = folder / f".{root.name}.{os.getpid()}.{threading.get_ident()}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            _export(git, repo, sha, scratch, includes)
            try:
                scratch.rename(root)
            except OSError:  # another process made it meanwhile: theirs is the same tree
                pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        kept = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime,
                      reverse=True)
        for old in kept[KEPT_CHECKOUTS:]:
            if old != root:
                shutil.rmtree(old, ignore_errors=True)
    return root


def _build(git: GitCache, ks: Kustomization, repo: GitRepository, sha: str, workdir: Path,
           includes: Includes = ()) -> Rendered:
    folder = tree_folder(ks.path)
    entries = git.list_tree(repo, sha, folder)
    files = [e for e in entries if e.is_file]
    wanted = None
    if len(files) == len(entries):  # no symlink (spec.path itself may be one), no submodule
        if folder and not any(e.path.startswith(f"{folder}/") for e in entries):
            raise RenderError(f"spec.path {ks.path!r} not found in the revision")
        wanted = plain_files(folder, [e.path for e in files])
    if wanted is not None and not repo.ignore and not includes and not _has_sourceignore(git, repo, sha):
        blob = {e.path: e.blob for e in files}
        return render_files(zip(wanted, git.read_blobs(repo, [blob[p] for p in wanted])), ks.target_namespace)
    # kustomize only reads the checkout: every Kustomization of the commit shares one.
    return render(shared_checkout(git, repo, sha, includes), ks.path, ks.target_namespace)
