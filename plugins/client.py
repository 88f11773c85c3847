"""An async client of the blocklist for bots: the one thing every framework plugin talks to.

Two modes, one interface:

* **direct** — :meth:`BlocklistClient.direct` connects to the store named in the proxy's config (``store.redis_url``,
  or the embedded Redis that a running proxy serves in ``store.data_dir``; a bot never starts that one) and calls
  :class:`wa_blocklist.proxy.blocklist.service.BlocklistService`, exactly as the proxy does.
  Checks follow wa_id ↔ BSUID links, and inbound users can be recorded so the 24-hour rule also works for a bot
  that runs without the proxy.
* **HTTP** — :meth:`BlocklistClient.http` calls the proxy's admin API with a bearer token; errors come back as
  the matching :mod:`wa_blocklist.proxy.base.errors` class.

Both modes answer the blocklist (:meth:`BlocklistClient.any_blocked`) and the opt-outs of issue 19
(:meth:`BlocklistClient.any_opted_out`: users who asked to stop template and marketing sends).

Example::

    async with BlocklistClient.direct("config.yaml") as blocklist:
        if await blocklist.is_blocked("106540352242922", "573001234567"):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from wa_blocklist.proxy.base import errors
from wa_blocklist.proxy.base.errors import BlocklistError, InvalidNumber, StoreUnavailable
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, Clock, InboundUser, NotOptedOut
from wa_blocklist.proxy.config import Config, load_config
from wa_blocklist.proxy.graph import identity
from wa_blocklist.proxy.store.client import open_store
from wa_blocklist.proxy.store.schema import BlockEntry

log = logging.getLogger(__name__)

References = tuple[Sequence[tuple[str, int]], Sequence[tuple[str, int]]]
"""``(message or call ID, user index)`` and ``(join request ID, user index)`` pairs of one webhook."""

DEFAULT_ACTOR = Actor("bot", "plugin")
"""Who blocks through a direct client unless told otherwise."""

__all__ = [
    "Block",
    "BlocklistClient",
    "DirectBlocklistClient",
    "HttpBlocklistClient",
    "InboundUser",
    "ReferenceCheck",
]


@dataclass(frozen=True)
class Block:
    """A block entry as both modes return it (the admin API's entry format).

    Attributes:
        number: canonical digits of the phone number, or the BSUID.
        type: ``phone`` or ``bsuid``.
        blocked_at: ISO 8601 UTC, e.g. ``2026-11-25T02:34:52.123Z``.
        reason: the supervisor's free text (may be empty).
        blocked_by: the admin token name, CLI user or bot that made it.
        source: the face it came through (``admin_api``, ``cli``, ``plugin``...).
    """

    number: str
    type: str
    blocked_at: str
    reason: str
    blocked_by: str
    source: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block:
        """Build from an admin API entry (unknown extra fields are ignored)."""
        return cls(
            number=str(data["number"]),
            type=str(data.get("type", "")),
            blocked_at=str(data.get("blocked_at", "")),
            reason=str(data.get("reason", "")),
            blocked_by=str(data.get("blocked_by", "")),
            source=str(data.get("source", "")),
        )

    @classmethod
    def from_entry(cls, entry: BlockEntry) -> Block:
        return cls.from_json(entry.to_json())


@dataclass(frozen=True)
class ReferenceCheck:
    """What the blocklist knows of a message or join request a Graph request refers to.

    Attributes:
        known: the message (or join request) was seen in a verified webhook, so its user is known.
        blocked: that user is blocked (on the connector; for a join request, on any connector).
        unknown_references: the proxy's ``gateway.unknown_references`` (``refuse`` or ``pass``), for an unknown one.
    """

    known: bool
    blocked: bool
    unknown_references: str = "refuse"


class BlocklistClient(ABC):
    """The blocklist as a bot sees it. Use as an async context manager, or call :meth:`start` / :meth:`close`."""

    @staticmethod
    def direct(
        config: Config | str | os.PathLike[str],
        *,
        actor: str = "bot",
        source: str = "plugin",
        clock: Clock = time.time,
    ) -> DirectBlocklistClient:
        """A client that connects to the proxy's store itself (the proxy must be running when it uses the embedded
        store; :meth:`start` fails with a clear :class:`~wa_blocklist.proxy.base.errors.StoreUnavailable` otherwise).

        Args:
            config: a validated :class:`~proxy.config.Config` or the path of the proxy's ``config.yaml``.
            actor: the name recorded as ``blocked_by`` for blocks this client makes.
            source: the face recorded as ``source`` (e.g. ``pywa``, ``botframework``).
            clock: seconds since the epoch (tests pass a controllable clock).
        """
        return DirectBlocklistClient(config, actor=Actor(actor, source), clock=clock)

    @staticmethod
    def http(
        base_url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = 5.0,
    ) -> HttpBlocklistClient:
        """A client of the proxy's admin API.

        Args:
            base_url: where the proxy listens, e.g. ``http://127.0.0.1:8080`` (``/admin/api/...`` is appended).
            token: an admin API token (``viewer`` may check and list, ``admin`` may also block and unblock).
            session: an existing session to share; by default the client opens and closes its own.
            timeout_seconds: total time allowed for one API call.
        """
        return HttpBlocklistClient(base_url, token, session=session, timeout_seconds=timeout_seconds)

    @abstractmethod
    async def start(self) -> None:
        """Open the resources this client needs (store, HTTP session)."""

    @abstractmethod
    async def close(self) -> None:
        """Release what :meth:`start` opened."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def is_blocked(self, pnid: str, number_or_bsuid: str) -> bool:
        """True if the number (any written form, or a wa_id) or BSUID is blocked on the connector.

        Raises:
            UnknownConnector: the phone number ID is not a configured connector.
            InvalidNumber: the text is neither a number nor a BSUID.
            StoreUnavailable: the store or the admin API cannot be reached.
        """

    @abstractmethod
    async def region(self, pnid: str) -> str:
        """The connector's region for national numbers (:attr:`wa_blocklist.proxy.config.ConnectorConfig.region`); ""
        when it has none or is not a configured connector.

        Raises:
            StoreUnavailable: HTTP mode, the admin API cannot be reached.
        """

    @abstractmethod
    async def connector_regions(self) -> dict[str, str]:
        """Every configured connector's phone number ID and region (see :meth:`region`).

        Raises:
            StoreUnavailable: HTTP mode, the admin API cannot be reached.
        """

    @abstractmethod
    async def any_blocked(self, pnid: str, identities: Sequence[identity.Identity]) -> bool:
        """True if any of these identities (already read, e.g. by :func:`wa_blocklist.proxy.graph.classify.identities`)
        is blocked on the connector, following wa_id ↔ BSUID links.

        Raises:
            UnknownConnector, StoreUnavailable: as :meth:`is_blocked`.
        """

    @abstractmethod
    async def any_opted_out(self, pnid: str, identities: Sequence[identity.Identity]) -> bool:
        """True if any of these identities opted out of template and marketing sends on the connector (issue 19),
        following wa_id ↔ BSUID links: what the proxy's gateway checks before a template or marketing send.

        Raises:
            UnknownConnector, StoreUnavailable: as :meth:`is_blocked`.
        """

    @abstractmethod
    async def check_message(self, pnid: str, message_id: str) -> ReferenceCheck:
        """Whether the sender of inbound message ``message_id`` is blocked on the connector (read receipts and typing
        indicators refer to it).

        Raises:
            UnknownConnector, StoreUnavailable: as :meth:`is_blocked`.
        """

    @abstractmethod
    async def check_join_request(self, join_request_id: str) -> ReferenceCheck:
        """Whether the user behind a group join request is blocked on any connector (an approval lets them in).

        Raises:
            StoreUnavailable: as :meth:`is_blocked`.
        """

    async def blocked_users(
        self,
        pnid: str,
        users: Sequence[InboundUser],
        *,
        record_inbound: bool = False,
        references: References = ((), ()),
    ) -> list[bool]:
        """Which of these webhook users are blocked on the connector, one flag per user.

        Args:
            pnid: the connector's phone number ID.
            users: each user's wa_id and/or BSUID as a webhook carries them.
            record_inbound: the users just messaged the connector: record it (direct mode only; this is what
                lets a supervisor block them under Meta's 24-hour rule, and what links wa_ids to BSUIDs).
            references: with ``record_inbound``, the webhook's message/call IDs and join requests with the index of
                their user (:func:`wa_blocklist.proxy.graph.payload.references`), so the bot's own read receipts,
                call answers and join approvals can be checked later (direct mode only).

        Raises:
            UnknownConnector, StoreUnavailable: as :meth:`is_blocked`.
        """
        return await self._blocked_users(pnid, users, references if record_inbound else None)

    @abstractmethod
    async def _blocked_users(self, pnid: str, users: Sequence[InboundUser], record: References | None) -> list[bool]:
        """:meth:`blocked_users`; ``record``: the webhook's references when its users are to be recorded, else None."""

    @abstractmethod
    async def block(self, pnid: str, number: str, *, reason: str = "") -> tuple[Block, bool]:
        """Block a number or BSUID; returns the entry and whether it was created (False: it already existed).

        Raises:
            NotRecentlyActive: the user has not messaged this connector in the last 24 hours.
            UnknownConnector, InvalidNumber, BadRequest, Forbidden, StoreUnavailable.
        """

    @abstractmethod
    async def unblock(self, pnid: str, number: str) -> None:
        """Remove a block.

        Raises:
            NotBlocked: the number has no block on this connector.
        """

    @abstractmethod
    async def list(
        self, pnid: str, *, limit: int = 50, cursor: str | None = None, q: str = ""
    ) -> tuple[list[Block], str | None]:
        """Block entries newest first and the cursor of the next page (None at the end)."""


