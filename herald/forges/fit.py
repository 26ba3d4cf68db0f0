"""Cutting a Markdown comment to a forge's length limit: one comment, never a chain.

`fit(body, limit)` keeps the body whole when it fits. Otherwise it keeps the first part (the
summary: everything up to the first blank line outside a code fence or `<details>` block)
whole, then as many whole blocks after it as fit (a block ends where no code fence and no
`<details>` is open), and ends with a note that says how much was cut. When not even one
whole block after the summary fits, the cut falls inside the first (at a line boundary, with
its code fence and `<details>` closed), so the comment shows part of it rather than nothing. Only a summary too long on its own is cut
inside itself; a single line longer than the limit is cut inside the line.

Lengths are counted in Python characters (code points), as GitHub and Bitbucket count their
limits; pure function, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_DETAILS_OPEN = re.compile(r"<details(?:\s[^>]*)?>", re.IGNORECASE)
_DETAILS_CLOSE = re.compile(r"</details\s*>", re.IGNORECASE)


def note(cut: int, limit: int) -> str:
    """The line that ends a cut comment."""
    return f"_✂️ Cut to fit this host's limit of {limit:,} characters: {cut:,} more did not fit._"


@dataclass(frozen=True)
class _Boundary:
    end: int  # offset just after a line (its newline included)
    fence: str  # the open fence's marker ("" when none)
    details: int  # open <details> elements
    in_summary: bool


def fit(body: str, limit: int) -> str:
    """`body` when it fits in `limit` characters, else a cut of it that does, ending in a note."""
    if len(body) <= limit:
        return body
    boundaries = _boundaries(body)
    summary_end = next((b.end for b in boundaries if not b.in_summary), len(body))

    def candidate(b: _Boundary) -> str:
        head = body[: b.end].rstrip("\n")
        closers = ([b.fence] if b.fence else []) + ["</details>"] * b.details
        tail = "\n".join(closers)
        cut = len(body) - b.end
        return head + ("\n" + tail if tail else "") + "\n\n" + note(cut, limit)

    longest_note = len(note(len(body), limit))

    def size(b: _Boundary) -> int:  # at least the candidate's length, without building it
        return b.end + (len(b.fence) + 1 if b.fence else 0) + 11 * b.details + 2 + longest_note

    fits = [b for b in boundaries if b.end < len(body) and size(b) <= limit]
    whole = [b for b in fits if b.end > summary_end and not b.fence and not b.details]
    after_summary = [b for b in fits if b.end >= summary_end]
    for choice in (whole, after_summary, fits):
        if choice:
            return candidate(max(choice, key=lambda b: b.end))
    # Not even the first line fits: cut inside it (a summary line far over the limit).
    room = limit - len("\n\n" + note(len(body), limit)) - 1
    if room <= 0:
        return note(len(body), limit)[:limit]
    head = body[:room]
    return head + "…\n\n" + note(len(body) - room, limit)


def _boundaries(body: str) -> list[_Boundary]:
    out: list[_Boundary] = []
    fence = ""
    details = 0
    in_summary = True
    offset = 0
    for line in body.splitlines(keepends=True):
        offset += len(line)
        text = line.rstrip("\r\n")
        m = _FENCE.match(text)
        if fence:
            if m and m[1][0] == fence[0] and len(m[1]) >= len(fence) and not m[2].strip():
                fence = ""
        elif m and not (m[1][0] == "`" and "`" in m[2]):
            fence = m[1]
        else:
            details += len(_DETAILS_OPEN.findall(text)) - len(_DETAILS_CLOSE.findall(text))
            details = max(details, 0)
            if not text.strip() and not details and in_summary and offset > len(line):
                in_summary = False
        out.append(_Boundary(offset, fence, details, in_summary))
    return out
