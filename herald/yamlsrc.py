"""YAML loading that remembers where every value came from, and reads scalars as kustomize does.

Configuration errors are only useful when they point at a line: PyYAML's plain loaders drop
positions, so this loader builds dicts and lists that keep the line of each key and item.

PyYAML resolves plain scalars with YAML 1.1 rules; kustomize (and so Flux) reads with go-yaml v3,
which follows the YAML 1.2 core schema with a few keepsakes of its own. What lands in the cluster
is what go-yaml made of the text, so this loader resolves plain scalars as go-yaml v3 does:

- booleans are `true`/`True`/`TRUE` and `false`/`False`/`FALSE` only: `on`, `yes`, `y`, `off`,
  `no` stay strings;
- null is `~`, `null`, `Null`, `NULL` or nothing;
- integers are Go's `strconv.ParseInt(text, 0, 64)` of the text without its underscores
  (decimal, `0x`, `0o`, `0b`, and a leading `0` for octal, as YAML 1.1 wrote it: `012` is 10),
  then unsigned 64-bit; `12:30` is no number (no sexagesimal);
- floats are decimal (`1.5`, `1e3`, `.5`, `09`, and integers too big for 64 bits), and
  `.inf`/`.nan` in their three spellings; one that overflows stays a string;
- `2024-01-01`, `2024-01-01T10:00:00Z`, `2024-01-01 10:00:00` (go-yaml's four timestamp layouts)
  are `Timestamp`s: strings that keep their text, and know the RFC 3339 text kustomize writes
  for them;
- `=` and everything else is a string; `<<` merges only as a mapping key.

Measured against `kubectl kustomize` (kustomize v5.5); see tests/test_yaml12.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml


class LocDict(dict):
    """A mapping that knows its own line and the line of each of its keys."""

    line: int = 0
    _texts: dict[Any, str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int]] = []

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)

    def text_of(self, key: Any) -> str | None:
        """The source text of the scalar under `key` when the loader made it something other
        than a plain string (a number, a boolean, null, a timestamp); None otherwise.
        kustomize keeps annotations as that text."""
        return self._texts.get(key) if self._texts else None


class Timestamp(str):
    """A plain scalar go-yaml reads as a timestamp. It stays its own text (`2024-01-01`), as
    configuration wants; `instant` is the RFC 3339 text kustomize writes in its place
    (`2024-01-01T00:00:00Z`), which is what Flux applies."""

    instant: str

    def __new__(cls, text: str, instant: str) -> Self:
        self = super().__new__(cls, text)
        self.instant = instant
        return self


class LocList(list):
    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.lines[index] if 0 <= index < len(self.lines) else self.line


class _LastAnchorWins(yaml.composer.Composer):
    """PyYAML's composer, except that an anchor defined again replaces the earlier one for the
    aliases after it, as YAML 1.2, go-yaml (kustomize) and kubectl read it; PyYAML refuses
    ("found duplicate anchor")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor is not None:
                self.anchors.pop(anchor, None)
        return super().compose_node(parent, index)


class _Loader(_LastAnchorWins, yaml.SafeLoader):
    """SafeLoader (no arbitrary objects) whose maps and lists carry line numbers.

    Pure Python: slow, but its error messages name what it found (the undefined alias, the tab).
    It reads a text again only after `_FastLoader` has refused it.
    """


# libyaml parses about five times faster than PyYAML's Python scanner: for a Kustomization of
# 1,000 manifests that is ~1 s of every reconcile (bench/RESULTS.md). Its nodes carry the same
# marks, so the constructors below give identical objects and lines.
_FastBase: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FastLoader(_FastBase):  # type: ignore[misc, valid-type]
    """`_Loader` on libyaml, when PyYAML was built with it."""


_CParser: type | None = getattr(getattr(yaml, "cyaml", None), "CParser", None)


