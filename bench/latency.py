"""Latency at a steady, modest load: open loop (requests start on a fixed schedule), a few keep-alive connections.

``python -m bench.latency URL RATE SECONDS CONNECTIONS``: RATE sends per second for SECONDS over CONNECTIONS
keep-alive connections (recipients in turn), each timed from its scheduled start, so a slow answer delays the
ones behind it and shows in the figures (no coordinated omission). Prints ``p50_ms p99_ms`` after a 1 s warm-up.
Run against the upstream directly and through the proxy: the difference is the latency the proxy adds.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import uvloop

PNID = "106540352242922"


async def run(url: str, rate: float, seconds: float, connections: int) -> list[float]:
    latencies: list[float] = []
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench-graph-token"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def one(n: int, scheduled: float, keep: bool) -> None:
            body = (
                f'{{"messaging_product":"whatsapp","recipient_type":"individual","to":"5730{n % 2000 + 1:08d}",'
                '"type":"text","text":{"body":"Hola, gracias por escribirnos"}}'
            )
            async with session.post(f"{url}/v21.0/{PNID}/messages", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"status {resp.status}")
            if keep:
                latencies.append(time.perf_counter() - scheduled)

        tasks = []
        start = time.perf_counter() + 0.05
        total = int(rate * (seconds + 1))
        for n in range(total):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, scheduled, keep=n >= rate)))  # the first second warms up
        await asyncio.gather(*tasks)
    return latencies


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> int:
    url, rate, seconds, connections = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    latencies = uvloop.run(run(url, rate, seconds, connections))
    print(f"{percentile(latencies, 50) * 1000:.3f} {percentile(latencies, 99) * 1000:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
