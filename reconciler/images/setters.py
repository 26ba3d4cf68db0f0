"""Flux image-automation setters that change only the bytes they mark.

Flux's image-automation-controller updates image references in YAML files whose scalars carry a
marker in their line comment:

    image: ghcr.io/acme/web:1.4.2 # {"$imagepolicy": "flux-system:web"}

It reads every such file into kyaml (go-yaml v3) nodes and writes the changed files back out
whole, so a one-tag bump can also re-indent sequences, re-quote strings and move comments.
Herald finds the same markers, then splices the new value over the characters of the marked
scalar and nothing else: the commit shows the image bumps and only those. The file is never
re-serialised.

What Flux reads as a marker (image-automation-controller `internal/update/setters.go`,
`filter.go`, `filereader.go`; kyaml `fieldmeta.Read`), and so what Herald reads:

- only files named `*.yaml`, `*.yml` or `Kustomization`, and only those that contain the text
  `"$imagepolicy"`: other files are never parsed (a Helm template that is not YAML is fine);
- the comment of a scalar, its leading `#`s stripped, read as a JSON object of strings; its
  `$imagepolicy` names a setter. `namespace:name` sets the whole reference, `name:tag`, or
  `name:tag@digest` when the policy reflects a digest (`ImageRef.String()` in
  image-reflector-controller `api/v1`); `namespace:name:tag`, `:name` and `:digest` set one part.
  The namespace has always been required: the setters have been named
  `fmt.Sprintf("%s:%s", namespace, name)` since the first setters commit (2020);
- only scalar values are set (`filter.go` visits mapping values and sequence items, never keys;
  an alias is no scalar); a marker after a flow collection belongs to no scalar;
- a policy without a latest image defines no setter, so its markers change nothing.

Flux skips silently every marker it cannot use (bad JSON, text after the JSON, a missing
namespace, an unknown policy, a marker on a key). Herald reports each as a `Problem` with its
line, so `herald validate` can show them, and still applies the markers that are fine.

Where Herald is stricter than Flux, on purpose:

- a marker on a line of its own is a Problem. go-yaml can make such a comment the head comment
  of the sequence item below it, which kyaml would read; Herald only reads markers at the end of
  the value's line, the form Flux documents;
- a marker on a block scalar (`|`, `>`) is a Problem: an image reference is one line, and
  splicing one into a block scalar would have to rewrite its header;
- a `:digest` marker of a policy with no digest is a Problem; Flux writes an empty string there.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from herald.yamlsrc import YAMLSyntaxError, load_documents

MARKER_KEY = "$imagepolicy"
# The text Flux screens files by (filereader.go: `fmt.Sprintf("%q", constants.SetterShortHand)`).
SCREEN_TOKEN = f'"{MARKER_KEY}"'
FIELDS = ("tag", "name", "digest")
_MENTION = re.compile(re.escape(MARKER_KEY), re.IGNORECASE)

# libyaml, when PyYAML has it, tokenises like go-yaml (both descend from it): a tab before a
# comment is fine there, and PyYAML's Python scanner refuses it. Its resolver is YAML 1.1's.
_LibYAML: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BREAKS = "\r\n\x85\u2028\u2029"
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
# YAML's printable characters (YAML 1.2 §5.1), less the line breaks.
_NON_PRINTABLE = re.compile("[^\t\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# go-yaml v2's (YAML 1.1) booleans beyond those of PyYAML: kyaml quotes them when it sets a value.
_YAML11_WORDS = frozenset(("y", "Y", "n", "N"))


@dataclass(frozen=True)
class PolicyValue:
    """What an ImagePolicy resolved to: its `status.latestRef`."""

    image: str  # e.g. "ghcr.io/acme/web"
    tag: str  # e.g. "1.5.0"
    digest: str = ""  # "sha256:…" when the policy's digestReflectionPolicy reflects one

    def reference(self) -> str:
        """The whole reference, as image-reflector-controller's `ImageRef.String()` writes it."""
        return f"{self.image}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class Change:
    line: int  # 1-based line where the changed scalar starts
    policy: str  # "namespace:name"
    field: str  # "image" | "tag" | "name" | "digest"
    old: str
    new: str


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based
    message: str


