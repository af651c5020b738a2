"""The ``aigw`` command: the console, ``serve``, configuration as code, logs and usage.

Only the standard library and :mod:`store` are imported up front, so ``aigw export``
starts fast and ``aigw serve`` never loads Textual. Every user error ends as one line
on stderr and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

from store import __version__
from store.errors import StoreError
from store.times import iso_utc

from .printable import printable, printable_json, printable_record

EXIT_USAGE = 2
#: Upper bound for ``logs -n`` (SQLite's LIMIT is a 64-bit integer; a bigger one crashed).
MAX_LOG_LINES = 1_000_000


class UsageError(Exception):
    """A bad argument, file or value — reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _add_db(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    p.add_argument(
        "--db",
        metavar="PATH|URL",
        default=None if top else argparse.SUPPRESS,
        help="SQLite file or SQLAlchemy URL (default: $AIGW_DB, else the user data folder)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="aigw", description="A self-hosted AI gateway with a terminal console.")
    p.add_argument("--version", action="version", version=f"aigw {__version__}")
    _add_db(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("serve", help="run the gateway in the foreground")
    s.add_argument("--listen", metavar="HOST:PORT", help="data plane address (default: the store's)")
    s.add_argument("--admin-listen", metavar="HOST:PORT", help="admin address (default: the store's)")
    s.add_argument(
        "--redis-url",
        metavar="URL",
        help="share limits through this Redis (default: $AIGW_REDIS_URL, else the store's redis_url)",
    )
    s.add_argument(
        "--workers", metavar="N|auto", help="data-plane processes (default: the store's workers; auto = one per CPU)"
    )
    _add_db(s)

    i = sub.add_parser("import", help="apply a TOML configuration (all or nothing)")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    i.add_argument("--prune", action="store_true", help="delete entities absent from FILE")
    _add_db(i)

    e = sub.add_parser("export", help="write the configuration as TOML")
    e.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    e.add_argument("--include-secrets", action="store_true", help="include literal model key credentials")
    _add_db(e)

    lg = sub.add_parser("logs", help="show request records")
    lg.add_argument("-n", type=_positive_int, default=20, metavar="N", help="how many (default 20)")
    lg.add_argument("--json", action="store_true", help="JSON output")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new records (reads /events)")
    _add_db(lg)

    u = sub.add_parser("usage", help="token and cost totals")
    u.add_argument("--by", choices=("consumer", "api", "model", "service"), default="consumer")
    u.add_argument(
        "--since",
        metavar="DATE|7d|30d",
        type=_since,
        default=None,
        help="YYYY-MM-DD, an ISO time, or a span like 24h, 7d, 30d (default: all time)",
    )
    u.add_argument("--json", action="store_true", help="JSON output")
    _add_db(u)

    nd = sub.add_parser("nodes", help="the gateways running on this store")
    nd.add_argument("--json", action="store_true", help="JSON output")
    _add_db(nd)
    return p


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if not 1 <= n <= MAX_LOG_LINES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LOG_LINES}, got {n}")
    return n


_SPAN = re.compile(r"^(\d+)([mhdw])$")


def _since(v: str) -> float:
    """``7d``/``24h``/``30m``/``2w`` ago, a date (UTC midnight) or an ISO time."""
    try:
        if m := _SPAN.match(v.strip()):
            n, unit = int(m.group(1)), m.group(2)
            delta = {
                "m": timedelta(minutes=n),
                "h": timedelta(hours=n),
                "d": timedelta(days=n),
                "w": timedelta(weeks=n),
            }[unit]
            ts = time.time() - delta.total_seconds()
        else:
            try:
                dt = datetime.fromisoformat(v.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{v!r} is not a date (YYYY-MM-DD), an ISO time, or a span like 7d or 24h"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            ts = dt.timestamp()
        datetime.fromtimestamp(ts, UTC)  # `usage --json` prints it back as a date
    except (OverflowError, ValueError, OSError):
        raise argparse.ArgumentTypeError(f"{v!r} is out of range") from None
    return ts


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except UsageError as exc:
        print(f"aigw: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"aigw: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        # A database failure past opening (locked, disk full, a constraint the rules
        # missed) is still one line, not a traceback. sqlalchemy is not imported here
        # up front, so recognise its errors by module.
        if type(exc).__module__.partition(".")[0] != "sqlalchemy":
            raise
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"aigw: error: database error: {detail}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd is None:
        from .app import run_console

        return run_console(args.db)
    if cmd == "serve":
        from proxy.serve import run_server

        return run_server(
            args.db, listen=args.listen, admin_listen=args.admin_listen, redis_url=args.redis_url, workers=args.workers
        )
    if cmd == "import":
        return cmd_import(args)
    if cmd == "export":
        return cmd_export(args)
    if cmd == "logs":
        return cmd_logs(args)
    if cmd == "usage":
        return cmd_usage(args)
    if cmd == "nodes":
        return cmd_nodes(args)
    raise UsageError(f"unknown command {cmd!r}")  # pragma: no cover - argparse rejects first


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from store.db import open_store

    return open_store(args.db)


def cmd_import(args: argparse.Namespace) -> int:
    from store import config_io, repo

    parsed = config_io.read_file(args.file)  # parse before touching the store
    store = _open(args)
    with store.session() as s:
        plan = repo.apply_config(
            s, parsed.config, has_gateway=parsed.has_gateway, prune=args.prune, dry_run=args.dry_run
        )
    lines = []
    for table, p in plan.items():
        for verb, sign in (("create", "+"), ("change", "~"), ("delete", "-")):
            for name in p[verb]:
                lines.append(f"  {sign} {table}[{name}]" if table != "gateway" else f"  {sign} gateway")
    if args.dry_run:
        print("dry run: nothing changed. Would apply:" if lines else "dry run: nothing would change.")
    else:
        print(f"applied {len(lines)} change{'s' if len(lines) != 1 else ''}:" if lines else "no changes.")
    for line in lines:
        print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from store import config_io, repo

    store = _open(args)
    with store.session() as s:
        text = config_io.dumps(repo.load_config(s), include_secrets=args.include_secrets)
    if args.output:
        out = Path(args.output)
        try:
            # Secrets may be inside: create private, like the store itself.
            from store.db import private_file

            private_file(out) if args.include_secrets else None
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return 0


def _record_line(d: dict) -> str:  # type: ignore[type-arg]
    d = printable_record(d)
    tokens = f"{d['prompt_tokens']}+{d['completion_tokens']}{'~' if d['estimated'] else ''}"
    err = f"  {d['error']}" if d.get("error") else ""
    return (
        f"{d['time']}  {d['status']:>3}  {d['latency_ms']:>8.1f}ms  {d['consumer'] or '-':<16} "
        f"{d['api'] or '-':<16} {d['model'] or '-':<28} {tokens:>11}  ${d['cost']:.6f}"
        f"{'  stream' if d['stream'] else ''}{'  cache-hit' if d.get('cache') == 'hit' else ''}  {d['request_id']}{err}"
    )


def cmd_logs(args: argparse.Namespace) -> int:
    from store import usage

    store = _open(args)
    listed_at = time.time()
    with store.session() as s:
        rows = [usage.record_dict(r) for r in usage.recent(s, args.n)]
    if args.json and not args.follow:
        print(printable_json(rows, indent=2))
    else:
        for d in rows:
            print(printable_json(d) if args.json else _record_line(d))
    if args.follow:
        from .follow import follow_events

        return follow_events(store, as_json=args.json, line=_record_line, listed=rows, listed_at=listed_at)
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from store import usage

    store = _open(args)
    with store.session() as s:
        rows = usage.totals(s, by=args.by, since=args.since)
    total = {
        k: sum(r[k] for r in rows)
        for k in (
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost",
            "estimated_requests",
            "cache_hits",
            "saved_tokens",
            "cost_saved",
        )
    }
    total["cost"] = round(total["cost"], 10)
    total["cost_saved"] = round(total["cost_saved"], 10)
    if args.json:
        since = iso_utc(args.since, "auto") if args.since is not None else None
        print(printable_json({"by": args.by, "since": since, "rows": rows, "total": total}, indent=2))
        return 0
    head = f"{args.by:<24} {'requests':>9} {'errors':>7} {'prompt':>12} {'completion':>12} {'total':>12} {'cost':>12}"
    print(head)
    for r in [*rows, {args.by: "TOTAL", **total}]:
        print(
            f"{printable(r[args.by]) or '-':<24} {r['requests']:>9} {r['errors']:>7} {r['prompt_tokens']:>12} "
            f"{r['completion_tokens']:>12} {r['total_tokens']:>12} {r['cost']:>12.6f}"
        )
    if total["estimated_requests"]:
        print(f"~ {total['estimated_requests']} request(s) counted with estimated tokens (the vendor sent no usage)")
    if total["cache_hits"]:
        print(
            f"{total['cache_hits']} answer(s) from the response cache saved {total['saved_tokens']} tokens "
            f"and {total['cost_saved']:.6f} in cost (not in the totals above)"
        )
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    """Every ``aigw serve`` registered in the store; one unseen for 15 s is ``stale``."""
    from store import nodes

    store = _open(args)
    with store.session() as s:
        found = nodes.list_nodes(s)
    if args.json:
        print(printable_json([{**n.as_dict(), "state": "stale" if n.stale else "live"} for n in found], indent=2))
        return 0
    print(
        f"{'node':<32} {'listen':<22} {'admin':<22} {'workers':>7} {'revision':>8} {'version':<8} "
        f"{'last seen':<20} state"
    )
    for n in found:
        seen = iso_utc(n.last_seen, "seconds")
        print(
            f"{n.id:<32} {n.listen:<22} {n.admin_listen:<22} {n.workers:>7} {n.revision:>8} {n.version:<8} "
            f"{seen:<20} {'stale' if n.stale else 'live'}"
        )
    if not found:
        print("no gateway is running on this store")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
