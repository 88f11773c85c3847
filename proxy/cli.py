"""The ``wa-blocklist`` command: serve, check-config, block, unblock, list, import, export, optout, optin, optouts.

Exit codes: 0 success, 1 the operation was refused (not recently active, not blocked, store down...),
2 bad usage or a broken config.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

from .base.errors import BlocklistError, ConfigError
from .base.phone_format import international
from .blocklist.csv_io import export_csv, import_csv, restore_csv
from .blocklist.meta_sync import MetaSync
from .blocklist.service import Actor, BlocklistService, parse_duration
from .config import Config, connector_problems, load_config
from .store.client import open_store
from .store.schema import BlockEntry

DEFAULT_CONFIG = os.environ.get("WA_BLOCKLIST_CONFIG", "config.yaml")
# Commands that only use the store: a secret the environment left empty does not stop them.
_STORE_ONLY = frozenset(
    {"block", "unblock", "update", "list", "export", "import", "simulate-inbound", "sink", "optout", "optin", "optouts"}
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_CONFIG, help="the YAML config (default: %(default)s)")
    parser = argparse.ArgumentParser(
        prog="wa-blocklist", description="WhatsApp blocklist proxy and its administration.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the proxy")
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port with SO_REUSEPORT (default: 1)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set on the workers themselves

    sub.add_parser("check-config", parents=[common], help="validate the config and print every problem")

    def with_connector(p: argparse.ArgumentParser) -> None:
        p.add_argument("--connector", help="phone number ID (may be omitted when only one connector is configured)")

    block = sub.add_parser("block", parents=[common], help="block a number on a connector")
    block.add_argument("number", help="phone number with country code, or BSUID")
    with_connector(block)
    block.add_argument("--reason", default="", help="why (shown in the list)")
    block.add_argument("--by", default=f"cli:{_user()}", help="who blocks (default: %(default)s)")
    block.add_argument(
        "--force", action="store_true", help="skip WhatsApp's 24-hour rule (Meta itself will not block such a user)"
    )
    block.add_argument("--duration", help="a temporary block: 30m, 12h, 1d, 7d... or seconds (default: permanent)")

    unblock = sub.add_parser("unblock", parents=[common], help="remove a block")
    unblock.add_argument("number")
    with_connector(unblock)
    unblock.add_argument("--by", default=f"cli:{_user()}", help="who unblocks (default: %(default)s)")
    _everywhere_options(block, unblock)
    block.add_argument(
        "--include-unsynced", action="store_true",
        help="with --all-connectors/--connectors: also block where the number did not write in the last 24 hours, "
        "on connectors whose sync_to_meta is off",
    )  # fmt: skip

    update = sub.add_parser("update", parents=[common], help="change a block's reason or expiry")
    update.add_argument("number")
    with_connector(update)
    update.add_argument("--reason", help="the new reason (default: kept)")
    expiry = update.add_mutually_exclusive_group()
    expiry.add_argument("--duration", help="a new expiry from now: 30m, 12h, 1d, 7d... (default: kept)")
    expiry.add_argument("--permanent", action="store_true", help="make the block permanent")
    update.add_argument("--by", default=f"cli:{_user()}", help="who changes it (default: %(default)s)")

    for name, text in (("optout", "opt a number out of template and marketing sends"),
                       ("optin", "remove a number's opt-out")):  # fmt: skip
        opt = sub.add_parser(name, parents=[common], help=text)
        opt.add_argument("number", help="phone number with country code, or BSUID")
        with_connector(opt)
        opt.add_argument("--reason", default="", help="why (kept in the audit trail)")
        opt.add_argument("--by", default=f"cli:{_user()}", help="who does it (default: %(default)s)")
    optouts = sub.add_parser("optouts", parents=[common], help="list the numbers opted out on a connector")
    with_connector(optouts)

    listing = sub.add_parser("list", parents=[common], help="list blocked numbers, newest first")
    with_connector(listing)
    listing.add_argument("--q", default="", help="search the number, reason and who blocked")
    listing.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    export = sub.add_parser("export", parents=[common], help="write a connector's blocklist as CSV to stdout")
    with_connector(export)

    importing = sub.add_parser(
        "import", parents=[common], help="block every number of a CSV file (number,reason[,duration])"
    )
    importing.add_argument("file", help="the CSV file ('-' for stdin)")
    with_connector(importing)
    importing.add_argument("--dry-run", action="store_true", help="check every row and report; change nothing")
    importing.add_argument("--by", default=f"cli:{_user()}", help="who blocks (default: %(default)s)")
    importing.add_argument("--json", action="store_true", help="print the report as JSON")
    importing.add_argument(
        "--restore",
        action="store_true",
        help="restore an export as it was (reasons, expiry, who and when), without the 24-hour rule",
    )

    simulate = sub.add_parser(
        "simulate-inbound", parents=[common], help="development: send the proxy a signed webhook from a number"
    )
    simulate.add_argument(
        "--from", dest="sender", required=True, help='the customer\'s number, e.g. "+57 300 555 0001"'
    )
    simulate.add_argument("--text", default="hola", help="the message text (default: %(default)s)")
    simulate.add_argument("--name", default="Cliente", help="the customer's profile name (default: %(default)s)")
    with_connector(simulate)
    simulate.add_argument("--url", help="the proxy's webhook URL (default: from server.host and server.port)")

    sink = sub.add_parser(
        "sink", parents=[common], help="development: a stand-in contact center that prints forwarded webhooks"
    )
    with_connector(sink)
    sink.add_argument("--host", help="listen address (default: the host of the connector's forward_webhooks_to)")
    sink.add_argument("--port", type=int, help="listen port (default: the port of forward_webhooks_to)")
    sink.add_argument("--path", help="webhook path (default: the path of forward_webhooks_to)")
    sink.add_argument("--raw", action="store_true", help="also print each body as JSON")
    return parser


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wa-blocklist`` console script."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, require_secrets=args.command not in _STORE_ONLY)
    except ConfigError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        if "is not set" in str(exc):
            print(
                "hint: secrets come from the environment; for development: . ./dev.env (make run does it)",
                file=sys.stderr,
            )
        return 2
    if args.command in ("check-config", "serve") and (problems := connector_problems(config)):
        print(f"{args.config}: {ConfigError(problems)}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: OK ({len(config.connectors)} connector(s), store: {_store_label(config)})")
        return 0
    if args.command == "serve":
        if args.workers < 1:
            print("error: --workers must be at least 1", file=sys.stderr)
            return 2
        from .run.startup import StartupError, refuse_public_development_values

        try:
            refuse_public_development_values(config, args.host or config.server.host)
        except StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.workers > 1:
            from .run.supervisor import serve_workers

            return serve_workers(args, config)
        return _serve(config, args.host, args.port, reuse_port=args.reuse_port, config_path=args.config)
    try:
        if getattr(args, "all_connectors", False) or getattr(args, "connectors", None):
            return asyncio.run(_run(config, lambda service: _everywhere(service, args)))
        pnid = _connector(config, args.connector)
        if args.command == "simulate-inbound":
            return _simulate_inbound(config, pnid, args)
        if args.command == "sink":
            return _sink(config, pnid, args)
        return asyncio.run(_run(config, lambda service: _COMMANDS[args.command](service, pnid, args)))
    except BlocklistError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _everywhere_options(*parsers: argparse.ArgumentParser) -> None:
    for p in parsers:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--all-connectors", action="store_true", help="on every configured connector (issue 19)")
        where.add_argument("--connectors", help="on these connectors: phone number IDs separated by commas")


async def _everywhere(service: BlocklistService, args: argparse.Namespace) -> int:
    """``block`` / ``unblock`` with ``--all-connectors`` or ``--connectors``: one line per connector."""
    pnids = None if args.all_connectors else [p.strip() for p in args.connectors.split(",") if p.strip()]
    if args.command == "block":
        outcomes = await service.block_everywhere(
            args.number, actor=Actor(args.by, "cli"), reason=args.reason, pnids=pnids,
            duration_seconds=parse_duration(args.duration) if args.duration else None,
            include_unsynced=args.include_unsynced,
        )  # fmt: skip
    else:
        outcomes = await service.unblock_everywhere(args.number, actor=Actor(args.by, "cli"), pnids=pnids)
    for o in outcomes:
        said = o.outcome.replace("_", " ")
        detail = f": {o.detail}" if o.detail != said else ""
        print(f"{o.connector.phone_number_id} ({o.connector.name}): {said}{detail}")
    return 0 if any(o.outcome in ("blocked", "already_blocked", "unblocked") for o in outcomes) else 1


async def _optout(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    entry, created = await service.opt_out(pnid, args.number, actor=Actor(args.by, "cli"), reason=args.reason)
    print(f"{'opted out' if created else 'already opted out'}: {entry.number} on {pnid} since {entry.blocked_at}")
    return 0


async def _optin(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    entry = await service.opt_in(pnid, args.number, actor=Actor(args.by, "cli"), reason=args.reason)
    print(f"opted back in: {entry.number} on {pnid}")
    return 0


async def _optouts(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    print(f"{'OPTED OUT AT (UTC)':<25} {'NUMBER':<20} {'SOURCE':<10} REASON")
    for entry in await service.optouts(pnid):
        number = international(entry.number) if entry.kind == "phone" else entry.number
        print(f"{entry.blocked_at:<25} {number:<20} {entry.source[:10]:<10} {entry.reason}")
    return 0


def _store_label(config: Config) -> str:
    return f"embedded Redis in {config.store.data_dir}" if config.store.embedded else "Redis at the configured URL"


def _connector(config: Config, requested: str | None) -> str:
    if requested:
        return requested
    if len(config.connectors) == 1:
        return config.connectors[0].phone_number_id
    names = ", ".join(f"{c.phone_number_id} ({c.name})" for c in config.connectors) or "none configured"
    raise BlocklistError(f"--connector is required; connectors: {names}")


async def _run(config: Config, command: Callable[[BlocklistService], Awaitable[int]]) -> int:
    async with open_store(config.store) as store:
        service = BlocklistService(store, config)
        MetaSync(store, config).attach(service)  # queue only: the running proxy applies the change at Meta
        return await command(service)


async def _block(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    if args.force:
        print(
            "warning: --force skips WhatsApp's 24-hour rule; the block applies in this proxy, "
            "but Meta will refuse it on its side for a user who has not written in the last 24 hours",
            file=sys.stderr,
        )
    entry, created = await service.block(
        pnid,
        args.number,
        actor=Actor(args.by, "cli"),
        reason=args.reason,
        force=args.force,
        duration_seconds=parse_duration(args.duration) if args.duration else None,
    )
    state = "blocked" if created else "already blocked"
    until = f" until {entry.expires_at}" if entry.expires_at else ""
    print(f"{state}: {entry.number} on {pnid} since {entry.blocked_at}{until}")
    if not created and args.reason and entry.reason != " ".join(args.reason.split()):
        print(
            f"note: the block keeps its reason {entry.reason!r}; change it with: wa-blocklist update "
            f"{entry.number} --connector {pnid} --reason ...",
            file=sys.stderr,
        )
    return 0


async def _unblock(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    entry = await service.unblock(pnid, args.number, actor=Actor(args.by, "cli"))
    print(f"unblocked: {entry.number} on {pnid}")
    return 0


async def _update(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    entry = await service.update(
        pnid,
        args.number,
        actor=Actor(args.by, "cli"),
        reason=args.reason,
        duration_seconds=parse_duration(args.duration) if args.duration else None,
        permanent=args.permanent,
    )
    until = f"until {entry.expires_at}" if entry.expires_at else "permanent"
    print(f"updated: {entry.number} on {pnid}: {until}, reason {entry.reason!r}")
    return 0


async def _list(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    shown = 0
    cursor: str | None = None
    if not args.json:
        print(f"{'BLOCKED AT (UTC)':<25} {'NUMBER':<20} {'EXPIRES (UTC)':<25} {'BY':<20} REASON")
    while True:
        page = min(500, args.limit - shown) if args.limit else 500
        entries, cursor = await service.list_blocks(pnid, limit=page, cursor=cursor, q=args.q)
        for entry in entries:
            print(_format(entry, args.json))
        shown += len(entries)
        if cursor is None or (args.limit and shown >= args.limit):
            break
    if not args.json:
        print(f"({shown} shown)", file=sys.stderr)
    return 0


def _format(entry: BlockEntry, as_json: bool) -> str:
    if as_json:
        return json.dumps(entry.to_json(), ensure_ascii=False)
    number = international(entry.number) if entry.kind == "phone" else entry.number
    expires = entry.expires_at or "never"
    return f"{entry.blocked_at:<25} {number:<20} {expires:<25} {entry.blocked_by[:20]:<20} {entry.reason}"


async def _export(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    async for chunk in export_csv(service, pnid):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    return 0


async def _import(service: BlocklistService, pnid: str, args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else await asyncio.to_thread(Path(args.file).read_bytes)
    except OSError as exc:
        raise BlocklistError(f"cannot read {args.file}: {exc.strerror}") from None
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    apply, source = (restore_csv, "cli_restore") if args.restore else (import_csv, "cli_import")
    report = await apply(
        service, pnid, data, actor=Actor(args.by, source), dry_run=args.dry_run, progress=bar.update if bar else None
    )
    if bar is not None:
        bar.close()
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        for row in report.rows:
            if row.outcome == "refused":
                print(f"row {row.row}: {row.number or '(empty)'}: refused: {row.reason}")
        counts = report.counts()
        verb = "restored" if args.restore else "blocked"
        verb = f"would be {verb}" if args.dry_run else verb
        print(
            f"{counts['blocked']} {verb}, {counts['already_blocked']} already blocked, {counts['refused']} refused"
            + (" (dry run: nothing changed)" if args.dry_run else "")
        )
    return 0 if report.counts()["refused"] == 0 else 1


class ProgressBar:
    """A one-line progress bar on a terminal (redrawn in place, at most once per percent)."""

    def __init__(self, stream: TextIO, width: int = 40) -> None:
        self.stream = stream
        self.width = width
        self._shown = -1

    def update(self, done: int, total: int) -> None:
        percent = 100 if total == 0 else done * 100 // total
        if percent == self._shown:
            return
        self._shown = percent
        filled = self.width * percent // 100
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}% {done}/{total} rows")
        self.stream.flush()

    def close(self) -> None:
        if self._shown >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _simulate_inbound(config: Config, pnid: str, args: argparse.Namespace) -> int:
    from .run.trial import proxy_webhook_url, simulate_inbound

    connector = config.connector(pnid)
    if connector is None:
        raise BlocklistError(f"unknown connector {pnid}")
    url = args.url or proxy_webhook_url(config)
    status, answer, wa_id = asyncio.run(simulate_inbound(connector, args.sender, args.text, url, name=args.name))
    who = international(wa_id)
    if 200 <= status < 300:
        print(f"{who} wrote {args.text!r} to {connector.name} ({pnid}): the proxy answered {status}")
        return 0
    print(f"error: the proxy answered {status} to the webhook from {who}: {answer.strip()}", file=sys.stderr)
    return 1


def _sink(config: Config, pnid: str, args: argparse.Namespace) -> int:
    from aiohttp import web

    from .run.startup import StartupError, check_port_free, listen_error
    from .run.trial import sink_address, sink_app

    connector = config.connector(pnid)
    if connector is None:
        raise BlocklistError(f"unknown connector {pnid}")
    if not any(c.app_secret for c in config.connectors):
        raise BlocklistError(
            "every connector's app_secret is empty: set them in the environment as for serve "
            "(for development: . ./dev.env)"
        )
    if args.host and args.port is not None:
        host, port, path = args.host, args.port, args.path or "/webhooks/whatsapp"
    else:
        url_host, url_port, url_path = sink_address(connector)
        host, port, path = (
            args.host or url_host,
            args.port if args.port is not None else url_port,
            args.path or url_path,
        )

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        check_port_free(host, port)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    app = sink_app(config, path, out, raw=args.raw)

    async def ready(_app: web.Application) -> None:
        out(f"sink: a stand-in contact center on http://{host}:{port}{path}; signatures checked (Ctrl-C stops)")

    app.on_startup.append(ready)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)
    except OSError as exc:
        print(f"error: {listen_error(exc, host, port)}", file=sys.stderr)
        return 1
    return 0


_COMMANDS: dict[str, Callable[[BlocklistService, str, argparse.Namespace], Awaitable[int]]] = {
    "block": _block,
    "unblock": _unblock,
    "update": _update,
    "list": _list,
    "export": _export,
    "import": _import,
    "optout": _optout,
    "optin": _optin,
    "optouts": _optouts,
}


def _serve(
    config: Config, host: str | None, port: int | None, reuse_port: bool = False, config_path: str | None = None
) -> int:
    from aiohttp import web

    from .app import create_app, server_options
    from .base.logs import setup_logging
    from .run.reload import reload_on_sighup
    from .run.startup import StartupError, announce, check_port_free, claim_embedded_store, listen_error, release

    setup_logging()  # JSON lines, or human-readable on a terminal; secrets redacted
    log = logging.getLogger("wa_blocklist.proxy.serve")
    host = host or config.server.host
    port = port if port is not None else config.server.port
    lock = None
    try:
        if not reuse_port:  # workers share the supervisor's store and port by design
            lock = claim_embedded_store(config)
            check_port_free(host, port)
        app = create_app(config)
        if reuse_port:  # a worker of serve --workers
            from .run.supervisor import exit_with_supervisor

            exit_with_supervisor(app)
        if config_path is not None:
            app.cleanup_ctx.append(reload_on_sighup(Path(config_path)))
        announce(app, config, host, port)
        try:
            web.run_app(
                app,
                host=host,
                port=port,
                reuse_port=reuse_port or None,
                shutdown_timeout=30,
                loop=_event_loop(),
                print=None,  # announce() logs the addresses instead of aiohttp's banner
                **server_options(config),
            )
        except OSError as exc:
            raise listen_error(exc, host, port) from None
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        release(lock)
    log.info("stopped")
    return 0


def _event_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop's event loop when installed (``pip install wa-blocklist-proxy[speed]``) and not disabled with
    ``WA_BLOCKLIST_UVLOOP=0``; otherwise None, and aiohttp uses asyncio's own."""
    if os.environ.get("WA_BLOCKLIST_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


if __name__ == "__main__":
    sys.exit(main())