@dataclass(frozen=True)
class Edit:
    text: str  # the new file content (the old one when nothing changed or the edit was refused)
    changes: tuple[Change, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class Marker:
    """A well-formed marker on a scalar value: one Flux would apply if its policy had a value."""

    line: int  # 1-based line of the marker's comment
    policy: str  # "namespace:name"
    field: str  # "image" | "tag" | "name" | "digest"


@dataclass(frozen=True)
class _Token:
    """The part of a PyYAML token this module compares and splices by."""

    kind: str  # the token class's name: "ScalarToken", "KeyToken", …
    start: int  # character index in the text
    end: int
    line: int  # 0-based line of `start`
    value: object  # a scalar's value; an anchor's, alias's, tag's or directive's; else None
    style: str  # "" for plain, "'", '"', "|" or ">" for scalars; "" for the rest


@dataclass(frozen=True)
class _Site:
    """A marked scalar value: where its characters are and how they are written."""

    marker: Marker
    token: int  # index in the token list
    start: int
    end: int
    line: int  # 1-based line where the scalar starts
    value: str
    style: str  # "", "'" or '"'
    flow: bool  # inside a flow collection, where `,[]{}` end a plain scalar


@dataclass(frozen=True)
class _Survey:
    tokens: tuple[_Token, ...]
    sites: tuple[_Site, ...]
    problems: tuple[Problem, ...]
    fatal: bool  # the file could not be read: no site can be trusted


def flux_reads(path: str) -> bool:
    """Whether Flux looks for markers in a file of this name (filereader.go: `.yaml`, `.yml`,
    or a file named `Kustomization`; Go's `filepath.Ext` is case-sensitive)."""
    name = PurePosixPath(path.replace("\\", "/")).name
    return name.endswith((".yaml", ".yml")) or name == "Kustomization"


def markers(text: str, path: str = "") -> list[Marker]:
    """The well-formed markers on scalar values, in file order.

    For `herald validate`, to report markers whose policy does not exist or has no value yet;
    the markers that cannot apply whatever the policies are come from `marker_problems`.
    """
    survey, _ = _read(text, path)
    return [site.marker for site in survey.sites] if survey else []


def marker_problems(text: str, path: str = "") -> list[Problem]:
    """What keeps a file's markers from applying whatever the policies' values: a file that
    does not parse, a marker that is not Flux's JSON, one in a place Flux does not set."""
    return _read(text, path)[1]


def apply_setters(text: str, values: Mapping[str, PolicyValue | None], *, path: str = "") -> Edit:
    """Set every marked scalar of `text` to its policy's value, changing only those characters.

    `values` maps "namespace:name" to the policy's latest image, or to None for a policy that
    exists but has none yet. A marker whose policy is missing or has no value is a Problem and
    changes nothing; the other markers still apply, as in Flux. A file that does not parse is a
    Problem and stays as it is. `path`, when given, is the file's path in the repository: Flux
    reads markers only in `*.yaml`, `*.yml` and `Kustomization` files.

    A scalar keeps its style: a single- or double-quoted one stays so quoted, with the same
    quote character. A plain scalar stays plain unless the new value would then read as
    something else: a number (`1.0`), a boolean in YAML 1.1 or 1.2 (`on`, `y`, `true`), null,
    a timestamp, or another structure (`a: b`, `x #y`, `[a]`); such a value is written
    double-quoted, as kyaml's `FormatNonStringStyle` does when Flux sets it. A value that single
    quotes cannot hold (a line break, a control character) is written double-quoted too.

    After splicing, the new text is parsed again: it must yield the same tokens, with each
    changed scalar now holding its new value. If not, the original text comes back with a
    Problem: a marker never costs a file its meaning.
    """
    survey, problems = _read(text, path)
    if survey is None:
        return Edit(text, (), tuple(problems))
    planned: list[tuple[_Site, str, str, str]] = []  # site, new value, its text, its style
    for site in survey.sites:
        new = _new_value(site.marker, values)
        if isinstance(new, Problem):
            problems.append(new)
        elif new != site.value:
            written = _render(new, site.style, site.flow)
            planned.append((site, new, written, written[0] if written[0] in "'\"" else ""))
    problems.sort(key=lambda p: p.line)
    if not planned:
        return Edit(text, (), tuple(problems))

    pieces, at = [], 0
    for site, _, written, _ in planned:  # sites are in file order and never overlap
        pieces += [text[at:site.start], written]
        at = site.end
    new_text = "".join(pieces) + text[at:]
    refused = _verify(survey.tokens, new_text, planned)
    if refused is not None:
        return Edit(text, (), tuple(sorted([*problems, refused], key=lambda p: p.line)))
    changes = tuple(Change(site.line, site.marker.policy, site.marker.field, site.value, new)
                    for site, new, _, _ in planned)
    return Edit(new_text, changes, tuple(problems))


def _read(text: str, path: str) -> tuple[_Survey | None, list[Problem]]:
    """The file's marked scalars (None when there are none to set) and its problems."""
    if not _screened(text):
        return None, []
    if path and not flux_reads(path):
        line = _line_table(text).line(_MENTION.search(text).start()) + 1  # type: ignore[union-attr]
        name = PurePosixPath(path.replace("\\", "/")).name
        return None, [Problem(line, f"Flux looks for markers only in *.yaml, *.yml and "
                                    f"Kustomization files, so {name} is left alone")]
    survey = _survey(text)
    return (None if survey.fatal else survey), list(survey.problems)


def _screened(text: str) -> bool:
    """Whether the file may hold a marker. Flux parses only files that contain `"$imagepolicy"`
    (so a Helm template that is not YAML never troubles it); Herald screens by `$imagepolicy`
    alone, in any case, so that a marker written with single quotes or `$ImagePolicy` is
    reported rather than skipped."""
    return _MENTION.search(text) is not None


def _new_value(marker: Marker, values: Mapping[str, PolicyValue | None]) -> str | Problem:
    if marker.policy not in values:
        return Problem(marker.line, f"marker names ImagePolicy {marker.policy}, which does not exist")
    value = values[marker.policy]
    if value is None:
        return Problem(marker.line, f"ImagePolicy {marker.policy} has no latest image yet, "
                                    f"so its marker changes nothing")
    needs = {"image": ("image", "tag"), "name": ("image",), "tag": ("tag",), "digest": ("digest",)}
    missing = [part for part in needs[marker.field] if not getattr(value, part)]
    if missing == ["digest"]:
        return Problem(marker.line, f"ImagePolicy {marker.policy} has no digest: a :digest marker "
                                    f"needs the policy's spec.digestReflectionPolicy")
    if missing:
        return Problem(marker.line, f"ImagePolicy {marker.policy} has no {' or '.join(missing)}")
    if marker.field == "image":
        return value.reference()
    return {"name": value.image, "tag": value.tag, "digest": value.digest}[marker.field]


# Reading the file


class _Lines:
    """Line numbers of character indexes, with YAML's line breaks (CRLF counts once)."""

    def __init__(self, starts: list[int]) -> None:
        self.starts = starts

    def line(self, index: int) -> int:
        """0-based line of `index`."""
        return bisect.bisect_right(self.starts, index) - 1

    def start_of(self, index: int) -> int:
        return self.starts[self.line(index)]


def _line_table(text: str) -> _Lines:
    return _Lines([0, *(m.end() for m in _LINE_BREAK.finditer(text))])


def _scan(text: str) -> tuple[_Token, ...]:
    """The file's tokens with character indexes into `text`.

    libyaml does not count a byte order mark in its indexes (PyYAML's scanner does), so the
    mark is left out of what is scanned and added back to every index.
    """
    skip = 1 if text.startswith("\ufeff") else 0
    tokens = []
    for tok in yaml.scan(text[skip:], Loader=_LibYAML):
        value = getattr(tok, "value", None)
        style = (getattr(tok, "style", None) or "") if isinstance(tok, yaml.ScalarToken) else ""
        tokens.append(_Token(type(tok).__name__, tok.start_mark.index + skip, tok.end_mark.index + skip,
                             tok.start_mark.line, value, style))
    return tuple(tokens)


def _comments(text: str, tokens: tuple[_Token, ...]) -> list[tuple[int, int, int | None]]:
    """(start, end, token) of every comment: `#` up to the end of its line, and the token it
    sits in, if any.

    Between tokens there is only white space and comments, so every `#` there starts one. The
    one comment inside a token is the header comment of a block scalar (`| # …`).
    """
    found: list[tuple[int, int, int | None]] = []
    at = 0
    for i in sorted(range(len(tokens)), key=lambda i: tokens[i].start):
        tok = tokens[i]
        if tok.start > at:
            found += _gap_comments(text, at, tok.start)
        if tok.kind == "ScalarToken" and tok.style in ("|", ">"):
            header_end = _line_end(text, tok.start, tok.end)
            hash_at = text.find("#", tok.start, header_end)
            if hash_at >= 0:
                found.append((hash_at, header_end, i))
        at = max(at, tok.end)
    found += _gap_comments(text, at, len(text))
    return found


def _gap_comments(text: str, start: int, end: int) -> list[tuple[int, int, int | None]]:
    found: list[tuple[int, int, int | None]] = []
    i = text.find("#", start, end)
    while i >= 0:
        line_end = _line_end(text, i, end)
        found.append((i, line_end, None))
        i = text.find("#", line_end, end)
    return found


def _line_end(text: str, start: int, limit: int) -> int:
    for i in range(start, limit):
        if text[i] in _BREAKS:
            return i
    return limit


def _read_marker(comment: str) -> tuple[str, str] | str | None:
    """A comment as Flux reads it: (policy, field), a reason it is no usable marker, or None
    for a comment that is no marker at all (prose that mentions $imagepolicy is left alone).

    kyaml strips the comment's leading `#`s and unmarshals the rest into a Go
    `map[string]string`: any text around the JSON, or a value that is no string, makes it an
    ordinary comment. Go's and Python's JSON agree on white space (space, tab, CR, LF) and on
    duplicate keys (the last wins).
    """
    body = comment.lstrip("#")
    stripped = body.strip(" \t")
    if SCREEN_TOKEN not in body and not (stripped.startswith("{") and MARKER_KEY in body.lower()):
        return None
    if not stripped.startswith("{"):
        return "text before the marker's JSON: Flux reads a marker only when the comment is the JSON object alone"
    try:
        obj, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError as exc:
        return f"the marker is not valid JSON ({exc.msg}), so Flux ignores it"
    if stripped[end:].strip(" \t"):
        return "trailing text after the marker's JSON: Flux ignores such a marker"
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        return "the marker's JSON must be an object whose values are all strings, or Flux ignores it"
    ref = obj.get(MARKER_KEY)
    if not ref:
        return f'the marker has no "{MARKER_KEY}" key naming a policy (JSON keys are case-sensitive)'
    parts = ref.split(":")
    if len(parts) == 1:
        return f'marker names ImagePolicy "{ref}" without its namespace: Flux needs "namespace:{ref}"'
    if len(parts) == 3 and parts[0] and parts[1] and parts[2] not in FIELDS:
        return (f'marker asks for "{parts[2]}" of ImagePolicy {parts[0]}:{parts[1]}: '
                f"Flux sets only the tag, name or digest")
    if len(parts) > 3 or not all(parts):
        return f'marker names "{ref}": Flux expects "namespace:name" or "namespace:name:tag" (or :name, :digest)'
    return f"{parts[0]}:{parts[1]}", (parts[2] if len(parts) == 3 else "image")


def _survey(text: str) -> _Survey:
    """Every marker of the file: the scalar each one sets, or why it sets none."""
    try:
        for _ in load_documents(text, ""):
            pass
    except YAMLSyntaxError as exc:
        message = exc.message.removeprefix("invalid YAML: ")
        return _Survey((), (), (Problem(exc.line, f"the file does not parse as YAML: {message}"),), True)
    try:
        tokens = _scan(text)
    except yaml.YAMLError as exc:  # libyaml's scanner refused what its parser had read
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        return _Survey((), (), (Problem(mark.line + 1 if mark else 1,
                                        f"the file does not parse as YAML: {problem}"),), True)

    lines = _line_table(text)
    by_end = sorted((tok.end, i) for i, tok in enumerate(tokens) if tok.end > tok.start)
    ends = [end for end, _ in by_end]
    depth, flow_depth = 0, []
    for tok in tokens:
        depth += tok.kind in ("FlowSequenceStartToken", "FlowMappingStartToken")
        depth -= tok.kind in ("FlowSequenceEndToken", "FlowMappingEndToken")
        flow_depth.append(depth)

    sites, problems = [], []
    for start, end, inside in _comments(text, tokens):
        read = _read_marker(text[start:end])
        if read is None:
            continue
        line = lines.line(start) + 1
        if isinstance(read, str):
            problems.append(Problem(line, read))
            continue
        marker = Marker(line, *read)
        if not text[lines.start_of(start):start].strip(" \t\ufeff"):
            problems.append(Problem(line, "a marker on a line of its own is not applied: "
                                          "put it after the value, on the value's line"))
            continue
        # A comment is about the token it sits in (a block scalar's header), else about the
        # last token before it, which ends on its line (the comment is not on a line of its own).
        owner = inside if inside is not None else by_end[bisect.bisect_right(ends, start) - 1][1]
        placement = _placement(tokens, owner)
        if placement:
            problems.append(Problem(line, placement))
            continue
        tok = tokens[owner]
        sites.append(_Site(marker, owner, tok.start, tok.end, tok.line + 1, str(tok.value), tok.style,
                           flow_depth[owner] > 0))
    sites.sort(key=lambda s: s.start)
    return _Survey(tokens, tuple(sites), tuple(problems), False)


def _placement(tokens: tuple[_Token, ...], owner: int) -> str | None:
    """Why the token a marker follows is no scalar value Flux would set; None when it is one."""
    tok = tokens[owner]
    if tok.kind == "AliasToken":
        return f"the marker follows an alias (*{tok.value}), which Flux does not set: mark the anchored value"
    if tok.kind != "ScalarToken":
        what = {"FlowMappingEndToken": "a flow mapping ({…})", "FlowSequenceEndToken": "a flow sequence ([…])",
                "ValueToken": "a key with no value on its line", "BlockEntryToken": "a list dash with no value"}
        return (f"the marker follows {what.get(tok.kind, 'no scalar value')}: Flux sets only a scalar "
                f"value followed by its marker")
    if tok.style in ("|", ">"):
        return f"the marker is on a block scalar ({tok.style}): Herald sets only plain and quoted scalars"
    before = owner - 1
    while before >= 0 and tokens[before].kind in ("AnchorToken", "TagToken"):
        before -= 1
    if before >= 0 and tokens[before].kind == "KeyToken":
        return "the marker follows a mapping key, not a value: Flux sets only values"
    return None


# Writing the value


def _render(value: str, style: str, flow: bool) -> str:
    """`value` as the text of a scalar that was written in `style` ("" plain, "'", '"')."""
    if style == "'" and not _NON_PRINTABLE.search(value) and not any(c in _BREAKS for c in value):
        return "'" + value.replace("'", "''") + "'"
    if style == "" and _plain_reads_back(value, flow):
        return value
    return _double_quoted(value)


def _double_quoted(value: str) -> str:
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\t":
            out.append("\\t")
        elif ch in _BREAKS or _NON_PRINTABLE.match(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _plain_reads_back(value: str, flow: bool) -> bool:
    """Whether `value`, written plain, reads back as that same string: to go-yaml v3 (what
    kustomize and the cluster see), to YAML 1.1 (PyYAML, and go-yaml v2, which kyaml consults
    before it leaves a value plain)."""
    if not value or value[0] in " \t" or value[-1] in " \t" or value in _YAML11_WORDS:
        return False
    if _NON_PRINTABLE.search(value) or any(c in _BREAKS for c in value):
        return False
    if flow and any(c in ",[]{}" for c in value):
        return False
    # YAML's rule for the first character of a plain scalar (ns-plain-first), kept strict: what
    # follows the scalar (a comment, a line break, `,` or `}` in flow) must not change its reading.
    if value[0] in ",[]{}#&*!|>'\"%@`" or (value[0] in "-?:" and (len(value) == 1 or value[1] in " \t")):
        return False
    if value.endswith(":") or ": " in value or " #" in value or "\t#" in value:
        return False
    probes = ([f"v: [{value}]\n", f"v: {{k: {value}\n}}\n"] if flow else [f"v: {value}\n", f"- {value}\n"])
    for probe in probes:
        try:
            [doc] = load_documents(probe, "")
            readings = [doc.data, yaml.load(probe, Loader=_LibYAML)]
        except (YAMLSyntaxError, yaml.YAMLError, ValueError, TypeError):
            return False
        for reading in readings:
            if isinstance(reading, dict):
                reading = reading.get("v")
            if isinstance(reading, dict):
                reading = reading.get("k")
            if isinstance(reading, list) and len(reading) == 1:
                reading = reading[0]
            if type(reading) is not str or reading != value:
                return False
    return True


def _verify(old: tuple[_Token, ...], text: str, planned: list[tuple[_Site, str, str, str]]) -> Problem | None:
    """None when `text` reads as the old file with only the planned values changed."""
    site = planned[0][0]
    try:
        for _ in load_documents(text, ""):
            pass
        new = _scan(text)
    except YAMLSyntaxError as exc:
        return Problem(site.line, f"the edit would break the file (line {exc.line}: {exc.message}), "
                                  f"so it is left unchanged")
    except yaml.YAMLError as exc:
        return Problem(site.line, f"the edit would break the file ({exc}), so it is left unchanged")
    expected = {s.token: (value, style) for s, value, _, style in planned}
    if len(new) != len(old):
        return Problem(site.line, "the edit would change the file's structure, so it is left unchanged")
    for i, (a, b) in enumerate(zip(old, new)):
        want = expected.get(i, (a.value, a.style))
        if a.kind != b.kind or (b.value, b.style) != want:
            line = next((s.line for s, *_ in planned if s.token == i), b.line + 1)
            return Problem(line, f"after the edit, line {b.line + 1} would not read back as intended, "
                                 f"so the file is left unchanged")
    return None
