"""The admin API against its own OpenAPI document, with schemathesis: every operation, valid and invalid input.

Schemathesis loads ``/admin/api/openapi.json`` from the running proxy and generates requests for every operation;
every response must conform (status documented, JSON body matching its schema, no 5xx). The proxy runs in a
thread with its own event loop, since schemathesis calls it synchronously.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from wa_blocklist.proxy.app import create_app, server_options
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import BlocklistService, InboundUser
from wa_blocklist.proxy.config import parse_config

from support import ADMIN_TOKEN, PNID, PNID_BR, base_config_data, free_port

EXAMPLES = 25
"""Examples per operation and generation mode: enough to reach every branch of the checks, fast enough for CI."""

ACTIVE = ["573001234567", "573009876543", "5511987650000", "+57 300 123 4567"]


class ThreadedProxy:
    """The proxy app served from a background thread's event loop on a free port."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self, **options: Any) -> None:
        self.thread.start()

        async def start() -> None:
            self.runner = web.AppRunner(self.app, **options)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        self.run(start())

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def running_proxy(redis_url: str) -> Iterator[ThreadedProxy]:
    config = parse_config(base_config_data(redis_url), env={})
    proxy = ThreadedProxy(create_app(config))
    proxy.start(**server_options(config))

    async def activity() -> None:
        service: BlocklistService = proxy.app[SERVICE]
        for pnid in (PNID, PNID_BR):
            await service.record_inbound(
                pnid, [InboundUser(wa_id="".join(c for c in n if c.isdigit())) for n in ACTIVE]
            )

    proxy.run(activity())
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_admin_operation_conforms_to_the_openapi_document(
    running_proxy: ThreadedProxy, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{running_proxy.base_url}/admin/api/openapi.json")
    # Unknown query parameters are ignored, as the Graph API and most HTTP APIs do (a client may add a cache-buster);
    # so invalid input is generated from the documented parameters only.
    schema.config.generation.update(allow_extra_parameters=False)
    base_url = f"{running_proxy.base_url}/admin/api"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8  # the document lists every route (compared with the router in test_admin_api)
    # Excluded check: "schema-valid data is accepted". The document types a number as a string, yet "" or "abc" is
    # rightly a 400 (invalid_number), and so is a made-up cursor (an opaque token the API hands out). Every other
    # check runs: no 5xx, documented status codes, content types and headers, bodies matching their schemas,
    # schema-violating input refused with a 4xx.
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=_path_parameters(operation.path))

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=[positive_data_acceptance])

        check()


def _path_parameters(path: str) -> dict[str, Any]:
    # Real connectors most of the time would need the generator's luck; pin the connector so the checks reach the
    # operations' real work (a generated pnid only ever meets the 404 branch). Numbers stay generated.
    return {"pnid": PNID} if "{pnid}" in path else {}


# --- hostile input that the OpenAPI document cannot describe --------------------------------------------------------

_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
)
_JSON = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
)
_FIELDS = st.sampled_from(["number", "reason", "duration", "expires_at"])
_BODIES = st.one_of(
    _JSON.map(lambda v: json.dumps(v, allow_nan=True)),
    st.dictionaries(_FIELDS, _JSON, max_size=4).map(lambda v: json.dumps(v, allow_nan=True)),
    st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 20_000).map(lambda n: '{"number": ' * n + "1" + "}" * n),
    # Numbers past Python's 4,300-digit int/str conversion limit, written out (no int of that size is ever built).
    st.tuples(_FIELDS, st.integers(1, 8_000)).map(lambda fn: f'{{"{fn[0]}": {"7" * fn[1]}}}'),
    st.tuples(_FIELDS, st.integers(1, 8_000)).map(lambda fn: f'{{"{fn[0]}": 1.{"5" * fn[1]}e99999}}'),
    st.text(max_size=200),
)
_SCORES = st.sampled_from(["nan", "inf", "-inf", "1_0", " 1 ", "1e3", "-1", "0x10", "١٢", "1" * 400]) | st.text()
_CURSORS = st.one_of(
    st.text(max_size=60),
    st.tuples(_SCORES, st.text(max_size=20)).map(
        lambda sm: base64.urlsafe_b64encode(f"{sm[0]}\n{sm[1]}".encode()).decode().rstrip("=")
    ),
    st.integers().map(lambda n: f"{n}-{n}"),
)


def _call(proxy: ThreadedProxy, method: str, path: str, body: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        proxy.base_url + path,
        method=method,
        data=body.encode("utf-8", "surrogatepass") if body is not None else None,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw and resp.headers.get_content_type() == "application/json" else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    body=_BODIES,
    method_path=st.sampled_from(
        [
            ("POST", f"/admin/api/connectors/{PNID}/blocks"),
            ("PATCH", f"/admin/api/connectors/{PNID}/blocks/573001234567"),
            ("POST", f"/admin/api/connectors/{PNID}/blocks/import"),
            ("POST", f"/admin/api/connectors/{PNID}/blocks/restore"),
        ]
    ),
)
def test_no_body_makes_the_admin_api_answer_5xx(
    running_proxy: ThreadedProxy, body: str, method_path: tuple[str, str]
) -> None:
    status, answer = _call(running_proxy, *method_path, body)
    assert status < 500, (status, answer)
    if status >= 400:
        assert set(answer) == {"error"} and {"code", "message"} <= set(answer["error"])


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    cursor=_CURSORS,
    limit=st.one_of(st.none(), st.text(max_size=12), st.integers().map(str)),
    route=st.sampled_from(["blocks", "audit"]),
    number=st.text(min_size=1, max_size=40),
)
def test_no_query_or_path_makes_the_admin_api_answer_5xx(
    running_proxy: ThreadedProxy, cursor: str, limit: str | None, route: str, number: str
) -> None:
    query = {"cursor": cursor, **({"limit": limit} if limit is not None else {})}
    status, answer = _call(running_proxy, "GET", f"/admin/api/connectors/{PNID}/{route}?{urlencode(query)}")
    assert status < 500, (status, answer)
    for template in ("blocks/{}", "check/{}"):
        status, answer = _call(running_proxy, "GET", f"/admin/api/connectors/{PNID}/" + template.format(quote(number)))
        assert status < 500, (status, answer)
