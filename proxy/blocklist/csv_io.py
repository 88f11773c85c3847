"""CSV import and export of a connector's blocklist (admin API and CLI).

Import format: UTF-8 (a BOM is allowed), a header row, then one number per row::

    number,reason,duration
    +57 300 123 4567,spam calls,7d
    573007654321,insults,

Columns: ``number`` (required), ``reason``, and at most one of ``duration`` (``30m``, ``12h``, ``1d``, ``7d`` or
seconds) and ``expires_at`` (ISO 8601) for a temporary block. The columns an export adds (``type``,
``blocked_at``, ``blocked_by``, ``source``) are accepted and ignored by an import. :func:`restore_csv` reads them
too: it puts an export back as it was, without the 24-hour rule (a backup, or a migration from another proxy).

The whole file is read and checked before anything is written: a file that is not UTF-8, not CSV, has no usable
header, an unknown column, a row with more fields than the header, or more than :data:`MAX_ROWS` rows is refused
whole, naming the row. A well-formed file is then applied row by row, and each row is reported: ``blocked``,
``already_blocked``, or ``refused`` with the reason (WhatsApp's 24-hour rule, a bad number, a bad duration, a
duplicate of an earlier row). Each row is one atomic store operation, so re-running an import is harmless.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..base import csvsafe
from ..base.errors import BadRequest, BlocklistError, InvalidCsv, NotRecentlyActive, TooManyRows
from .service import (
    Actor,
    BlockCheck,
    BlocklistService,
    check_expiry,
    clean_reason,
    parse_expires_at,
    parse_expiry,
    strip_controls,
)

MAX_ROWS = 64_000
"""Most data rows one import accepts."""

MAX_BYTES = 8 * 1024 * 1024
"""Largest import file (bytes)."""

EXPORT_COLUMNS = ("number", "reason", "expires_at", "type", "blocked_at", "blocked_by", "source")
_IMPORTED = frozenset({"number", "reason", "duration", "expires_at"})
_IGNORED = frozenset({"type", "blocked_at", "blocked_by", "source"})
_CONCURRENCY = 32  # store operations in flight during an import

Progress = Callable[[int, int], None]
"""Called with ``(rows done, rows in total)`` while an import is applied."""


@dataclass
class RowResult:
    """What became of one data row (``row`` counts the file's lines, the header being row 1)."""

    row: int
    number: str
    outcome: str = ""
    """``blocked``, ``already_blocked`` or ``refused``."""
    reason: str = ""
    """Why a row was refused."""
    key: str = field(default="", repr=False)
    block_reason: str = field(default="", repr=False)
    expires_at_ms: int | None = field(default=None, repr=False)
    duration_seconds: int | None = field(default=None, repr=False)
    blocked_at_ms: int | None = field(default=None, repr=False)
    blocked_by: str = field(default="", repr=False)
    source: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"row": self.row, "number": self.number, "outcome": self.outcome}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class ImportReport:
    """The per-row report of an import."""

    dry_run: bool
    rows: list[RowResult]

    def counts(self) -> dict[str, int]:
        out = {"blocked": 0, "already_blocked": 0, "refused": 0}
        for row in self.rows:
            out[row.outcome] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "summary": self.counts(), "rows": [r.to_json() for r in self.rows]}


def read_rows(data: bytes) -> list[tuple[int, dict[str, str]]]:
    """Decode and parse a whole import file into ``(row number, {column: value})``.

    Raises:
        InvalidCsv: bad encoding, bad CSV, bad header, or a row wider than the header (naming the row).
        TooManyRows: more than :data:`MAX_ROWS` data rows.
    """
    if len(data) > MAX_BYTES:
        raise TooManyRows(f"the file is larger than {MAX_BYTES} bytes; split it into several imports")
    try:
        text = data.decode("utf-8-sig") if data.startswith(codecs.BOM_UTF8) else data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n") + 1
        raise InvalidCsv(f"row {row}: the file is not UTF-8 text; nothing was imported") from None
    if "\x00" in text:
        raise InvalidCsv("the file contains NUL bytes: it is not a CSV file; nothing was imported")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidCsv("the file is empty: it needs a header row such as number,reason,duration")
        columns = [h.strip().lower() for h in header]
        _check_header(columns)
        rows: list[tuple[int, dict[str, str]]] = []
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue  # blank lines are allowed (trailing newline, spacing)
            if len(fields) > len(columns):
                raise InvalidCsv(
                    f"row {line}: {len(fields)} fields but the header has {len(columns)}; nothing was imported"
                )
            if len(rows) >= MAX_ROWS:
                raise TooManyRows(f"the file has more than {MAX_ROWS} rows; split it into several imports")
            rows.append((line, {c: f.strip() for c, f in zip(columns, fields, strict=False)}))
    except csv.Error as exc:
        raise InvalidCsv(f"row {reader.line_num}: not valid CSV ({exc}); nothing was imported") from None
    return rows


