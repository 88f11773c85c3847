"""Who is calling the admin API: bearer tokens, people signed in by a reverse proxy, and throttled failures.

Two ways in, checked in this order:

1. ``Authorization: Bearer <token>``: one of ``admin.tokens``; the caller is the token's ``name``.
2. Identity headers set by an authenticating reverse proxy in front of the admin face (oauth2-proxy's conventions:
   ``X-Auth-Request-Email`` and ``X-Auth-Request-Groups``, names configurable), believed **only** on connections
   whose peer address is in ``admin.proxy_auth.trusted_addresses``; from anywhere else they are ignored. The person's
   role comes from ``admin.proxy_auth.roles`` (by e-mail address or by group; the strongest role matched wins); a
   person matched by no entry is refused (403). The caller is the person's e-mail address, so "blocked by" and the
   audit trail name the person, not a shared token.

Failed token checks are throttled per client address (:class:`AuthThrottle`): a few free failures, then each
further failure closes the address for twice as long as the previous one (1 s, 2 s, 4 s ... at most 15 minutes);
while closed, every authenticated request from that address is answered 429 with ``Retry-After``, whatever its
token, so a closed address learns nothing. A success reopens the address. Failures are logged at warning with the
address, never the token. The count is kept in the store (:class:`SharedAuthThrottle` over
:class:`~wa_blocklist.proxy.store.throttle.AuthFailures`), so it holds across ``--workers N``, replicas and restarts;
while the store does not answer, each process counts on its own (:class:`AuthThrottle`) and says so once at warning.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from ..base.csvsafe import strip_bidi
from ..base.errors import BlocklistError, Forbidden, StoreUnavailable, Unauthorized
from ..config import AdminConfig, AdminToken, ProxyAuthConfig
from ..store.blocks import BlocklistStore
from ..store.throttle import AuthFailures

log = logging.getLogger(__name__)

Role = Literal["viewer", "admin"]


@dataclass(frozen=True)
class Principal:
    """The caller of one admin request."""

    name: str
    """The token's name, or the person's e-mail address."""
    role: Role
    kind: Literal["token", "person"]


class TooManyAttempts(BlocklistError, status=429, code="too_many_attempts"):
    """Too many failed authentications from one client address; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed sign-in attempts from this address; try again in {seconds} s")
        self.retry_after = seconds


@dataclass
class _Failures:
    count: int = 0
    closed_until: float = 0.0
    last: float = 0.0


@dataclass(kw_only=True, eq=False)
class AuthThrottle:
    """Failed authentications per client address, with exponential back-off.

    Attributes:
        free: failures allowed before the address is closed.
        base_seconds: how long the first closing lasts; each further failure doubles it.
        max_seconds: the longest closing.
        forget_seconds: an address with no failure for this long starts afresh.
        max_addresses: addresses remembered (the oldest are forgotten first), so a flood of addresses costs bounded
            memory.
        clock: monotonic seconds (tests pass their own).
    """

    free: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 900.0
    forget_seconds: float = 3600.0
    max_addresses: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, _Failures] = field(default_factory=OrderedDict, init=False, repr=False)

    def check(self, address: str) -> None:
        """Raise :class:`TooManyAttempts` while ``address`` is closed."""
        entry = self._failures.get(address)
        if entry is None:
            return
        now = self.clock()
        if now - entry.last > self.forget_seconds:
            del self._failures[address]
            return
        if now < entry.closed_until:
            raise TooManyAttempts(entry.closed_until - now)

    def failed(self, address: str) -> float:
        """Count a failure; returns how long the address is now closed (0 while failures are still free)."""
        now = self.clock()
        entry = self._failures.pop(address, None) or _Failures()
        if now - entry.last > self.forget_seconds:
            entry = _Failures()
        entry.count += 1
        entry.last = now
        closed = 0.0
        if entry.count > self.free:
            closed = min(self.base_seconds * 2 ** (entry.count - self.free - 1), self.max_seconds)
            entry.closed_until = now + closed
        self._failures[address] = entry  # most recent last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return closed

    def succeeded(self, address: str) -> None:
        """Reopen an address after a successful authentication."""
        self._failures.pop(address, None)

    def knows(self, address: str) -> bool:
        """Whether ``address`` has failures on record (a success then has something to reopen)."""
        return address in self._failures


