"""YAML loading that remembers where every value came from.

Configuration errors are only useful when they point at a line: PyYAML's plain loaders drop
positions, so this loader builds dicts and lists that keep the line of each key and item.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class LocDict(dict):
    """A mapping that knows its own line and the line of each of its keys."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int]] = []

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)


class LocList(list):
    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.lines[index] if 0 <= index < len(self.lines) else self.line


class _Loader(yaml.SafeLoader):
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


Loader = _Loader | _FastLoader


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
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: Loader, node: yaml.SequenceNode) -> LocList:
    result = LocList()
    result.line = node.start_mark.line + 1
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.lines.append(child.start_mark.line + 1)
    return result


for _cls in (_Loader, _FastLoader):
    _cls.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
    _cls.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


@dataclass
class Document:
    path: str
    line: int
    data: Any


class YAMLSyntaxError(Exception):
    def __init__(self, path: str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


def load_documents(text: str, path: str) -> Iterator[Document]:
    """Yield each non-empty document of a multi-document YAML stream with its start line.

    Documents before a syntax error are yielded first (`herald validate` reports them too);
    the error then carries the pure-Python parser's wording, which names what it found.
    """
    yielded = 0
    try:
        for doc in _documents(_FastLoader(text), path):
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
        raise YAMLSyntaxError(path, line, f"invalid YAML: {problem}") from None
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
