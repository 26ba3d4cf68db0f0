"""A forge repository's address, parsed once for the commit-status providers and the
pull-request comment clients: an http(s) or ssh URL cut into scheme, host, port and path.
Never shown whole (an address may carry credentials); messages use `host`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from herald.http import DeliveryError

_SCP_LIKE = re.compile(r"(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?!//)(?P<path>\S+)")


@dataclass(frozen=True)
class Repository:
    """A repository address cut into what the forge APIs need. Never shown whole: an address
    may carry credentials (`https://user:token@host/...`), so messages use `host` only."""

    scheme: str
    hostname: str
    port: int | None
    path: tuple[str, ...]

    @property
    def host(self) -> str:
        return self.hostname + (f":{self.port}" if self.port else "")

    @property
    def origin(self) -> str:
        netloc = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.scheme}://{netloc}" + (f":{self.port}" if self.port else "")

    @property
    def url(self) -> str:
        """The repository's web URL, without credentials."""
        return self.origin + "/" + "/".join(self.path)


def repository(address: str, forge: str, example: str) -> Repository:
    """Parse a Provider address: an http(s) repository URL, or an ssh one (`ssh://git@host/o/r`,
    `git@host:o/r.git`), which is read as https on the same host, as Flux reads it."""
    text = address.strip()
    scp = _SCP_LIKE.fullmatch(text)
    try:
        if scp and "://" not in text:
            scheme, hostname, port, path = "https", scp["host"], None, scp["path"]
        else:
            parts = urlsplit(text)
            if parts.scheme == "ssh":
                scheme, port = "https", None
            elif parts.scheme in ("http", "https"):
                scheme, port = parts.scheme, parts.port
            else:
                raise ValueError("unsupported scheme")
            hostname, path = parts.hostname or "", parts.path
    except ValueError:
        hostname, path = "", ""
        scheme, port = "", None
    segments = tuple(s for s in path.strip("/").removesuffix(".git").split("/") if s)
    if not hostname or not segments:
        raise DeliveryError(
            f"{forge}: the Provider's address must be the repository's URL, such as {example}",
            retryable=False,
        )
    return Repository(scheme, hostname.lower(), port, segments)


def two_part_repository(address: str, forge: str, parts: str, host_example: str) -> Repository:
    """`repository`, for forges whose repositories are always `<owner>/<repo>` (GitHub, Gitea,
    Bitbucket Cloud): the commit-status providers and the comment clients refuse the same
    addresses with the same words. `parts` names the two ("<owner>/<repo>")."""
    repo = repository(address, forge, f"https://{host_example}/{parts}")
    if len(repo.path) != 2:
        raise DeliveryError(f"{forge}: the Provider's address must be https://<host>/{parts}", retryable=False)
    return repo
