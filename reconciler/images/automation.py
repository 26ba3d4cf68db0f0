"""An ImageUpdateAutomation run: the policies' latest images written into Git as one commit.

The I/O edge around the pure pieces (`reconciler.images.setters` edits the files,
`reconciler.git.GitCache` commits without a work tree and pushes): fetch the branch, apply the
setters of the selected policies to every file under `update.path`, and when something changed,
make one commit and push it as a fast-forward. When the remote moved meanwhile (someone pushed),
fetch again and redo the edit on the new head, a few times with jitter; never a force push, so
nothing anyone else pushed is lost.

The branch: the checkout branch (`git.checkout.ref.branch`, else the GitRepository's own
`spec.ref.branch`), or `git.push.branch` when set. A push branch that already exists on the
remote is updated on top of its own head, so updates accumulate there until people merge them;
one that does not is created from the checkout branch.

The commit message is `git.commit.messageTemplate` rendered as Jinja2 (sandboxed) with Flux's
names for the values: `AutomationObject` ("namespace/name"), `Changed` (`FileChanges`: file →
list of changes; `Changes`: every change, each with `OldValue`, `NewValue`, `Setter`, `File`,
`Field`), and `Values` (`git.commit.messageTemplateValues`). Without a template, Flux's default
text. A template that does not render fails the run naming the field: a commit is never made
with a message nobody wrote.

`check_markers` is what `herald validate` reports: every marker under `update.path` that cannot
apply, read from the branch the automation would edit, without a registry (a policy without a
tag yet shows only at run time, as the MarkersNotApplied event).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from herald.config import Config
from herald.model import GitRef, GitRepository, ImagePolicy, ImageUpdateAutomation
from reconciler.git import Author, GitCache, GitError, Revision, resolve_url
from reconciler.images.setters import (
    Change,
    Marker,
    PolicyValue,
    Problem,
    apply_setters,
    flux_reads,
    marker_problems,
    markers,
)
from reconciler.render import tree_folder

DEFAULT_MESSAGE = "Update from image update automation"
ATTEMPTS = 5

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass
class Result:
    """How one run ended: `commit` pushed to `branch` (empty when nothing needed changing),
    the changes per file, the markers that could not apply, or `error`."""

    commit: str = ""
    branch: str = ""
    message: str = ""
    changes: list[tuple[str, Change]] = field(default_factory=list)
    problems: list[tuple[str, Problem]] = field(default_factory=list)
    error: str = ""
    permanent: bool = False  # the error comes back on every try (auth, no branch, a bad template)


def selected_policies(cfg: Config, auto: ImageUpdateAutomation) -> list[ImagePolicy]:
    """The ImagePolicies of the automation's namespace its `policySelector` selects (Flux
    selects in the automation's namespace only)."""
    return [p for (ns, _), p in sorted(cfg.image_policies.items())
            if ns == auto.meta.namespace and auto.policy_selector.matches(p.meta.labels)]


def message(auto: ImageUpdateAutomation, changes: list[tuple[str, Change]]) -> str:
    """The commit message (see the module docstring); TemplateError when it does not render."""
    if not auto.message_template:
        return DEFAULT_MESSAGE + "\n"
    every = [{"File": path, "OldValue": c.old, "NewValue": c.new, "Setter": c.policy, "Field": c.field}
             for path, c in changes]
    by_file: dict[str, list[dict[str, str]]] = {}
    for change in every:
        by_file.setdefault(change["File"], []).append(change)
    return _ENV.from_string(auto.message_template).render(
        AutomationObject=f"{auto.meta.namespace}/{auto.meta.name}",
        Changed={"FileChanges": by_file, "Changes": every}, Values=dict(auto.message_template_values))


def _branches(auto: ImageUpdateAutomation, repo: GitRepository) -> tuple[str, str]:
    checkout = auto.checkout_ref or repo.ref
    if not checkout.branch:
        raise GitError("spec.git.checkout.ref (or the GitRepository's spec.ref) names no branch to commit on",
                       permanent=True)
    return checkout.branch, auto.push_branch or checkout.branch


def run(cfg: Config, git: GitCache, auto: ImageUpdateAutomation, values: Mapping[str, PolicyValue | None], *,
        attempts: int = ATTEMPTS, sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random) -> Result:
    """Write `values` ("namespace:policy" → its latest image, or None when it has none yet)
    into the automation's repository; see the module docstring."""
    src = auto.source_ref
    repo = cfg.git_repositories.get((src.namespace or auto.meta.namespace, src.name))
    if repo is None:
        return Result(error=f"GitRepository {src.namespace or auto.meta.namespace}/{src.name} not found",
                      permanent=True)
    url = resolve_url(repo.url, repo.meta.source)
    credentials = cfg.secret(repo.meta.namespace, repo.secret_ref.name) if repo.secret_ref else None
    author = Author(auto.author.name or auto.author.email, auto.author.email)
    try:
        checkout, push = _branches(auto, repo)
        for attempt in range(1, attempts + 1):
            base = _fetch(git, repo, url, credentials, checkout, push)
            result = _edit(cfg, git, repo, base, auto, values)
            if result.error or not result.changes:
                return result
            try:
                result.message = message(auto, result.changes)
            except TemplateError as exc:
                return Result(error=f"spec.git.commit.messageTemplate does not render: {exc}", permanent=True,
                              changes=result.changes, problems=result.problems)
            sha = git.commit_files(repo, base.sha, result.texts, result.message, author)
            if git.push(repo, url, credentials, sha, push):
                result.commit, result.branch = sha, push
                return result
            sleep((0.2 + jitter()) * attempt)  # someone pushed meanwhile: redo on their head
        return Result(error=f"branch '{push}' kept moving: {attempts} pushes were refused as not fast-forward")
    except GitError as exc:
        return Result(error=str(exc), permanent=exc.permanent)


