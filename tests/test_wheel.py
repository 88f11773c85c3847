"""Installed outside the source tree: the wheel ``python -m build`` makes installs in a clean virtualenv, and
``wa-blocklist serve`` runs from it (the admin page's files, the embedded Redis binary and the licence included).

Everything is imported as ``wa_blocklist.proxy`` / ``wa_blocklist.plugins`` (the repository's ``proxy/`` and
``plugins/`` folders, mapped under one name by ``wa_blocklist/``), so a bot project with folders of its own called
``plugins`` or ``proxy`` imports both, from a wheel and from an editable install.

The build and the clean install fetch setuptools and the dependencies from the package index (pip's cache makes a
second run quick); the test runs in CI with the other slow ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

from support import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parent.parent
SECRETS = {
    "ADMIN_TOKEN": "wheel-test-admin-token",
    "VIEWER_TOKEN": "wheel-test-viewer-token",
    "META_APP_SECRET": "wheel-test-app-secret",
    "META_VERIFY_TOKEN": "wheel-test-verify-token",
}


def source_files() -> list[str]:
    """The tracked files (a fresh clone's), or the tree less local state when git is not there."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        return [name for name in listed.splitlines() if (REPO / name).is_file() or (REPO / name).is_symlink()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", ".git", "data", "node_modules", "build", "dist", "__pycache__"}
        return [
            str(path.relative_to(REPO))
            for path in REPO.rglob("*")
            if path.is_file() and not skip & set(path.relative_to(REPO).parts)
        ]


def test_the_wheel_installs_in_a_clean_venv_and_serves(tmp_path: Path) -> None:
    # Build from a copy, so the build leaves nothing in the working tree.
    source = tmp_path / "source"
    for name in source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():  # wa_blocklist/proxy -> ../proxy: the mapping itself
            os.symlink(os.readlink(REPO / name), source / name)
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("wa_blocklist_proxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    shipped = {"wa_blocklist/proxy/admin/static/index.html", "wa_blocklist/proxy/admin/static/admin.js"}
    typed = {"wa_blocklist/py.typed", "wa_blocklist/proxy/py.typed", "wa_blocklist/plugins/py.typed"}
    assert shipped | typed <= set(names)
    # One top-level name: nothing a bot's own folders (plugins/, proxy/) could collide with.
    assert {n.split("/")[0] for n in names if not n.startswith("wa_blocklist_proxy-")} == {"wa_blocklist"}

    clean = tmp_path / "clean"
    venv.create(clean, with_pip=True)
    installed = subprocess.run(
        [str(clean / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]

    # A deployment directory of its own: no source tree on the path, the shipped config, real-looking secrets.
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    port = free_port()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["store"]["data_dir"] = str(deploy / "data")
    (deploy / "config.yaml").write_text(yaml.safe_dump(config))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(deploy), "PORT": str(port), **SECRETS}
    checked = subprocess.run(
        [str(clean / "bin" / "wa-blocklist"), "check-config"], cwd=deploy, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [str(clean / "bin" / "wa-blocklist"), "serve"], cwd=deploy, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: served(port, process), timeout=60, what="serve from the wheel")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/", timeout=10) as page:
            assert page.status == 200 and b'src="static/admin.js"' in page.read()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/admin/api/session", headers={"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}"}
        )
        with urllib.request.urlopen(request, timeout=10) as session:
            assert session.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=60)[1]
    assert process.returncode == 0, err
    # A bot project beside it, with its own plugins/ and proxy/ packages: both import, each from its own place.
    bot_project(deploy)
    where = subprocess.run([str(clean / "bin" / "python"), "-c", BOTH], cwd=deploy, env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert where.returncode == 0, where.stderr
    ours, own_plugins, own_proxy = where.stdout.split()
    assert ours.startswith(str(clean))  # the installed copy, not the source tree
    assert own_plugins == str(deploy / "plugins" / "__init__.py") and own_proxy == str(deploy / "proxy" / "__init__.py")


BOTH = (
    "import wa_blocklist.plugins.client as ours, plugins, proxy; "
    "from plugins.mine import VALUE; assert VALUE == 'the bot s own'; "
    "print(ours.__file__, plugins.__file__, proxy.__file__)"
)
"""Imports the distribution's plugins and a bot project's own ``plugins`` and ``proxy`` packages in one process."""


def bot_project(where: Path) -> None:
    """A bot project's own ``plugins/`` (with a module ``mine``) and ``proxy/`` packages in ``where``."""
    for package in ("plugins", "proxy"):
        (where / package).mkdir(exist_ok=True)
        (where / package / "__init__.py").write_text("")
    (where / "plugins" / "mine.py").write_text("VALUE = 'the bot s own'\n")


def test_an_editable_install_imports_beside_a_bot_projects_own_plugins_and_proxy(tmp_path: Path) -> None:
    bot_project(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", BOTH], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    ours, own_plugins, own_proxy = done.stdout.split()
    assert ours == str(REPO / "wa_blocklist" / "plugins" / "client.py")  # this checkout, through the mapping
    assert own_plugins == str(tmp_path / "plugins" / "__init__.py")
    assert own_proxy == str(tmp_path / "proxy" / "__init__.py")


def served(port: int, process: subprocess.Popen[str]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"serve exited: {process.communicate()[1]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False