STORE_RETRY_SECONDS = 1.0
"""After the store failed to answer, failures are counted in the process for this long before it is asked again, so
a guess costs at most one store deadline, not one per step."""


@dataclass(kw_only=True, eq=False)
class SharedAuthThrottle:
    """:class:`AuthThrottle`'s rules and answers, counted in the store so they hold across workers, replicas and
    restarts; counted in this process (``local``) when there is no store or it does not answer.

    The local count is consulted first on every check, so an address closed while the store was down stays closed
    after it answers again. Falling back is logged once at warning (and answering again once at info), never
    silently.

    Attributes:
        local: the in-process throttle; its numbers (free failures, closings, forgetting) are the shared one's too.
        monotonic: the clock of the pause before the store is asked again after it failed to answer.
    """

    local: AuthThrottle = field(default_factory=AuthThrottle)
    monotonic: Callable[[], float] = time.monotonic
    _shared: AuthFailures | None = field(default=None, init=False, repr=False)
    _retry_at: float = field(default=0.0, init=False, repr=False)
    _falling_back: bool = field(default=False, init=False, repr=False)

    def _failures(self, store: BlocklistStore | None) -> AuthFailures | None:
        """The shared count on ``store``, or None to count locally (no store, or paused after a store failure)."""
        if store is None or (self._falling_back and self.monotonic() < self._retry_at):
            return None
        if self._shared is None or self._shared.store is not store:
            local = self.local
            self._shared = AuthFailures(
                store,
                free=local.free,
                base_ms=round(local.base_seconds * 1000),
                max_ms=round(local.max_seconds * 1000),
                forget_ms=round(local.forget_seconds * 1000),
            )
        return self._shared

    def _fall_back(self, exc: StoreUnavailable) -> None:
        self._retry_at = self.monotonic() + STORE_RETRY_SECONDS
        if not self._falling_back:
            self._falling_back = True
            log.warning("admin sign-in throttle: %s; failed sign-ins are counted in this process only until it "
                        "answers again", exc.message)  # fmt: skip

    def _answered(self) -> None:
        if self._falling_back:
            self._falling_back = False
            log.info("admin sign-in throttle: the store answers again; failed sign-ins are counted in it again")

    async def check(self, store: BlocklistStore | None, address: str, now_ms: int) -> bool:
        """Raise :class:`TooManyAttempts` while ``address`` is closed; whether it has failures on record.

        Args:
            store: the blocklist store; None counts in this process only.
            address: the client address.
            now_ms: the caller's wall clock (Unix ms), so that replicas agree.
        """
        self.local.check(address)
        known = self.local.knows(address)
        shared = self._failures(store)
        if shared is None:
            return known
        try:
            closed_ms, on_record = await shared.closed_ms(address, now_ms)
        except StoreUnavailable as exc:
            self._fall_back(exc)
            return known
        self._answered()
        if closed_ms:
            raise TooManyAttempts(closed_ms / 1000)
        return known or on_record

    async def failed(self, store: BlocklistStore | None, address: str, now_ms: int) -> float:
        """Count a failure; how long the address is now closed (seconds; 0 while failures are still free)."""
        shared = self._failures(store)
        if shared is not None:
            try:
                closed_ms = await shared.failed(address, now_ms)
            except StoreUnavailable as exc:
                self._fall_back(exc)
            else:
                self._answered()
                return closed_ms / 1000
        return self.local.failed(address)

    async def succeeded(self, store: BlocklistStore | None, address: str) -> None:
        """Reopen an address after a successful authentication, here and in the store."""
        self.local.succeeded(address)
        shared = self._failures(store)
        if shared is None:
            return
        try:
            await shared.succeeded(address)
        except StoreUnavailable as exc:
            self._fall_back(exc)


