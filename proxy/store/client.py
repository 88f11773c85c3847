"""Opening the store: a Redis client for ``store.redis_url`` (standalone, Cluster or Sentinel), or for the socket of
the embedded server, wrapped in a :class:`~wa_blocklist.proxy.store.blocks.BlocklistStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from ..base.errors import StoreUnavailable
from ..config import StoreConfig
from .blocks import BlocklistStore
from .embedded import EmbeddedRedis

STORE_DEADLINE_FACTOR = 2
"""One store operation may take this many ``store.timeout_seconds`` in all: room for one quick retry."""


def client_options(cfg: StoreConfig) -> dict[str, Any]:
    """Options every Redis client of ours uses: short timeouts, a quick retry, no long backoff on a hot path.

    No ``socket_timeout``: :meth:`BlocklistStore._call` bounds every operation as a whole (``STORE_DEADLINE_FACTOR``
    × ``store.timeout_seconds``), and a read it cuts short makes redis-py drop that connection, so no reply is ever
    read by the wrong command. A socket timeout would add nothing a frozen Redis cannot defeat (the retry's fresh
    connection hangs the same way), and on Python 3.11 redis-py wraps every write it bounds in ``asyncio.wait_for``,
    a task per command: a third of a GET's CPU. TCP keep-alive finds connections that died without a word.
    """
    return {
        "decode_responses": True,
        "socket_timeout": None,  # redis-py's default is 5 s
        "socket_connect_timeout": cfg.timeout_seconds,
        "socket_keepalive": True,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError],
        "health_check_interval": 30,
    }


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def _hosts(netloc: str, default_port: int) -> tuple[str, str, list[tuple[str, int]]]:
    """Split ``user:password@h1:p1,h2:p2`` into user, password and (host, port) pairs."""
    userinfo, _, hostlist = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pairs = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        pairs.append((host or item.strip(), int(port) if port else default_port))
    return unquote(user), unquote(password), pairs


def make_client(cfg: StoreConfig) -> tuple[Any, list[Any]]:
    """A Redis client for ``store.redis_url``: standalone, Cluster (``redis+cluster://h1:p1,h2:p2``) or Sentinel
    (``redis+sentinel://h1:26379,h2:26379/<service_name>[/<db>]``).

    Returns:
        The client, and the other clients it depends on (the Sentinel connections), to close with it.
    """
    parts = urlsplit(cfg.redis_url)
    options = client_options(cfg)
    if parts.scheme in CLUSTER_SCHEMES:
        user, password, pairs = _hosts(parts.netloc, 6379)
        options.pop("health_check_interval")
        options.pop("retry_on_error")
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in pairs],
            username=user or None,
            password=password or None,
            ssl=parts.scheme.startswith("rediss"),
            **options,
        )
        return cluster, []
    if parts.scheme in SENTINEL_SCHEMES:
        user, password, pairs = _hosts(parts.netloc, 26379)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise StoreUnavailable("store.redis_url: a Sentinel URL needs the service name, e.g. .../mymaster")
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            pairs,
            sentinel_kwargs={"socket_timeout": cfg.timeout_seconds, "socket_connect_timeout": cfg.timeout_seconds},
            username=user or None,
            password=password or None,
            ssl=parts.scheme.startswith("rediss"),
            **options,
        )
        master = sentinel.master_for(path[0], db=int(path[1]) if len(path) > 1 else 0)
        return master, list(sentinel.sentinels)
    return aioredis.Redis.from_url(cfg.redis_url, **options), []


@contextlib.asynccontextmanager
async def open_store(cfg: StoreConfig, *, start_embedded: bool = True) -> AsyncIterator[BlocklistStore]:
    """Open the configured store (a Redis URL, or the embedded Redis in ``data_dir``) and close it after use.

    Args:
        cfg: the store settings.
        start_embedded: with the embedded store, start its redis-server when none serves ``data_dir`` yet (the
            proxy, the CLI). False (bot plugins) only connects to the socket of a running one, so a bot never owns
            the proxy's store; nothing is started, and the connection is made on first use.
    """
    embedded: EmbeddedRedis | None = None
    helpers: list[Any] = []
    if cfg.embedded and not start_embedded:
        socket_path = EmbeddedRedis(Path(cfg.data_dir)).socket_path
        client = aioredis.Redis(unix_socket_path=str(socket_path), **client_options(cfg))
    elif cfg.embedded:
        embedded = EmbeddedRedis(Path(cfg.data_dir), appendfsync=cfg.appendfsync)
        await embedded.start_async()
        client = aioredis.Redis(unix_socket_path=str(embedded.socket_path), **client_options(cfg))
    else:
        client, helpers = make_client(cfg)
    try:
        yield BlocklistStore(client, deadline_seconds=STORE_DEADLINE_FACTOR * cfg.timeout_seconds)
    finally:
        await client.aclose()
        for helper in helpers:
            await helper.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)  # waits for Redis to flush its append-only file
