"""Hot reload of config.yaml on SIGHUP: a real ``wa-blocklist serve`` process, its file rewritten under it."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import CONFIG, META_SYNC, METRICS, SERVICE
from wa_blocklist.proxy.config import LiveConfig
from wa_blocklist.proxy.run.reload import reload_config

from fakes import FakeContactCenter, FakeGraph
from support import (
    ADMIN_TOKEN,
    PNID,
    PNID_BR,
    REPO,
    FakeClock,
    LoggedProxy,
    auth,
    base_config_data,
    free_port,
    wait_until,
)

PNID_NEW = "333333333333333"
NEW_CONNECTOR = {
    "phone_number_id": PNID_NEW,
    "name": "Ventas México",
    "display_number": "+52 55 5000 0000",
    "default_country": "MX",
    "app_secret": "test-app-secret-mexico",
    "verify_token": "test-verify-token",
    "forward_webhooks_to": "http://127.0.0.1:9/webhooks/whatsapp",
}


@pytest.fixture
def served(tmp_path: Path, redis_url: str) -> Iterator[tuple[LoggedProxy, Path, dict[str, Any]]]:
    data = base_config_data(redis_url)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    proxy = LoggedProxy(path, free_port(), tmp_path / "proxy.log")
    proxy.start()
    try:
        yield proxy, path, data
    finally:
        proxy.stop()


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    return wait_until(predicate, timeout=20, what=what)


@pytest.mark.slow
def test_sighup_adds_and_removes_connectors(served: tuple[LoggedProxy, Path, dict[str, Any]]) -> None:
    proxy, path, data = served
    assert proxy.connectors() == [PNID, PNID_BR]

    changed = copy.deepcopy(data)
    changed["connectors"] = [data["connectors"][0], NEW_CONNECTOR]
    path.write_text(yaml.safe_dump(changed, allow_unicode=True))
    proxy.hup()
    wait_for(lambda: proxy.connectors() == [PNID, PNID_NEW], "the connector list to change")
    assert proxy.call("GET", f"/admin/api/connectors/{PNID_BR}")[0] == 404
    status, body = proxy.call("GET", f"/admin/api/connectors/{PNID_NEW}")
    assert status == 200 and body["name"] == "Ventas México"
    # The new connector works at once in every face: its numbers parse with its own default country.
    status, body = proxy.call("POST", f"/admin/api/connectors/{PNID_NEW}/blocks", {"number": "55 1234 5678"})
    assert status == 409 and body["error"]["code"] == "not_recently_active"
    assert any("config reloaded" in r["message"] and PNID_NEW in r["message"] for r in proxy.log_records())

    # A broken file is refused: the running config keeps serving, and the problems are logged.
    path.write_text("connectors: [\n")
    proxy.hup()
    wait_for(lambda: proxy.reloads("refused") == 1, "the broken file to be refused")
    assert proxy.connectors() == [PNID, PNID_NEW]
    invalid = copy.deepcopy(changed)
    invalid["connectors"][1]["phone_number_id"] = "not-a-number"
    path.write_text(yaml.safe_dump(invalid, allow_unicode=True))
    proxy.hup()
    wait_for(lambda: proxy.reloads("refused") == 2, "the invalid file to be refused")
    assert proxy.connectors() == [PNID, PNID_NEW]
    refusals = [r for r in proxy.log_records() if "config reload refused" in r["message"]]
    assert len(refusals) == 2 and refusals[0]["level"] == "error"
    assert "connectors[1].phone_number_id" in refusals[1]["message"]
    assert proxy.reloads("applied") == 1
    assert proxy.process is not None and proxy.process.poll() is None


async def test_reload_swaps_every_reader_and_refuses_start_time_sections(
    client: TestClient[Any, Any], tmp_path: Path, redis_url: str
) -> None:
    app = client.app
    assert app is not None
    data = base_config_data(redis_url)
    data["graph"]["base_url"] = app[CONFIG].current.graph.base_url
    data["connectors"][0]["forward_webhooks_to"] = app[CONFIG].current.connectors[0].forward_webhooks_to
    data["connectors"][1]["forward_webhooks_to"] = app[CONFIG].current.connectors[1].forward_webhooks_to
    data["admin"]["tokens"][0]["token"] = "rotated-admin-token-0002"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert reload_config(app, path)
    assert app[SERVICE].config is app[CONFIG].current  # the service reads the same reference
    # A rotated admin token works on the next request, the old one no longer does.
    assert (await client.get("/admin/api/session", headers=auth(ADMIN_TOKEN))).status == 401
    assert (await client.get("/admin/api/session", headers=auth("rotated-admin-token-0002"))).status == 200

    before = app[CONFIG].current
    data["store"]["timeout_seconds"] = 9
    path.write_text(yaml.safe_dump(data))
    assert not reload_config(app, path)
    assert app[CONFIG].current is before
    path.unlink()
    assert not reload_config(app, path)
    assert app[CONFIG].current is before
    assert (await client.get("/healthz")).status == 200


def _syncing(data: dict[str, Any]) -> None:
    data["connectors"][0]["sync_to_meta"] = True
    data["connectors"][0]["access_token"] = "EAAG-connector-token"


@pytest.mark.filterwarnings("error::DeprecationWarning")
async def test_a_reload_is_seen_by_the_service_the_gateway_and_the_meta_sync_without_a_deprecation_warning(
    aiohttp_client: Any,
    make_config: Callable[..., Any],
    clock: FakeClock,
    tmp_path: Path,
    redis_url: str,
    fake_graph: FakeGraph,
    contact_center: FakeContactCenter,
) -> None:
    app = create_app(make_config(_syncing), clock=clock)
    client = await aiohttp_client(app)
    holder = app[CONFIG]
    assert isinstance(holder, LiveConfig)
    # One reference, held by every reader: nothing is copied that a reload would have to patch.
    assert app[SERVICE].live is holder and app[META_SYNC].live is holder
    send = {"messaging_product": "whatsapp", "to": "525512345678", "type": "text", "text": {"body": "hola"}}
    refused = await client.post(f"/v21.0/{PNID_NEW}/messages", json=send)
    assert refused.status == 403  # not a connector yet

    data = base_config_data(redis_url)
    _syncing(data)
    data["graph"]["base_url"] = holder.current.graph.base_url
    data["connectors"].append(NEW_CONNECTOR)
    assert contact_center.server is not None
    for connector in data["connectors"]:
        connector["forward_webhooks_to"] = str(contact_center.server.make_url("/webhooks/whatsapp"))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reload_config(app, path)
    assert [w.message for w in caught] == []
    new = holder.current
    assert new.connector(PNID_NEW) is not None
    assert app[CONFIG] is holder and app[SERVICE].config is new and app[META_SYNC].config is new

    # The gateway reads the same reference on the next request: the new connector's sends go through.
    passed = await client.post(f"/v21.0/{PNID_NEW}/messages", json=send, headers={"Authorization": "Bearer EAAG-x"})
    assert passed.status == 200 and len(fake_graph.requests) == 1
    # The service and the Meta sync see it too: the new connector is listed, and only the syncing one is synced.
    listed = await client.get("/admin/api/connectors", headers=auth())
    assert [c["phone_number_id"] for c in (await listed.json())["connectors"]] == [PNID, PNID_BR, PNID_NEW]
    assert [c.phone_number_id for c in app[META_SYNC].config.connectors if c.sync_to_meta] == [PNID]


def _refusals(app: Any) -> float:
    for line in app[METRICS].render().decode().splitlines():
        if line.startswith('wabl_config_reloads_total{result="refused"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.pop("connectors"), id="truncated-before-connectors"),
        pytest.param(lambda d: d.update(connectors=[]), id="empty-connectors"),
        pytest.param(lambda d: d.update(connectors=[NEW_CONNECTOR]), id="drops-every-running-connector"),
    ],
)
async def test_a_reload_that_would_switch_enforcement_off_is_refused_logged_and_counted(
    client: TestClient[Any, Any],
    tmp_path: Path,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[dict[str, Any]], None],
) -> None:
    app = client.app
    assert app is not None
    data = base_config_data(redis_url)
    data["graph"]["base_url"] = app[CONFIG].current.graph.base_url
    change(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    before = app[CONFIG].current
    with caplog.at_level(logging.INFO, logger="wa_blocklist.proxy.run.reload"):
        assert not reload_config(app, path)
    assert app[CONFIG].current is before
    assert _refusals(app) == 1
    [record] = [r for r in caplog.records if r.name == "wa_blocklist.proxy.run.reload"]
    assert record.levelno == logging.ERROR and "refused" in record.getMessage()
    assert "reload.allow_" in record.getMessage()  # the message names the option that would allow it

    # The explicit option in the new file lets the same change through.
    data["reload"] = {"allow_no_connectors": True, "allow_replacing_all_connectors": True}
    path.write_text(yaml.safe_dump(data))
    assert reload_config(app, path)
    assert app[CONFIG].current is not before and _refusals(app) == 1


def test_check_config_and_serve_refuse_a_config_without_connectors(tmp_path: Path, redis_url: str) -> None:
    data = base_config_data(redis_url)
    data["connectors"] = []
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    for command in (["check-config"], ["serve", "--port", str(free_port())]):
        done = subprocess.run(
            [sys.executable, "-m", "wa_blocklist.proxy.cli", *command, "--config", str(path)],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "connectors: none configured" in done.stderr and "reload.allow_no_connectors" in done.stderr
    data["reload"] = {"allow_no_connectors": True}
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", "check-config", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "OK (0 connector(s)" in done.stdout
