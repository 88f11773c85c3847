"""The docs stay true to the code and the README stays a front door.

- every config key is documented in docs/configuration.md, every admin API route in docs/admin-api.md;
- every docs/ page the README links exists, and every docs/ page is linked from the README;
- the README stays at most 200 lines;
- the development values in dev.env are the ones the Makefile exports and the CLI warns about.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import yaml

from wa_blocklist.proxy.admin.openapi import OPENAPI
from wa_blocklist.proxy.config import Config
from wa_blocklist.proxy.run.startup import DEVELOPMENT_VALUES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
README_MAX_LINES = 200


def config_sections(cls: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """Every section of the config as ``(key prefix, dataclass)``, found by walking the dataclasses' field types
    (``admin.tokens[]`` for a list of them), so a new section cannot be left out of this test. ``gateway.allow``
    holds the classifier's surfaces, written as ``{method, path}``, which the page describes as such."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        args = typing.get_args(kind)
        listed = typing.get_origin(kind) in (tuple, list) and bool(args)
        inner = args[0] if listed else kind
        if isinstance(inner, type) and dataclasses.is_dataclass(inner) and inner.__module__ == Config.__module__:
            name = f"{prefix}{field.name}{'[]' if listed else ''}"
            yield name, inner
            yield from config_sections(inner, name + ".")


def test_every_config_key_is_in_the_configuration_page() -> None:
    page = (DOCS / "configuration.md").read_text()
    missing = []
    for prefix, cls in config_sections(Config):
        for field in dataclasses.fields(cls):
            if field.name.startswith("_"):
                continue
            key = f"{prefix}.{field.name}"
            if key not in page:
                missing.append(key)
    assert missing == []


def test_every_admin_route_is_in_the_admin_api_page() -> None:
    page = (DOCS / "admin-api.md").read_text()
    missing = []
    for path, operations in OPENAPI["paths"].items():
        for method in operations:
            pattern = re.escape(f"{method.upper()} /admin/api{path}")
            if not re.search(pattern, page):
                missing.append(f"{method.upper()} /admin/api{path}")
    assert missing == []


def test_readme_fits_on_a_screen() -> None:
    assert len(README.splitlines()) <= README_MAX_LINES


def test_every_docs_page_linked_from_the_readme_exists_and_every_page_is_linked() -> None:
    linked = set(re.findall(r"\]\(docs/([A-Za-z0-9_.-]+\.md)(?:#[^)]*)?\)", README))
    assert linked, "the README links no docs/ page"
    assert sorted(page for page in linked if not (DOCS / page).is_file()) == []
    pages = {page.name for page in DOCS.glob("*.md")}
    assert sorted(pages - linked) == []


def test_links_between_docs_pages_resolve() -> None:
    broken = []
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.name} → {target}")
    assert broken == []


def test_development_values_agree_between_dev_env_makefile_and_cli() -> None:
    dev_env = dict(re.findall(r'^export (\w+)="\$\{\1:-([^}]*)\}"$', (ROOT / "dev.env").read_text(), re.M))
    makefile = dict(re.findall(r"^export (\w+)\s*\?=\s*(\S+)$", (ROOT / "Makefile").read_text(), re.M))
    assert dev_env and dev_env == makefile
    assert set(dev_env.values()) == DEVELOPMENT_VALUES


def test_cli_examples_run_as_written_against_the_shipped_config() -> None:
    """Numbers with spaces are quoted, and every connector an example names is the shipped config's."""
    shipped = {str(c["phone_number_id"]) for c in yaml.safe_load((ROOT / "config.yaml").read_text())["connectors"]}
    texts = [README, *(page.read_text() for page in DOCS.glob("*.md"))]
    unquoted = [m for text in texts for m in re.findall(r"wa-blocklist \w[\w-]* \+\d+ \d[^\n]*", text)]
    assert unquoted == []
    named = {m for text in texts for m in re.findall(r"--connector (\d{6,})", text)}
    named |= {m for text in texts for m in re.findall(r"/connectors/(\d{6,})/", text)}
    assert named and named <= shipped