def _check_header(columns: list[str]) -> None:
    if "number" not in columns:
        raise InvalidCsv("row 1: the header must name a 'number' column (e.g. number,reason,duration)")
    unknown = [c for c in columns if c not in _IMPORTED | _IGNORED]
    if unknown:
        raise InvalidCsv(
            f"row 1: unknown column(s) {', '.join(repr(c[:40]) for c in unknown[:5])}; "
            "allowed: number, reason, duration, expires_at"
        )
    if len(set(columns)) != len(columns):
        raise InvalidCsv("row 1: a column is named twice")
    if "duration" in columns and "expires_at" in columns:
        raise InvalidCsv("row 1: use either a duration or an expires_at column, not both")


def plan(service: BlocklistService, pnid: str, rows: list[tuple[int, dict[str, str]]]) -> list[RowResult]:
    """Check every row's number, reason and expiry, and mark duplicates; refused rows get their reason."""
    now = service.now_ms()
    seen: dict[str, int] = {}
    results: list[RowResult] = []
    for line, values in rows:
        result = RowResult(row=line, number=values.get("number", ""))
        results.append(result)
        try:
            if not result.number:
                raise BadRequest("the number is empty")
            who = service.parse_number(pnid, result.number)
            result.key = who.key
            result.block_reason = clean_reason(values.get("reason", ""))
            result.expires_at_ms, result.duration_seconds = parse_expiry(
                duration=values.get("duration"), expires_at=values.get("expires_at")
            )
            check_expiry(result.expires_at_ms, now)
        except BlocklistError as exc:
            result.outcome, result.reason = "refused", exc.message
            continue
        if who.key in seen:
            result.outcome, result.reason = "refused", f"duplicate of row {seen[who.key]} in this file"
            continue
        seen[who.key] = line
    return results