class _EventLoader(_LastAnchorWins, *((_CParser,) if _CParser else ()),  # type: ignore[misc]
                   yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """libyaml's parser under PyYAML's composer: for the rare text that defines an anchor twice,
    which libyaml's own composer refuses. Nearly as fast as `_FastLoader` (building the objects
    costs more than composing the nodes), five times `_Loader`."""

    def __init__(self, stream: str) -> None:
        _CParser.__init__(self, stream)  # type: ignore[misc]
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


Loader = _Loader | _FastLoader | _EventLoader

_STR, _INT, _FLOAT = "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_BOOL, _NULL, _MERGE = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
# Plain scalars that start like a number go-yaml tries as a timestamp, an integer and a float,
# in that order; `_go_scalar` does the same and keeps the text when nothing fits.
_NUMBERISH = "tag:herald.dev,2026:numberish"

_GO_INT = re.compile(r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|(0[0-7]*)|([1-9][0-9]*))")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_GO_DOT_FLOAT = re.compile(r"\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?")
_GO_SPECIAL = {**dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
               **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
               **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan)}
# go-yaml's layouts: 2006-1-2T15:4:5.999999999Z07:00 (T or t), 2006-1-2 15:4:5.999999999, 2006-1-2.
_GO_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
    r"(?:(?:[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,]([0-9]+))?(Z|[-+][0-9]{2}:[0-9]{2}))"
    r"|(?: +([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,]([0-9]+))?))?")
_INT64, _UINT64 = 1 << 63, 1 << 64
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _go_timestamp(text: str) -> Timestamp | None:
    """`text` as go-yaml's timestamp (Go's time.Parse, ranges checked), or None."""
    m = _GO_TIMESTAMP.fullmatch(text)
    if m is None:
        return None
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS[month - 1] + (month == 2 and leap):
        return None
    clock = m.group(4, 5, 6, 7) if m[4] is not None else m.group(9, 10, 11, 12)
    zone = m[8] or "Z"
    if clock[0] is None:
        return Timestamp(text, f"{year:04d}-{month:02d}-{day:02d}T00:00:00Z")
    hour, minute, second = int(clock[0]), int(clock[1]), int(clock[2])
    if hour > 23 or minute > 59 or second > 59 or int(zone[1:3] or 0) > 23 or int(zone[4:6] or 0) > 59:
        return None
    fraction = (clock[3] or "")[:9].rstrip("0")
    if zone[1:] in ("00:00", ""):
        zone = "Z"  # Go reads a zero offset as UTC
    return Timestamp(text, f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
                           f"{'.' + fraction if fraction else ''}{zone}")


def _go_scalar(text: str) -> Any:
    """A plain scalar that starts with a digit, a sign or a dot, as go-yaml v3 resolves it."""
    special = _GO_SPECIAL.get(text)
    if special is not None:
        return special
    if text[0] == ".":
        return float(text.replace("_", "")) if _GO_DOT_FLOAT.fullmatch(text) else text
    if len(text) > 4 and text[4] == "-":  # go-yaml tries a timestamp only after four digits and a dash
        stamp = _go_timestamp(text)
        if stamp is not None:
            return stamp
    plain = text.replace("_", "")
    m = _GO_INT.fullmatch(plain)
    if m is not None:
        sign, hexa, octal, binary, old_octal, decimal = m.groups()
        if decimal is not None:
            value = int(decimal)
        elif hexa is not None:
            value = int(hexa, 16)
        elif old_octal is not None or octal is not None:
            value = int(old_octal or octal, 8)  # "0" included
        else:
            value = int(binary, 2)
        if sign == "-":
            value = -value
        if -_INT64 <= value < _INT64 or (not sign and value < _UINT64):
            return value
    if _GO_FLOAT.fullmatch(plain):
        value = float(plain)
        if not math.isinf(value):  # Go's ParseFloat refuses what overflows: the text stays
            return value
    return text


def _construct_numberish(loader: Loader, node: yaml.ScalarNode) -> Any:
    return _go_scalar(node.value)


def _construct_timestamp(loader: Loader, node: yaml.ScalarNode) -> Timestamp:
    """An explicit `!!timestamp`: go-yaml's reading, never a datetime (JSON has none)."""
    stamp = _go_timestamp(node.value)
    if stamp is None:
        raise yaml.constructor.ConstructorError(None, None, f"not a timestamp: {node.value!r}", node.start_mark)
    return stamp


