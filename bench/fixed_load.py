"""A fixed number of sends over a few connections (wrk runs for a time, callgrind wants a count).

``python -m bench.fixed_load URL COUNT CONNECTIONS RECIPIENTS``: COUNT sends to ``/v21.0/{pnid}/messages``, the
recipients in turn; prints the statuses seen and exits 1 unless every send got a 200.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import aiohttp

PNID = "106540352242922"


async def run(url: str, count: int, connections: int, recipients: int) -> Counter[int]:
    turns = iter(range(count))
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def worker() -> None:
            for i in turns:
                to = f"5730{i % recipients + 1:08d}"
                body = (
                    f'{{"messaging_product":"whatsapp","recipient_type":"individual","to":"{to}","type":"text",'
                    '"text":{"body":"Hola, gracias por escribirnos"}}'
                )
                headers = {"Content-Type": "application/json", "Authorization": "Bearer bench-graph-token"}
                async with session.post(f"{url}/v21.0/{PNID}/messages", data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


def main() -> int:
    url, count, connections, recipients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    statuses = asyncio.run(run(url, count, connections, recipients))
    print(dict(statuses))
    return 0 if statuses == Counter({200: count}) else 1


if __name__ == "__main__":
    sys.exit(main())
