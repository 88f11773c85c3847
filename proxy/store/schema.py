"""The blocklist store's key schema and the records it keeps: key names, limits, block entries, message owners.

Key schema (every key of one connector shares the hash tag ``{pnid}``, so all of them live in one Redis
Cluster slot and every Lua script of :mod:`~wa_blocklist.proxy.store.scripts` stays legal on a cluster):

==============================  =====  ==========================================================
``wabl:{pnid}:blocks``          hash   match key → block entry (JSON)
``wabl:{pnid}:order``           zset   match key → blocked_at (ms); newest-first listing, cursors
``wabl:{pnid}:seen``            zset   identity key → last inbound message (ms); pruned after 24 h
``wabl:{pnid}:links``           hash   wa_id key ↔ BSUID, both directions, learned from webhooks
``wabl:{pnid}:audit``           stream one record per block/unblock/expire (action, number, by, source, reason)
``wabl:{pnid}:expiry``          zset   match key → expires_at (ms), temporary blocks only; the sweep's index
``wabl:{pnid}:msg:<id>``        str    inbound message ID → its sender (``wa_key<TAB>bsuid``), from verified
                                       webhooks only; expires after 30 days (Meta's limit for marking it read)
``wabl:{pnid}:join:<id>``       str    group join request ID → the user who asked (same form, same source), 30 days
``wabl:{pnid}:optouts``         hash   match key → opt-out entry (JSON): no template / marketing sends (issue 19)
``wabl:{pnid}:flood:<key>``     zset   inbound message IDs of one user in the flood window (flood protection on)
==============================  =====  ==========================================================

A temporary block keeps its expiry in its entry JSON (``expires_at_ms``) and in the ``expiry`` zset. Every script
that reads a block takes ``now`` from the caller's clock and treats an entry whose expiry is at or before it as
absent, so an expired block stops applying at once; the sweep
(:meth:`~wa_blocklist.proxy.store.blocks.BlocklistStore.sweep_expired`) removes it later with an ``expire`` audit
record.

The Meta sync queue's keys are in :mod:`~wa_blocklist.proxy.store.sync_queue`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ..base.csvsafe import strip_bidi
from ..base.phone_format import international

DAY_MS = 24 * 60 * 60 * 1000
AUDIT_MAXLEN = 100_000
INVALIDATION_CHANNEL = "wabl:invalidate"
"""Every change that can alter a check's answer publishes the connector's phone number ID here."""
OWNERSHIP_TTL_MS = 30 * DAY_MS
"""How long the sender of an inbound message (and the user of a join request) is kept."""


def connector_keys(pnid: str) -> dict[str, str]:
    """The key names of one connector by their short name (``blocks``, ``order``, ...), and ``tag``, their prefix."""
    tag = f"wabl:{{{pnid}}}"
    keys = {name: f"{tag}:{name}" for name in ("blocks", "order", "links", "seen", "audit", "expiry", "optouts")}
    keys["tag"] = tag  # prefix of the per-message and per-join-request keys
    return keys


def parse_owner(raw: Any) -> tuple[str, str] | None:
    """A stored owner (``wa_key<TAB>bsuid``) as ``(wa_key or "", bsuid or "")``; None when there is none."""
    if not raw:
        return None
    wa_key, _, bsuid = str(raw).partition("\t")
    return (wa_key, bsuid) if wa_key or bsuid else None


@dataclass(frozen=True)
class BlockEntry:
    """One blocked identity on one connector.

    Attributes:
        number: canonical digits of the phone number, or the BSUID.
        kind: ``phone`` or ``bsuid``.
        key: the match key shared by every form of the number.
        blocked_at_ms: when the block was made (Unix ms, UTC).
        reason: free text from the supervisor (may be empty).
        blocked_by: the admin token name, CLI user or plugin that made it.
        source: the face it came through (``admin_api``, ``cli``, ``block_users_api``, ...).
        expires_at_ms: when a temporary block stops applying (Unix ms, UTC); None for a permanent block.
    """

    number: str
    kind: str
    key: str
    blocked_at_ms: int
    reason: str
    blocked_by: str
    source: str
    expires_at_ms: int | None = None

    @property
    def blocked_at(self) -> str:
        """ISO 8601 UTC with milliseconds, e.g. ``2026-11-25T02:34:52.123Z``."""
        return iso_ms(self.blocked_at_ms)

    @property
    def expires_at(self) -> str | None:
        """ISO 8601 UTC of the expiry, or None for a permanent block."""
        return iso_ms(self.expires_at_ms) if self.expires_at_ms is not None else None

    def expired(self, now_ms: int) -> bool:
        """True once a temporary block's expiry is reached."""
        return self.expires_at_ms is not None and self.expires_at_ms <= now_ms

    def to_json(self) -> dict[str, Any]:
        """The entry as the admin API shows it."""
        return {
            "number": self.number,
            "display_number": international(self.number) if self.kind == "phone" else self.number,
            "type": self.kind,
            "blocked_at": self.blocked_at,
            "reason": strip_bidi(self.reason),  # entries stored before reasons were cleaned of bidi controls
            "blocked_by": strip_bidi(self.blocked_by),
            "source": self.source,
            "expires_at": self.expires_at,
        }

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str) -> BlockEntry:
        """Read an entry as stored (entries written before temporary blocks existed have no ``expires_at_ms``)."""
        return cls(**json.loads(raw))


def fingerprint(entry: BlockEntry) -> str:
    """What the update script compares to tell that an entry is still the one read (see ``scripts.UPDATE``)."""
    expires = "" if entry.expires_at_ms is None else str(entry.expires_at_ms)
    return f"{entry.blocked_at_ms}|{expires}|{entry.reason}"


def iso_ms(ms: int) -> str:
    """Unix milliseconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
