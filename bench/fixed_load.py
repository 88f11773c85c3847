"""A fixed number of sends over a few connections (wrk runs for a time, callgrind wants a count).

``python -m bench.fixed_load URL COUNT CONNECTIONS RECIPIENTS``: COUNT sends to ``/v21.0/{pnid}/messages``, the
recipients in turn; prints the statuses seen and exits 1 unless every send got a 200.
``python -m bench.fixed_load URL COUNT CONNECTIONS 0 webhook APP_SECRET``: COUNT signed webhook deliveries of two
users' messages (the second, 573109999999, is the one the bench blocks) to ``/webhooks/whatsapp`` instead. Each
delivery carries new message IDs (unique to the run), as Meta's do: the same body twice would be a replay, which the
receiver acknowledges without checking or forwarding it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from collections import Counter

import aiohttp

PNID = "106540352242922"


def webhook(secret: str, tag: str = "") -> tuple[bytes, dict[str, str]]:
    """A signed delivery of two users' text messages (the bench blocks the second); ``tag`` makes its IDs unique."""
    users = ["573001234567", "573109999999"]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PNID},
        "contacts": [{"profile": {"name": f"User {u[-4:]}"}, "wa_id": u} for u in users],
        "messages": [
            {
                "from": u,
                "id": f"wamid.BENCH{tag}{i}",
                "timestamp": "1764038400",
                "type": "text",
                "text": {"body": "Hola"},
            }
            for i, u in enumerate(users)
        ],
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}],
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Hub-Signature-256": signature}


async def run(url: str, count: int, connections: int, recipients: int, secret: str = "") -> Counter[int]:
    turns = iter(range(count))
    run_tag = f"{os.getpid()}.{time.time_ns()}."  # a later run's deliveries are not replays of this one's
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def worker() -> None:
            if secret:
                for i in turns:
                    body, hook_headers = webhook(secret, f"{run_tag}{i}.")
                    async with session.post(f"{url}/webhooks/whatsapp", data=body, headers=hook_headers) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                return
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
    secret = sys.argv[6] if len(sys.argv) > 6 and sys.argv[5] == "webhook" else ""
    statuses = asyncio.run(run(url, count, connections, recipients, secret))
    print(dict(statuses))
    return 0 if statuses == Counter({200: count}) else 1


if __name__ == "__main__":
    sys.exit(main())
