"""Benchmark: the same load, in one run, against the upstream, nginx and the proxy in its modes.

Run by hand with ``make bench`` (needs Debian's ``nginx`` and ``wrk``; ``make bench`` installs them when missing).
Everything listens on 127.0.0.1 only. The upstream (a fast fake Graph API and contact center) is nginx answering
a canned JSON body, so the fake never limits the figures.

Scenarios (each a fresh proxy process, so its peak RSS is its own):
  upstream            wrk → upstream directly
  nginx proxy_pass    wrk → nginx → upstream
  aiohttp floor       wrk → the least an aiohttp server can do: answer at once, or relay upstream with no checks
                      (bench/floor.py), on the proxy's core: the ceiling for any aiohttp proxy on this machine
  proxy pass-through  wrk → proxy (gateway.enforce: false) → upstream
  proxy enforce 0     wrk → proxy (checks every send; 0 blocked numbers) → upstream
  proxy enforce 1M    the same with 1,000,000 blocked numbers on the connector
  (each enforcing mode also with store.local_cache: false, to show what one Redis round trip per send costs)
  webhook clean       signed webhook, sender not blocked → forwarded as is
  webhook filtered    signed webhook with two users, one blocked → filtered, re-signed, forwarded
  latency             100 sends/s, open loop, 8 keep-alive connections (bench/latency.py): upstream directly, through
                      nginx and through the enforcing proxy; the difference to the upstream is the latency added
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import redis
import yaml

from wa_blocklist.proxy.store.embedded import redis_server_binary
from wa_blocklist.proxy.store.schema import BlockEntry

REPO = Path(__file__).resolve().parent.parent
PNID = "106540352242922"
APP_SECRET = "bench-app-secret"
ADMIN_TOKEN = "bench-admin-token-0001"
RECIPIENTS = 2_000  # active conversations of one contact center; the warm-up sees each of them
UPSTREAM_BODY = (
    '{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.BENCH"}]}'
)

# On a machine with 2+ cores the proxy gets its own core and the load generator, nginx and Redis share the others,
# so the proxy's figures are not disturbed by the tools measuring it (nginx's figures run on the shared core).
_CORES = os.cpu_count() or 1
PROXY_CPUS = ["taskset", "-c", str(_CORES - 1)] if _CORES >= 2 and shutil.which("taskset") else []
LOAD_CPUS = ["taskset", "-c", f"0-{_CORES - 2}"] if PROXY_CPUS else []

# Recipients in turn, so the warm-up has sent to each of them once and the measured run is the steady state of a
# contact center talking to its active conversations.
SEND_LUA = """
local numbers = {}
for i = 1, %(recipients)d do numbers[i] = string.format("5730%%08d", i) end
local turn = 0
request = function()
  turn = turn %% #numbers + 1
  local body = '{"messaging_product":"whatsapp","recipient_type":"individual","to":"' ..
    numbers[turn] .. '","type":"text","text":{"body":"Hola, gracias por escribirnos"}}'
  return wrk.format("POST", "/v21.0/%(pnid)s/messages",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer bench-graph-token"}, body)
end
"""

# Every delivery carries new message IDs, as Meta's do (the same body twice is a replay, which the proxy acknowledges
# without checking or forwarding it): the bodies differ in a number k, their signatures are precomputed one per line,
# each thread takes every threads-th k, and each run (the warm-up, then the measured run) starts after the last k the
# run before may have used (kept in a file: wrk gives a script no state across runs).
WEBHOOK_LUA = """
local parts = {%(parts)s}
local counter, signatures, threads = [==[%(counter)s]==], [==[%(signatures)s]==], %(threads)d
local start = 0
local saved = io.open(counter)
if saved then start = tonumber(saved:read("*l")) or 0; saved:close() end
local made = 0
function setup(thread) thread:set("id", made); made = made + 1 end
local sigs, k = {}, 0
function init(args)
  for line in io.lines(signatures) do sigs[#sigs + 1] = line end
  k = start + id
end
function request()
  local body = parts[1]
  for i = 2, #parts do body = body .. k .. parts[i] end
  local signature = sigs[k + 1]
  k = k + threads
  return wrk.format("POST", "/webhooks/whatsapp",
    {["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = signature}, body)
end
function done(summary, latency, requests)
  local out = io.open(counter, "w")
  out:write(tostring(start + threads * (summary.requests + 1000)))  -- the requests still in flight at the end too
  out:close()
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status < 500)
    except Exception:
        return False


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    rss_mb: float | None
    non_2xx: int
    cpu_us_per_request: float | None = None


def run_wrk(
    url: str, script: Path, duration: int, connections: int, threads: int
) -> tuple[float, float, float, int, int]:
    out = subprocess.run(
        [*LOAD_CPUS, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, latency("50"), latency("99"), int(non_2xx.group(1)) if non_2xx else 0, requests


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(stat[11]) + int(stat[12])) / ticks
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += cpu_seconds(int(child))
    return total


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a process and its children (workers, but not an external Redis)."""
    try:
        total = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += int((peak_rss_mb(int(child)) or 0) * 1024)
    except OSError:
        return None
    return total / 1024


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.processes: list[subprocess.Popen[bytes]] = []
        self.upstream_port = free_port()
        self.nginx_port = free_port()
        self.redis_port = free_port()
        self.latency_report = ""

    def spawn(self, args: list[str], **kwargs) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def _nginx(self, name: str, servers: str, cpus: list[str]) -> None:
        """One nginx instance (one worker) with the given server blocks, pinned to ``cpus``."""
        temp = self.work / f"nginx-{name}"
        temp.mkdir()
        conf = temp / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fcgi;
  uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
  {servers}
}}
"""
        )
        self.spawn([*cpus, "nginx", "-c", str(conf), "-e", str(temp / "error.log")])

    def start_infrastructure(self) -> None:
        # The upstream shares the load generator's core(s); nginx as a proxy gets the proxy's core, as ours does.
        self._nginx(
            "upstream",
            f"""server {{
    listen 127.0.0.1:{self.upstream_port};
    location / {{ client_body_buffer_size 64k; default_type application/json; return 200 '{UPSTREAM_BODY}'; }}
  }}""",
            LOAD_CPUS,
        )
        self._nginx(
            "proxy",
            f"""upstream graph {{ server 127.0.0.1:{self.upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{self.nginx_port};
    location / {{ proxy_pass http://graph; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}""",
            PROXY_CPUS,
        )
        self.spawn(
            [*LOAD_CPUS, redis_server_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"]
        )  # fmt: skip
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.upstream_port}/"), "nginx")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.nginx_port}/"), "nginx as a proxy")
        wait_for(self._redis_up, "redis")

    def _redis_up(self) -> bool:
        try:
            with redis.Redis(port=self.redis_port) as client:
                return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    def config(self, enforce: bool, local_cache: bool = True) -> Path:
        path = self.work / f"config-{int(enforce)}-{int(local_cache)}.yaml"
        data = {
            "graph": {"base_url": f"http://127.0.0.1:{self.upstream_port}"},
            "store": {"redis_url": f"redis://127.0.0.1:{self.redis_port}/0", "local_cache": local_cache},
            "gateway": {"enforce": enforce},
            "admin": {"tokens": [{"name": "bench", "token": ADMIN_TOKEN, "role": "admin"}]},
            "connectors": [
                {
                    "phone_number_id": PNID,
                    "name": "Bench",
                    "app_secret": APP_SECRET,
                    "verify_token": "bench-verify",
                    "forward_webhooks_to": f"http://127.0.0.1:{self.upstream_port}/webhooks/whatsapp",
                }
            ],
        }
        path.write_text(yaml.safe_dump(data))
        return path

    def start_proxy(self, config: Path, uvloop: bool = True, workers: int = 1) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = (self.work / f"proxy-{port}.log").open("wb")
        pin = PROXY_CPUS if workers == 1 else []  # several workers are not confined to one core
        process = subprocess.Popen(
            [*pin, sys.executable, "-m", "wa_blocklist.proxy.cli", "serve", "--config", str(config),
             "--port", str(port), "--workers", str(workers)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "WA_BLOCKLIST_UVLOOP": "1" if uvloop else "0"},
        )  # fmt: skip
        log.close()

        def up() -> bool:
            if process.poll() is not None:
                raise SystemExit(f"the proxy exited:\n{(self.work / f'proxy-{port}.log').read_text()[-3000:]}")
            return http_ok(f"http://127.0.0.1:{port}/admin/")

        wait_for(up, "the proxy")
        return process, port

    def fill_blocklist(self, count: int) -> None:
        with redis.Redis(port=self.redis_port) as client:
            client.flushdb()
            now = int(time.time() * 1000)
            tag = f"wabl:{{{PNID}}}"
            batch = 20_000
            for start in range(0, count, batch):
                pipe = client.pipeline(transaction=False)
                mapping = {}
                scores = {}
                for i in range(start, min(start + batch, count)):
                    number = f"5731{i:08d}"  # disjoint from the recipients: sends pass, the check still runs
                    entry = BlockEntry(number, "phone", number, now - i, "bench", "bench", "bench")
                    mapping[number] = entry.dumps()
                    scores[number] = now - i
                pipe.hset(f"{tag}:blocks", mapping=mapping)
                pipe.zadd(f"{tag}:order", scores)
                pipe.execute()

    def measure(self, name: str, url: str, script: Path, pid: int | None, connections: int | None = None) -> Result:
        conns = connections or self.args.connections
        # a short warm-up so connection pools and the check cache are in steady state
        run_wrk(url, script, 2, conns, self.args.threads)
        cpu_before = cpu_seconds(pid) if pid else 0.0
        rps, p50, p99, non_2xx, requests = run_wrk(url, script, self.args.duration, conns, self.args.threads)
        # CPU per request is far steadier than throughput on a shared machine: it is what the proxy itself spent
        cpu = (cpu_seconds(pid) - cpu_before) / requests * 1e6 if pid and requests else None
        result = Result(name, rps, p50, p99, peak_rss_mb(pid) if pid else None, non_2xx, cpu)
        print(
            f"  {name:<34} {rps:>9.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  rss {result.rss_mb or 0:6.1f} MB"
            f"  cpu/req {cpu or 0:6.0f} us  non-2xx {non_2xx}",
            flush=True,
        )
        return result

    def floor_scenario(self, name: str, mode: str, script: Path) -> Result:
        port = free_port()
        extra = [f"http://127.0.0.1:{self.upstream_port}"] if mode == "proxy" else []
        process = subprocess.Popen(
            [*PROXY_CPUS, sys.executable, "-m", "bench.floor", mode, str(port), *extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/"), f"the {mode} floor")
            return self.measure(name, f"http://127.0.0.1:{port}", script, process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    def proxy_scenario(
        self,
        name: str,
        config: Path,
        script: Path,
        uvloop: bool = True,
        connections: int | None = None,
        workers: int = 1,
    ) -> Result:
        process, port = self.start_proxy(config, uvloop, workers)
        try:
            return self.measure(name, f"http://127.0.0.1:{port}", script, process.pid, connections)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    def webhook_script(self, blocked_too: bool) -> Path:
        def message(wa_id: str, n: int) -> dict[str, object]:
            return {"from": wa_id, "id": f"wamid.BENCH{int(blocked_too)}.{mark}.{n}", "timestamp": "1764038400",
                    "type": "text", "text": {"body": "Hola"}}  # fmt: skip

        mark = "@K@"  # where each delivery's number goes

        users = ["573001234567"] + (["573109999999"] if blocked_too else [])
        payload = {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": PNID},
                "contacts": [{"profile": {"name": f"User {u[-4:]}"}, "wa_id": u} for u in users],
                "messages": [message(u, i) for i, u in enumerate(users)],
            }}]}],
        }  # fmt: skip
        parts = json.dumps(payload, separators=(",", ":")).split(mark)
        # enough for the three webhook scenarios (warm-up and measured run each) at several thousand deliveries/s
        count = 3 * self.args.threads * (6_000 * (2 + self.args.duration) + 1_000)
        name = f"webhook-{int(blocked_too)}"
        signatures = self.work / f"{name}.signatures"
        key = APP_SECRET.encode()
        with signatures.open("w") as out:
            for k in range(count):
                body = str(k).join(parts).encode()
                out.write("sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest() + "\n")
        path = self.work / f"{name}.lua"
        lua_parts = ", ".join(f"[==[{part}]==]" for part in parts)
        path.write_text(WEBHOOK_LUA % {"parts": lua_parts, "counter": self.work / f"{name}.next",
                                       "signatures": signatures, "threads": self.args.threads})  # fmt: skip
        return path

    def block_for_webhook(self) -> None:
        with redis.Redis(port=self.redis_port) as client:
            entry = BlockEntry("573109999999", "phone", "573109999999", int(time.time() * 1000), "bench", "b", "b")
            client.hset(f"wabl:{{{PNID}}}:blocks", "573109999999", entry.dumps())

    def latency(self, url: str) -> tuple[float, float]:
        """p50 and p99 in ms of 100 sends/s (open loop, 8 keep-alive connections) against ``url``."""
        out = subprocess.run(
            [*LOAD_CPUS, sys.executable, "-m", "bench.latency", url, "100", str(self.args.latency_seconds), "8"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        return float(out[0]), float(out[1])

    def latency_table(self) -> str:
        """Added latency at 100 req/s: the upstream directly, nginx and the enforcing proxy, in three rounds."""
        rows: dict[str, list[tuple[float, float]]] = {}
        for _ in range(3):
            rows.setdefault("upstream (direct)", []).append(self.latency(f"http://127.0.0.1:{self.upstream_port}"))
            rows.setdefault("nginx proxy_pass", []).append(self.latency(f"http://127.0.0.1:{self.nginx_port}"))
            process, port = self.start_proxy(self.config(True))
            try:
                rows.setdefault("proxy enforce", []).append(self.latency(f"http://127.0.0.1:{port}"))
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        medians = {name: tuple(sorted(v[i] for v in runs)[1] for i in (0, 1)) for name, runs in rows.items()}
        base = medians["upstream (direct)"]
        lines = [
            "| 100 req/s, open loop, 8 connections (median of 3) | p50 ms | p99 ms | added p50 ms | added p99 ms |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, (p50, p99) in medians.items():
            added = "" if name.startswith("upstream") else f"{p50 - base[0]:+.2f} | {p99 - base[1]:+.2f}"
            lines.append(f"| {name} | {p50:.2f} | {p99:.2f} | {added or ' | '} |")
        return "\n".join(lines)

    def run(self) -> list[Result]:
        self.start_infrastructure()
        if self.args.latency_seconds:
            self.fill_blocklist(0)
            self.latency_report = self.latency_table()
            print(self.latency_report, flush=True)
            if self.args.latency_only:
                return []
        send = self.work / "send.lua"
        send.write_text(SEND_LUA % {"recipients": RECIPIENTS, "pnid": PNID})
        results: list[Result] = []
        print(f"load: wrk -t{self.args.threads} -c{self.args.connections} -d{self.args.duration}s, "
              f"{RECIPIENTS} distinct recipients, {os.cpu_count()} cores", flush=True)  # fmt: skip
        results.append(self.measure("upstream (direct)", f"http://127.0.0.1:{self.upstream_port}", send, None))
        results.append(self.measure("nginx proxy_pass", f"http://127.0.0.1:{self.nginx_port}", send, None))
        results.append(self.floor_scenario("aiohttp floor: answer at once", "hello", send))
        results.append(self.floor_scenario("aiohttp floor: bare relay", "proxy", send))
        self.fill_blocklist(0)
        # The comparison the targets are about, run round after round so that a noisy spell on a shared machine hits
        # all three alike; each is reported by its median round.
        rounds: dict[str, list[Result]] = {}
        for round_no in range(1, self.args.rounds + 1):
            print(f"  (round {round_no} of {self.args.rounds})", flush=True)
            for name, config in [
                ("proxy pass-through (enforce off)", self.config(False)),
                ("proxy enforce, 0 blocked", self.config(True)),
                ("proxy enforce, 0 blocked, no cache", self.config(True, False)),
            ]:
                rounds.setdefault(name, []).append(self.proxy_scenario(name, config, send))
        for runs in rounds.values():
            results.append(sorted(runs, key=lambda r: r.rps)[len(runs) // 2])
        results.append(self.proxy_scenario("proxy enforce, 0 blocked, asyncio loop", self.config(True), send, False))
        results.append(
            self.proxy_scenario("proxy enforce, 0 blocked, 2 workers (unpinned)", self.config(True), send, workers=2)
        )
        print(f"  (filling {self.args.entries:,} blocked numbers...)", flush=True)
        started = time.monotonic()
        self.fill_blocklist(self.args.entries)
        print(f"  (filled in {time.monotonic() - started:.1f} s)", flush=True)
        results.append(self.proxy_scenario(f"proxy enforce, {self.args.entries:,} blocked", self.config(True), send))
        results.append(
            self.proxy_scenario(
                f"proxy enforce, {self.args.entries:,} blocked, no cache", self.config(True, False), send
            )
        )
        self.fill_blocklist(0)
        self.block_for_webhook()
        results.append(self.proxy_scenario("webhook, nothing blocked", self.config(True), self.webhook_script(False)))
        results.append(
            self.proxy_scenario("webhook, 1 of 2 users blocked", self.config(True), self.webhook_script(True))
        )
        # latency at a load like Meta's (a few concurrent deliveries), not at saturation
        results.append(
            self.proxy_scenario(
                "webhook, 1 of 2 blocked, 4 connections", self.config(True), self.webhook_script(True), connections=4
            )
        )
        return results

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGQUIT if "nginx" in process.args else signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def table(results: list[Result]) -> str:
    by_name = {r.name: r for r in results}
    base = by_name.get("proxy pass-through (enforce off)")
    nginx = by_name.get("nginx proxy_pass")
    lines = [
        "| scenario | req/s | p50 ms | p99 ms | peak RSS MB | CPU µs/req | vs pass-through (req/s; CPU) | vs nginx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        vs_base = ""
        if base and r.name.startswith("proxy"):
            vs_base = f"{r.rps / base.rps:.2f}×"
            if r.cpu_us_per_request and base.cpu_us_per_request:
                vs_base += f"; {r.cpu_us_per_request / base.cpu_us_per_request:.2f}×"
        vs_nginx = f"{r.rps / nginx.rps:.2f}×" if nginx and r.name.startswith(("proxy", "aiohttp")) else ""
        rss = f"{r.rss_mb:.0f}" if r.rss_mb else ""
        cpu = f"{r.cpu_us_per_request:.0f}" if r.cpu_us_per_request else ""
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {rss} | {cpu} | {vs_base} | {vs_nginx} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the pass-through/enforce comparison")
    parser.add_argument("--entries", type=int, default=1_000_000, help="blocked numbers for the large-list runs")
    parser.add_argument("--latency-seconds", type=int, default=10, help="seconds per latency run (0: none)")
    parser.add_argument("--latency-only", action="store_true", help="only the latency table")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: apt-get install -y nginx-light wrk (make bench does it)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="wabl-bench-") as tmp:
        bench = Bench(Path(tmp), args)
        try:
            results = bench.run()
        finally:
            bench.close()
    report = table(results) + ("\n\n" + bench.latency_report if bench.latency_report else "")
    print()
    print(report)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    (out / f"{stamp}.md").write_text(report + "\n")
    (out / f"{stamp}.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print(f"\nwritten to bench/results/{stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
