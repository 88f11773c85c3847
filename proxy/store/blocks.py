"""The blocklist store: atomic block, unblock, update, check, inbound recording, listing and audit over one client.

Each change runs one Lua script of :mod:`~wa_blocklist.proxy.store.scripts` over the keys of
:mod:`~wa_blocklist.proxy.store.schema`, so replicas never race on a read-modify-write. Redis trouble becomes
:class:`~wa_blocklist.proxy.base.errors.StoreUnavailable` in one place (:meth:`BlocklistStore._call`). The store is
opened by :func:`wa_blocklist.proxy.store.client.open_store`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript

from ..base.errors import BadRequest, StoreUnavailable
from . import scripts
from .schema import (
    AUDIT_MAXLEN,
    DAY_MS,
    INVALIDATION_CHANNEL,
    OWNERSHIP_TTL_MS,
    BlockEntry,
    connector_keys,
    fingerprint,
    iso_ms,
    parse_owner,
)

_OWNERSHIP_TTL = str(OWNERSHIP_TTL_MS)

_ARGUMENT_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ARGUMENT = (  # the C encoder made once, as proxy/graph/signature.py does (JSONEncoder.encode makes one per call)
    _c_make_encoder(None, _ARGUMENT_ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _c_make_encoder is not None
    else None
)


def _dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` without an encoder built per call (the value
    is built here from strings, numbers, lists and dicts: no reference cycle to check for)."""
    return "".join(_C_ARGUMENT(value, 0)) if _C_ARGUMENT is not None else _ARGUMENT_ENCODER.encode(value)


_SCAN_LIMIT = 5_000  # entries examined per search request before a partial page is returned with a cursor

InboundUsers: TypeAlias = Sequence[tuple[str, str]] | Sequence[tuple[str, str, bool]]
"""Per user of a webhook, ``(wa_id match key or "", bsuid or "")``, optionally with ``active``: False when the user's
items do not count as writing (statuses, contacts, history...)."""
Owned: TypeAlias = Sequence[tuple[str, int]]
"""Inbound items with an owner: ``(message ID or group join request ID, index of its user in the users)``."""

_CURSOR_SCORE = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")


