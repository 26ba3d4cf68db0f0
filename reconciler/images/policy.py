"""Which tag an ImagePolicy selects: Flux's image-reflector-controller, tag for tag.

`latest(tags, spec)` is pure: the tags (as the registry listed them) and an ImagePolicy-like
spec in, a `Selection` out. It does what image-reflector-controller v1 does
(internal/policy/{filter,semver,alphabetical,numerical}.go and
internal/controller/imagepolicy_controller.go `applyPolicy`), so a policy moved from Flux to
Herald picks the same image:

- `filterTags` first: tags `pattern` does not match are dropped; with `extract`, each kept tag
  is ordered by the expansion of `extract` (Go's `Regexp.ExpandString`: `$name`, `${name}`,
  `$1`, `$$`), and the selection is the original tag. Two tags with the same expansion: the
  later one stands for it (Flux's map keeps the last write).
- semver: Masterminds/semver v3.4+ constraints (`>=1.0.0 <2.0.0`, `^1.2`, `~1.2.3`, `1.x`,
  `*`, `1.2 - 1.4`, `a || b`), tags parsed as fluxcd/pkg/version.ParseVersion does (three
  dot-separated parts, optional `v`, leading zeros allowed: `v2025.02.03`; `1.2` is not a
  version). A pre-release matches only when its `||` branch names a pre-release
  (`>=1.0.0-0`), and then any pre-release in range does (Masterminds' rule, not npm's
  same-patch rule). The highest wins; of equal versions (`v1.0.0` and `1.0.0`, or ones that
  differ only by `+build`) the first listed wins, as Flux's strict `GreaterThan` keeps it.
- alphabetical: asc picks the last tag in byte order, desc the first.
- numerical: tags parsed as Go's `strconv.ParseFloat` does (`1.5`, `1e3`, `0x1p4`, `Inf`); asc
  picks the largest, desc the smallest, the later of equal values.

Herald differs from Flux twice, on purpose. Flux fails a whole numerical policy on one tag that
is not a number (`latest` among a thousand build numbers); Herald leaves that tag out and lists
it in `skipped`. With `filterTags`, Flux orders the kept tags in Go map order (random), which
decides between equal semver versions; Herald keeps the registry's order, so the same tags
always give the same answer.

Patterns are Go RE2 syntax, translated to Python's `re`: `(?<name>…)` (Go 1.22) becomes
`(?P<name>…)`, `\\z` becomes `\\Z`, `\\Q…\\E` is quoted, POSIX classes (`[[:digit:]]`) are
expanded; what RE2 refuses (look-around, back-references) or Python cannot express (`\\pL`,
`(?U)`, flags after the start) is a `PolicyError` naming it, never a silently different match.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from herald.model import TagFilter, TagPolicy


class PolicyError(ValueError):
    """The policy itself is invalid (a semver range, a pattern): no tag can be selected.
    `herald validate` reports these at their line before any policy runs."""


@dataclass(frozen=True)
class Selection:
    tag: str | None  # the selected tag as the registry lists it; None: no tag qualifies
    skipped: tuple[str, ...]  # tags the policy could not read (not a version, not a number)
    reason: str  # one sentence for a status message or an event


class PolicySpec(Protocol):
    """What `latest` reads of an ImagePolicy (herald.model.ImagePolicy is one)."""

    @property
    def policy(self) -> TagPolicy: ...

    @property
    def filter_tags(self) -> TagFilter | None: ...


# ---- Go RE2 patterns ----------------------------------------------------------------------

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_GO_FLAGS = re.compile(r"\(\?([imsU]*)(?:-([imsU]*))?([:)])")
_QUANTIFIED = re.compile(r"\{[0-9]+(?:,[0-9]*)?$")


def _unsupported(pattern: str, what: str) -> PolicyError:
    return PolicyError(f"invalid regular expression {pattern!r}: {what}")


def go_regex_to_python(pattern: str) -> str:
    """A Go RE2 pattern as Python `re` source with the same matches (see the module docstring)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise _unsupported(pattern, "trailing backslash")
            e = pattern[i + 1]
            if e == "Q":  # \Q...\E: literal text
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2:] if end < 0 else pattern[i + 2:end]
                out.append("".join("\\" + ch if not ch.isalnum() else ch for ch in literal))
                i = n if end < 0 else end + 2
                continue
            if e.isdigit() and e != "0":
                raise _unsupported(pattern, f"\\{e}: back-references and octal escapes are not supported "
                                            "(Go's regexp refuses back-references)")
            if e in "pP":
                raise _unsupported(pattern, f"\\{e}: Unicode classes are not supported by Herald")
            if e in "ZC":
                raise _unsupported(pattern, f"\\{e} is not Go regexp syntax")
            if e == "z":
                out.append("\\Z")
                i += 2
                continue
            if e == "x" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 3)
                digits = pattern[i + 3:end] if end > 0 else ""
                if not re.fullmatch(r"[0-9A-Fa-f]{1,6}", digits) or int(digits, 16) > 0x10FFFF:
                    raise _unsupported(pattern, "invalid \\x{...} escape")
                out.append(f"\\U{int(digits, 16):08x}")
                i = end + 1
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2:end] if end > 0 else ""
                if name in _POSIX_CLASSES:
                    out.append(_POSIX_CLASSES[name])
                    i = end + 2
                    continue
                if name.startswith("^") and name[1:] in _POSIX_CLASSES:
                    raise _unsupported(pattern, f"[:{name}:]: negated POSIX classes are not supported by Herald")
            if c in "[&~|":  # literals in RE2; Python reads doubled ones as set operations (or warns)
                out.append("\\" + c)
                i += 1
                continue
            if c == "]":  # a leading "]" was taken as a literal when the class opened
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
            else:
                out.append("[")
                i += 1
            if i < n and pattern[i] == "]":  # a leading "]" is a literal in both syntaxes
                out.append("\\]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2:]
            if rest.startswith("P<"):
                out.append("(?P<")
                i += 4
                continue
            if rest.startswith("<") and not rest.startswith(("<=", "<!")):
                out.append("(?P<")  # Go 1.22's (?<name>...)
                i += 3
                continue
            if rest.startswith(("=", "!", "<=", "<!")):
                raise _unsupported(pattern, "look-around assertions are not supported (Go's regexp refuses them)")
            flags = _GO_FLAGS.match(pattern, i)
            if flags is None:
                raise _unsupported(pattern, f"{pattern[i:i + 3]!r}: not Go regexp syntax")
            if "U" in (flags.group(1) + (flags.group(2) or "")):
                raise _unsupported(pattern, "the U (ungreedy) flag is not supported by Herald")
            if flags.group(3) == ")" and out:
                raise _unsupported(pattern, "flags are supported only at the start of the pattern")
            out.append(flags.group(0))
            i = flags.end()
            continue
        if i + 1 < n and pattern[i + 1] == "+" and (c in "*+?" or (c == "}" and _QUANTIFIED.search("".join(out)))):
            raise _unsupported(pattern, f"{c}+: possessive repetition is not Go regexp syntax")
        if c == "{" and pattern.startswith("{,", i):  # a literal in RE2, {0,n} in Python
            out.append("\\{")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def compile_go_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` (Go RE2 syntax) compiled; PolicyError when it is invalid or untranslatable.
    ASCII: RE2's \\d, \\w, \\s and \\b are ASCII-only."""
    try:
        return re.compile(go_regex_to_python(pattern), re.ASCII)
    except re.error as exc:
        raise _unsupported(pattern, str(exc)) from None


def _go_name_char(ch: str) -> bool:
    return ch == "_" or unicodedata.category(ch)[0] == "L" or unicodedata.category(ch) == "Nd"


def _template_parts(template: str) -> list[str | tuple[str, int]]:
    """`template` as Go's expand reads it: text, and references (name, number or -1)."""
    parts: list[str | tuple[str, int]] = []
    rest = template
    while rest:
        before, dollar, after = rest.partition("$")
        parts.append(before)
        if not dollar:
            break
        rest = after
        if rest.startswith("$"):  # $$ is a $
            parts.append("$")
            rest = rest[1:]
            continue
        brace = rest.startswith("{")
        body = rest[1:] if brace else rest
        end = 0
        while end < len(body) and _go_name_char(body[end]):
            end += 1
        name = body[:end]
        if not name or (brace and not body.startswith("}", end)):
            parts.append("$")  # malformed: the $ is text
            continue
        rest = body[end + 1:] if brace else body[end:]
        # A number is at most nine digits without a leading zero (Go stops at 1e8); "1x" is a name.
        number = name.isascii() and name.isdigit() and (name == "0" or name[0] != "0") and len(name) <= 9
        parts.append((name, int(name) if number else -1))
    return parts


def template_references(template: str) -> tuple[str, ...]:
    """The groups `template` names (`$ts` -> "ts", `${1}` -> "1"), for checking a policy."""
    return tuple(p[0] for p in _template_parts(template) if isinstance(p, tuple))


def expand(template: str, match: re.Match[str]) -> str:
    """Go's `Regexp.ExpandString(nil, template, src, match)`: `$$` is `$`; `$name`, `${name}`
    and `$n` are a group's text (empty when it did not take part or does not exist); the name
    after `$` is the longest run of letters, digits and `_` (`$1x` is the group named "1x"); a
    `$` followed by nothing usable is kept as is."""
    out: list[str] = []
    for part in _template_parts(template):
        if isinstance(part, str):
            out.append(part)
            continue
        name, number = part
        if number >= 0:
            if number <= match.re.groups:
                out.append(match.group(number) or "")
        elif name in match.re.groupindex:
            out.append(match.group(name) or "")
    return "".join(out)


# ---- Masterminds/semver ---------------------------------------------------------------------

_MAX_UINT64 = (1 << 64) - 1
_LOOSE_VERSION = re.compile(r"v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?"
                            r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
                            r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?", re.ASCII)
_CV = (r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?"
       r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
       r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?")
_OPS = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^"
_CONSTRAINT = re.compile(rf"^\s*({_OPS})\s*({_CV})\s*\Z", re.ASCII)  # Go's $ is Python's \Z
_RANGE = re.compile(rf"\s*({_CV})\s+-\s+({_CV})\s*", re.ASCII)
_FIND = re.compile(rf"({_OPS})\s*({_CV})", re.ASCII)
_VALID = re.compile(rf"^(\s*({_OPS})\s*({_CV})\s*)((?:\s+|,\s*)({_OPS})\s*({_CV})\s*)*\Z", re.ASCII)


@dataclass(frozen=True)
class Version:
    """A Masterminds/semver Version: `original` is the text it was read from."""

    major: int
    minor: int
    patch: int
    pre: str = ""
    metadata: str = ""
    original: str = ""

    def compare(self, other: Version) -> int:
        """-1, 0 or 1, as Masterminds' `Compare` (build metadata does not count)."""
        for a, b in ((self.major, other.major), (self.minor, other.minor), (self.patch, other.patch)):
            if a != b:
                return -1 if a < b else 1
        if not self.pre and not other.pre:
            return 0
        if not self.pre:
            return 1
        if not other.pre:
            return -1
        return _compare_prerelease(self.pre, other.pre)


def _compare_prerelease(a: str, b: str) -> int:
    pa, pb = a.split("."), b.split(".")
    for i in range(max(len(pa), len(pb))):
        d = _compare_pre_part(pa[i] if i < len(pa) else "", pb[i] if i < len(pb) else "")
        if d:
            return d
    return 0


def _compare_pre_part(s: str, o: str) -> int:
    if s == o:
        return 0
    if not s:
        return -1
    if not o:
        return 1
    s_num, o_num = _uint(s), _uint(o)
    if s_num is None and o_num is None:
        return 1 if s > o else -1
    if o_num is None:  # numeric identifiers sort before alphanumeric ones
        return -1
    if s_num is None:
        return 1
    return 1 if s_num > o_num else -1


def _uint(text: str) -> int | None:
    """Go's strconv.ParseUint(text, 10, 64)."""
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_UINT64 else None


def _valid_prerelease(pre: str) -> bool:
    for part in pre.split("."):
        if not part or (part.isdigit() and len(part) > 1 and part[0] == "0"):
            return False
    return True


def new_version(text: str) -> Version | None:
    """Masterminds' `NewVersion` (coercing: `1.2` is 1.2.0, `01` is 1), or None."""
    m = _LOOSE_VERSION.fullmatch(text)
    if m is None:
        return None
    major, minor, patch = _uint(m[1]), _uint((m[2] or ".0")[1:]), _uint((m[3] or ".0")[1:])
    if major is None or minor is None or patch is None:
        return None
    pre, metadata = m[5] or "", m[8] or ""
    if pre and not _valid_prerelease(pre):
        return None
    return Version(major, minor, patch, pre, metadata, text)


def parse_version(tag: str) -> Version | None:
    """A tag as fluxcd/pkg/version.ParseVersion reads it: three dot-separated parts, then
    Masterminds' NewVersion. `v1.2.3`, `1.2.3-rc.1`, `2025.02.03` are versions; `1.2`,
    `latest`, `1.2.3_4` are not."""
    if len(tag.split(".", 2)) != 3:
        return None
    return new_version(tag)


@dataclass(frozen=True)
class _Constraint:
    op: str
    con: Version
    orig: str
    dirty: bool
    minor_dirty: bool
    patch_dirty: bool

    def check(self, v: Version, include_pre: bool) -> bool:
        if v.pre and not include_pre:
            return False
        c = self.con
        if self.op in ("", "="):
            return self._tilde(v) if self.dirty else v.compare(c) == 0
        if self.op == "!=":
            return self._not_equal(v)
        if self.op == ">":
            if not self.dirty:
                return v.compare(c) > 0
            if v.major != c.major:
                return v.major > c.major
            if self.minor_dirty:
                return False
            if self.patch_dirty:
                return v.minor > c.minor
            return v.compare(c) > 0
        if self.op == "<":
            return v.compare(c) < 0
        if self.op in (">=", "=>"):
            return v.compare(c) >= 0
        if self.op in ("<=", "=<"):
            if not self.dirty:
                return v.compare(c) <= 0
            if v.major > c.major:
                return False
            return not (v.major == c.major and v.minor > c.minor and not self.minor_dirty)
        if self.op in ("~", "~>"):
            return self._tilde(v)
        return self._caret(v)

    def _tilde(self, v: Version) -> bool:
        c = self.con
        if v.compare(c) < 0:
            return False
        if (c.major, c.minor, c.patch) == (0, 0, 0) and not self.minor_dirty and not self.patch_dirty:
            return True
        if v.major != c.major:
            return False
        return v.minor == c.minor or self.minor_dirty

    def _not_equal(self, v: Version) -> bool:
        c = self.con
        if self.dirty:
            if c.major != v.major:
                return True
            if c.minor != v.minor and not self.minor_dirty:
                return True
            if self.minor_dirty:
                return False
            if c.patch != v.patch and not self.patch_dirty:
                return True
            if self.patch_dirty:
                if v.pre or c.pre:
                    return _compare_prerelease(v.pre, c.pre) != 0
                return False
        return v.compare(c) != 0

    def _caret(self, v: Version) -> bool:
        c = self.con
        if v.compare(c) < 0:
            return False
        if c.major > 0 or self.minor_dirty:
            return v.major == c.major
        if v.major > 0:
            return False
        if c.minor > 0 or self.patch_dirty:
            return v.minor == c.minor
        if v.minor > 0:
            return False
        return c.patch == v.patch


@dataclass(frozen=True)
class Constraints:
    """A Masterminds/semver constraint: `||` of groups whose constraints must all hold."""

    text: str
    groups: tuple[tuple[_Constraint, ...], ...]
    group_has_pre: tuple[bool, ...]

    def check(self, v: Version) -> bool:
        return any(all(c.check(v, has_pre) for c in group)
                   for group, has_pre in zip(self.groups, self.group_has_pre, strict=True))


def _is_x(text: str) -> bool:
    return text in ("x", "X", "*")


def _parse_one(text: str, whole: str) -> _Constraint:
    m = _CONSTRAINT.match(text)
    if m is None:
        raise PolicyError(f"invalid semver range {whole!r}: improper constraint {text!r}")
    op, cv, major, minor, patch, pre = m[1], m[2], m[3], m[4] or "", m[5] or "", m[6] or ""
    dirty = minor_dirty = patch_dirty = False
    ver = cv
    if _is_x(major):
        ver, dirty = f"0.0.0{pre}", True
    elif _is_x(minor[1:]) or not minor:
        ver, dirty, minor_dirty = f"{major}.0.0{pre}", True, True
    elif _is_x(patch[1:]) or not patch:
        ver, dirty, patch_dirty = f"{major}{minor}.0{pre}", True, True
    con = new_version(ver)
    if con is None:
        raise PolicyError(f"invalid semver range {whole!r}: {text.strip()!r} is not a version")
    return _Constraint(op, con, cv, dirty, minor_dirty, patch_dirty)


@functools.lru_cache(maxsize=256)
def parse_constraints(text: str) -> Constraints:
    """Masterminds' `NewConstraint`; PolicyError when `text` is not a constraint."""
    rewritten = text
    for m in _RANGE.finditer(text):  # "1.2 - 1.4" is ">= 1.2, <= 1.4"
        rewritten = rewritten.replace(m[0], f">= {m[1]}, <= {m[11]} ", 1)
    groups: list[tuple[_Constraint, ...]] = []
    has_pre: list[bool] = []
    for part in rewritten.split("||"):
        if not _VALID.match(part):
            raise PolicyError(f"invalid semver range {text!r}: improper constraint {part.strip()!r}")
        found = [m[0] for m in _FIND.finditer(part)] or [part]
        group = tuple(_parse_one(s, text) for s in found)
        groups.append(group)
        has_pre.append(any(c.con.pre for c in group))
    return Constraints(text, tuple(groups), tuple(has_pre))


# ---- Go's strconv.ParseFloat ------------------------------------------------------------------

_DEC_FLOAT = re.compile(r"[+-]?(?:[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:[eE][+-]?[0-9][0-9_]*)?", re.ASCII)
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?[0-9][0-9_]*",
                        re.ASCII)
_SPECIAL = re.compile(r"[+-]?(?:inf|infinity)|nan", re.ASCII | re.IGNORECASE)


def _underscores_ok(text: str) -> bool:
    """Go's underscoreOK: an underscore only between digits (or after a base prefix)."""
    s = text[1:] if text[:1] in "+-" else text
    saw, i, hexa = "^", 0, False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    for ch in s[i:]:
        if ch.isdigit() or (hexa and ch.lower() in "abcdef"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def parse_go_float(text: str) -> float | None:
    """Go's `strconv.ParseFloat(text, 64)`, or None where it returns an error (including a
    value out of range, which Go reports as ErrRange)."""
    if _SPECIAL.fullmatch(text):
        return float(text)
    hexa = bool(_HEX_FLOAT.fullmatch(text))
    if not hexa and not _DEC_FLOAT.fullmatch(text):
        return None
    mantissa = re.split(r"[pP]" if hexa else r"[eE]", text)[0]
    digits = re.sub(r"^[+-]?0[xX]", "", mantissa) if hexa else mantissa
    if not re.search(r"[0-9a-fA-F]" if hexa else r"[0-9]", digits):
        return None
    if "_" in text and not _underscores_ok(text):
        return None
    clean = text.replace("_", "")
    try:
        value = float.fromhex(clean) if hexa else float(clean)
    except (ValueError, OverflowError):
        return None
    return None if math.isinf(value) else value


# ---- selection --------------------------------------------------------------------------------

def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def latest(tags: Iterable[str], spec: PolicySpec) -> Selection:
    """The tag `spec` selects among `tags` (see the module docstring); PolicyError when the
    policy itself is invalid."""
    listed = list(tags)
    policy = spec.policy
    if policy.kind == "semver":
        constraints = parse_constraints(policy.range)
    elif policy.kind not in ("alphabetical", "numerical"):
        raise PolicyError(f"unknown policy {policy.kind!r} (semver, alphabetical or numerical)")
    if policy.order not in ("asc", "desc"):
        raise PolicyError(f"order {policy.order!r} is not asc or desc")

    if not listed:
        return Selection(None, (), "the image repository has no tags")
    # value to order by -> the tag it came from, in the registry's order
    values: dict[str, str] = {}
    flt = spec.filter_tags
    if flt is not None:
        rx = compile_go_regex(flt.pattern)
        for tag in listed:
            m = rx.search(tag)
            if m is not None:
                values[expand(flt.extract, m) if flt.extract else tag] = tag
        if not values:
            return Selection(None, (), f"no tag in {_plural(len(listed), 'tag')} matches filterTags.pattern "
                                       f"{flt.pattern!r}")
    else:
        values = {tag: tag for tag in listed}

    counted = _plural(len(values), "tag")
    skipped: list[str] = []
    chosen: str | None = None
    if policy.kind == "semver":
        best: Version | None = None
        for value, tag in values.items():
            v = parse_version(value)
            if v is None:
                skipped.append(tag)
            elif constraints.check(v) and (best is None or v.compare(best) > 0):
                best, chosen = v, value
        if chosen is None:
            return Selection(None, tuple(skipped), f"no tag in {counted} matches semver range {policy.range!r}")
        why = f"the highest version in semver range {policy.range!r} among {counted}"
    elif policy.kind == "alphabetical":
        # Go compares strings byte by byte: for UTF-8 that is code point order, Python's.
        chosen = max(values) if policy.order == "asc" else min(values)
        why = f"{'last' if policy.order == 'asc' else 'first'} in alphabetical order among {counted}"
    else:
        number: float = 0.0
        for value, tag in values.items():
            n = parse_go_float(value)
            if n is None:
                skipped.append(tag)
                continue
            # Flux's loop: a later equal value replaces the earlier one.
            if chosen is not None and (n < number if policy.order == "asc" else n > number):
                continue
            chosen, number = value, n
        if chosen is None:
            return Selection(None, tuple(skipped), f"no tag in {counted} is a number")
        why = f"the {'highest' if policy.order == 'asc' else 'lowest'} number among {counted}"

    tag = values[chosen]
    shown = f"{tag!r}" if chosen == tag else f"{tag!r} ({chosen!r} extracted)"
    # Flux ignores tags that are not versions; it would fail on ones that are not numbers.
    note = f"; {_plural(len(skipped), 'tag')} left out as not a number" if skipped and policy.kind == "numerical" \
        else ""
    return Selection(tag, tuple(skipped), f"{shown} is {why}{note}")
