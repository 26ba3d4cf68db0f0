"""The operator's commands: `herald get`, `reconcile`, `suspend`, `resume`, `events`,
`deliveries`, `dead-letters`, in the flux CLI's shape, talking to a running Herald.

They are HTTP clients of the operator API (`receiver.operator.api`) on the receiver's port:
`--server URL` (HERALD_SERVER; default the `--listen` address), with the operator token from
HERALD_TOKEN or `--token-file` for the commands that change something. They never open the
bus, the state directory or the cluster themselves, so they work the same against a laptop's
`herald serve` and a production Deployment behind a port-forward.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests
import yaml

from herald.history import age

# The words after `herald reconcile|suspend|resume`, as the flux CLI spells them.
TARGETS: dict[str, str] = {
    "kustomization": "Kustomization", "ks": "Kustomization",
    "source git": "GitRepository", "source oci": "OCIRepository",
    "receiver": "Receiver", "alert": "Alert", "provider": "Provider",
    "image repository": "ImageRepository", "image update": "ImageUpdateAutomation",
}
RECONCILE_TARGETS = ("kustomization", "ks", "source git", "source oci", "image repository")
GROUPS = ("kustomizations", "sources", "receivers", "providers", "alerts", "images")
DEAD_ACTIONS = ("list", "show", "replay", "drop")


class CliError(Exception):
    """One line for stderr; exit code `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---- arguments ------------------------------------------------------------------------------


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--server", default=argparse.SUPPRESS, metavar="URL",
                        help="the running Herald's operator API (env HERALD_SERVER; default http://<--listen>)")
    client.add_argument("--token-file", default=argparse.SUPPRESS, metavar="PATH",
                        help="a file holding the operator token (env HERALD_TOKEN holds the token itself)")
    client.add_argument("--timeout", default="5m", metavar="DURATION",
                        help="how long to wait for Herald (and, for reconcile, for the run's outcome); default 5m")
    parents = [common, client]

    get = sub.add_parser("get", parents=parents, help="list objects with their state (as `flux get`)",
                         description="list objects with their state: ready, revision applied, last run, "
                                     "suspended, message")
    get.add_argument("group", type=_group, metavar="|".join(GROUPS))
    _namespaces(get)
    get.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    for name, verb in (("reconcile", "queue a reconcile now and wait for its outcome (exit 0 on success, 1 on "
                                     "failure)"),
                       ("suspend", "stop reconciling (delivering, sending) an object, for every replica, "
                                   "until resumed"),
                       ("resume", "lift an operator's suspend")):
        p = sub.add_parser(name, parents=parents, help=verb, description=verb)
        p.add_argument("what", nargs="+", metavar="KIND [NAME]",
                       help="kustomization NAME, source git NAME, source oci NAME, receiver NAME, alert NAME, "
                            "provider NAME, image repository NAME, image update NAME")
        p.add_argument("-n", "--namespace", default=None, metavar="NS",
                       help="the object's namespace (default: the only object of that name, in whichever namespace)")
        if name == "reconcile":
            p.add_argument("--with-source", action="store_true",
                           help="accepted for flux habits: Herald always fetches the source's tip first")

    events = sub.add_parser("events", parents=parents, help="recent events: time, object, reason, revision, message",
                            description="recent events, oldest first (as `flux events`)")
    events.add_argument("--for", dest="for_", default="", metavar="KIND/NAME")
    _namespaces(events)
    events.add_argument("-w", "--watch", action="store_true", help="keep printing new events")
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    deliveries = sub.add_parser("deliveries", parents=parents,
                                help="recent webhook deliveries: receiver, event, delivery id, answer, what they "
                                     "triggered", description="recent webhook deliveries, newest first")
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.add_argument("--trace", metavar="DELIVERY_ID", default="",
                            help="one delivery's path: requests, runs, events, notifications")
    deliveries.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    dead = sub.add_parser("dead-letters", parents=parents,
                          help="messages that failed too often: list, show ID, replay ID|--all, drop ID|--all",
                          description="dead-lettered messages of every queue, on RabbitMQ or the embedded bus")
    dead.add_argument("action", choices=DEAD_ACTIONS)
    dead.add_argument("id", nargs="?", default="")
    dead.add_argument("--all", action="store_true", help="replay or drop every dead letter")
    dead.add_argument("--queue", default="", help="only this queue (herald.reconcile, herald.notifications, …)")
    dead.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")


GROUP_ALIASES = {"ks": "kustomizations", "kustomization": "kustomizations", "source": "sources",
                 "receiver": "receivers", "provider": "providers", "alert": "alerts", "image": "images"}


def _group(text: str) -> str:
    group = GROUP_ALIASES.get(text.lower(), text.lower())
    if group not in GROUPS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(GROUPS)} (or ks)")
    return group


def _namespaces(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("-n", "--namespace", default=None, metavar="NS", help="only this namespace")
    group.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (the default)")


# ---- the client -----------------------------------------------------------------------------


def _seconds(text: str) -> float:
    from herald.settings import env_seconds

    try:
        value = env_seconds({"T": text}, "T", -1.0)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise CliError(f"--timeout {text!r}: expected a duration such as 30s, 5m or 1h", 2)
    return value


class Client:
    def __init__(self, server: str, token: str, timeout: float) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.http = requests.Session()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            resp = self.http.request(method, self.server + "/api/v1" + path, json=body, params=params,
                                     headers=headers, timeout=min(30.0, self.timeout))
        except requests.ConnectionError:
            raise CliError(f"cannot reach Herald at {self.server}: is it running? (--server URL or "
                           "HERALD_SERVER)") from None
        except requests.RequestException as exc:
            raise CliError(f"cannot reach Herald at {self.server}: {type(exc).__name__}") from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            why = data.get("error") if isinstance(data, dict) else resp.text[:200]
            if resp.status_code == 404 and data is None:
                why = f"{self.server} has no operator API (is it Herald, and this version?)"
            raise CliError(f"{why} (HTTP {resp.status_code})")
        return data


def client_of(args: argparse.Namespace, settings_listen: str) -> Client:
    server = getattr(args, "server", None) or os.environ.get("HERALD_SERVER") or ""
    if not server:
        host, _, port = settings_listen.rpartition(":")
        host = host.strip("[]")
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        server = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    token = os.environ.get("HERALD_TOKEN", "").strip()
    path = getattr(args, "token_file", None)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise CliError(f"--token-file {path}: {exc.strerror or exc}", 2) from None
    return Client(server, token, _seconds(args.timeout))


# ---- output ---------------------------------------------------------------------------------


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"


def _table(header: list[str], rows: list[list[str]], out: Callable[[str], None]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for line in [header, *rows]:
        out("  ".join(cell.ljust(widths[i]) if i < len(line) - 1 else cell for i, cell in enumerate(line)).rstrip())


def _dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")


def _short_revision(revision: str) -> str:
    head, sep, sha = revision.rpartition(":")
    return f"{head}:{sha[:12]}" if sep and len(sha) > 12 else revision


# ---- commands -------------------------------------------------------------------------------


def cmd_get(c: Client, args: argparse.Namespace) -> int:
    params = {"namespace": args.namespace} if args.namespace else None
    items = c.call("GET", f"/get/{args.group}", params=params)["items"]
    if args.output != "table":
        _dump(items, args.output)
        return 0
    if not items:
        where = f" in namespace {args.namespace}" if args.namespace else ""
        print(f"no {args.group} found{where}", file=sys.stderr)
        return 0
    kinds = {i["kind"] for i in items}
    header = ["NAMESPACE", "NAME", "READY", "REVISION", "LAST RUN", "OUTCOME", "SUSPENDED", "MESSAGE"]
    rows = []
    for i in items:
        name = f"{i['kind']}/{i['name']}" if len(kinds) > 1 else i["name"]
        ready = "Progressing" if i.get("progressing") else i["ready"]
        suspended = "True" + (f" ({i['suspendedBy']})" if i.get("suspendedBy") == "operator" else "") \
            if i["suspended"] else "False"
        revision = i.get("lastAppliedRevision") or i.get("revision") or "-"
        rows.append([i["namespace"], name, ready, _short_revision(revision), age(i.get("lastRunAt")) or "-",
                     i.get("reason") or "-", suspended, i.get("summary") or ""])
    _table(header, rows, print)
    return 0


def _target(c: Client, args: argparse.Namespace, words: tuple[str, ...]) -> tuple[str, str, str]:
    """(kind, namespace, name) from `kustomization NAME` / `source git NAME` and `-n`."""
    what = [w.lower() for w in args.what]
    for size in (2, 1):
        phrase = " ".join(what[:size])
        if phrase in TARGETS and phrase in words and len(args.what) == size + 1:
            kind, name = TARGETS[phrase], args.what[size]
            break
    else:
        raise CliError(f"herald {args.command}: expected one of: {', '.join(w + ' NAME' for w in words)}; got "
                       f"{' '.join(args.what)!r}", 2)
    namespace = args.namespace
    if namespace is None:  # the only object of that name, as there usually is one
        group = {"Kustomization": "kustomizations", "GitRepository": "sources", "OCIRepository": "sources",
                 "Receiver": "receivers", "Alert": "alerts", "Provider": "providers"}.get(kind, "images")
        found = [i["namespace"] for i in c.call("GET", f"/get/{group}")["items"]
                 if i["kind"] == kind and i["name"] == name]
        if len(found) > 1:
            raise CliError(f"{kind} {name} exists in {', '.join(sorted(found))}: say which with -n", 2)
        namespace = found[0] if found else "default"
    return kind, namespace, name


def cmd_reconcile(c: Client, args: argparse.Namespace) -> int:
    kind, ns, name = _target(c, args, RECONCILE_TARGETS)
    asked = c.call("POST", "/reconcile", {"kind": kind, "namespace": ns, "name": name})
    print(f"► reconcile of {kind} {ns}/{name} requested (request {asked['request']})")
    print("◎ waiting for the outcome")
    deadline = time.monotonic() + c.timeout
    since = float(asked.get("at") or time.time()) - 1.0
    while time.monotonic() < deadline:
        done = _outcome(c, kind, ns, name, asked["request"], since)
        if done is not None:
            ok, line = done
            print(("✔ " if ok else "✗ ") + line)
            return 0 if ok else 1
        time.sleep(0.5)
    print(f"✗ no outcome within {args.timeout}: the request is queued; see `herald events --for {kind}/{name}`",
          file=sys.stderr)
    return 1


def _outcome(c: Client, kind: str, ns: str, name: str, request: str, since: float) -> tuple[bool, str] | None:
    target = f"{kind}/{ns}/{name}"
    try:
        taken = c.call("GET", f"/requests/{request}")
    except CliError:
        taken = None  # not taken by a worker yet
    if taken and taken.get("result") in ("skipped", "rejected"):
        return False, f"not run: {taken.get('error') or taken.get('result')}"
    if kind == "ImageRepository":
        for item in c.call("GET", "/images")["items"]:
            if item.get("request") == request:
                steps = "; ".join(f"{s['kind']} {s['name']}: {s['reason']}" for s in item.get("steps", []))
                return not item.get("error"), (item.get("error") or steps or "scanned")
        return None
    runs = c.call("GET", "/runs", params={"target": target, "limit": 20})["items"]
    finished = [r for r in runs if (r.get("at") or 0) >= since and r.get("state") not in ("running", "handed back")]
    if not finished:
        return None
    run = min(finished, key=lambda r: r.get("at") or 0)
    mine = run.get("outcome")
    if kind == "Kustomization" and mine:
        revision = mine.get("revision") or run.get("revision") or ""
        ok = mine.get("severity") != "error"
        took = f" in {run['duration']:.1f}s" if run.get("duration") is not None else ""
        head = f"applied revision {revision}" if ok else f"{mine.get('reason')}{took}"
        detail = "" if ok else "\n" + mine.get("message", "")
        return ok, f"{head} ({mine.get('reason')}{took}){detail}" if ok else f"{head}{detail}"
    # A source, as `flux reconcile source git`: its own fetch decides; the Kustomizations it
    # reconciled as well are listed under it.
    own = [o for o in run.get("objects", []) if o["kind"] == kind and o["name"] == name and o["namespace"] == ns]
    ok = bool(run.get("revision")) and not any(o["severity"] == "error" for o in own)
    lines = [f"  {'✗' if o['severity'] == 'error' else '✔'} {o['kind']} {o['namespace']}/{o['name']}: {o['reason']}"
             for o in run.get("objects", []) if o not in own]
    text = (f"fetched revision {run.get('revision')}" if ok else
            "\n".join(o["message"] for o in own) or run.get("error") or "the fetch failed")
    return ok, "\n".join([text, *lines])


def cmd_suspend(c: Client, args: argparse.Namespace, suspend: bool) -> int:
    kind, ns, name = _target(c, args, tuple(TARGETS))
    c.call("POST", "/suspend" if suspend else "/resume", {"kind": kind, "namespace": ns, "name": name})
    # Replicas learn it from the bus's log within moments: wait until the answer says so, so
    # that the next command (to any replica) sees what this one did.
    deadline = time.monotonic() + min(10.0, c.timeout)
    while time.monotonic() < deadline:
        found = c.call("GET", f"/objects/{kind}/{ns}/{name}")["object"]
        if bool(found["suspended"]) == suspend and (suspend or found.get("suspendedBy") != "operator"):
            time.sleep(0.3)  # the other replicas' readers of the log are ~50 ms behind this one
            break
        time.sleep(0.2)
    print(f"✔ {kind} {ns}/{name} {'suspended' if suspend else 'resumed'}")
    return 0


def cmd_events(c: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.for_:
        params["for"] = args.for_
    if args.namespace:
        params["namespace"] = args.namespace
    items = list(reversed(c.call("GET", "/events", params=params)["items"]))
    if args.output != "table":
        _dump(items, args.output)
        return 0
    header = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "REVISION", "MESSAGE"]

    def line(e: dict[str, Any]) -> list[str]:
        return [_when(e.get("at")), "Warning" if e.get("severity") == "error" else "Normal", e.get("reason", ""),
                f"{e.get('kind')}/{e.get('namespace')}/{e.get('name')}", _short_revision(e.get("revision") or "-"),
                " ".join((e.get("message") or "").split("\n"))[:300]]

    _table(header, [line(e) for e in items], print)
    if not args.watch:
        return 0
    last = max((e.get("at") or 0 for e in items), default=time.time())
    try:
        while True:
            time.sleep(1.0)
            new = list(reversed(c.call("GET", "/events", params={**params, "after": last})["items"]))
            for e in new:
                print("  ".join(line(e)), flush=True)
                last = max(last, e.get("at") or 0)
    except KeyboardInterrupt:
        return 0


def cmd_deliveries(c: Client, args: argparse.Namespace) -> int:
    if args.trace:
        found = c.call("GET", f"/deliveries/{args.trace}")
        if args.output != "table":
            _dump(found, args.output)
            return 0
        for hook in found["webhooks"]:
            print(f"{_when(hook.get('at'))}  webhook   {hook.get('receiver') or hook.get('type')} "
                  f"{hook.get('event')} → {hook.get('status')} {hook.get('answer') or ''}".rstrip())
        for q in found["requests"]:
            print(f"{_when(q.get('at'))}  request   {q.get('target')} on {q.get('queue')}: {q.get('result')}")
        for run in found["runs"]:
            print(f"{_when(run.get('at'))}  run       {run.get('target')} {run.get('revision') or ''}: "
                  f"{run.get('state')}")
            for o in run.get("objects", []):
                print(f"{'':22}  └ {o['kind']}/{o['namespace']}/{o['name']}: {o['reason']}")
        for n in found["notifications"]:
            print(f"{_when(n.get('updated') or n.get('at'))}  notify    {n.get('provider')} ({n.get('type')}) "
                  f"{n.get('object')} {n.get('reason')}: {n.get('state')} after {n.get('attempts')} attempt(s)")
        return 0
    items = c.call("GET", "/deliveries", params={"limit": args.limit})["items"]
    if args.output != "table":
        _dump(items, args.output)
        return 0
    rows = [[_when(d.get("at")), d.get("receiver") or d.get("type", ""), d.get("event", ""), d.get("delivery", ""),
             f"{d.get('status')} {d.get('answer') or ''}".strip()[:80],
             ", ".join(r["target"] for r in d.get("requests", [])) or "-"] for d in items]
    _table(["TIME", "RECEIVER", "EVENT", "DELIVERY", "ANSWER", "TRIGGERED"], rows, print)
    return 0


def cmd_dead_letters(c: Client, args: argparse.Namespace) -> int:
    items = c.call("GET", "/dead-letters")["items"]
    if args.queue:
        items = [i for i in items if i["queue"] == args.queue]
    if args.action == "list":
        if args.output != "table":
            _dump(items, args.output)
            return 0
        rows = [[i["queue"], i["id"], str(i.get("attempts", "")), i.get("target", "-"), i.get("delivery", ""),
                 " ".join((i.get("error") or "").split())[:120]] for i in items]
        _table(["QUEUE", "ID", "ATTEMPTS", "TARGET", "DELIVERY", "ERROR"], rows, print)
        return 0
    if args.action in ("replay", "drop") and args.all:
        if args.id:
            raise CliError(f"herald dead-letters {args.action}: give an ID or --all, not both", 2)
        total = 0
        for queue in sorted({i["queue"] for i in items}):
            if args.action == "replay":
                total += c.call("POST", f"/dead-letters/{queue}/replay")["count"]
            else:
                total += c.call("DELETE", f"/dead-letters/{queue}")["count"]
        print(f"✔ {'replayed' if args.action == 'replay' else 'dropped'} {total} dead letter(s)")
        return 0
    if not args.id:
        raise CliError(f"herald dead-letters {args.action}: which one? give its ID (from `list`)"
                       + (" or --all" if args.action != "show" else ""), 2)
    found = [i for i in items if i["id"] == args.id]
    if not found:
        raise CliError(f"no dead letter {args.id!r}" + (f" in {args.queue}" if args.queue else ""))
    queue = found[0]["queue"]
    if args.action == "show":
        _dump(c.call("GET", f"/dead-letters/{queue}/{args.id}"), "yaml" if args.output == "table" else args.output)
        return 0
    if args.action == "replay":
        c.call("POST", f"/dead-letters/{queue}/replay/{args.id}")
        print(f"✔ {args.id} put back on {queue}")
    else:
        c.call("DELETE", f"/dead-letters/{queue}/{args.id}")
        print(f"✔ {args.id} dropped from {queue}.dead")
    return 0


COMMANDS = ("get", "reconcile", "suspend", "resume", "events", "deliveries", "dead-letters")


def run(args: argparse.Namespace, listen: str) -> int:
    try:
        c = client_of(args, listen)
        if args.command == "get":
            return cmd_get(c, args)
        if args.command == "reconcile":
            return cmd_reconcile(c, args)
        if args.command in ("suspend", "resume"):
            return cmd_suspend(c, args, args.command == "suspend")
        if args.command == "events":
            return cmd_events(c, args)
        if args.command == "deliveries":
            return cmd_deliveries(c, args)
        return cmd_dead_letters(c, args)
    except CliError as exc:
        print(f"herald {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
