"""The one pull-request comment a plan writes: a summary table, then a section per Kustomization.

Pure: the reconciler renders each Kustomization's section (`reconciler.plan.Plan.markdown`);
this puts the sections of one pull request's head together, for the notifier and for
`herald plan --format markdown`, which must print the same text. The comment client adds
the hidden marker and cuts to the host's limit (`herald.forges.fit` keeps the table and
drops whole sections first).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

COLUMNS = ("create", "update", "delete", "unchanged", "error")


@dataclass(frozen=True)
class PlanSection:
    """One Kustomization's plan. `counts` maps a plan action (reconciler.plan.ACTIONS) to how
    many objects it applies to; `error` is set instead when no plan could be made (a fetch or
    build failure), and then `markdown` may be empty."""

    target: str  # "namespace/name" of the Kustomization (and the cluster, when named)
    counts: dict[str, int] = field(default_factory=dict)
    markdown: str = ""
    error: str = ""


def _row(s: PlanSection) -> list[str]:
    if s.error:
        return [s.target, "-", "-", "-", "-", "plan failed"]
    c = s.counts
    # A recreate is a change to an object that stays: counted as an update (its section
    # says recreate); "cannot preview" gets its own column when any section has one.
    return [s.target, str(c.get("create", 0)), str(c.get("update", 0) + c.get("recreate", 0)),
            str(c.get("delete", 0)), str(c.get("unchanged", 0)), str(c.get("error", 0))]


def comment(sections: list[PlanSection], revision: str) -> str:
    """The comment's Markdown for the plans of `revision` (the PR head, shown short)."""
    short = revision[:12] if len(revision) >= 40 else revision
    preview = any(s.counts.get("cannot-preview", 0) for s in sections)
    header = ["Kustomization", *COLUMNS] + (["cannot preview"] if preview else [])
    lines = [f"### Herald plan for `{short}`", "",
             "What merging would change in the cluster (server-side dry-run; nothing was applied).", "",
             "| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (len(header) - 1)]
    for s in sections:
        row = _row(s) + ([str(s.counts.get("cannot-preview", 0))] if preview else [])
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    if not sections:
        lines.append("| (no Kustomization follows this pull request's base branch) |" + " |" * (len(header) - 1))
    lines.append("")
    for s in sections:
        if s.error:
            lines += [f"**{s.target}**: plan failed: {s.error}", ""]
        else:
            lines.append(s.markdown.rstrip("\n"))
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


HTML_FORGES = frozenset({"github", "gitlab", "gitea"})
"""Forges whose comment Markdown renders `<details>`; Bitbucket Cloud and Server escape HTML."""

_SUMMARY = re.compile(r"<details><summary>(.*?)</summary>")
_TAG = re.compile(r"</?(?:b|code)>")


def without_html(body: str) -> str:
    """The comment for a forge that shows HTML as text (Bitbucket): each `<details>` title
    becomes a bold line and the sections stay open, with `<b>`/`<code>` as Markdown."""
    def title(match: re.Match[str]) -> str:
        text = match.group(1).replace("<code>", "`").replace("</code>", "`")
        return "**" + html.unescape(_TAG.sub("", text)) + "**"

    out = []
    for line in body.split("\n"):
        if line.strip() == "</details>":
            continue
        out.append(_SUMMARY.sub(title, line))
    return "\n".join(out)
