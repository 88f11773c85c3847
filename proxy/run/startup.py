"""What ``wa-blocklist serve`` checks and says around the server's life, so an operator is never left guessing.

- One ``serve`` per embedded store: a second one on the same ``store.data_dir`` would silently share the first
  one's Redis and lose it when the first stops, so it is refused with the first one's PID (an advisory ``flock``
  on ``data_dir/serve.lock``, released by the kernel however the holder ends, even ``kill -9``).
- A port already in use is one line naming the address, not a traceback.
- A warning while development tokens or secrets (those of ``dev.env``) are in use, and a refusal to serve them on
  anything but the loopback (``server.allow_development_secrets`` on a throwaway machine).
- Where each face listens, the admin page's URL first; "shutting down" and "stopped" logged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import IO

from aiohttp import web

from ..config import Config

log = logging.getLogger("wa_blocklist.proxy.serve")

DEVELOPMENT_VALUES = frozenset(
    {"dev-admin-token-change-me", "dev-viewer-token-change-me", "dev-app-secret", "dev-verify-token"}
)
"""The development tokens and secrets of ``dev.env`` (and the Makefile), public by construction."""


class StartupError(Exception):
    """The server cannot start; ``str()`` is the one line shown to the operator."""


def claim_embedded_store(config: Config) -> IO[str] | None:
    """Hold ``serve.lock`` in the embedded store's directory for this process's life (None with an external Redis).

    Raises:
        StartupError: another ``serve`` holds it.
    """
    if not config.store.embedded:
        return None
    data_dir = Path(config.store.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "serve.lock", "a+", encoding="utf-8")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StartupError(
            f"another wa-blocklist serve (pid {holder}) is using the embedded store in {data_dir}; "
            "stop it, or give this one another store.data_dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _address_in_use(host: str, port: int) -> StartupError:
    return StartupError(
        f"cannot listen on {host}:{port}: address already in use "
        "(is another wa-blocklist serve running? set PORT=... or server.port)"
    )


def check_port_free(host: str, port: int) -> None:
    """Bind and release ``host:port`` the way the server will (``SO_REUSEADDR``), to fail before anything starts.

    Raises:
        StartupError: the address is taken, or cannot be used at all.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise _address_in_use(host, port) from None
                raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def listen_error(exc: OSError, host: str, port: int) -> StartupError:
    """The one-line form of an error the server met while binding."""
    if exc.errno == errno.EADDRINUSE:
        return _address_in_use(host, port)
    return StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def development_values_in_use(config: Config) -> list[str]:
    """The config keys whose value is a public development token or secret."""
    keys = [f"admin.tokens[{i}].token" for i, t in enumerate(config.admin.tokens) if t.token in DEVELOPMENT_VALUES]
    for i, connector in enumerate(config.connectors):
        for name in ("app_secret", "verify_token"):
            if getattr(connector, name) in DEVELOPMENT_VALUES:
                keys.append(f"connectors[{i}].{name}")
    return keys


def refuse_public_development_values(config: Config, host: str) -> None:
    """Refuse to serve on anything but the loopback while dev.env's public tokens or secrets are in use: anyone who
    can reach the address could sign in as an admin or sign webhooks with them (``server.allow_development_secrets``
    allows it on a throwaway machine).

    Raises:
        StartupError: development values in use on a non-loopback address.
    """
    keys = development_values_in_use(config)
    if not keys or _loopback(host) or config.server.allow_development_secrets:
        return
    raise StartupError(
        f"refusing to serve on {host} with the public development tokens or secrets of dev.env ({', '.join(keys)}): "
        "anyone who can reach that address could use them. Set real ones in the environment (docs/operations.md), "
        "serve on 127.0.0.1, or set server.allow_development_secrets: true on a throwaway machine"
    )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def base_url(host: str, port: int) -> str:
    """The URL a browser on this machine uses for ``host:port`` (a wildcard address is reached on the loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def announce(app: web.Application, config: Config, host: str, port: int) -> None:
    """Log where each face listens once the server is up, warn about development values, log the shutdown."""

    async def started(_app: web.Application) -> None:
        url = base_url(host, port)
        log.info("admin page: %s/admin/ (admin API %s/admin/api/)", url, url)
        log.info("serving on %s: Graph gateway at /, webhooks at /webhooks/whatsapp, health at /healthz", url)
        if keys := development_values_in_use(config):
            log.warning(
                "development tokens or secrets in use (%s): they are public (dev.env); set real ones in the "
                "environment before anyone else can reach this proxy",
                ", ".join(keys),
            )

    async def stopping(_app: web.Application) -> None:
        log.info("shutting down: new connections refused, finishing in-flight requests (up to 30 s)")

    app.on_startup.append(started)
    app.on_shutdown.append(stopping)


def release(handle: IO[str] | None) -> None:
    """Let go of the embedded store's lock (the kernel does it anyway when the process ends)."""
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()
