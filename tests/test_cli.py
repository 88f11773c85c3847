"""The CLI as an operator meets it: plain shells without secrets, one-line start-up errors, the trial tools."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.config import load_config, parse_config
from wa_blocklist.proxy.inbound.receiver import sign
from wa_blocklist.proxy.run.startup import (
    DEVELOPMENT_VALUES,
    StartupError,
    development_values_in_use,
    refuse_public_development_values,
)
from wa_blocklist.proxy.run.trial import describe, meta_bytes, sink_app, text_message_webhook

from support import APP_SECRET, PNID, base_config_data, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
SECRET_VARIABLES = ("ADMIN_TOKEN", "VIEWER_TOKEN", "META_APP_SECRET", "META_VERIFY_TOKEN")


def plain_env(**extra: str) -> dict[str, str]:
    """A shell's environment without any of the project's secrets."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES and k not in ("HOST", "PORT")}
    return {**env, **extra}


def run(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", *args, "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=60, env=env if env is not None else plain_env(),
    )  # fmt: skip


def secret_config(tmp_path: Path, redis_url: str, data_dir: str = "") -> Path:
    """The test config with every secret taken from the environment, as the shipped config.yaml does."""
    data = base_config_data(redis_url)
    data["admin"]["tokens"][0]["token"] = "${ADMIN_TOKEN}"
    data["admin"]["tokens"][1]["token"] = "${VIEWER_TOKEN}"
    for connector in data["connectors"]:
        connector["app_secret"] = "${META_APP_SECRET}"
        connector["verify_token"] = "${META_VERIFY_TOKEN}"
    if data_dir:
        data["store"] = {"redis_url": "", "data_dir": data_dir}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


SECRETS = {
    "ADMIN_TOKEN": "cli-test-admin-token",
    "VIEWER_TOKEN": "cli-test-viewer-token",
    "META_APP_SECRET": APP_SECRET,
    "META_VERIFY_TOKEN": "cli-test-verify",
}


@pytest.mark.slow
def test_store_commands_work_without_secrets_but_serve_and_check_config_name_them(
    tmp_path: Path, redis_url: str
) -> None:
    config = secret_config(tmp_path, redis_url)
    blocked = run(config, "block", "+57 300 555 0001", "--connector", PNID, "--force", "--duration", "7d")
    assert blocked.returncode == 0, blocked.stderr
    listing = run(config, "list", "--connector", PNID)
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert "EXPIRES (UTC)" in header
    assert "+57 300 5550001" in row and "never" not in row  # international format, a 7-day expiry
    assert run(config, "export", "--connector", PNID).returncode == 0

    for command in ("check-config", "serve"):
        refused = run(config, command)
        assert refused.returncode == 2
        assert "connectors[0].app_secret: secret left empty (environment variable META_APP_SECRET is not set)" in (
            refused.stderr
        )
        assert ". ./dev.env" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_list_shows_never_for_a_permanent_block(tmp_path: Path, redis_url: str) -> None:
    config = secret_config(tmp_path, redis_url)
    assert run(config, "block", "+57 300 555 0002", "--connector", PNID, "--force").returncode == 0
    row = run(config, "list", "--connector", PNID).stdout.splitlines()[1]
    assert "+57 300 5550002" in row and " never " in row


