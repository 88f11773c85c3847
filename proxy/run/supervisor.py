"""``wa-blocklist serve --workers N``: a supervisor process and N workers sharing one port (``SO_REUSEPORT``).

The supervisor owns the embedded Redis (if any), so every worker shares it; a worker that dies is restarted;
SIGTERM or SIGINT stops the workers gracefully (each finishes its in-flight requests) and then the supervisor;
SIGHUP is passed on to every worker, which reloads the config itself.

Workers die with their supervisor, even when it is killed without a chance to stop them (``kill -9``, the OOM
killer): each worker holds the read end of a pipe whose only write end is the supervisor's. The kernel closes that
end when the supervisor dies, however it dies, the worker's event loop sees the end of the pipe at once and the
worker stops as on SIGTERM (:func:`exit_with_supervisor`). Orphaned workers would otherwise keep serving on the
port with the embedded store gone, share it with the next supervisor's workers, and miss its reloads (a token
revoked by a reload would still be accepted by them).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from ..config import Config

log = logging.getLogger(__name__)

SUPERVISOR_FD_ENV = "WA_BLOCKLIST_SUPERVISOR_FD"
"""The environment variable that gives a worker the file descriptor of its end of the supervisor's pipe."""


def serve_workers(args: argparse.Namespace, config: Config) -> int:
    """Run ``args.workers`` copies of the server on one port and keep them running (see the module docstring)."""
    from ..base.logs import setup_logging
    from ..store.embedded import EmbeddedRedis
    from .startup import StartupError, claim_embedded_store

    setup_logging()
    port = args.port if args.port is not None else config.server.port
    if port == 0:
        print("error: --workers needs a fixed port", file=sys.stderr)
        return 2
    try:
        lock = claim_embedded_store(config)  # held by the supervisor: its workers share its store by design
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    embedded = EmbeddedRedis(Path(config.store.data_dir), config.store.appendfsync) if config.store.embedded else None
    if embedded is not None:
        embedded.start()
    command = [sys.executable, "-m", "wa_blocklist.proxy.cli", "serve", "--config", args.config, "--port", str(port)]
    command.append("--reuse-port")
    if args.host:
        command += ["--host", args.host]
    # The lifeline: workers inherit the read end only; the write end stays here (not inheritable, PEP 446) and is
    # never written, so a worker reads end-of-file exactly when the supervisor is gone.
    lifeline, keep = os.pipe()
    environment = {**os.environ, SUPERVISOR_FD_ENV: str(lifeline)}

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, pass_fds=(lifeline,), env=environment)

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers: list[subprocess.Popen[bytes]] = []

    def reload(signum: int, _frame: object) -> None:
        for worker in workers:  # each worker validates and applies the file itself
            if worker.poll() is None:
                worker.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload)
    workers += [start_worker() for _ in range(args.workers)]
    log.info("serving on port %s with %d workers: %s", port, len(workers), [w.pid for w in workers])
    restarts: list[float] = []
    try:
        while not stopping:
            for i, worker in enumerate(workers):
                code = worker.poll()
                if code is None or stopping:
                    continue
                restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
                if len(restarts) > 10 * args.workers:
                    log.error("workers keep dying (exit %s); giving up", code)
                    stopping = True
                    break
                log.warning("worker %s exited with %s; starting a new one", worker.pid, code)
                workers[i] = start_worker()
            time.sleep(0.2)  # supervision interval; signals interrupt it
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(40)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        os.close(lifeline)
        os.close(keep)
        if embedded is not None:
            embedded.stop()
        if lock is not None:
            lock.close()
    return 0


def exit_with_supervisor(app: web.Application) -> None:
    """In a worker: stop gracefully (as on SIGTERM) as soon as the supervisor's pipe reports end-of-file.

    A no-op outside ``serve --workers`` (no :data:`SUPERVISOR_FD_ENV` in the environment).
    """
    raw = os.environ.pop(SUPERVISOR_FD_ENV, "")
    if not raw.isdigit():
        return
    fd = int(raw)

    async def watch(app: web.Application) -> None:
        import asyncio

        loop = asyncio.get_running_loop()

        def supervisor_gone() -> None:
            loop.remove_reader(fd)
            log.warning("the supervisor is gone; this worker stops")
            os.kill(os.getpid(), signal.SIGTERM)  # aiohttp's own graceful shutdown

        loop.add_reader(fd, supervisor_gone)  # readable only at end-of-file: nothing is ever written

    app.on_startup.append(watch)
