"""The blocklist service: the one implementation of block, unblock, get, list and check.

Every face (admin API, admin page, CLI, gateway, webhooks, plugins) goes through this class, so Meta's
24-hour rule, number normalisation and the audit trail are applied the same way everywhere.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from ..base.csvsafe import strip_bidi
from ..base.errors import (
    BadRequest,
    InvalidNumber,
    NotBlocked,
    NotFound,
    NotRecentlyActive,
    StoreUnavailable,
    UnknownConnector,
)
from ..base.phone_format import masked
from ..config import Config, ConnectorConfig, LiveConfig, live
from ..graph import identity as ids
from ..graph.identity import Identity
from ..graph.optout import Keyword
from ..store.blocks import BlocklistStore, BlockStatus
from ..store.cache import CheckCache
from ..store.schema import DAY_MS, BlockEntry

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds since the Unix epoch; ``time.time`` in production, a controllable clock in tests."""

MAX_REASON = 500
MAX_PAGE = 500
MAX_BLOCK_DURATION_MS = 366 * DAY_MS
"""Longest temporary block: a year (366 days, so "1 year" from any date fits)."""

_DURATION = re.compile(r"^\s*([0-9]{1,12})\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

Owned = Sequence[tuple[str, int]]
"""``(message, call or join request ID, index of its user in the users given)`` pairs from a verified webhook."""

ChangeListener = Callable[[Literal["block", "unblock"], str, BlockEntry], Awaitable[None]]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Actor:
    """Who makes a change and through which face (``admin_api``, ``cli``, ``block_users_api``, a plugin...)."""

    name: str
    source: str


@dataclass(frozen=True)
class InboundUser:
    """The identities one inbound webhook item carries: a wa_id, a BSUID, or both.

    ``active`` is False for items that do not count as the user writing (statuses, contacts, history threads, group
    events): their links are learned and they are checked, but they never make the user "recently active".
    """

    wa_id: str = ""
    bsuid: str = ""
    active: bool = True


class BlockCheck(enum.Enum):
    """What blocking a user would do now (:meth:`BlocklistService.may_block`)."""

    ALLOWED = "allowed"
    ALREADY_BLOCKED = "already_blocked"
    NOT_RECENTLY_ACTIVE = "not_recently_active"
    """Meta's 24-hour rule: the user has not messaged the connector in the last 24 hours."""


class BlocklistService:
    """Domain logic over a :class:`~proxy.store.BlocklistStore`.

    Args:
        store: the Redis-backed store.
        config: the running proxy's :class:`LiveConfig` (a reload is seen at once), or a config of its own (CLI,
            plugins, tests); connectors are looked up here.
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: BlocklistStore,
        config: Config | LiveConfig,
        clock: Clock = time.time,
        cache: CheckCache | None = None,
    ) -> None:
        self.store = store
        self.live = live(config)
        self.clock = clock
        self.cache = cache
        self._listeners: list[ChangeListener] = []

    @property
    def config(self) -> Config:
        """The config now (read per call: a reload replaces it)."""
        return self.live.current

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(action, pnid, entry)`` after every block created and every unblock."""
        self._listeners.append(listener)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def connector(self, pnid: str) -> ConnectorConfig:
        """The configured connector for a phone number ID.

        Raises:
            UnknownConnector: if no connector has this ID.
        """
        found = self.config.connector(pnid)
        if found is None:
            raise UnknownConnector(f"no connector with phone number ID {pnid[:40]!r} is configured")
        return found

    def parse_number(self, pnid: str, text: str) -> Identity:
        """Parse a typed number or BSUID, reading a national number with the connector's region."""
        return ids.parse(text, self.connector(pnid).region)

    def _lookup_identity(self, pnid: str, text: str) -> Identity:
        # Strict parsing first; then the lenient wa_id form, so an entry made from a webhook's wa_id that
        # phonenumbers does not know can still be read and removed.
        try:
            return self.parse_number(pnid, text)
        except InvalidNumber:
            try:
                return ids.recipient(text)
            except InvalidNumber:
                pass
            raise

    async def _read_linked(self, pnid: str, key: str, read: Callable[[str, str], Awaitable[_T | None]]) -> _T | None:
        """What ``read`` finds for an identity's key, else for the identity linked to it (wa_id ↔ BSUID)."""
        found = await read(pnid, key)
        if found is None and (other := await self.store.linked(pnid, key)):
            found = await read(pnid, other)
        return found

    async def block(
        self,
        pnid: str,
        number: str,
        *,
        actor: Actor,
        reason: str = "",
        force: bool = False,
        expires_at_ms: int | None = None,
        duration_seconds: int | None = None,
    ) -> tuple[BlockEntry, bool]:
        """Block a number (or BSUID) on a connector, permanently or until ``expires_at_ms``.

        Args:
            pnid: the connector's phone number ID.
            number: what the supervisor typed.
            actor: who blocks, and through which face.
            reason: free text, at most 500 characters.
            force: skip Meta's 24-hour rule (CLI ``--force`` only, for numbers blocked elsewhere before).
            expires_at_ms: when a temporary block stops applying (see :func:`parse_expires_at`).
            duration_seconds: or how long it lasts from now (see :func:`parse_duration`); neither for permanent.

        Returns:
            The entry and True if it was created, or the existing entry and False (blocking is idempotent).

        Raises:
            UnknownConnector, InvalidNumber, BadRequest: bad input.
            NotRecentlyActive: the user has not messaged this connector in the last 24 hours.
            StoreUnavailable: Redis is down.
        """
        self.connector(pnid)
        who = self.parse_number(pnid, number)
        now = self.now_ms()
        if duration_seconds is not None:
            if expires_at_ms is not None:
                raise BadRequest("give either duration or expires_at, not both")
            expires_at_ms = now + duration_seconds * 1000
        check_expiry(expires_at_ms, now)
        entry = BlockEntry(
            number=who.value,
            kind=who.kind,
            key=who.key,
            blocked_at_ms=now,
            reason=clean_reason(reason),
            blocked_by=actor.name,
            source=actor.source,
            expires_at_ms=expires_at_ms,
        )
        status, stored = await self.store.block(pnid, entry, cutoff_ms=entry.blocked_at_ms - DAY_MS, force=force)
        if self.cache is not None:
            self.cache.invalidate(pnid)
        if status is BlockStatus.STALE:
            raise NotRecentlyActive(
                f"{who.value} has not messaged this connector in the last 24 hours; "
                "WhatsApp only allows blocking users who wrote recently"
            )
        assert stored is not None
        created = status is BlockStatus.CREATED
        if created:
            log.info("blocked %s on %s by %s via %s", masked(stored.number), pnid, actor.name, actor.source)
            await self._notify("block", pnid, stored)
        return stored, created

    async def unblock(self, pnid: str, number: str, *, actor: Actor, reason: str = "") -> BlockEntry:
        """Remove a block (always allowed); ``reason`` goes to the audit trail.

        Raises:
            NotBlocked: if the number has no block on this connector.
        """
        self.connector(pnid)
        who = self._lookup_identity(pnid, number)
        removed = await self.store.unblock(
            pnid, who.key, by=actor.name, source=actor.source, at_ms=self.now_ms(), reason=clean_reason(reason)
        )
        if self.cache is not None:
            self.cache.invalidate(pnid)
        if removed is None:
            raise NotBlocked(f"{who.value} is not blocked on this connector")
        log.info("unblocked %s on %s by %s via %s", masked(removed.number), pnid, actor.name, actor.source)
        await self._notify("unblock", pnid, removed)
        return removed

    async def restore(
        self,
        pnid: str,
        number: str,
        *,
        actor: Actor,
        reason: str = "",
        blocked_at_ms: int | None = None,
        blocked_by: str = "",
        source: str = "",
        expires_at_ms: int | None = None,
    ) -> tuple[BlockEntry, bool]:
        """Put an exported block back as it was: its reason, expiry, who blocked and when are kept.

        WhatsApp's 24-hour rule is not applied (the block was made under it, or elsewhere); the change is audited as a
        block by ``actor`` through its own source (``restore``, ``cli_restore``), not as the original blocker.

        Returns:
            The entry and True if it was restored, or the existing entry and False when the number is blocked already.

        Raises:
            UnknownConnector, InvalidNumber: bad input.
            BadRequest: the block has expired already, its expiry is more than a year away, or its date is in the
                future.
            StoreUnavailable: Redis is down.
        """
        self.connector(pnid)
        who = self._lookup_identity(pnid, number)
        now = self.now_ms()
        if expires_at_ms is not None and expires_at_ms <= now:
            raise BadRequest("the block has expired already; restoring it would block nobody")
        check_expiry(expires_at_ms, now)
        if blocked_at_ms is not None and blocked_at_ms > now:
            raise BadRequest("blocked_at is in the future")
        entry = BlockEntry(
            number=who.value,
            kind=who.kind,
            key=who.key,
            blocked_at_ms=now if blocked_at_ms is None else blocked_at_ms,
            reason=clean_reason(reason),
            blocked_by=blocked_by.strip()[:200] or actor.name,
            source=source.strip()[:64] or actor.source,
            expires_at_ms=expires_at_ms,
        )
        status, stored = await self.store.block(
            pnid, entry, cutoff_ms=0, force=True, now_ms=now, audit=(actor.name, actor.source, now)
        )
        if self.cache is not None:
            self.cache.invalidate(pnid)
        assert stored is not None
        created = status is BlockStatus.CREATED
        if created:
            log.info("restored the block of %s on %s by %s via %s", masked(stored.number), pnid, actor.name,
                     actor.source)  # fmt: skip
            await self._notify("block", pnid, stored)
        return stored, created

    async def update(
        self,
        pnid: str,
        number: str,
        *,
        actor: Actor,
        reason: str | None = None,
        expires_at_ms: int | None = None,
        duration_seconds: int | None = None,
        permanent: bool = False,
    ) -> BlockEntry:
        """Change the reason and/or the expiry of an existing block (an explicit action, audited as ``update``).

        Args:
            reason: the new reason; None keeps it.
            expires_at_ms, duration_seconds: a new expiry (from now for a duration); ``permanent`` removes it.
                None of the three keeps the expiry.

        Raises:
            NotBlocked: the number has no block on this connector.
            BadRequest: nothing to change, conflicting expiry options, or an expiry out of range.
        """
        self.connector(pnid)
        who = self._lookup_identity(pnid, number)
        if sum((expires_at_ms is not None, duration_seconds is not None, permanent)) > 1:
            raise BadRequest("give at most one of duration, expires_at or a permanent block")
        keep_expiry = expires_at_ms is None and duration_seconds is None and not permanent
        if reason is None and keep_expiry:
            raise BadRequest("nothing to change: give a reason, a duration or expires_at")
        new_reason = None if reason is None else clean_reason(reason)
        for _ in range(5):  # a concurrent change makes the store refuse; read again and re-apply
            now = self.now_ms()
            current = await self.store.get(pnid, who.key, now)
            if current is None:
                raise NotBlocked(f"{who.value} is not blocked on this connector")
            expiry = current.expires_at_ms
            if not keep_expiry:
                expiry = None if permanent else (expires_at_ms or now + (duration_seconds or 0) * 1000)
                check_expiry(expiry, now)
            changed = replace(
                current, reason=current.reason if new_reason is None else new_reason, expires_at_ms=expiry
            )
            status = await self.store.update(pnid, current, changed, by=actor.name, source=actor.source, at_ms=now)
            if self.cache is not None:
                self.cache.invalidate(pnid)
            if status == "updated":
                log.info("updated the block of %s on %s by %s via %s", masked(changed.number), pnid, actor.name,
                         actor.source)  # fmt: skip
                return changed
            if status == "missing":
                raise NotBlocked(f"{who.value} is not blocked on this connector")
        raise StoreUnavailable("the block kept changing while it was updated; try again")

    async def get(self, pnid: str, number: str) -> BlockEntry:
        """The block entry for a number in any of its forms.

        Raises:
            NotBlocked: if there is none.
        """
        entry = await self.find(pnid, number)
        if entry is None:
            raise NotBlocked(f"{self._lookup_identity(pnid, number).value} is not blocked on this connector")
        return entry

    async def find(self, pnid: str, number: str) -> BlockEntry | None:
        """The block entry for a number in any of its forms, or None."""
        self.connector(pnid)
        who = self._lookup_identity(pnid, number)
        return await self.store.get(pnid, who.key, self.now_ms())

    async def inbound_blocked(self, pnid: str, user: InboundUser) -> bool:
        """Whether the user of an inbound item is blocked, read-only: nothing is recorded or learned.

        For bodies that were not verified, and for plugins that check without recording.
        """
        found = _identities(user)
        return bool(found) and await self.first_blocked(pnid, found) is not None

    async def may_block(self, pnid: str, number: str) -> BlockCheck:
        """What :meth:`block` would decide now, read-only: already blocked, or refused by the 24-hour rule.

        The one home of that decision for the faces that answer before they block (CSV dry runs, the Block Users API).
        """
        if await self.find(pnid, number) is not None:
            return BlockCheck.ALREADY_BLOCKED
        if await self.last_inbound_ms(pnid, number) is None:
            return BlockCheck.NOT_RECENTLY_ACTIVE
        return BlockCheck.ALLOWED

    async def list_blocks(
        self, pnid: str, *, limit: int = 50, cursor: str | None = None, q: str = ""
    ) -> tuple[list[BlockEntry], str | None]:
        """Block entries newest first, with search and cursor paging.

        Args:
            limit: 1 to 500.
            cursor: ``next_cursor`` of the previous page.
            q: case-insensitive text matched against the number's digits, the reason and who blocked.
        """
        self.connector(pnid)
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
        return await self.store.page(pnid, limit, cursor, _matcher(q) if q.strip() else None, now_ms=self.now_ms())

    async def is_blocked(self, pnid: str, who: Identity) -> bool:
        """True if this identity, or an identity linked to it, is blocked on the connector."""
        return await self.first_blocked(pnid, [who]) is not None

    async def first_blocked(self, pnid: str, identities: Sequence[Identity]) -> str | None:
        """The first blocked key among several identities, or None.

        One Redis round trip, or none when the exact local cache (see :mod:`wa_blocklist.proxy.store.cache`) holds the
        answer. A "blocked" answer from a temporary block is never cached: it must not outlive the block's expiry.
        """
        keys = [who.key for who in identities]
        if self.cache is None:
            found = await self.store.blocked_key(pnid, keys, self.now_ms())
            return found[0] if found else None
        hit, answer = self.cache.get(pnid, keys)
        if hit:
            return answer
        token = self.cache.token(pnid)
        found = await self.store.blocked_key(pnid, keys, self.now_ms())
        if found is None or found[1] is None:
            self.cache.put(pnid, keys, found[0] if found else None, token)
        return found[0] if found else None

    def readings(self, pnid: str, text: str) -> list[Identity]:
        """Every user a send to ``text`` on this connector may reach (see
        :func:`wa_blocklist.proxy.graph.identity.recipient_readings`).

        Raises:
            UnknownConnector, InvalidNumber: as :meth:`parse_number`.
        """
        # What a supervisor's parse_number gives for the same text is always one of these readings (tested as a
        # property in tests/test_identity.py), so it is not parsed again: the readings are memoised, parsing is not.
        return ids.recipient_readings(text, self.connector(pnid).region)

    async def check(self, pnid: str, text: str) -> str | None:
        """Is this number (any written form or reading of it, or a wa_id) or BSUID blocked, directly or through a
        linked identity?

        Returns:
            The blocked entry's number (or BSUID), or None when not blocked.
        """
        key = await self.first_blocked(pnid, self.readings(pnid, text))
        if key is None:
            return None
        entry = await self.store.get(pnid, key, self.now_ms())
        return entry.number if entry is not None else key

    async def record_inbound(
        self, pnid: str, users: Sequence[InboundUser], *, messages: Owned = (), join_requests: Owned = ()
    ) -> list[bool]:
        """Record a VERIFIED webhook's users: the active ones wrote now; returns which of them are blocked.

        Call it only for a body whose signature was verified: it learns wa_id↔BSUID links, activity (the 24-hour
        rule) and ownership, all of which change who is blocked and who may be blocked.

        Args:
            users: the users of the webhook's items.
            messages: ``(inbound message ID, index of its sender in users)``: kept 30 days for :meth:`message_sender`.
            join_requests: ``(join request ID, index of its user in users)``: for :meth:`join_request_user`.

        Unparseable wa_ids are still checked by their BSUID; with neither usable, the user counts as not blocked
        and nothing is recorded for them.
        """
        pairs, usable, joins = _recordable(users, messages, join_requests)
        return await self.store.record_inbound(pnid, pairs, self.now_ms(), messages=usable, join_requests=joins)

    async def message_sender(self, pnid: str, message_id: str) -> Identity | None:
        """The user who sent inbound message ``message_id`` to connector ``pnid`` (kept 30 days); None if unknown."""
        return _owner_identity(await self.store.message_owner(pnid, message_id)) if message_id else None

    async def join_request_user(self, pnid: str, join_request_id: str) -> Identity | None:
        """The user behind a group join request seen on connector ``pnid`` (group_join_request_created); None if
        unknown."""
        if not join_request_id:
            return None
        return _owner_identity(await self.store.join_request_owner(pnid, join_request_id))

    async def join_request_blocked(self, join_request_id: str) -> bool | None:
        """Whether the user behind a group join request is blocked on any connector (an approval lets them into a
        group, whichever connector they would write to); None if no connector saw the join request in a verified
        webhook, so its user is unknown."""
        pnids = [c.phone_number_id for c in self.config.connectors]
        users = [who for pnid in pnids if (who := await self.join_request_user(pnid, join_request_id)) is not None]
        if not users:
            return None
        for pnid in pnids:
            if await self.first_blocked(pnid, users) is not None:
                return True
        return False

    async def follow_number_change(
        self, pnid: str, old: InboundUser, new_wa_id: str = "", new_bsuid: str = ""
    ) -> list[BlockEntry]:
        """A blocked user changed number or BSUID (``system`` messages ``user_changed_number`` /
        ``user_changed_user_id``, ``user_id_update``): block the new identities too.

        Each new entry copies the reason and expiry of the old one, is made by ``whatsapp`` through ``number_change``
        (its reason and audit record say which entry it follows), and the old entry stays, so the list shows both.
        Call it only for verified webhooks.

        Returns:
            The entries created: none when the old identity is not blocked, the new ones are unreadable or already
            blocked.
        """
        new: list[Identity] = []
        if new_wa_id:
            try:
                new.append(ids.from_wa_id(new_wa_id))
            except InvalidNumber:
                log.warning("a blocked user changed number on %s, but the new wa_id is unreadable", pnid)
        if new_bsuid and (found_new := ids.bsuid(new_bsuid)) is not None:
            new.append(found_new)
        known = _identities(old)
        key = await self.first_blocked(pnid, known) if known and new else None
        entry = await self.store.get(pnid, key, self.now_ms()) if key else None
        if entry is None:
            return []
        created: list[BlockEntry] = []
        for who in new:
            now = self.now_ms()
            follow = BlockEntry(
                number=who.value,
                kind=who.kind,
                key=who.key,
                blocked_at_ms=now,
                reason=f"number change: follows the block of {entry.number}. {entry.reason}".strip()[:MAX_REASON],
                blocked_by="whatsapp",
                source="number_change",
                expires_at_ms=entry.expires_at_ms,
            )
            status, stored = await self.store.block(pnid, follow, cutoff_ms=now - DAY_MS, force=True)
            if self.cache is not None:
                self.cache.invalidate(pnid)
            if status is BlockStatus.CREATED and stored is not None:
                log.info("block of %s on %s follows the user to %s", masked(entry.number), pnid, masked(stored.number))
                await self._notify("block", pnid, stored)
                created.append(stored)
        return created

    async def last_inbound_ms(self, pnid: str, number: str) -> int | None:
        """When the user last messaged the connector (Unix ms), or None if not in the last 24 hours."""
        self.connector(pnid)
        found = await self._read_linked(pnid, self._lookup_identity(pnid, number).key, self.store.last_inbound_ms)
        if found is None or found < self.now_ms() - DAY_MS:
            return None
        return found

    async def audit(
        self, pnid: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The connector's audit trail, newest first, with a cursor for the next page."""
        self.connector(pnid)
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
        if cursor is not None and not re.fullmatch(r"[0-9]{1,20}-[0-9]{1,20}", cursor):
            raise BadRequest("the cursor is not one this API returned; start again without it")
        records = await self.store.audit(pnid, limit + 1, cursor)
        more = len(records) > limit
        records = records[:limit]
        return records, records[-1]["id"] if more else None

    async def connectors(self) -> list[dict[str, Any]]:
        """Every configured connector with its count of blocked numbers (secrets never included)."""
        connectors = self.config.connectors  # one config for the whole answer, even if a reload lands meanwhile
        counts = await self.store.count([c.phone_number_id for c in connectors], self.now_ms())
        return [
            {
                "phone_number_id": c.phone_number_id,
                "name": c.name,
                "display_number": c.display_number,
                "region": c.region,
                "blocked_count": counts[c.phone_number_id],
            }
            for c in connectors
        ]

    async def sweep_expired(self, limit: int = 1000) -> dict[str, list[BlockEntry]]:
        """Remove the expired temporary blocks of every configured connector (each with an ``expire`` audit record).

        Expired blocks already stopped applying when their time came; this only tidies them away. Listeners hear
        an ``unblock`` for each (so a connector with ``sync_to_meta`` lifts the block at Meta too).

        Returns:
            The removed entries per connector that had any.
        """
        removed: dict[str, list[BlockEntry]] = {}
        now = self.now_ms()
        for connector in self.config.connectors:
            pnid = connector.phone_number_id
            while True:
                entries = await self.store.sweep_expired(pnid, now, limit)
                if entries:
                    removed.setdefault(pnid, []).extend(entries)
                    if self.cache is not None:
                        self.cache.invalidate(pnid)
                for entry in entries:
                    log.info("temporary block of %s on %s expired", masked(entry.number), pnid)
                    await self._notify("unblock", pnid, entry)
                if len(entries) < limit:
                    break
        return removed

    # --- issue 19: block everywhere, opt-outs, flood protection ---------------------------------------------------

    def _targets(self, pnids: Sequence[str] | None) -> list[ConnectorConfig]:
        if pnids is None:
            return list(self.config.connectors)
        if not pnids:
            raise BadRequest("connectors must name at least one connector, or be left out for all of them")
        return [self.connector(pnid) for pnid in dict.fromkeys(pnids)]

    async def block_everywhere(
        self,
        number: str,
        *,
        actor: Actor,
        reason: str = "",
        pnids: Sequence[str] | None = None,
        expires_at_ms: int | None = None,
        duration_seconds: int | None = None,
        include_unsynced: bool = False,
    ) -> list[ConnectorOutcome]:
        """Block one number on several connectors (``pnids``) or on all of them (None), with one reason and one
        audit record per connector where a block is made.

        Meta's 24-hour rule is applied per connector: by default the number is blocked only where it wrote in the
        last 24 hours, and the outcome of every other connector says so (``not_recently_active``). With
        ``include_unsynced`` it is blocked on connectors whose ``sync_to_meta`` is off even without a recent message
        (the proxy alone enforces it there; Meta would refuse the block on a synced connector).

        Returns:
            One outcome per connector: ``blocked``, ``already_blocked``, ``not_recently_active`` or
            ``invalid_number`` (a national number that does not read in the connector's region).

        Raises:
            UnknownConnector, BadRequest: a connector that does not exist, bad reason or expiry.
            StoreUnavailable: Redis is down (connectors done before it failed stay blocked).
        """
        targets = self._targets(pnids)
        clean_reason(reason)
        outcomes: list[ConnectorOutcome] = []
        for connector in targets:
            pnid = connector.phone_number_id
            force = include_unsynced and not connector.sync_to_meta
            try:
                entry, created = await self.block(
                    pnid, number, actor=actor, reason=reason, force=force,
                    expires_at_ms=expires_at_ms, duration_seconds=duration_seconds,
                )  # fmt: skip
            except NotRecentlyActive:
                why = "it has not written to this connector in the last 24 hours, so WhatsApp's rule refuses the block"
                if not connector.sync_to_meta:
                    why += " (include_unsynced blocks it here anyway: this connector does not sync to Meta)"
                outcomes.append(ConnectorOutcome(connector, "not_recently_active", why))
                continue
            except InvalidNumber as exc:
                outcomes.append(ConnectorOutcome(connector, "invalid_number", exc.message))
                continue
            outcome: EverywhereOutcome = "blocked" if created else "already_blocked"
            text = "blocked" if created else "it was blocked here already"
            if force and created:
                text = "blocked without a recent message: the connector does not sync to Meta (include_unsynced)"
            outcomes.append(ConnectorOutcome(connector, outcome, text, entry))
        return _unless_unreadable_everywhere(number, outcomes)

    async def unblock_everywhere(
        self, number: str, *, actor: Actor, reason: str = "", pnids: Sequence[str] | None = None
    ) -> list[ConnectorOutcome]:
        """Remove a number's block from several or all connectors (one audit record per connector unblocked).

        Returns:
            One outcome per connector: ``unblocked``, ``not_blocked`` or ``invalid_number``.
        """
        targets = self._targets(pnids)
        clean_reason(reason)
        outcomes: list[ConnectorOutcome] = []
        for connector in targets:
            try:
                entry = await self.unblock(connector.phone_number_id, number, actor=actor, reason=reason)
            except NotBlocked:
                outcomes.append(ConnectorOutcome(connector, "not_blocked", "it was not blocked here"))
                continue
            except InvalidNumber as exc:
                outcomes.append(ConnectorOutcome(connector, "invalid_number", exc.message))
                continue
            outcomes.append(ConnectorOutcome(connector, "unblocked", "unblocked", entry))
        return _unless_unreadable_everywhere(number, outcomes)

    async def blocked_on(self, number: str) -> list[ConnectorOutcome]:
        """On which connectors a number (or a linked identity) is blocked: one outcome per connector, ``blocked``
        with its entry or ``not_blocked`` (``invalid_number`` where the number does not read in the region)."""
        outcomes: list[ConnectorOutcome] = []
        for connector in self.config.connectors:
            pnid = connector.phone_number_id
            try:
                who = self._lookup_identity(pnid, number)
            except InvalidNumber as exc:
                outcomes.append(ConnectorOutcome(connector, "invalid_number", exc.message))
                continue
            key = await self.first_blocked(pnid, [who])
            entry = await self.store.get(pnid, key, self.now_ms()) if key else None
            if entry is None:
                outcomes.append(ConnectorOutcome(connector, "not_blocked", "not blocked"))
            else:
                outcomes.append(ConnectorOutcome(connector, "blocked", "blocked", entry))
        return outcomes

    async def opt_out(self, pnid: str, number: str, *, actor: Actor, reason: str = "") -> tuple[BlockEntry, bool]:
        """Record that a user opted out of template and marketing sends on a connector (they may still write, and
        free-form replies still go out). No 24-hour rule: nothing is asked of Meta.

        Returns:
            The entry and True when it was created, or the existing one and False.
        """
        self.connector(pnid)
        who = self._lookup_identity(pnid, number)
        entry = BlockEntry(
            number=who.value, kind=who.kind, key=who.key, blocked_at_ms=self.now_ms(), reason=clean_reason(reason),
            blocked_by=actor.name, source=actor.source,
        )  # fmt: skip
        created = await self.store.set_optout(
            pnid, "optout", entry, by=actor.name, source=actor.source, reason=entry.reason, at_ms=entry.blocked_at_ms
        )
        if created:
            log.info("opted %s out on %s by %s via %s", masked(who.value), pnid, actor.name, actor.source)
            return entry, True
        existing = await self.store.optout(pnid, who.key)
        return (existing or entry), False

    async def opt_in(self, pnid: str, number: str, *, actor: Actor, reason: str = "") -> BlockEntry:
        """Remove a user's opt-out (audited as ``optin``).

        Raises:
            NotOptedOut: the number has no opt-out on this connector.
        """
        self.connector(pnid)
        who = self._lookup_identity(pnid, number)
        existing = await self._read_linked(pnid, who.key, self.store.optout)
        if existing is None:
            raise NotOptedOut(f"{who.value} has not opted out on this connector")
        await self.store.set_optout(
            pnid, "optin", existing, by=actor.name, source=actor.source, reason=clean_reason(reason),
            at_ms=self.now_ms(),
        )  # fmt: skip
        log.info("opted %s back in on %s by %s via %s", masked(existing.number), pnid, actor.name, actor.source)
        return existing

    async def optouts(self, pnid: str) -> list[BlockEntry]:
        """A connector's opt-outs, newest first."""
        self.connector(pnid)
        return await self.store.optouts(pnid)

    async def first_opted_out(self, pnid: str, identities: Sequence[Identity]) -> str | None:
        """The first opted-out key among some identities (or identities linked to them), or None; one round trip."""
        return await self.store.opted_out_key(pnid, [who.key for who in identities])

    async def optout_of(self, pnid: str, text: str) -> BlockEntry | None:
        """The opt-out that a template send to ``text`` (any written form or reading, a wa_id, or a BSUID) meets on
        the connector, directly or through a linked identity: what the gateway's :meth:`first_opted_out` check
        finds; None when there is none.

        Raises:
            UnknownConnector, InvalidNumber: as :meth:`readings`.
        """
        key = await self.first_opted_out(pnid, self.readings(pnid, text))
        if key is None:
            return None
        entry = await self.store.optout(pnid, key)
        if entry is None:  # opted back in between the two reads: the send would now pass
            return None
        return entry

    async def record_inbound_detail(
        self,
        pnid: str,
        users: Sequence[InboundUser],
        *,
        messages: Owned = (),
        join_requests: Owned = (),
        keywords: Sequence[tuple[int, Keyword, str]] = (),
        counted: Sequence[tuple[int, list[str]]] = (),
        claim: tuple[str, int] | None = None,
        confirm: Sequence[tuple[str, int]] = (),
    ) -> list[int] | None:
        """:meth:`record_inbound` plus opt-out keywords and flood counting, in the same round trip.

        Args:
            keywords: ``(user index, "optout" | "optin", the message's text)`` for keyword messages.
            counted: ``(user index, their inbound message IDs)`` for flood protection; ignored when the connector's
                ``flood_max_messages`` is 0.
            claim, confirm: the webhook replay guard's, in the same script (see
                :meth:`wa_blocklist.proxy.store.blocks.BlocklistStore.record_inbound_detail`).

        Returns:
            Per user: 0 not blocked, 1 blocked, 2 blocked just now by flood protection (source ``auto``); None when
            ``claim`` says the body is a replay (nothing recorded).
        """
        connector = self.connector(pnid)
        now = self.now_ms()
        flooding = connector.flood_max_messages > 0 and bool(counted)
        # The identities automatic entries are made for: only worked out when a keyword or flood counting may need them
        people = [_primary(u) for u in users] if keywords or flooding else []
        prefs: list[dict[str, Any]] = []
        for u, mode, text in keywords:
            who = people[u] if 0 <= u < len(people) else None
            if who is None:
                continue
            quoted = " ".join(strip_bidi(text).split())[:80]
            entry = BlockEntry(
                number=who.value, kind=who.kind, key=who.key, blocked_at_ms=now,
                reason=f'keyword "{quoted}"', blocked_by="user", source="keyword",
            )  # fmt: skip
            drop = [i for i in _keys_of(users[u]) if i]
            prefs.append({"mode": mode, "key": who.key, "entry": entry.dumps(), "drop": drop, "number": who.value,
                          "kind": who.kind, "reason": entry.reason})  # fmt: skip
        flood: list[dict[str, Any]] = []
        if flooding:
            window = connector.flood_window_seconds * 1000
            for u, message_ids in counted:
                who = people[u] if 0 <= u < len(people) else None
                if who is None or not message_ids:
                    continue
                reason = (
                    f"flood: more than {connector.flood_max_messages} messages in {connector.flood_window_seconds} s"
                )
                expires = now + connector.flood_block_seconds * 1000
                entry = BlockEntry(
                    number=who.value, kind=who.kind, key=who.key, blocked_at_ms=now, reason=reason,
                    blocked_by="flood", source="auto", expires_at_ms=expires,
                )  # fmt: skip
                flood.append({"user": u, "fkey": who.key, "ids": message_ids, "window": window,
                              "max": connector.flood_max_messages, "key": who.key, "entry": entry.dumps(),
                              "expires": expires, "number": who.value, "kind": who.kind, "reason": reason})  # fmt: skip
        pairs, usable, joins = _recordable(users, messages, join_requests)
        flags = await self.store.record_inbound_detail(
            pnid, pairs, now, messages=usable, join_requests=joins, prefs=prefs, flood=flood, claim=claim,
            confirm=confirm,
        )  # fmt: skip
        if flags is None:
            return None
        if self.cache is not None and (prefs or 2 in flags):
            self.cache.invalidate(pnid)
        if flooding and 2 in flags:
            for flag, who in zip(flags, people, strict=True):
                if flag == 2 and who is not None:
                    log.info("flood protection blocked %s on %s", masked(who.value), pnid)
        return flags

    async def _notify(self, action: Literal["block", "unblock"], pnid: str, entry: BlockEntry) -> None:
        for listener in self._listeners:
            try:
                await listener(action, pnid, entry)
            except Exception:  # a listener's failure must not undo or hide the change itself
                log.exception("change listener failed for %s on %s", action, pnid)


EverywhereOutcome = Literal[
    "blocked", "already_blocked", "not_recently_active", "invalid_number", "unblocked", "not_blocked"
]


@dataclass(frozen=True)
class ConnectorOutcome:
    """What a block / unblock made on several connectors did on one of them, and why."""

    connector: ConnectorConfig
    outcome: EverywhereOutcome
    detail: str
    entry: BlockEntry | None = None

    def to_json(self) -> dict[str, Any]:
        """The outcome as the admin API shows it."""
        return {
            "phone_number_id": self.connector.phone_number_id,
            "name": self.connector.name,
            "outcome": self.outcome,
            "detail": self.detail,
            "block": self.entry.to_json() if self.entry is not None else None,
        }


class NotOptedOut(NotFound):
    """The number has no opt-out on this connector."""

    code = "not_opted_out"


def _unless_unreadable_everywhere(number: str, outcomes: list[ConnectorOutcome]) -> list[ConnectorOutcome]:
    """The outcomes, unless the number read on no connector at all: then it is bad input (400), not an outcome."""
    if outcomes and all(o.outcome == "invalid_number" for o in outcomes):
        raise InvalidNumber(outcomes[0].detail)
    return outcomes


def _keys_of(user: InboundUser) -> tuple[str, str]:
    """``(wa_id match key or "", BSUID or "")`` of an inbound user; unreadable identities become ""."""
    wa_key = ""
    if user.wa_id:
        with contextlib.suppress(InvalidNumber):
            wa_key = ids.from_wa_id(user.wa_id).key
    found = ids.bsuid(user.bsuid) if user.bsuid else None
    return wa_key, found.key if found else ""


def _identities(user: InboundUser) -> list[Identity]:
    """The readable identities of an inbound user: its wa_id, its BSUID, both or none."""
    found: list[Identity] = []
    if user.wa_id:
        with contextlib.suppress(InvalidNumber):
            found.append(ids.from_wa_id(user.wa_id))
    if user.bsuid and (bsuid := ids.bsuid(user.bsuid)) is not None:
        found.append(bsuid)
    return found


def _recordable(
    users: Sequence[InboundUser], messages: Owned, join_requests: Owned
) -> tuple[list[tuple[str, str, bool]], list[tuple[str, int]], list[tuple[str, int]]]:
    """What the store records of a verified webhook's users: ``(wa_id match key, BSUID, active)`` per user, and the
    messages and join requests of the users with a usable identity (the others own nothing)."""
    pairs = [(*_keys_of(user), user.active) for user in users]

    def owned(refs: Owned) -> list[tuple[str, int]]:
        return [(ref, u) for ref, u in refs if 0 <= u < len(pairs) and (pairs[u][0] or pairs[u][1])]

    return pairs, owned(messages), owned(join_requests)


def _primary(user: InboundUser) -> Identity | None:
    """The identity an automatic entry (opt-out keyword, flood block) is made for: the wa_id, else the BSUID."""
    if user.wa_id:
        with contextlib.suppress(InvalidNumber):
            return ids.from_wa_id(user.wa_id)
    return ids.bsuid(user.bsuid) if user.bsuid else None


# Control characters that are not whitespace (NUL, escape, delete, C1 controls): text has no use for them, and a NUL
# makes an exported CSV file unreadable as text, so a backup could not be restored.
_CONTROLS = dict.fromkeys(c for c in [*range(0x20), *range(0x7F, 0xA0)] if not chr(c).isspace())


def strip_controls(text: str) -> str:
    """``text`` without control characters other than whitespace (NUL, escape, delete, C1 controls)."""
    return text.translate(_CONTROLS)


def clean_reason(reason: Any) -> str:
    """Validate the free-text reason: a string of at most 500 characters, whitespace folded to single spaces,
    bidirectional control characters removed (a right-to-left override would make it display as something else),
    and other control characters removed."""
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise BadRequest("reason must be a string")
    text = " ".join(strip_bidi(reason).translate(_CONTROLS).split())
    if len(text) > MAX_REASON:
        raise BadRequest(f"reason is too long ({len(text)} characters, at most {MAX_REASON})")
    return text


def parse_duration(text: Any) -> int:
    """A block duration in seconds: ``30m``, ``12h``, ``1d``, ``7d``, ``2w``, ``90s`` or a number of seconds.

    Raises:
        BadRequest: anything else, or zero.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise BadRequest(
            "duration must be a number of seconds or a number with a unit: s, m, h, d or w (e.g. 12h, 1d, 7d)"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise BadRequest("duration must be longer than zero")
    return seconds


def parse_expires_at(text: Any) -> int:
    """An ISO 8601 date-time with a time zone (``2026-12-01T00:00:00Z``) → Unix ms.

    Raises:
        BadRequest: not a string in that form, or without a time zone.
    """
    from datetime import datetime

    if not isinstance(text, str) or len(text) > 64:
        raise BadRequest("expires_at must be an ISO 8601 date-time with a time zone, e.g. 2026-12-01T00:00:00Z")
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise BadRequest(
            "expires_at must be an ISO 8601 date-time with a time zone, e.g. 2026-12-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise BadRequest("expires_at needs a time zone (Z or an offset such as +02:00)")
    return int(moment.timestamp() * 1000)


def parse_expiry(*, duration: Any = None, expires_at: Any = None) -> tuple[int | None, int | None]:
    """Read the optional ``duration`` and ``expires_at`` of a block request (at most one of them).

    Returns:
        ``(expires_at_ms, duration_seconds)`` for :meth:`BlocklistService.block`: both None for a permanent block.

    Raises:
        BadRequest: both given, or either malformed (the range is checked when the block is made).
    """
    if duration not in (None, "") and expires_at not in (None, ""):
        raise BadRequest("give either duration or expires_at, not both")
    if duration not in (None, ""):
        return None, parse_duration(duration)
    if expires_at not in (None, ""):
        return parse_expires_at(expires_at), None
    return None, None


def check_expiry(expires_at_ms: int | None, now_ms: int) -> None:
    """Refuse an expiry that is not in the future or is more than a year away."""
    if expires_at_ms is None:
        return
    if expires_at_ms <= now_ms:
        raise BadRequest("the block's expiry must be in the future")
    if expires_at_ms - now_ms > MAX_BLOCK_DURATION_MS:
        raise BadRequest("a temporary block can last at most a year; leave the expiry out for a permanent block")


def _matcher(q: str) -> Callable[[BlockEntry], bool]:
    needle = q.strip().lower()
    digits = re.sub(r"[^0-9]", "", needle)
    numeric = bool(digits) and not re.sub(r"[0-9\s+()./\-]", "", needle)

    def match(entry: BlockEntry) -> bool:
        if numeric:
            return digits in entry.number or digits in entry.key
        return needle in entry.number.lower() or needle in entry.reason.lower() or needle in entry.blocked_by.lower()

    return match


def _owner_identity(owner: tuple[str, str] | None) -> Identity | None:
    if owner is None:
        return None
    wa_key, bsuid = owner
    if wa_key:
        with contextlib.suppress(InvalidNumber):
            return ids.from_wa_id(wa_key)
    return ids.bsuid(bsuid) if bsuid else None
