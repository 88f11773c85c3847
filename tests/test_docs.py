"""The README stays true to the code: every config key and every admin API route is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from proxy.admin.openapi import OPENAPI
from proxy.config import (
    AdminToken,
    ConnectorConfig,
    GatewayConfig,
    GraphConfig,
    ServerConfig,
    StoreConfig,
    WebhookConfig,
)

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_config_key_is_in_the_readme() -> None:
    sections = {
        "server": ServerConfig,
        "graph": GraphConfig,
        "store": StoreConfig,
        "gateway": GatewayConfig,
        "webhooks": WebhookConfig,
        "admin.tokens[]": AdminToken,
        "connectors[]": ConnectorConfig,
    }
    missing = []
    for prefix, cls in sections.items():
        for field in dataclasses.fields(cls):
            if field.name.startswith("_"):
                continue
            key = f"{prefix}.{field.name}"
            if key not in README:
                missing.append(key)
    assert missing == []


def test_every_admin_route_is_in_the_readme() -> None:
    missing = []
    for path, operations in OPENAPI["paths"].items():
        for method in operations:
            pattern = re.escape(f"{method.upper()} /admin/api{path}")
            if not re.search(pattern, README):
                missing.append(f"{method.upper()} /admin/api{path}")
    assert missing == []