def _construct_mapping(loader: Loader, node: yaml.MappingNode) -> LocDict:
    loader.flatten_mapping(node)
    result = LocDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be scalars", key_node.start_mark
            )
        if key in result:
            result.duplicates.append((key, key_node.start_mark.line + 1))
        value = result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
        if value.__class__ is not str and value_node.__class__ is yaml.ScalarNode:
            if result._texts is None:
                result._texts = {}
            result._texts[key] = value_node.value
    return result


def _construct_sequence(loader: Loader, node: yaml.SequenceNode) -> LocList:
    result = LocList()
    result.line = node.start_mark.line + 1
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.lines.append(child.start_mark.line + 1)
    return result


for _cls in (_Loader, _FastLoader, _EventLoader):
    _cls.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
    _cls.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
    _cls.add_constructor(_NUMBERISH, _construct_numberish)
    _cls.add_constructor(_TIMESTAMP, _construct_timestamp)
    _cls.add_constructor(_MERGE, yaml.constructor.SafeConstructor.construct_scalar)  # `<<` as a value
    # go-yaml v3's implicit types, in place of PyYAML's YAML 1.1 ones (yes/no/on/off, 1:30, =).
    _cls.yaml_implicit_resolvers = {}
    _cls.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    _cls.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
    _cls.add_implicit_resolver(_MERGE, re.compile(r"^<<$"), ["<"])
    _cls.add_implicit_resolver(_NUMBERISH, re.compile(r"[-+.0-9]"), list("-+.0123456789"))


@dataclass
class Document:
    path: str
    line: int
    data: Any


def located(value: Any) -> Any:
    """A JSON value as the loader's LocDict/LocList (line 0: it has no lines of its own), so
    objects that come from elsewhere (the cluster, a render) are checked like files."""
    if isinstance(value, dict):
        out = LocDict()
        for k, v in value.items():
            out[k] = located(v)
        return out
    if isinstance(value, list):
        items = LocList()
        items.extend(located(v) for v in value)
        return items
    return value


class YAMLSyntaxError(Exception):
    def __init__(self, path: str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


class _DuplicateAnchor(YAMLSyntaxError):
    """libyaml's composer refused an anchor defined twice, which YAML 1.2 allows."""


def load_documents(text: str, path: str) -> Iterator[Document]:
    """Yield each non-empty document of a multi-document YAML stream with its start line.

    Documents before a syntax error are yielded first (`herald validate` reports them too);
    the error then carries the pure-Python parser's wording, which names what it found.
    """
    yielded = 0
    try:
        try:
            for doc in _documents(_FastLoader(text), path):
                yielded += 1
                yield doc
        except _DuplicateAnchor:
            # Compose again in Python, where the later anchor wins, on libyaml's events.
            for i, doc in enumerate(_documents(_EventLoader(text), path)):
                if i >= yielded:
                    yielded += 1
                    yield doc
    except YAMLSyntaxError:
        if _FastLoader is _Loader:
            raise
        # PyYAML's error, with its wording, propagates from here.
        for i, doc in enumerate(_documents(_Loader(text), path)):
            if i >= yielded:
                yield doc
        raise  # PyYAML read it all: the two disagree, and libyaml's refusal stands


def _documents(loader: Loader, path: str) -> Iterator[Document]:
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                yield Document(path, node.start_mark.line + 1, data)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}: {problem}"
        refusal = _DuplicateAnchor if "found duplicate anchor" in problem else YAMLSyntaxError
        raise refusal(path, line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(path, 1, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def yaml_files(root: Path) -> list[Path]:
    """The YAML files a path names: itself, or every *.yaml/*.yml below a directory, sorted.

    Hidden directories (.git and friends) are skipped: a config directory is often a Git
    checkout.
    """
    if root.is_file():
        return [root]
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and p.suffix in (".yaml", ".yml"):
            found.append(p)
    return found