class CsvLoad:
    """One way of applying a CSV file to a connector's blocklist: :data:`import_csv` or :data:`restore_csv`.

    Both read and check the whole file first (:func:`read_rows`, :func:`plan`), then apply every row not refused,
    ``_CONCURRENCY`` at a time; they differ in what a row carries (:meth:`prepare`), how a dry run judges it
    (:meth:`check`) and how it is written (:meth:`write`).
    """

    async def __call__(
        self,
        service: BlocklistService,
        pnid: str,
        data: bytes,
        *,
        actor: Actor,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Apply ``data`` to the connector's blocklist and report every row.

        Args:
            actor: who is recorded in the audit trail (with its source).
            dry_run: check every row (an import: including the 24-hour rule) and report, writing nothing.
            progress: called as rows are applied.

        Raises:
            InvalidCsv, TooManyRows: the file was refused whole; nothing was written.
            UnknownConnector: no such connector.
            StoreUnavailable: the store went away; rows reported before are applied, the others are not (re-run it;
                that is harmless).
        """
        service.connector(pnid)
        rows = read_rows(data)
        results = plan(service, pnid, rows)
        for result, (_, values) in zip(results, rows, strict=True):
            if not result.outcome:
                try:
                    self.prepare(service, result, values)
                except BlocklistError as exc:
                    result.outcome, result.reason = "refused", exc.message
        todo = [r for r in results if not r.outcome]
        done = len(results) - len(todo)
        if progress is not None:
            progress(done, len(results))
        semaphore = asyncio.Semaphore(_CONCURRENCY)

        async def one(result: RowResult) -> None:
            nonlocal done
            async with semaphore:
                if dry_run:
                    await self.check(service, pnid, result)
                else:
                    await self.write(service, pnid, result, actor)
            done += 1
            if progress is not None:
                progress(done, len(results))

        await asyncio.gather(*(one(r) for r in todo))
        return ImportReport(dry_run=dry_run, rows=results)

    def prepare(self, service: BlocklistService, result: RowResult, values: dict[str, str]) -> None:
        """Read what else a planned row carries; raise a :class:`BlocklistError` to refuse it."""

    async def check(self, service: BlocklistService, pnid: str, result: RowResult) -> None:
        """Set the outcome a write would have, writing nothing."""
        raise NotImplementedError

    async def write(self, service: BlocklistService, pnid: str, result: RowResult, actor: Actor) -> None:
        """Write the row and set its outcome."""
        raise NotImplementedError


class _Import(CsvLoad):
    async def check(self, service: BlocklistService, pnid: str, result: RowResult) -> None:
        check = await service.may_block(pnid, result.number)
        if check is BlockCheck.ALREADY_BLOCKED:
            result.outcome = "already_blocked"
        elif check is BlockCheck.NOT_RECENTLY_ACTIVE:
            result.outcome, result.reason = "refused", _STALE
        else:
            result.outcome = "blocked"

    async def write(self, service: BlocklistService, pnid: str, result: RowResult, actor: Actor) -> None:
        fields = {"expires_at_ms": result.expires_at_ms, "duration_seconds": result.duration_seconds}
        await _settle(service.block, pnid, result, actor, fields, refused=NotRecentlyActive, reason=_STALE)


class _Restore(CsvLoad):
    def prepare(self, service: BlocklistService, result: RowResult, values: dict[str, str]) -> None:
        result.block_reason = clean_reason(_unguard(values.get("reason", "")))
        result.blocked_by = _unguard(values.get("blocked_by", ""))
        result.source = values.get("source", "")
        if values.get("blocked_at"):
            result.blocked_at_ms = _moment("blocked_at", values["blocked_at"])
            if result.blocked_at_ms > service.now_ms():
                raise BadRequest("blocked_at is in the future")

    async def check(self, service: BlocklistService, pnid: str, result: RowResult) -> None:
        exists = await service.find(pnid, result.number) is not None
        result.outcome = "already_blocked" if exists else "blocked"

    async def write(self, service: BlocklistService, pnid: str, result: RowResult, actor: Actor) -> None:
        expires_at_ms = result.expires_at_ms
        if result.duration_seconds is not None:
            expires_at_ms = service.now_ms() + result.duration_seconds * 1000
        fields = {
            "blocked_at_ms": result.blocked_at_ms,
            "blocked_by": result.blocked_by,
            "source": result.source,
            "expires_at_ms": expires_at_ms,
        }
        await _settle(service.restore, pnid, result, actor, fields, refused=BadRequest)


async def _settle(
    write: Callable[..., Awaitable[tuple[Any, bool]]],
    pnid: str,
    result: RowResult,
    actor: Actor,
    fields: dict[str, Any],
    *,
    refused: type[BlocklistError],
    reason: str = "",
) -> None:
    """Write a row (``write``: :meth:`BlocklistService.block` or ``restore``, given the row's number, reason and
    ``fields``) and set its outcome: ``refused`` on a ``refused`` error (with ``reason``, else the error's
    message), else ``blocked`` or ``already_blocked``."""
    try:
        _, created = await write(pnid, result.number, actor=actor, reason=result.block_reason, **fields)
    except refused as exc:
        result.outcome, result.reason = "refused", reason or exc.message
        return
    result.outcome = "blocked" if created else "already_blocked"


_STALE = "24-hour rule: the user has not messaged this connector in the last 24 hours"

import_csv = _Import()
"""Import a CSV file into a connector's blocklist (see the module docstring for the format), with the 24-hour rule."""

restore_csv = _Restore()
"""Restore an export as it was: each row keeps its reason, expiry, ``blocked_by`` and ``blocked_at``.

The 24-hour rule is not applied (see :meth:`BlocklistService.restore`); every other row check of an import is.
Rows whose block has expired already are refused. ``actor`` is recorded in the audit trail with its own source."""


def _moment(column: str, text: str) -> int:
    try:
        return parse_expires_at(text)
    except BadRequest:
        raise BadRequest(
            f"{column} must be an ISO 8601 date-time with a time zone, e.g. 2026-12-01T00:00:00Z"
        ) from None


def _unguard(text: str) -> str:
    # The export disarms spreadsheet formulas with quotes (_safe); a restore takes the text back.
    return csvsafe.unguard(text)


async def export_csv(service: BlocklistService, pnid: str) -> AsyncIterator[str]:
    """The connector's blocklist as CSV text chunks (header first, newest block first); it imports back as is."""
    service.connector(pnid)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    cursor: str | None = None
    while True:
        entries, cursor = await service.list_blocks(pnid, limit=500, cursor=cursor)
        for e in entries:
            cells = (e.number, e.reason, e.expires_at or "", e.kind, e.blocked_at, e.blocked_by, e.source)
            writer.writerow([_safe(cell) for cell in cells])  # every cell: none may start a formula
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if cursor is None:
            return


def _safe(text: str) -> str:
    # Spreadsheets run a cell starting with = + - @ (CSV injection), after any separator they split on: see csvsafe.
    # Control characters go (a NUL in a name would make the file unreadable as text, so it could not be restored).
    return csvsafe.guard(strip_controls(text))