def _fetch(git: GitCache, repo: GitRepository, url: str, credentials: dict[str, str] | None,
           checkout: str, push: str) -> Revision:
    if push != checkout:
        try:
            return git.fetch(dataclasses.replace(repo, ref=GitRef(branch=push)), url, credentials)
        except GitError as exc:
            if not exc.permanent:
                raise  # the push branch may exist; only "not found" means create it
    return git.fetch(dataclasses.replace(repo, ref=GitRef(branch=checkout)), url, credentials)


@dataclass
class _Edited(Result):
    """A Result and the new content of each changed file."""

    texts: dict[str, bytes] = field(default_factory=dict)


def _edit(cfg: Config, git: GitCache, repo: GitRepository, base: Revision, auto: ImageUpdateAutomation,
          values: Mapping[str, PolicyValue | None]) -> _Edited:
    result = _Edited()
    for path, text in _marked_files(git, repo, base.sha, auto.update_path):
        if isinstance(text, Problem):
            result.problems.append((path, text))
            continue
        edit = apply_setters(text, values, path=path)
        # A policy the automation does not set gets the reason why (another namespace, not selected).
        unselected = {m.line: _unselected(cfg, auto, m) for m in markers(text, path) if m.policy not in values}
        result.problems += [(path, unselected.get(p.line, p)) for p in edit.problems]
        if edit.changes:
            result.changes += [(path, c) for c in edit.changes]
            result.texts[path] = edit.text.encode("utf-8")
    return result


def _marked_files(git: GitCache, repo: GitRepository, sha: str, update_path: str) -> Iterator[tuple[str, str | Problem]]:
    """The files under `update_path` at `sha` that Flux reads and that mention a marker: each
    path with its text, or the Problem that keeps it from being read."""
    entries = [e for e in git.list_tree(repo, sha, tree_folder(update_path)) if e.is_file and flux_reads(e.path)]
    for entry, raw in zip(entries, git.read_blobs(repo, [e.blob for e in entries]), strict=True):
        if b"$imagepolicy" not in raw.lower():
            continue
        try:
            yield entry.path, raw.decode("utf-8")
        except UnicodeDecodeError:
            yield entry.path, Problem(0, "not UTF-8 text; its markers cannot be read")



@dataclass
class MarkerReport:
    """The markers of one automation that cannot apply: `where` names the repository and branch
    read (`GitRepository/<ns>/<name>@<branch>`), `problems` the files and lines; `error` when
    the branch could not be read."""

    where: str
    problems: list[tuple[str, Problem]] = field(default_factory=list)
    error: str = ""


def check_markers(cfg: Config, git: GitCache, auto: ImageUpdateAutomation) -> MarkerReport:
    """The markers under the automation's `update.path` that cannot apply whatever the
    registry holds: a file that does not parse, a marker that is not Flux's (text after the
    JSON, no namespace, on a key or a block scalar), a policy that does not exist, one in
    another namespace (Flux sets only the automation's own), one its `policySelector` leaves out."""
    src = auto.source_ref
    repo = cfg.git_repositories.get((src.namespace or auto.meta.namespace, src.name))
    if repo is None:
        return MarkerReport(f"GitRepository/{src.namespace or auto.meta.namespace}/{src.name}",
                            error="the GitRepository is not in the configuration")
    url = resolve_url(repo.url, repo.meta.source)
    credentials = cfg.secret(repo.meta.namespace, repo.secret_ref.name) if repo.secret_ref else None
    report = MarkerReport(f"GitRepository/{repo.meta.namespace}/{repo.meta.name}")
    try:
        checkout, push = _branches(auto, repo)
        base = _fetch(git, repo, url, credentials, checkout, push)
        report.where += f"@{base.ref or push}"
        files = list(_marked_files(git, repo, base.sha, auto.update_path))
    except GitError as exc:
        report.error = str(exc)
        return report
    selected = {f"{p.meta.namespace}:{p.meta.name}" for p in selected_policies(cfg, auto)}
    for path, text in files:
        if isinstance(text, Problem):
            report.problems.append((path, text))
            continue
        found = [*marker_problems(text, path)]
        found += [_unselected(cfg, auto, m) for m in markers(text, path) if m.policy not in selected]
        report.problems += [(path, p) for p in sorted(found, key=lambda p: p.line)]
    return report


def _unselected(cfg: Config, auto: ImageUpdateAutomation, marker: Marker) -> Problem:
    """Why a marker's policy is not among those the automation sets."""
    ns, _, name = marker.policy.partition(":")
    if (ns, name) not in cfg.image_policies:
        return Problem(marker.line, f"marker names ImagePolicy {ns}/{name}, which does not exist")
    if ns != auto.meta.namespace:
        return Problem(marker.line, f"marker names ImagePolicy {ns}/{name}, in another namespace than the "
                                    f"automation ({auto.meta.namespace}): never set")
    return Problem(marker.line, f"marker names ImagePolicy {ns}/{name}, which the automation's "
                                "spec.policySelector does not select: never set")