def token_for(tokens: tuple[AdminToken, ...], header: str) -> AdminToken:
    """Find the token presented in an ``Authorization: Bearer`` header, comparing in constant time.

    Raises:
        Unauthorized: header malformed or matching no token.
    """
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("send an admin token as 'Authorization: Bearer <token>'")
    digest = hashlib.sha256(presented.strip().encode()).digest()
    found: AdminToken | None = None
    for token in tokens:  # no early exit: every token is compared, so timing says nothing about which matched
        if hmac.compare_digest(digest, hashlib.sha256(token.token.encode()).digest()):
            found = token
    if found is None:
        raise Unauthorized("the admin token is not valid")
    return found


def trusted_peer(config: ProxyAuthConfig, address: str | None) -> bool:
    """Whether the connection's peer is one of the reverse proxies whose identity headers are believed."""
    if not config.trusted_addresses or not address:
        return False
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:  # a Unix socket peer has no IP address
        return False
    return any(peer in ipaddress.ip_network(net, strict=False) for net in config.trusted_addresses)


def person_for(config: ProxyAuthConfig, email: str, groups_header: str) -> Principal:
    """The principal of a person the reverse proxy signed in.

    Raises:
        Forbidden: no ``roles`` entry matches the person's e-mail address or groups.
    """
    email = strip_bidi(email).strip().lower()
    groups = {g.strip() for g in groups_header.split(",") if g.strip()}
    roles = {r.role for r in config.roles if (r.email and r.email == email) or (r.group and r.group in groups)}
    if not roles:
        raise Forbidden(f"{email} is signed in but has no role here (an administrator adds it in admin.proxy_auth)")
    return Principal(name=email, role="admin" if "admin" in roles else "viewer", kind="person")


def client_address(request: web.Request, config: ProxyAuthConfig) -> str:
    """The address failures are counted against: the peer, or, behind a trusted reverse proxy, the address that
    proxy appended last to ``X-Forwarded-For`` (earlier entries are the client's own claims)."""
    if trusted_peer(config, request.remote):
        forwarded = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or ""


async def authenticate(
    request: web.Request,
    config: AdminConfig,
    throttle: SharedAuthThrottle,
    store: BlocklistStore | None,
    now_ms: int,
) -> Principal:
    """Who makes this admin request (see the module docstring for the order and the throttling).

    Args:
        request: the admin request.
        config: the running ``admin`` settings.
        throttle: the failed sign-ins per client address.
        store: where failures are counted (None: in this process only).
        now_ms: the caller's wall clock (Unix ms).

    Raises:
        TooManyAttempts: the client address is closed after too many failures.
        Unauthorized: no credentials, or a token that matches nothing.
        Forbidden: a person signed in by the reverse proxy with no role here.
    """
    proxy = config.proxy_auth
    header = request.headers.get("Authorization", "")
    if not header and trusted_peer(proxy, request.remote):
        email = request.headers.get(proxy.email_header, "").strip()
        if email:  # signed in by the reverse proxy, which did its own throttling
            return person_for(proxy, email, request.headers.get(proxy.groups_header, ""))
    if not header:  # nothing guessed, nothing counted
        raise Unauthorized("send an admin token as 'Authorization: Bearer <token>'")
    address = client_address(request, proxy)
    known = await throttle.check(store, address, now_ms)
    try:
        token = token_for(config.tokens, header)
    except Unauthorized as exc:
        closed = await throttle.failed(store, address, now_ms)
        log.warning(
            "admin authentication failed from %s on %s %s: %s%s",
            address or "an unknown address",
            request.method,
            request.path,
            exc.message,
            f"; address closed for {closed:g} s" if closed else "",
        )
        raise
    if known:  # most requests come from addresses with nothing on record: no write for them
        await throttle.succeeded(store, address)
    role: Role = "admin" if token.role == "admin" else "viewer"
    return Principal(name=token.name, role=role, kind="token")