class DirectBlocklistClient(BlocklistClient):
    """The blocklist through :class:`~proxy.blocklist.BlocklistService` over the configured store.

    Args:
        config: a Config or the path of ``config.yaml``.
        actor: who blocks through this client.
        clock: seconds since the epoch.
        service: an already running service to use instead of opening the store (e.g. inside the proxy).
    """

    def __init__(
        self,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        actor: Actor = DEFAULT_ACTOR,
        clock: Clock = time.time,
        service: BlocklistService | None = None,
    ) -> None:
        if config is None and service is None:
            raise ValueError("give a config (or its path) or a running BlocklistService")
        self._config = config
        self._clock = clock
        self._actor = actor
        self._service = service
        self._stack: contextlib.AsyncExitStack | None = None

    @classmethod
    def from_service(cls, service: BlocklistService, *, actor: Actor = DEFAULT_ACTOR) -> DirectBlocklistClient:
        """A client over a service that is already open (its store is closed by whoever opened it)."""
        return cls(service=service, actor=actor)

    @property
    def service(self) -> BlocklistService:
        if self._service is None:
            raise RuntimeError("the blocklist client is not started: use 'async with' or await start()")
        return self._service

    async def start(self) -> None:
        """Connect to the proxy's store: the Redis of ``store.redis_url``, or the embedded Redis that a running
        proxy serves in ``store.data_dir``.

        A bot never starts the embedded Redis itself: the proxy owns it, and a bot stopping must never take it
        down. Nothing here blocks the event loop (the config is read in a thread, Redis is reached with asyncio).

        Raises:
            StoreUnavailable: the store cannot be reached, with how to point the client at it.
            ConfigError: the config file is invalid.
        """
        if self._service is not None:
            return
        source = self._config
        assert source is not None  # checked in __init__: a config or a service
        config = source if isinstance(source, Config) else await asyncio.to_thread(load_config, source)
        stack = contextlib.AsyncExitStack()
        try:
            store = await stack.enter_async_context(open_store(config.store, start_embedded=False))
            await store.ping()
        except StoreUnavailable:
            await stack.aclose()
            raise StoreUnavailable(_unreachable(config)) from None
        self._stack = stack
        self._service = BlocklistService(store, config, self._clock)

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            self._service = None
            await stack.aclose()

    async def region(self, pnid: str) -> str:
        found = self.service.config.connector(pnid)
        return found.region if found is not None else ""

    async def connector_regions(self) -> dict[str, str]:
        return {c.phone_number_id: c.region for c in self.service.config.connectors}

    async def any_blocked(self, pnid: str, identities: Sequence[identity.Identity]) -> bool:
        self.service.connector(pnid)
        return bool(identities) and await self.service.first_blocked(pnid, identities) is not None

    async def any_opted_out(self, pnid: str, identities: Sequence[identity.Identity]) -> bool:
        self.service.connector(pnid)
        # The gateway's own check (BlocklistService.first_opted_out), so the rule has one home.
        return bool(identities) and await self.service.first_opted_out(pnid, identities) is not None

    async def check_message(self, pnid: str, message_id: str) -> ReferenceCheck:
        self.service.connector(pnid)
        sender = await self.service.message_sender(pnid, message_id)
        blocked = sender is not None and await self.service.first_blocked(pnid, [sender]) is not None
        return ReferenceCheck(sender is not None, blocked, self.service.config.gateway.unknown_references)

    async def check_join_request(self, join_request_id: str) -> ReferenceCheck:
        blocked = await self.service.join_request_blocked(join_request_id)
        return ReferenceCheck(blocked is not None, bool(blocked), self.service.config.gateway.unknown_references)

    async def is_blocked(self, pnid: str, number_or_bsuid: str) -> bool:
        # Every reading Meta may take of the text, as the proxy's gateway and its check endpoint do.
        return await self.service.first_blocked(pnid, self.service.readings(pnid, number_or_bsuid)) is not None

    async def _blocked_users(self, pnid: str, users: Sequence[InboundUser], record: References | None) -> list[bool]:
        self.service.connector(pnid)
        if record is not None:
            messages, joins = record
            return await self.service.record_inbound(pnid, users, messages=messages, join_requests=joins)
        return [await self.service.inbound_blocked(pnid, user) for user in users]

    async def block(self, pnid: str, number: str, *, reason: str = "") -> tuple[Block, bool]:
        entry, created = await self.service.block(pnid, number, actor=self._actor, reason=reason)
        return Block.from_entry(entry), created

    async def unblock(self, pnid: str, number: str) -> None:
        await self.service.unblock(pnid, number, actor=self._actor)

    async def list(
        self, pnid: str, *, limit: int = 50, cursor: str | None = None, q: str = ""
    ) -> tuple[list[Block], str | None]:
        entries, next_cursor = await self.service.list_blocks(pnid, limit=limit, cursor=cursor, q=q)
        return [Block.from_entry(e) for e in entries], next_cursor


