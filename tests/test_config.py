"""Config loading: substitution, defaults, and validation messages that name the key."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_origin

import pytest
import yaml

from wa_blocklist.proxy.base.errors import ConfigError
from wa_blocklist.proxy.config import (
    AdminConfig,
    AdminToken,
    Between,
    Config,
    ConnectorConfig,
    GatewayConfig,
    GraphConfig,
    PersonRole,
    ProxyAuthConfig,
    ReloadConfig,
    ServerConfig,
    StoreConfig,
    WebhookConfig,
    keys_of,
    load_config,
    parse_config,
    settings_of,
)

REPO = Path(__file__).resolve().parent.parent


def minimal() -> dict[str, Any]:
    return {
        "admin": {"tokens": [{"name": "supervisor", "token": "${ADMIN_TOKEN}", "role": "admin"}]},
        "connectors": [
            {
                "phone_number_id": "106540352242922",
                "name": "Ventas",
                "app_secret": "${META_APP_SECRET}",
                "verify_token": "${META_VERIFY_TOKEN:-verify-default}",
                "forward_webhooks_to": "http://127.0.0.1:9000/webhooks/whatsapp",
            }
        ],
    }


ENV = {"ADMIN_TOKEN": "a-long-admin-token", "META_APP_SECRET": "shh-secret"}


def problems(data: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env=ENV if env is None else env)
    return caught.value.problems


def test_minimal_config_gets_defaults_and_substitutes_environment() -> None:
    config = parse_config(minimal(), env=ENV)
    assert config.server.port == 8080 and config.server.host == "127.0.0.1"
    assert config.graph.base_url == "https://graph.facebook.com"
    assert config.store.embedded and config.store.appendfsync == "always"
    assert config.admin.tokens[0].token == "a-long-admin-token"
    connector = config.connector("106540352242922")
    assert connector is not None
    assert connector.app_secret == "shh-secret"
    assert connector.verify_token == "verify-default"
    assert connector.on_store_error == "deny" and connector.require_signature is True
    assert config.connector("999999") is None


def test_secrets_do_not_show_in_repr() -> None:
    config = parse_config(minimal(), env=ENV)
    text = repr(config)
    assert "shh-secret" not in text and "a-long-admin-token" not in text


def test_unknown_key_is_named_with_the_known_ones() -> None:
    data = minimal()
    data["server"] = {"prot": 8080}
    found = problems(data)
    assert found == [
        "server.prot: unknown key (known keys here: host, port, idle_timeout_seconds, body_timeout_seconds, "
        "allow_development_secrets)"
    ]


def test_defaults_are_the_dataclasses_own() -> None:
    """The parser states no default of its own: an absent key gets its dataclass field's default."""
    config = parse_config(minimal(), env=ENV)
    assert config.server == ServerConfig() and config.graph == GraphConfig() and config.store == StoreConfig()
    assert config.gateway == GatewayConfig() and config.webhooks == WebhookConfig()
    assert config.reload == ReloadConfig() and config.admin.proxy_auth == ProxyAuthConfig()
    connector = config.connectors[0]
    given = set(minimal()["connectors"][0])
    for f in fields(ConnectorConfig):
        if f.name not in given:
            assert getattr(connector, f.name) == f.default, f.name


SECTIONS = (ServerConfig, GraphConfig, StoreConfig, AdminConfig, AdminToken, ProxyAuthConfig, PersonRole)
SECTIONS += (ReloadConfig, GatewayConfig, WebhookConfig, ConnectorConfig)
READ_BY_HAND = {"tokens", "proxy_auth", "trusted_addresses", "roles", "allow", "optout_keywords", "optin_keywords"}


def test_every_setting_is_read_from_its_dataclass() -> None:
    """Each field is a key of the file, read by its type (a whole number states its bounds), or read by hand."""
    for section in SECTIONS:
        for setting in settings_of(section):
            if setting.name in READ_BY_HAND:
                continue
            assert setting.kind in (bool, int, float, str) or get_origin(setting.kind) is Literal, setting
            if setting.kind is int:
                assert any(isinstance(rule, Between) for rule in setting.rules), setting
    assert keys_of(Config) == ("server", "graph", "store", "admin", "gateway", "webhooks", "connectors", "reload")


