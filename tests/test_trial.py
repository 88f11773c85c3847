"""The README's 2-minute trial works exactly as written on a fresh copy of the shipped config.

The test reads the shell blocks of the README's "Try it" section and runs them: terminal 1's ``make run`` as the
``wa-blocklist serve`` it runs (with make's development values, from dev.env), terminal 2's sink command as written,
terminal 3's block as written. Only the ports change (free ones instead of 8080 and 9000, which may be busy on a
shared machine), by plain text substitution.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support import free_port, wait_until

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent


def trial_blocks() -> list[str]:
    """The ```sh blocks of the README's "Try it" section, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Try it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """What a fresh clone holds for the trial: config.yaml, dev.env and the virtualenv ``make run`` makes."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    shutil.copy(REPO / "dev.env", tmp_path / "dev.env")
    if not (VENV / "bin" / "wa-blocklist").exists():
        pytest.skip("the tests do not run from the project's virtualenv")
    (tmp_path / ".venv").symlink_to(VENV)
    return tmp_path


class Shell:
    """A shell command run in the copy, as a terminal would, stopped with SIGINT (Ctrl-C) at the end."""

    def __init__(self, cwd: Path, env: dict[str, str], command: str) -> None:
        self.process = subprocess.Popen(
            ["sh", "-c", command], cwd=cwd, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    def stop(self) -> tuple[str, str]:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        out, err = self.process.communicate(timeout=40)
        return out, err


def test_the_readme_trial_runs_as_written(fresh_copy: Path) -> None:
    serve_block, sink_block, trial_block = trial_blocks()
    assert serve_block.strip().startswith("make run")
    proxy_port, sink_port = free_port(), free_port()
    config = fresh_copy / "config.yaml"
    assert "127.0.0.1:9000" in config.read_text()
    config.write_text(config.read_text().replace("127.0.0.1:9000", f"127.0.0.1:{sink_port}"))
    # A plain shell: no secrets, no project variables; PORT as `make run PORT=...` would pass it.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(fresh_copy), "PORT": str(proxy_port)}

    proxy = Shell(fresh_copy, env, ". ./dev.env && exec .venv/bin/wa-blocklist serve --config config.yaml")
    sink = Shell(fresh_copy, env, sink_block.strip())
    try:
        wait_until(lambda: ready(proxy_port, proxy), timeout=30, what="the proxy to be ready")
        assert sink.process.stdout is not None
        banner = sink.process.stdout.readline()  # printed once the sink listens
        assert f"127.0.0.1:{sink_port}/webhooks/whatsapp" in banner

        assert "8080" in trial_block
        done = subprocess.run(
            ["sh", "-e", "-c", trial_block.replace("127.0.0.1:8080", f"127.0.0.1:{proxy_port}")],
            cwd=fresh_copy, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        sink_out, _ = sink.stop()
        _, proxy_err = proxy.stop()

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "wrote 'hola' to Ventas Colombia (106540352242922): the proxy answered 200" in lines[0]
    assert '"reason": "insults"' in lines[1] and '"number": "573005550001"' in lines[1]
    assert "wrote 'hola otra vez'" in lines[2] and "answered 200" in lines[2]
    assert '"code": 139900' in lines[3]
    assert any("+57 300 5550001" in line and "insults" in line for line in lines[4:-1])
    assert lines[-1] == "204"
    # The contact center got the first message, signed as it verifies; the blocked user's second never arrived.
    assert 'message from +57 300 5550001 (Cliente) to 106540352242922: text "hola"  [signature ok]' in sink_out
    assert "otra vez" not in sink_out and "refused" not in sink_out
    assert f"admin page: http://127.0.0.1:{proxy_port}/admin/" in proxy_err
    assert "development tokens or secrets in use" in proxy_err
    assert "stopped" in proxy_err.splitlines()[-1]


def ready(port: int, proxy: Shell) -> bool:
    if proxy.process.poll() is not None:
        raise RuntimeError(f"the proxy exited: {proxy.process.communicate()[1]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False