def _unreachable(config: Config) -> str:
    """Why a direct client cannot start, and what to do about it (the Redis URL's password is never shown)."""
    if config.store.embedded:
        return (
            f"no running proxy serves the embedded store in {config.store.data_dir} (its Redis socket "
            f"{config.store.data_dir}/redis.sock does not answer): start the proxy first (wa-blocklist serve --config "
            f"{config.source}), or set store.redis_url in the config to the Redis the proxy uses, or use "
            "BlocklistClient.http(proxy_url, token). A bot never starts the proxy's embedded Redis itself."
        )
    parts = urlsplit(config.store.redis_url)
    where = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"  # without user and password
    return (
        f"the Redis at store.redis_url ({where}) cannot be reached: check that it is running and that the bot's "
        "host can reach it, or use BlocklistClient.http(proxy_url, token)"
    )


def _listed_region(connector: dict[str, Any]) -> str:
    """A connector's region as the admin API shows it: ``region`` if listed, else the region of its display number
    (the API does not show ``default_country``; a connector whose ``default_country`` differs from its display
    number's country is read with the latter here, and the proxy's gateway still reads it with the former)."""
    if "region" in connector:
        return str(connector["region"])
    try:
        return identity.region_of(str(connector.get("display_number") or "")) if connector.get("display_number") else ""
    except InvalidNumber:
        return ""