def test_unknown_keys_are_named_in_every_section_and_entry() -> None:
    data = minimal()
    data["cache"] = {}
    data["gateway"] = {"unknown_connector": "pass"}
    data["connectors"][0]["app_secrets"] = "x"
    found = problems(data)
    known = ", ".join(keys_of(ConnectorConfig))
    assert (
        "cache: unknown key (known keys here: server, graph, store, admin, gateway, webhooks, connectors, reload)"
        in found
    )
    assert f"connectors[0].app_secrets: unknown key (known keys here: {known})" in found
    assert any(
        p.startswith("gateway.unknown_connector: unknown key (known keys here: unknown_connectors,") for p in found
    )


def test_missing_phone_number_id_and_bad_url_are_both_reported() -> None:
    data = minimal()
    del data["connectors"][0]["phone_number_id"]
    data["connectors"][0]["forward_webhooks_to"] = "ftp://example.com/x"
    found = problems(data)
    assert "connectors[0].phone_number_id: missing" in found
    assert "connectors[0].forward_webhooks_to: 'ftp://example.com/x' is not an http(s) URL" in found


def test_duplicate_connector_is_refused() -> None:
    data = minimal()
    data["connectors"].append(dict(data["connectors"][0], name="Copy"))
    found = problems(data)
    assert found == ["connectors[1].phone_number_id: duplicate connector: same as connectors[0] (106540352242922)"]


def test_empty_secret_names_the_unset_variable() -> None:
    found = problems(minimal(), env={"ADMIN_TOKEN": "a-long-admin-token"})
    assert found == ["connectors[0].app_secret: secret left empty (environment variable META_APP_SECRET is not set)"]


def test_wrong_types_and_choices() -> None:
    data = minimal()
    data["server"] = {"port": "eighty"}
    data["store"] = {"appendfsync": "sometimes", "redis_url": "http://localhost"}
    data["admin"]["tokens"][0]["role"] = "root"
    data["connectors"][0]["phone_number_id"] = "+57 300"
    data["connectors"][0]["sync_to_meta"] = True
    found = problems(data)
    assert "server.port: 'eighty' is not a whole number" in found
    assert "store.appendfsync: 'sometimes' is not one of: always, everysec" in found
    assert (
        "store.redis_url: not a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL (scheme 'http')"
        in found
    )
    assert "admin.tokens[0].role: 'root' is not one of: viewer, admin" in found
    assert "connectors[0].phone_number_id: '+57 300' is not a phone number ID (digits only)" in found
    assert "connectors[0].access_token: empty, but sync_to_meta is on and needs it" in found


def test_short_and_duplicate_tokens_are_refused() -> None:
    data = minimal()
    data["admin"]["tokens"] = [
        {"name": "a", "token": "short", "role": "admin"},
        {"name": "b", "token": "same-token-twice", "role": "admin"},
        {"name": "b", "token": "same-token-twice", "role": "viewer"},
    ]
    found = problems(data)
    assert "admin.tokens[0].token: too short (at least 12 characters)" in found
    assert "admin.tokens[2].name: duplicate of admin.tokens[1].name ('b')" in found
    assert "admin.tokens[2].token: same token as admin.tokens[1]" in found


def test_numeric_phone_number_id_in_yaml_is_accepted(tmp_path: Path) -> None:
    text = yaml.safe_dump(minimal()).replace("'106540352242922'", "106540352242922")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path, env=ENV)
    assert config.connectors[0].phone_number_id == "106540352242922"
    assert config.store.data_dir == str(tmp_path / "data")  # relative to the config file


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_config_is_valid_with_its_environment() -> None:
    env = {
        "ADMIN_TOKEN": "x" * 16,
        "VIEWER_TOKEN": "y" * 16,
        "META_APP_SECRET": "secret",
        "META_VERIFY_TOKEN": "verify",
    }
    config = load_config(REPO / "config.yaml", env=env)
    assert [c.phone_number_id for c in config.connectors] == ["106540352242922"]


def test_check_config_command_prints_problems_and_exits_non_zero(tmp_path: Path) -> None:
    data = minimal()
    data["connectors"][0]["forward_webhooks_to"] = "not a url"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {"PATH": "/usr/bin:/bin", **ENV}
    done = subprocess.run(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", "check-config", "--config", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "connectors[0].forward_webhooks_to: 'not a url' is not an http(s) URL" in done.stderr
    assert "shh-secret" not in done.stderr + done.stdout

    path.write_text(yaml.safe_dump(minimal()))
    done = subprocess.run(
        [sys.executable, "-m", "wa_blocklist.proxy.cli", "check-config", "--config", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OK (1 connector(s)" in done.stdout
