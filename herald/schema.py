"""A tiny declarative checker for the configuration kinds.

Each field is described once (its YAML name and shape); checking walks the document and reports
every problem with file and line instead of stopping at the first, because `herald validate`
is most useful when one run shows everything to fix.

Fields fall in four groups: honoured (checked and used), `flux_only` (valid in Flux, not acted
on by Herald yet: a warning, so Flux manifests still load but nobody believes they took effect),
`refused` (valid in Flux, but ignoring it would change what Herald does in a way nobody asked
for, e.g. as whom it authenticates: an error giving the reason), and unknown (an error: usually a
typo that would otherwise be silently ignored).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from herald.yamlsrc import LocDict, LocList

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration subset Flux manifests use ("1m0s", "5m", "30s") → seconds."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 5m, 1h0m0s)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


@dataclass
class Diagnostic:
    path: str
    line: int
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        where = f"{self.path}:{self.line}" if self.line else self.path  # 0: about the whole file
        return f"{where}: {prefix}{self.message}"


@dataclass
class Ctx:
    """Where we are while checking: the file, and the diagnostics gathered so far."""

    path: str
    out: list[Diagnostic]
    where: str = ""  # "Receiver default/app" for messages

    def error(self, line: int, msg: str) -> None:
        self.out.append(Diagnostic(self.path, line, f"{self.where}: {msg}" if self.where else msg))

    def warn(self, line: int, msg: str) -> None:
        self.out.append(
            Diagnostic(self.path, line, f"{self.where}: {msg}" if self.where else msg, "warning")
        )


Check = Callable[[Any, str, int, Ctx], Any]
"""A checker: (value, dotted field path, line, ctx) → the cleaned value (or None when invalid)."""


def _type_name(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "null"
    return f"{type(v).__name__} {v!r}"


def string(nonempty: bool = False, choices: tuple[str, ...] = (), pattern: str = "") -> Check:
    rx = re.compile(pattern) if pattern else None

    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, str):
            ctx.error(line, f"{path}: must be a string, got {_type_name(v)}")
            return None
        if nonempty and not v.strip():
            ctx.error(line, f"{path}: must not be empty")
            return None
        if choices and v not in choices:
            ctx.error(line, f"{path}: {v!r} is not one of: {', '.join(choices)}")
            return None
        if rx and not rx.match(v):
            ctx.error(line, f"{path}: {v!r} is not valid")
            return None
        return v

    return check


def boolean() -> Check:
    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, bool):
            ctx.error(line, f"{path}: must be true or false, got {_type_name(v)}")
            return None
        return v

    return check


def integer(minimum: int | None = None) -> Check:
    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, int) or isinstance(v, bool):
            ctx.error(line, f"{path}: must be an integer, got {_type_name(v)}")
            return None
        if minimum is not None and v < minimum:
            ctx.error(line, f"{path}: must be at least {minimum}, got {v}")
            return None
        return v

    return check


def duration() -> Check:
    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, str):
            ctx.error(line, f"{path}: must be a duration string such as 5m, got {_type_name(v)}")
            return None
        try:
            return parse_duration(v)
        except ValueError as exc:
            ctx.error(line, f"{path}: {exc}")
            return None

    return check


def regex() -> Check:
    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, str):
            ctx.error(line, f"{path}: must be a regular expression string, got {_type_name(v)}")
            return None
        try:
            return re.compile(v).pattern
        except re.error as exc:
            ctx.error(line, f"{path}: invalid regular expression {v!r}: {exc}")
            return None

    return check


def template() -> Check:
    """A Jinja2 message template (notifier/templates.py), compiled now so a typo is a
    validate error at its line, not a notification that silently falls back."""

    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, str):
            ctx.error(line, f"{path}: must be a template string, got {_type_name(v)}")
            return None
        from notifier.templates import TemplateProblem, check as compile_template

        try:
            compile_template(v)
        except TemplateProblem as exc:
            ctx.error(line, f"{path}: {exc}")
            return None
        return v

    return check


def string_map() -> Check:
    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, dict):
            ctx.error(line, f"{path}: must be a mapping of strings, got {_type_name(v)}")
            return None
        out = {}
        for k, val in v.items():
            kl = v.line_of(k) if isinstance(v, LocDict) else line
            if not isinstance(val, str):
                ctx.error(kl, f"{path}.{k}: must be a string, got {_type_name(val)} (quote it)")
                continue
            out[str(k)] = val
        return out

    return check


def list_of(item: Check, nonempty: bool = False) -> Check:
    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, list):
            ctx.error(line, f"{path}: must be a list, got {_type_name(v)}")
            return None
        if nonempty and not v:
            ctx.error(line, f"{path}: must list at least one entry")
            return None
        out = []
        for i, entry in enumerate(v):
            il = v.line_of(i) if isinstance(v, LocList) else line
            cleaned = item(entry, f"{path}[{i}]", il, ctx)
            if cleaned is not None:
                out.append(cleaned)
        return out

    return check


@dataclass
class Obj:
    """A mapping with known fields; see the module docstring for the three groups."""

    fields: dict[str, Check]
    required: tuple[str, ...] = ()
    flux_only: tuple[str, ...] = ()
    extra: Callable[[dict[str, Any], LocDict, str, Ctx], None] | None = None
    refused: dict[str, str] = field(default_factory=dict)  # Flux field -> why Herald refuses it

    def __call__(self, v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, dict):
            ctx.error(line, f"{path}: must be a mapping, got {_type_name(v)}")
            return None
        loc = v if isinstance(v, LocDict) else LocDict()
        for key, dup_line in getattr(v, "duplicates", []):
            ctx.error(dup_line, f"{path}.{key}: duplicate key")
        out: dict[str, Any] = {}
        ok = True
        for key, value in v.items():
            kl = loc.line_of(key)
            sub = f"{path}.{key}" if path else str(key)
            if key in self.fields:
                cleaned = self.fields[key](value, sub, kl, ctx)
                if cleaned is None and value is not None:
                    ok = False
                out[key] = cleaned
            elif key in self.flux_only:
                ctx.warn(kl, f"{sub}: Flux field not acted on by Herald yet; it is ignored")
            elif key in self.refused:
                ctx.error(kl, f"{sub}: not supported by Herald: {self.refused[key]}")
                ok = False
            else:
                known = ", ".join(sorted(self.fields))
                ctx.error(kl, f"{sub}: unknown field (known fields: {known})")
        for key in self.required:
            if out.get(key) in (None, "", [], {}) and key not in v:
                sub = f"{path}.{key}" if path else key
                ctx.error(line, f"{sub}: required field is missing")
                ok = False
        if ok and self.extra:
            self.extra(out, loc, path, ctx)
        return out if ok else None


def dns_name(v: str) -> bool:
    return len(v) <= 253 and bool(_DNS1123_SUBDOMAIN.match(v))