def _reference(body: Any) -> ReferenceCheck:
    return ReferenceCheck(bool(body["known"]), bool(body["blocked"]), str(body.get("unknown_references", "refuse")))


def _error_classes() -> dict[str, type[BlocklistError]]:
    found: dict[str, type[BlocklistError]] = {}
    pending: list[type[BlocklistError]] = [BlocklistError]
    while pending:
        cls = pending.pop()
        if cls is not errors.ConfigError:  # its constructor takes a list of problems, and the API never sends it
            found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


_BY_CODE = _error_classes()
_BY_STATUS: dict[int, type[BlocklistError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.NotRecentlyActive,
    502: StoreUnavailable,
    503: StoreUnavailable,
    504: StoreUnavailable,
}


def api_error(status: int, body: Any) -> BlocklistError:
    """The :mod:`wa_blocklist.proxy.base.errors` exception for an admin API error body.

    The body is ``{"error": {"code", "message"}}``.
    """
    code, message = "", ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", ""))
        message = str(body["error"].get("message", ""))
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or BlocklistError
    exc = cls(message or f"the blocklist admin API answered HTTP {status}")
    if cls is BlocklistError:
        exc.status = status
    return exc


class HttpBlocklistClient(BlocklistClient):
    """The blocklist through the proxy's admin API (``/admin/api/connectors/{pnid}/blocks``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        url = URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{base_url!r} is not an http(s) URL")
        self._base = url
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._regions: dict[str, str] | None = None  # the connectors' regions, read once (they change on reload only)

    def __repr__(self) -> str:  # never show the token
        return f"HttpBlocklistClient({str(self._base)!r})"

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar())
            self._own_session = True

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _url(self, *segments: str) -> URL:
        path = "/".join(quote(s, safe="") for s in ("admin", "api", "connectors", *segments))
        return URL(f"{self._base}/{path}", encoded=True)

    async def _call(
        self, method: str, url: URL, *, json: Any = None, params: dict[str, str] | None = None, ok: tuple[int, ...]
    ) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("the blocklist client is not started: use 'async with' or await start()")
        try:
            async with self._session.request(
                method, url, json=json, params=params, headers=self._headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
                body: Any = None
                if raw:
                    try:
                        body = await response.json(content_type=None)
                    except ValueError:
                        body = None
                if response.status not in ok:
                    raise api_error(response.status, body)
                return response.status, body
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise StoreUnavailable(
                f"the blocklist admin API at {self._base} cannot be reached ({type(exc).__name__})"
            ) from None

    async def region(self, pnid: str) -> str:
        return (await self.connector_regions()).get(pnid, "")

    async def connector_regions(self) -> dict[str, str]:
        if self._regions is None:
            _, body = await self._call("GET", self._url(), ok=(200,))
            self._regions = {str(c["phone_number_id"]): _listed_region(c) for c in body["connectors"]}
        return dict(self._regions)

    async def any_blocked(self, pnid: str, identities: Sequence[identity.Identity]) -> bool:
        # The check endpoint reads each text with every reading; a phone identity is sent with "+" (international).
        texts = [("+" + who.value) if who.kind == "phone" else who.value for who in identities]
        return any(await asyncio.gather(*(self.is_blocked(pnid, text) for text in texts)))

    async def any_opted_out(self, pnid: str, identities: Sequence[identity.Identity]) -> bool:
        # GET /optouts/{number} reads each text as the gateway does (every reading, links followed): 200 is an
        # opt-out, 404 not_opted_out is none; any other answer (an unknown connector too) raises.
        texts = [("+" + who.value) if who.kind == "phone" else who.value for who in identities]

        async def one(text: str) -> bool:
            status, body = await self._call("GET", self._url(pnid, "optouts", text), ok=(200, 404))
            if status == 404:
                error = api_error(status, body)
                if not isinstance(error, NotOptedOut):
                    raise error
                return False
            return True

        return any(await asyncio.gather(*(one(text) for text in texts)))

    async def check_message(self, pnid: str, message_id: str) -> ReferenceCheck:
        _, body = await self._call("GET", self._url(pnid, "messages", message_id, "check"), ok=(200,))
        return _reference(body)

    async def check_join_request(self, join_request_id: str) -> ReferenceCheck:
        path = "/".join(quote(s, safe="") for s in ("admin", "api", "join_requests", join_request_id, "check"))
        _, body = await self._call("GET", URL(f"{self._base}/{path}", encoded=True), ok=(200,))
        return _reference(body)

    async def is_blocked(self, pnid: str, number_or_bsuid: str) -> bool:
        _, body = await self._call("GET", self._url(pnid, "check", number_or_bsuid), ok=(200,))
        return bool(body["blocked"])

    async def _blocked_users(self, pnid: str, users: Sequence[InboundUser], record: References | None) -> list[bool]:
        # The admin API has no inbound-recording endpoint (the proxy's webhook receiver records); each identity the
        # webhook shows is checked, and the check follows the wa_id↔BSUID links the proxy has learned.
        async def one(user: InboundUser) -> bool:
            # A wa_id is always international: with "+" it is read so even on a connector without region.
            wa_id = "+" + user.wa_id.removeprefix("+") if user.wa_id else ""
            for text in (wa_id, user.bsuid):
                if text:
                    try:
                        if await self.is_blocked(pnid, text):
                            return True
                    except InvalidNumber:
                        continue
            return False

        return list(await asyncio.gather(*(one(u) for u in users)))

    async def block(self, pnid: str, number: str, *, reason: str = "") -> tuple[Block, bool]:
        status, body = await self._call(
            "POST", self._url(pnid, "blocks"), json={"number": number, "reason": reason}, ok=(200, 201)
        )
        return Block.from_json(body), status == 201

    async def unblock(self, pnid: str, number: str) -> None:
        await self._call("DELETE", self._url(pnid, "blocks", number), ok=(204,))

    async def list(
        self, pnid: str, *, limit: int = 50, cursor: str | None = None, q: str = ""
    ) -> tuple[list[Block], str | None]:
        params = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        if q:
            params["q"] = q
        _, body = await self._call("GET", self._url(pnid, "blocks"), params=params, ok=(200,))
        return [Block.from_json(e) for e in body["blocks"]], body.get("next_cursor")
