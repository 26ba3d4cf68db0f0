"""Process settings: command-line flags, each with an environment variable (12-factor).

`receiver.app:create_app()` under gunicorn has no flags, so everything a component needs can
come from the environment alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from herald.schema import parse_duration

DEFAULT_LISTEN = "127.0.0.1:9292"
DEFAULT_MAX_BODY = 3 * 1024 * 1024  # GitHub caps payloads at 25 MB; pushes are far smaller
DEFAULT_DEDUPE_WINDOW = 24 * 3600.0


@dataclass
class Settings:
    config: list[str] = field(default_factory=list)
    broker_url: str = ""
    state_dir: Path = Path(".herald")
    listen: str = DEFAULT_LISTEN
    secrets_dir: str = ""
    log_level: str = "INFO"
    log_format: str = "text"  # HERALD_LOG_FORMAT: text or json
    metrics_listen: str = ""  # HERALD_METRICS_LISTEN: worker/notifier /healthz, /readyz, /metrics
    max_body: int = DEFAULT_MAX_BODY
    dedupe_window: float = DEFAULT_DEDUPE_WINDOW  # seconds a delivery id is remembered
    # HERALD_FROM_CLUSTER: also read the herald.dev/v1 objects of the cluster, and watch them.
    from_cluster: bool = False
    watch_namespace: str = ""  # HERALD_WATCH_NAMESPACE: only this namespace; "" = all of them
    # HERALD_OPERATOR_SECRET: NS/NAME of the Secret whose `token` allows changes over the
    # operator API (and whose `readToken`, if set, is needed to read it).
    operator_secret: str = ""
    history_retention: float = 7 * 24 * 3600.0  # HERALD_HISTORY_RETENTION: how long history is kept

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        listen = env.get("HERALD_LISTEN") or ""
        if not listen and env.get("PORT"):
            # Procfile platforms (Heroku, Dokku, Cloud Foundry...) hand out a port in $PORT.
            listen = f"0.0.0.0:{env['PORT']}"
        config = env.get("HERALD_CONFIG", "")
        return cls(
            config=[p for p in config.split(os.pathsep) if p],
            broker_url=env.get("HERALD_BROKER_URL", ""),
            state_dir=Path(env.get("HERALD_STATE_DIR") or ".herald"),
            listen=listen or DEFAULT_LISTEN,
            secrets_dir=env.get("HERALD_SECRETS_DIR", ""),
            log_level=env.get("HERALD_LOG_LEVEL", "INFO").upper(),
            log_format=(env.get("HERALD_LOG_FORMAT") or "text").strip().lower(),
            metrics_listen=env.get("HERALD_METRICS_LISTEN", ""),
            max_body=int(env.get("HERALD_MAX_BODY") or DEFAULT_MAX_BODY),
            dedupe_window=env_seconds(env, "HERALD_DEDUPE_WINDOW", DEFAULT_DEDUPE_WINDOW),
            from_cluster=env_flag(env, "HERALD_FROM_CLUSTER"),
            watch_namespace=(env.get("HERALD_WATCH_NAMESPACE") or "").strip(),
            operator_secret=(env.get("HERALD_OPERATOR_SECRET") or "").strip(),
            history_retention=env_seconds(env, "HERALD_HISTORY_RETENTION", 7 * 24 * 3600.0),
        )

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return (host or "127.0.0.1").strip("[]"), int(port)


def env_flag(env: dict[str, str], name: str, default: bool = False) -> bool:
    """An on/off setting from the environment: 1/true/yes/on or 0/false/no/off, in any case;
    unset (or anything else) keeps the default."""
    word = (env.get(name) or "").strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    return default


def env_seconds(env: dict[str, str], name: str, default: float) -> float:
    """A duration from the environment: plain seconds ("30", "0.5") or Flux's form ("1m30s")."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def state_dir_problem(path: Path) -> str:
    """Why Herald cannot keep its state in `path` ("" when it can): made if missing, and a
    file written and removed in it, so that a directory Herald cannot use is one clear line
    at start-up instead of a traceback at the first message."""
    if path.exists() and not path.is_dir():
        return "exists and is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".herald-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"cannot be used: {exc.strerror or exc}"
    return ""
