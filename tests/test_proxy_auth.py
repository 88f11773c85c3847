"""Per-person identity: people signed in by an authenticating reverse proxy (oauth2-proxy's conventions).

The proxy believes ``X-Auth-Request-Email`` / ``X-Auth-Request-Groups`` only from
``admin.proxy_auth.trusted_addresses``.
The end-to-end test puts a real nginx in front, wired as oauth2-proxy's documentation wires it (``auth_request`` to
``/oauth2/auth``, identity copied from that answer's headers with ``auth_request_set`` / ``proxy_set_header``); a
small aiohttp server stands in for oauth2-proxy's ``/oauth2/auth`` endpoint, signing people in by cookie.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import BlocklistService

from support import PNID, ConfigFactory, FakeClock, auth, free_port, require_binary, wait_until, wrote_recently

BLOCKS = f"/admin/api/connectors/{PNID}/blocks"
NGINX_ADDRESS = "127.0.0.2"
"""nginx connects to the proxy from this address (``proxy_bind``); it is the only trusted one."""
PEOPLE = {
    "ana-session": ("ana@example.com", "supervisors"),
    "bob-session": ("bob@example.com", "wallboard,everyone"),
    "eve-session": ("eve@example.com", "everyone"),
}


def proxy_auth(trusted: list[str]) -> Any:
    def change(data: dict[str, Any]) -> None:
        data["admin"]["proxy_auth"] = {
            "trusted_addresses": trusted,
            "roles": [
                {"email": "Ana@Example.com", "role": "admin"},
                {"group": "wallboard", "role": "viewer"},
            ],
        }

    return change


async def test_identity_headers_are_believed_only_from_trusted_addresses(
    aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock
) -> None:
    ana = {"X-Auth-Request-Email": "ana@example.com", "X-Auth-Request-Groups": "supervisors"}
    untrusted: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(proxy_auth(["10.0.0.0/8"]))))
    resp = await untrusted.get("/admin/api/session", headers=ana)
    assert resp.status == 401  # the test client connects from 127.0.0.1: not a trusted proxy

    trusted: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(proxy_auth(["127.0.0.1"]))))
    resp = await trusted.get("/admin/api/session", headers=ana)
    assert await resp.json() == {"name": "ana@example.com", "role": "admin"}
    bob = {"X-Auth-Request-Email": "bob@example.com", "X-Auth-Request-Groups": "everyone, wallboard"}
    assert await (await trusted.get("/admin/api/session", headers=bob)).json() == {
        "name": "bob@example.com",
        "role": "viewer",
    }
    nobody = {"X-Auth-Request-Email": "eve@example.com", "X-Auth-Request-Groups": "everyone"}
    resp = await trusted.get("/admin/api/session", headers=nobody)
    assert resp.status == 403 and "has no role here" in (await resp.json())["error"]["message"]
    # A token still works, and wins over identity headers.
    resp = await trusted.get("/admin/api/session", headers={**auth(), **nobody})
    assert (await resp.json())["name"] == "supervisor"


# --- a real nginx in front ----------------------------------------------------------------------------------------


async def oauth2_stub() -> web.Application:
    """oauth2-proxy's ``/oauth2/auth`` as nginx's ``auth_request`` sees it: 202 with the person's identity headers
    for a valid session cookie (``--set-xauthrequest``), 401 otherwise."""

    async def check(request: web.Request) -> web.Response:
        person = PEOPLE.get(request.cookies.get("_oauth2_proxy", ""))
        if person is None:
            return web.Response(status=401)
        email, groups = person
        return web.Response(
            status=202,
            headers={"X-Auth-Request-User": email.split("@")[0], "X-Auth-Request-Email": email,
                     "X-Auth-Request-Groups": groups},
        )  # fmt: skip

    app = web.Application()
    app.router.add_get("/oauth2/auth", check)
    return app


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /oauth2/auth {{
            internal;
            proxy_pass http://127.0.0.1:{stub_port};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location /admin/ {{
            auth_request /oauth2/auth;
            auth_request_set $email $upstream_http_x_auth_request_email;
            auth_request_set $groups $upstream_http_x_auth_request_groups;
            proxy_set_header X-Auth-Request-Email $email;
            proxy_set_header X-Auth-Request-Groups $groups;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_bind {nginx_address};
            proxy_pass http://127.0.0.1:{proxy_port};
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(workdir: Path, proxy_port: int, stub_port: int) -> Iterator[int]:
    # Debian installs it in /usr/sbin, which is not on an ordinary user's PATH.
    binary = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else require_binary("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=workdir, port=port, stub_port=stub_port, proxy_port=proxy_port, nginx_address=NGINX_ADDRESS
        )
    )
    process = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {process.stderr.read().decode() if process.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False

    try:
        wait_until(listening, timeout=15, what="nginx to listen")
        yield port
    finally:
        process.terminate()
        process.wait(15)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
async def behind_nginx(
    tmp_path: Path, make_config: ConfigFactory, clock: FakeClock
) -> AsyncIterator[tuple[str, str, BlocklistService]]:
    """``(nginx URL, direct URL, service)``: the proxy served on its own port and through nginx."""
    app = create_app(make_config(proxy_auth([NGINX_ADDRESS])), clock=clock)
    proxy = TestServer(app, host="127.0.0.1")
    stub = TestServer(await oauth2_stub(), host="127.0.0.1")
    await proxy.start_server()
    await stub.start_server()
    try:
        assert proxy.port is not None and stub.port is not None
        with nginx(tmp_path / "nginx", proxy.port, stub.port) as port:
            yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{proxy.port}", app[SERVICE]
    finally:
        await proxy.close()
        await stub.close()


async def test_people_signed_in_by_nginx_are_named_in_blocks_and_the_audit_trail(
    behind_nginx: tuple[str, str, BlocklistService],
) -> None:
    through, direct, service = behind_nginx
    await wrote_recently(service, PNID, "573001234567")
    block = {"number": "+57 300 123 4567", "reason": "insults"}

    def session(cookie: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookies={"_oauth2_proxy": cookie} if cookie else None)

    async with session("") as anonymous, anonymous.get(f"{through}/admin/api/session") as resp:
        assert resp.status == 401  # nginx itself refuses: nobody signed in

    async with session("bob-session") as bob:  # a viewer by group; his forged header is overwritten by nginx
        forged = {"X-Auth-Request-Email": "ana@example.com", "X-Auth-Request-Groups": "supervisors"}
        async with bob.get(f"{through}/admin/api/session", headers=forged) as resp:
            assert await resp.json() == {"name": "bob@example.com", "role": "viewer"}
        async with bob.post(f"{through}{BLOCKS}", json=block, headers=forged) as resp:
            assert resp.status == 403
        async with bob.get(f"{through}{BLOCKS}") as resp:
            assert resp.status == 200

    async with session("eve-session") as eve, eve.get(f"{through}/admin/api/session") as resp:
        assert resp.status == 403  # signed in, but given no role

    async with session("ana-session") as ana:
        async with ana.post(f"{through}{BLOCKS}", json=block) as resp:
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["blocked_by"] == "ana@example.com"
        async with ana.get(f"{through}/admin/api/connectors/{PNID}/audit") as resp:
            [record] = (await resp.json())["records"]
            assert (record["action"], record["by"], record["source"]) == ("block", "ana@example.com", "admin_api")

    # Straight to the proxy, the same headers are a claim from an untrusted address: ignored.
    async with aiohttp.ClientSession() as direct_client:
        headers = {"X-Auth-Request-Email": "ana@example.com", "X-Auth-Request-Groups": "supervisors"}
        async with direct_client.get(f"{direct}/admin/api/session", headers=headers) as resp:
            assert resp.status == 401
