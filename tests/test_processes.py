"""Real processes: the CLI against a real Redis, and the proxy on its embedded store surviving restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import PNID, REPO, Proxy, base_config_data, free_port, record, redis_alive, wait_until

pytestmark = pytest.mark.slow


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", *args, "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip


@pytest.fixture
def redis_config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config_data(redis_url)))
    return path


async def test_cli_block_list_unblock(redis_config: Path) -> None:
    refused = cli(redis_config, "block", "+57 300 123 4567", "--connector", PNID)
    assert refused.returncode == 1
    assert "has not messaged this connector in the last 24 hours" in refused.stderr

    await record(redis_config, "573001234567")
    done = cli(redis_config, "block", "+57 300 123 4567", "--connector", PNID, "--reason", "spam calls", "--by", "ana")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("blocked: 573001234567 on 111111111111111 since 20")
    again = cli(redis_config, "block", "573001234567", "--connector", PNID)
    assert again.stdout.startswith("already blocked: 573001234567")

    forced = cli(redis_config, "block", "+57 300 765 4321", "--connector", PNID, "--force")
    assert forced.returncode == 0
    assert "--force skips WhatsApp's 24-hour rule" in forced.stderr

    listing = cli(redis_config, "list", "--connector", PNID, "--json")
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(r["number"], r["blocked_by"], r["source"]) for r in rows] == [
        ("573007654321", "cli:" + rows[0]["blocked_by"].split(":", 1)[1], "cli"),
        ("573001234567", "ana", "cli"),
    ]
    assert rows[1]["reason"] == "spam calls"
    table = cli(redis_config, "list", "--connector", PNID, "--q", "spam")
    assert "+57 300 1234567" in table.stdout and "+57 300 7654321" not in table.stdout  # international format

    assert cli(redis_config, "unblock", "573001234567", "--connector", PNID).returncode == 0
    missing = cli(redis_config, "unblock", "573001234567", "--connector", PNID)
    assert missing.returncode == 1 and "is not blocked" in missing.stderr


def test_cli_needs_a_connector_when_several_exist(redis_config: Path) -> None:
    done = cli(redis_config, "list")
    assert done.returncode == 1
    assert "--connector is required" in done.stderr and PNID in done.stderr
    bad = cli(redis_config, "block", "nonsense", "--connector", PNID)
    assert bad.returncode == 1 and "is not a phone number" in bad.stderr


@pytest.fixture
def embedded_config(tmp_path: Path) -> Iterator[Path]:
    data = base_config_data("")
    data["store"] = {"redis_url": "", "data_dir": "./data"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    yield path


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_blocks_survive_a_restart_of_the_embedded_store(embedded_config: Path, stop_signal: int) -> None:
    data_dir = embedded_config.parent / "data"
    proxy = Proxy(embedded_config, free_port())
    try:
        proxy.start()
        pid = redis_alive(data_dir)
        assert pid is not None
        await record(embedded_config, "573001234567", "573001112222")  # the CLI-side client shares the running server
        status, entry = proxy.call("POST", f"/admin/api/connectors/{PNID}/blocks", {"number": "+57 300 123 4567"})
        assert status == 201
        status, _ = proxy.call("POST", f"/admin/api/connectors/{PNID}/blocks", {"number": "+57 300 111 2222"})
        assert status == 201
        proxy.stop(stop_signal)
        # The embedded Redis goes with its parent, even on kill -9 (it is tied to the parent's life).
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=15, what="the embedded redis to exit")

        proxy.start()
        status, again = proxy.call("GET", f"/admin/api/connectors/{PNID}/blocks/573001234567")
        assert status == 200 and again == entry
        status, listing = proxy.call("GET", f"/admin/api/connectors/{PNID}/blocks")
        assert [e["number"] for e in listing["blocks"]] == ["573001112222", "573001234567"]
    finally:
        proxy.stop()
    assert (data_dir / "appendonly.aof").exists() or (data_dir / "appendonlydir").exists()


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class Workers:
    """A ``serve --workers 2`` supervisor whose embedded Redis and two workers are up and serving."""

    supervisor: subprocess.Popen[bytes]
    proxy: Proxy
    port: int
    data_dir: Path
    redis_pid: int
    first: list[int]
    """The two workers' pids once both serve."""

    def workers(self) -> list[int]:
        """The supervisor's children now, but for the embedded Redis."""
        return [pid for pid in children(self.supervisor.pid) if pid != self.redis_pid]


@pytest.fixture
def two_workers(embedded_config: Path) -> Iterator[Workers]:
    """Start ``serve --workers 2`` on the embedded store and wait until both workers serve; kill it afterwards."""
    port = free_port()
    proxy = Proxy(embedded_config, port)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", "serve", "--config", str(embedded_config), "--port", str(port),
         "--workers", "2"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    data_dir = embedded_config.parent / "data"
    try:
        redis_pid = wait_until(lambda: redis_alive(data_dir), timeout=30, what="the embedded redis")
        started = Workers(supervisor, proxy, port, data_dir, redis_pid, first=[])
        started.first = wait_until(
            lambda: len(started.workers()) == 2 and started.workers(), timeout=30, what="two workers"
        )
        proxy.process = supervisor
        wait_until(proxy.ready, timeout=30, what="the workers to serve")
        yield started
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def test_workers_share_the_port_and_are_restarted(two_workers: Workers) -> None:
    proxy, supervisor, first = two_workers.proxy, two_workers.supervisor, two_workers.first
    workers = two_workers.workers
    for _ in range(20):  # connections are spread over both workers by the kernel; every one must answer
        assert proxy.call("GET", "/admin/api/connectors")[0] == 200

    os.kill(first[0], signal.SIGKILL)
    replaced = wait_until(
        lambda: len(workers()) == 2 and first[0] not in workers() and workers(), timeout=30, what="a new worker"
    )
    assert first[1] in replaced
    wait_until(proxy.ready, timeout=30, what="the new worker to serve")
    # the store outlived the worker: the supervisor owns it
    assert redis_alive(two_workers.data_dir) == two_workers.redis_pid

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in replaced)  # workers were stopped and reaped
    wait_until(
        lambda: not Path(f"/proc/{two_workers.redis_pid}").exists(), timeout=15, what="the embedded redis to exit"
    )


def test_workers_die_with_a_killed_supervisor(two_workers: Workers, record_property: Any) -> None:
    supervisor, workers = two_workers.supervisor, two_workers.first
    supervisor.kill()  # kill -9: no chance to stop its workers itself
    killed = time.monotonic()
    supervisor.wait()
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() and alive(pid) for pid in workers),
        timeout=15, what="the orphaned workers to exit",
    )  # fmt: skip
    seconds = time.monotonic() - killed
    wait_until(
        lambda: not Path(f"/proc/{two_workers.redis_pid}").exists(), timeout=15, what="the embedded redis to exit"
    )
    with pytest.raises(OSError):  # nothing serves on the port any more
        socket.create_connection(("127.0.0.1", two_workers.port), timeout=1).close()
    record_property("workers_exit_after_supervisor_kill_s", round(seconds, 3))
    print(f"\nworkers exited {seconds * 1000:.0f} ms after kill -9 of the supervisor")


def alive(pid: int) -> bool:
    """False for a process that is gone or a zombie (exited, waiting to be reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