def encode_cursor(score: str, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score}\n{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, member = raw.split("\n", 1)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("the cursor is not one this API returned; start again without it") from None
    # Strictly the scores Redis hands out (ms timestamps): float() would also take nan, inf, "1_0" or " 1 ".
    if not _CURSOR_SCORE.fullmatch(score) or not member:
        raise BadRequest("the cursor is not one this API returned; start again without it")
    return score, member


class BlockStatus(enum.Enum):
    """What :meth:`BlocklistStore.block` did (the block script answers with these words)."""

    CREATED = "created"
    EXISTS = "exists"
    STALE = "stale"
    """Refused: the user has no inbound message at or after the cutoff (Meta's 24-hour rule)."""


class BlocklistStore:
    """Atomic blocklist operations over one Redis client."""

    def __init__(self, client: aioredis.Redis, deadline_seconds: float | None = None) -> None:
        self.redis = client
        self.deadline_seconds = deadline_seconds
        """Most time one operation may take, retries and reconnection included (None: no overall bound)."""
        self._block = client.register_script(scripts.BLOCK)
        self._unblock = client.register_script(scripts.UNBLOCK)
        self._update = client.register_script(scripts.UPDATE)
        self._blocked_key = client.register_script(scripts.BLOCKED_KEY)
        self._inbound = client.register_script(scripts.INBOUND)
        self._page = client.register_script(scripts.PAGE)
        self._sweep = client.register_script(scripts.SWEEP)
        self._opted_out_key = client.register_script(scripts.OPTED_OUT_KEY)
        self._set_optout = client.register_script(scripts.SET_OPTOUT)
        self.observe: Callable[[float, bool], None] | None = None
        """Called with ``(seconds, failed)`` after each operation (the metrics hook)."""

    async def _call(self, op: Awaitable[Any]) -> Any:
        """Await a Redis operation, turning connection trouble into :class:`StoreUnavailable`."""
        started = time.perf_counter()
        failed = True
        try:
            # Each socket read is bounded by store.timeout_seconds, but a slow Redis costs that per round trip of the
            # connection handshake and per retry (measured: 18 s for a 2 s timeout); the caller waits this long at most.
            async with asyncio.timeout(self.deadline_seconds):
                result = await op
            failed = False
            return result
        except TimeoutError as exc:
            raise StoreUnavailable("the blocklist store is unavailable (it did not answer in time)") from exc
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError) as exc:
            raise StoreUnavailable(f"the blocklist store is unavailable ({type(exc).__name__})") from exc
        except redis_errors.ResponseError as exc:
            if str(exc).startswith(("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY")):
                raise StoreUnavailable(f"the blocklist store is unavailable ({str(exc).split()[0]})") from exc
            raise
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started, failed)

    async def ping(self) -> bool:
        return bool(await self._call(self.redis.ping()))

    async def block(
        self,
        pnid: str,
        entry: BlockEntry,
        cutoff_ms: int,
        force: bool,
        now_ms: int | None = None,
        audit: tuple[str, str, int] | None = None,
    ) -> tuple[BlockStatus, BlockEntry | None]:
        """Add ``entry`` unless present; refuse if the user has no inbound at or after ``cutoff_ms``.

        An expired entry for the same key counts as absent (it is removed with an ``expire`` audit record).
        ``now_ms`` defaults to ``entry.blocked_at_ms``. ``audit`` = ``(by, source, at_ms)`` records who made the change
        when that is not the entry's own ``blocked_by``/``source``/``blocked_at`` (a restore keeps those).

        Returns:
            ``(CREATED, entry)``, ``(EXISTS, existing_entry)`` or ``(STALE, None)``.
        """
        k = connector_keys(pnid)
        status, raw = await self._call(
            self._block(
                keys=[k["blocks"], k["order"], k["links"], k["seen"], k["audit"], k["expiry"]],
                args=[
                    entry.key,
                    entry.dumps(),
                    entry.blocked_at_ms,
                    cutoff_ms,
                    "1" if force else "0",
                    AUDIT_MAXLEN,
                    INVALIDATION_CHANNEL,
                    pnid,
                    entry.number,
                    entry.kind,
                    entry.blocked_by if audit is None else audit[0],
                    entry.source if audit is None else audit[1],
                    entry.reason,
                    entry.blocked_at if audit is None else iso_ms(audit[2]),
                    entry.blocked_at_ms if now_ms is None else now_ms,
                    "" if entry.expires_at_ms is None else entry.expires_at_ms,
                ],
            )
        )
        return BlockStatus(str(status)), BlockEntry.loads(raw) if raw else None

    async def unblock(
        self, pnid: str, key: str, *, by: str, source: str, at_ms: int, reason: str = ""
    ) -> BlockEntry | None:
        """Remove the entry for ``key`` (audited as done by ``by`` through ``source``); None when there was none.

        An entry that expired at or before ``at_ms`` is not there: it is removed as an expiry, and None is returned.
        """
        k = connector_keys(pnid)
        raw = await self._call(
            self._unblock(
                keys=[k["blocks"], k["order"], k["audit"], k["expiry"]],
                args=[key, AUDIT_MAXLEN, INVALIDATION_CHANNEL, pnid, by, source, reason, iso_ms(at_ms), at_ms],
            )
        )
        return BlockEntry.loads(raw) if raw else None

    async def update(self, pnid: str, old: BlockEntry, new: BlockEntry, *, by: str, source: str, at_ms: int) -> str:
        """Replace ``old`` with ``new`` (same key; reason or expiry changed), audited as an ``update``.

        Returns:
            ``updated``; ``missing`` when no live entry is there any more; ``changed`` when the entry is no longer
            ``old`` (someone changed it meanwhile: read it again).
        """
        k = connector_keys(pnid)
        status = await self._call(
            self._update(
                keys=[k["blocks"], k["audit"], k["expiry"], k["order"]],
                args=[
                    old.key, fingerprint(old), new.dumps(), "" if new.expires_at_ms is None else new.expires_at_ms,
                    AUDIT_MAXLEN, INVALIDATION_CHANNEL, pnid,
                    new.number, new.kind, by, source, new.reason, iso_ms(at_ms), at_ms,
                ],
            )
        )  # fmt: skip
        return status.decode() if isinstance(status, bytes) else str(status)

    async def get(self, pnid: str, key: str, now_ms: int | None = None) -> BlockEntry | None:
        """The entry for ``key``; with ``now_ms``, None as well when it has expired by then."""
        raw = await self._call(self.redis.hget(connector_keys(pnid)["blocks"], key))
        entry = BlockEntry.loads(raw) if raw else None
        if entry is not None and now_ms is not None and entry.expired(now_ms):
            return None
        return entry

    async def blocked_key(self, pnid: str, keys: Sequence[str], now_ms: int) -> tuple[str, int | None] | None:
        """The first of ``keys`` (or an identity linked to it) that is blocked on ``pnid`` at ``now_ms``.

        Returns:
            ``(key, expires_at_ms or None)``, or None when none is blocked.
        """
        if not keys:
            return None
        k = connector_keys(pnid)
        found = await self._call(self._blocked_key(keys=[k["blocks"], k["links"], k["expiry"]], args=[now_ms, *keys]))
        if not found:
            return None
        key, expiry = found
        return str(key), int(float(expiry)) if expiry else None

    async def sweep_expired(self, pnid: str, now_ms: int, limit: int = 1000) -> list[BlockEntry]:
        """Remove up to ``limit`` entries expired at ``now_ms``, each with an ``expire`` audit record (atomic, and
        announced on the invalidation channel). Returns the removed entries."""
        k = connector_keys(pnid)
        rows = await self._call(
            self._sweep(
                keys=[k["blocks"], k["order"], k["expiry"], k["audit"]],
                args=[now_ms, AUDIT_MAXLEN, INVALIDATION_CHANNEL, pnid, limit, iso_ms(now_ms)],
            )
        )
        return [BlockEntry.loads(raw) for raw in rows]

    async def record_inbound(
        self, pnid: str, users: InboundUsers, now_ms: int, *, messages: Owned = (), join_requests: Owned = ()
    ) -> list[bool]:
        """Record who wrote now, learn wa_id↔BSUID links and who owns which message / join request, and say which
        users are blocked; one atomic script, one round trip.

        Args:
            users: ``(wa_id match key or "", bsuid or "")`` per user, optionally with a third element: False when the
                user's items do not count as writing (statuses, contacts, history...); their links are still learned.
            messages: ``(inbound message ID, index of its sender in users)``, kept :data:`OWNERSHIP_TTL_MS`.
            join_requests: ``(group join request ID, index of its user in users)``, kept as long.
        """
        flags = await self.record_inbound_detail(pnid, users, now_ms, messages=messages, join_requests=join_requests)
        return [bool(f) for f in flags or ()]

    async def record_inbound_detail(
        self,
        pnid: str,
        users: InboundUsers,
        now_ms: int,
        *,
        messages: Owned = (),
        join_requests: Owned = (),
        prefs: Sequence[dict[str, Any]] = (),
        flood: Sequence[dict[str, Any]] = (),
        claim: tuple[str, int] | None = None,
        confirm: Sequence[tuple[str, int]] = (),
    ) -> list[int] | None:
        """:meth:`record_inbound` with the opt-out keywords and flood counting of issue 19 in the same script, and the
        webhook replay guard's claim and confirmations (:mod:`wa_blocklist.proxy.inbound.replay`) in the same trip.

        Args:
            prefs: per keyword message, ``{"mode": "optout"|"optin", "key", "entry" (JSON), "drop" (keys an opt-in
                removes), "number", "kind", "reason"}``; each change is audited (by ``user``, source ``keyword``).
            flood: per user to count, ``{"user" (index), "fkey" (the flood key's suffix), "ids" (message IDs),
                "window", "max", "key", "entry", "expires" (ms), "number", "kind", "reason"}``.
            claim: ``(key, hold_ms)``, a key of this connector: set for ``hold_ms`` before anything is recorded; when it
                is set already the body is a replay and nothing is recorded.
            confirm: ``(key, seconds)``, keys of this connector given that expiry first (earlier deliveries' claims).

        Returns:
            Per user: 0 not blocked, 1 blocked, 2 blocked just now by flood protection; None when ``claim`` was set
            already (nothing recorded).
        """
        if not users and claim is None and not confirm:
            return []
        tag = f"wabl:{{{pnid}}}"  # connector_keys(pnid)'s prefix, its keys written out here (one dict fewer a webhook)
        argv = [str(now_ms), str(now_ms - DAY_MS), INVALIDATION_CHANNEL, pnid, _OWNERSHIP_TTL, str(len(users))]
        for user in users:
            argv += (user[0], user[1], "0" if len(user) > 2 and not user[2] else "1")
        keys = [f"{tag}:blocks", f"{tag}:links", f"{tag}:seen", f"{tag}:expiry"]
        for mid, u in messages:
            keys.append(f"{tag}:msg:{mid}")
            argv.append(str(u))
        for jid, u in join_requests:
            keys.append(f"{tag}:join:{jid}")
            argv.append(str(u))
        # "at" dates the audit records of keyword and flood entries only: no date is formatted for other webhooks
        extra = {"argv": argv, "owned": len(keys) - 4, "prefs": list(prefs), "flood": list(flood),
                 "maxlen": AUDIT_MAXLEN, "at": iso_ms(now_ms) if prefs or flood else "",
                 "confirm": [s for _, s in confirm]}  # fmt: skip
        if claim is not None:
            extra["claim"] = claim[1]
        keys += (f"{tag}:optouts", f"{tag}:audit", f"{tag}:order")
        keys += [f"{tag}:flood:{f['fkey']}" for f in flood]
        keys += [key for key, _ in confirm]
        if claim is not None:
            keys.append(claim[0])
        flags = await self._call(self._evalsha(self._inbound, keys, _dumps(extra)))
        return None if flags is None else [int(f) for f in flags]

    async def _evalsha(self, script: AsyncScript, keys: list[str], argument: str) -> Any:
        """``script(keys=keys, args=[argument])`` without redis-py's wrapper (it copies keys and args into new tuples
        and checks the client against the Pipeline protocol on every call): EVALSHA, and on NOSCRIPT (a restarted or
        flushed Redis) the script loaded and run again, as the wrapper does."""
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, argument)
        except redis_errors.NoScriptError:
            script.sha = await self.redis.script_load(script.script)
            return await self.redis.evalsha(script.sha, len(keys), *keys, argument)

    async def opted_out_key(self, pnid: str, keys: Sequence[str]) -> str | None:
        """The first of ``keys`` (or an identity linked to it) opted out on ``pnid``, or None."""
        if not keys:
            return None
        k = connector_keys(pnid)
        found = await self._call(self._opted_out_key(keys=[k["optouts"], k["links"]], args=list(keys)))
        return str(found) if found else None

    async def set_optout(
        self, pnid: str, mode: str, entry: BlockEntry, *, by: str, source: str, reason: str, at_ms: int
    ) -> bool:
        """Add (``optout``) or remove (``optin``) the opt-out of ``entry.key``, audited; True when it changed."""
        k = connector_keys(pnid)
        changed = await self._call(
            self._set_optout(
                keys=[k["optouts"], k["audit"]],
                args=[mode, entry.key, entry.dumps(), AUDIT_MAXLEN, entry.number, entry.kind, by, source, reason,
                      iso_ms(at_ms)],
            )
        )  # fmt: skip
        return bool(changed)

    async def optouts(self, pnid: str) -> list[BlockEntry]:
        """Every opt-out of a connector, newest first."""
        rows = await self._call(self.redis.hvals(connector_keys(pnid)["optouts"]))
        return sorted((BlockEntry.loads(raw) for raw in rows), key=lambda e: (e.blocked_at_ms, e.key), reverse=True)

    async def optout(self, pnid: str, key: str) -> BlockEntry | None:
        """The opt-out entry stored under ``key``, or None."""
        raw = await self._call(self.redis.hget(connector_keys(pnid)["optouts"], key))
        return BlockEntry.loads(raw) if raw else None

    async def message_owner(self, pnid: str, message_id: str) -> tuple[str, str] | None:
        """``(wa_id match key or "", bsuid or "")`` of the user who sent inbound message ``message_id``, or None."""
        return parse_owner(await self._call(self.redis.get(f"{connector_keys(pnid)['tag']}:msg:{message_id}")))

    async def join_request_owner(self, pnid: str, join_request_id: str) -> tuple[str, str] | None:
        """``(wa_id match key or "", bsuid or "")`` of the user behind a group join request, or None."""
        return parse_owner(await self._call(self.redis.get(f"{connector_keys(pnid)['tag']}:join:{join_request_id}")))

    async def last_inbound_ms(self, pnid: str, key: str) -> int | None:
        score = await self._call(self.redis.zscore(connector_keys(pnid)["seen"], key))
        return int(score) if score is not None else None

    async def linked(self, pnid: str, key: str) -> str | None:
        other = await self._call(self.redis.hget(connector_keys(pnid)["links"], key))
        return str(other) if other else None

    async def count(self, pnids: Sequence[str], now_ms: int | None = None) -> dict[str, int]:
        """Number of block entries per connector (minus those expired at ``now_ms``, if given), in one round trip."""

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for pnid in pnids:
                    pipe.zcard(connector_keys(pnid)["order"])
                    pipe.zcount(connector_keys(pnid)["expiry"], "-inf", now_ms if now_ms is not None else "-inf")
                return await pipe.execute()

        counts = await self._call(run()) if pnids else []
        return {pnid: max(0, int(counts[2 * i]) - int(counts[2 * i + 1])) for i, pnid in enumerate(pnids)}

    async def page(
        self,
        pnid: str,
        limit: int,
        cursor: str | None = None,
        match: Callable[[BlockEntry], bool] | None = None,
        now_ms: int | None = None,
    ) -> tuple[list[BlockEntry], str | None]:
        """Entries newest first, ``limit`` at most, starting after ``cursor``.

        With ``match``, only entries it accepts are returned; at most ``_SCAN_LIMIT`` entries are examined per call,
        so a search over a huge list answers quickly with a partial page and a cursor to continue. With ``now_ms``,
        entries expired by then are skipped.

        Returns:
            The entries and the cursor for the next page (None at the end).
        """
        k = connector_keys(pnid)
        score, member = decode_cursor(cursor) if cursor else ("+inf", "")
        found: list[BlockEntry] = []
        examined = 0
        batch = limit + 1 if match is None else max(limit * 4, 200)
        while True:
            rows = await self._call(self._page(keys=[k["order"], k["blocks"]], args=[score, member, batch]))
            for i in range(0, len(rows), 3):
                if len(found) == limit:
                    return found, encode_cursor(score, member)
                if match is not None and examined >= _SCAN_LIMIT:
                    return found, encode_cursor(score, member)
                member, score, raw = str(rows[i]), str(rows[i + 1]), rows[i + 2]
                examined += 1
                if not raw:
                    continue  # removed between the two reads; skip it
                entry = BlockEntry.loads(raw)
                if now_ms is not None and entry.expired(now_ms):
                    continue
                if match is None or match(entry):
                    found.append(entry)
            if len(rows) < batch * 3:
                return found, None

    async def add_audit(self, pnid: str, record: dict[str, str]) -> None:
        """Append a record that changes nothing to the audit trail (e.g. ``unblock_refused``: an attempt refused)."""
        fields: dict[Any, Any] = dict(record)
        await self._call(self.redis.xadd(connector_keys(pnid)["audit"], fields, maxlen=AUDIT_MAXLEN, approximate=True))

    async def audit(self, pnid: str, count: int = 100, before: str | None = None) -> list[dict[str, Any]]:
        """Audit records of a connector, newest first: ``count`` at most, older than the record id ``before``.

        Each record: ``id``, ``action`` (block/unblock/expire), ``number``, ``type``, ``by``, ``source``,
        ``reason``, ``at``.
        """
        top = f"({before}" if before else "+"
        rows = await self._call(self.redis.xrevrange(connector_keys(pnid)["audit"], max=top, count=count))
        return [{"id": rid, **fields} for rid, fields in rows]
