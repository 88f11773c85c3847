"""The gateway's direct route (proxy/outbound/routes.py): plain Graph paths skip aiohttp's router, the rest do not.

The shortcut is only sound if every path it takes is one the router would have given the gateway's catch-all route
too; that is checked here as a property against the application's real router, over hostile paths. The behaviour of
the gateway itself is checked by the whole suite, which runs through the shortcut (the test clients serve the same
application as ``wa-blocklist serve``).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.outbound.routes import routed_directly

from fakes import FakeGraph
from support import PNID

SEGMENTS = st.one_of(
    st.sampled_from(
        ["v21.0", PNID, "messages", "admin", "webhooks", "whatsapp", "metrics", "healthz", "readyz", "api", "..", ".",
         "", "%61dmin", "ADMIN", "admin%2F", "%2e%2e", "media", "a\\b", ";x", "+1"]
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-%/\\;+~:@!$&'()*,=", max_size=12),
)  # fmt: skip


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = "/" + "/".join(draw(st.lists(SEGMENTS, min_size=0, max_size=5)))
    if draw(st.booleans()):
        path += "?" + draw(st.sampled_from(["", "fields=id", "a=/admin/x", "x=%2e%2e"]))
    return path


@settings(max_examples=600, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=targets())
async def test_a_path_taken_directly_is_one_the_router_gives_the_gateway(app: web.Application, target: str) -> None:
    """Whatever the path, when the shortcut takes it the router would have matched the catch-all route."""
    if not routed_directly(target):
        return
    try:
        request = make_mocked_request("POST", target, app=app)
    except ValueError:
        return  # not a request target aiohttp can represent
    match = await app.router.resolve(request)
    assert match.route.resource is not None
    assert match.route.resource.canonical == "/{tail}", (target, match.route.resource.canonical)


@pytest.mark.parametrize(
    "target",
    ["/admin/api/connectors", "/webhooks/whatsapp", "/metrics", "/healthz", "/readyz", "/%61dmin/api", "/v1/../admin",
     "//admin", "http://x/admin"],
)  # fmt: skip
def test_the_proxy_s_own_faces_and_unusual_paths_take_the_router(target: str) -> None:
    assert not routed_directly(target)


def test_plain_graph_paths_go_straight_to_the_gateway() -> None:
    assert routed_directly(f"/v21.0/{PNID}/messages")
    assert routed_directly(f"/{PNID}/media?access_token=x")
    assert not routed_directly("/adminx")  # anything that starts like an own face takes the router, to be safe


async def test_a_streamed_answer_through_the_direct_route_carries_the_request_id(
    client: TestClient[Any, Any], fake_graph: FakeGraph
) -> None:
    """A media download is relayed as a stream (prepared inside the gateway), where the router's prepare signal
    would have added X-Request-Id; the direct route adds it before the headers go."""
    fake_graph.respond("GET", r"^/v21.0/1234567890123$", 200, {"id": "1234567890123", "data": "x" * 200_000})
    resp = await client.get("/v21.0/1234567890123", headers={"X-Request-Id": "cc-stream-1"})
    body = await resp.read()
    assert resp.status == 200 and len(body) > 200_000  # over SMALL_RESPONSE: relayed as a stream
    assert resp.headers["X-Request-Id"] == "cc-stream-1"