class Serve:
    """``wa-blocklist serve`` as a child process in a shell with the secrets set."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wa_blocklist.proxy.cli", "serve", "--config", str(config), "--port", str(port)],
            cwd=REPO, env=plain_env(**SECRETS), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"serve exited: {self.process.communicate()[1]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.communicate(timeout=40)[1]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Path, Serve]]:
    config = secret_config(tmp_path, "", data_dir="./data")
    first = Serve(config, free_port())
    try:
        wait_until(first.ready, timeout=30, what="the first proxy")
        yield config, first
    finally:
        first.stop()


@pytest.mark.slow
def test_a_second_serve_on_the_same_embedded_store_is_one_clear_line(embedded: tuple[Path, Serve]) -> None:
    config, first = embedded
    second = run(config, "serve", "--port", str(free_port()), env=plain_env(**SECRETS))
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"error: another wa-blocklist serve (pid {first.process.pid}) is using the embedded store in "
        f"{config.parent / 'data'}; stop it, or give this one another store.data_dir"
    ]
    assert first.ready()  # the first one is untouched
    # The store-only commands still share it, as documented.
    assert run(config, "list", "--connector", PNID).returncode == 0


@pytest.mark.slow
def test_a_busy_port_is_one_clear_line(tmp_path: Path, redis_url: str) -> None:
    config = secret_config(tmp_path, redis_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(config, "serve", "--port", str(port), env=plain_env(**SECRETS))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(is another wa-blocklist serve running? set PORT=... or server.port)"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_port_from_the_environment_and_start_up_and_shutdown_lines(tmp_path: Path, redis_url: str) -> None:
    data = base_config_data(redis_url)
    data["server"] = {"host": "${HOST:-127.0.0.1}", "port": "${PORT:-8080}"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", "serve", "--config", str(config)],
        cwd=REPO, env=plain_env(PORT=str(port)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines = wait_until(lambda: _line_with(process, "admin page:"), timeout=30, what="the start-up lines")
        assert f"http://127.0.0.1:{port}/admin/" in lines
    finally:
        process.terminate()
        rest = process.communicate(timeout=40)[1]
    records = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert any(m.startswith("shutting down") for m in messages)
    assert messages[-1] == "stopped"
    assert not any("development tokens" in m for m in messages)  # the test tokens are not the public ones


def _line_with(process: subprocess.Popen[str], text: str) -> str | None:
    assert process.stderr is not None
    line = process.stderr.readline()
    if not line and process.poll() is not None:
        raise RuntimeError("serve exited")
    return line if text in line else None


def test_development_values_are_named_by_key_never_by_value() -> None:
    data = base_config_data("redis://127.0.0.1:1")
    data["admin"]["tokens"][0]["token"] = "dev-admin-token-change-me"
    data["connectors"][1]["app_secret"] = "dev-app-secret"
    keys = development_values_in_use(parse_config(data))
    assert keys == ["admin.tokens[0].token", "connectors[1].app_secret"]
    assert not DEVELOPMENT_VALUES & set(" ".join(keys).split())


def test_the_shipped_config_reads_host_and_port_from_the_environment() -> None:
    secrets = {name: f"{name.lower()}-value-0001" for name in SECRET_VARIABLES}
    config = load_config(REPO / "config.yaml", env={**secrets, "HOST": "0.0.0.0", "PORT": "8123"})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8123)
    defaults = load_config(REPO / "config.yaml", env=secrets)
    assert (defaults.server.host, defaults.server.port) == ("127.0.0.1", 8080)


async def test_the_sink_verifies_signatures_like_a_strict_contact_center(aiohttp_client: Any) -> None:
    config = parse_config(base_config_data("redis://127.0.0.1:1"))
    printed: list[str] = []
    client: TestClient[Any, Any] = await aiohttp_client(sink_app(config, "/webhooks/whatsapp", printed.append))
    connector = config.connectors[0]
    body = meta_bytes(text_message_webhook(connector, "573005550001", "¿hola? ñandú 👋", "Ana"))
    assert body.isascii()  # Meta's escaping, so the signature is over what a strict consumer re-encodes

    missing = await client.post("/webhooks/whatsapp", data=body)
    assert missing.status == 401
    wrong = await client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign("other", body)})
    assert wrong.status == 403
    good = await client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign(APP_SECRET, body)})
    assert good.status == 200
    assert printed[-1].endswith(f'message from +57 300 5550001 (Ana) to {PNID}: text "¿hola? ñandú 👋"  [signature ok]')
    assert sum("refused" in line for line in printed) == 2


@pytest.mark.slow
def test_simulate_inbound_says_when_the_proxy_is_not_there(tmp_path: Path, redis_url: str) -> None:
    config = secret_config(tmp_path, redis_url)
    url = f"http://127.0.0.1:{free_port()}/webhooks/whatsapp"
    done = run(config, "simulate-inbound", "--from", "+57 300 555 0001", "--connector", PNID, "--url", url,
               env=plain_env(**SECRETS))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: cannot reach the proxy at {url} (ClientConnectorError); is it running?"
    no_secret = run(config, "simulate-inbound", "--from", "+57 300 555 0001", "--connector", PNID, "--url", url)
    assert (
        no_secret.returncode == 1
        and "app_secret of connector" in no_secret.stderr
        and ". ./dev.env" in no_secret.stderr
    )


@pytest.mark.slow
def test_update_changes_reason_and_expiry_and_block_says_how(tmp_path: Path, redis_url: str) -> None:
    config = secret_config(tmp_path, redis_url)
    assert run(config, "block", "+57 300 555 0003", "--connector", PNID, "--force", "--reason", "spam").returncode == 0
    again = run(config, "block", "+57 300 555 0003", "--connector", PNID, "--reason", "threats")
    assert again.returncode == 0 and again.stdout.startswith("already blocked: 573005550003")
    assert "the block keeps its reason 'spam'; change it with: wa-blocklist update 573005550003" in again.stderr

    changed = run(config, "update", "+57 300 555 0003", "--connector", PNID, "--reason", "threats", "--duration", "7d")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("updated: 573005550003 on") and "until 20" in changed.stdout
    row = run(config, "list", "--connector", PNID).stdout.splitlines()[1]
    assert "threats" in row and " never " not in row
    permanent = run(config, "update", "573005550003", "--connector", PNID, "--permanent")
    assert permanent.returncode == 0 and "permanent, reason 'threats'" in permanent.stdout

    nothing = run(config, "update", "573005550003", "--connector", PNID)
    assert nothing.returncode == 1 and "nothing to change" in nothing.stderr
    missing = run(config, "update", "573009999999", "--connector", PNID, "--reason", "x")
    assert missing.returncode == 1 and "is not blocked" in missing.stderr
    both = run(config, "update", "573005550003", "--connector", PNID, "--duration", "1d", "--permanent")
    assert both.returncode == 2  # argparse: not allowed together


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["entry", "changes", "value", "field", "messages", "statuses", "calls", "contacts", "metadata", "profile",
         "from", "type", "text", "body", "wa_id", "name", "phone_number_id", "x"]), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=200, derandomize=True, database=None)
@given(payload=json_values)
def test_the_sink_describes_any_json_without_failing(payload: Any) -> None:
    lines = list(describe(payload))
    assert all(isinstance(line, str) and line for line in lines)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "proxy.internal"])
def test_serve_refuses_the_public_development_secrets_beyond_the_loopback(tmp_path: Path, host: str) -> None:
    """dev.env's tokens are public: on an address others can reach they would let anyone sign in as an admin."""
    development = dict(re.findall(r'export (\w+)="\$\{\w+:-([^}]*)\}"', (REPO / "dev.env").read_text()))
    assert set(development) == set(SECRET_VARIABLES) and set(development.values()) <= DEVELOPMENT_VALUES
    config = secret_config(tmp_path, "redis://127.0.0.1:1/0")
    done = run(config, "serve", "--host", host, "--port", str(free_port()), env=plain_env(**development))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: refusing to serve on {host} with the public development tokens or secrets")
    assert "admin.tokens[0].token" in line and "server.allow_development_secrets" in line
    assert not any(value in line for value in DEVELOPMENT_VALUES)


def test_the_loopback_and_the_explicit_option_let_development_secrets_serve() -> None:
    data = base_config_data("redis://127.0.0.1:1/0")
    data["admin"]["tokens"][0]["token"] = sorted(DEVELOPMENT_VALUES)[0]
    config = parse_config(data)
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.8.9.10"):
        refuse_public_development_values(config, host)  # no refusal
    with pytest.raises(StartupError):
        refuse_public_development_values(config, "0.0.0.0")
    data["server"] = {"allow_development_secrets": True}
    refuse_public_development_values(parse_config(data), "0.0.0.0")
