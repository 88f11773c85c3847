"""Development tools to try the proxy without Meta and without a contact center.

- :func:`simulate_inbound` builds the webhook Meta sends when a customer writes a text message to a connector, signs
  it with the connector's app secret exactly as Meta does (``X-Hub-Signature-256`` over the raw bytes) and posts it
  to the proxy's webhook receiver, so the number has "written" and may be blocked under the 24-hour rule.
- :func:`sink_app` is a stand-in contact center: it receives the webhooks the proxy forwards, checks their
  signature against the connectors' app secrets as a real consumer would, and prints one line per item.

Both are what ``wa-blocklist simulate-inbound`` and ``wa-blocklist sink`` run; production traffic never uses them.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ..base.errors import BlocklistError
from ..base.phone_format import international
from ..config import Config, ConnectorConfig
from ..graph.identity import parse
from ..graph.signature import sign

WEBHOOK_PATH = "/webhooks/whatsapp"
WABA_ID = "0"
"""``entry[].id`` of a simulated webhook: Meta puts the WhatsApp Business Account ID there, which the proxy does not
need (it routes by ``metadata.phone_number_id``) and the config does not hold."""


def require_secret(connector: ConnectorConfig) -> str:
    """The connector's app secret, or a clear error when the environment left it empty.

    Raises:
        BlocklistError: the secret is empty.
    """
    if not connector.app_secret:
        raise BlocklistError(
            f"the app_secret of connector {connector.phone_number_id} ({connector.name}) is empty: set it in the "
            "environment as for serve (for development: . ./dev.env)"
        )
    return connector.app_secret


def proxy_webhook_url(config: Config) -> str:
    """Where the configured proxy receives webhooks (a wildcard listen address is reached on the loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.server.host, config.server.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}{WEBHOOK_PATH}"


def text_message_webhook(connector: ConnectorConfig, wa_id: str, text: str, name: str) -> dict[str, Any]:
    """The ``messages`` webhook of one text message from ``wa_id``, shaped like Meta's documented example."""
    display = "".join(ch for ch in connector.display_number if ch.isdigit()) or connector.phone_number_id
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display, "phone_number_id": connector.phone_number_id},
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": "wamid.SIM" + secrets.token_hex(16).upper(),
                "timestamp": str(int(time.time())),
                "type": "text",
                "text": {"body": text},
            }
        ],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
    }


def meta_bytes(payload: dict[str, Any]) -> bytes:
    """Serialise as Meta does: ASCII with ``\\uXXXX`` escapes and ``\\/`` for slashes."""
    return json.dumps(payload, ensure_ascii=True).replace("/", "\\/").encode("ascii")


async def simulate_inbound(
    connector: ConnectorConfig, number: str, text: str, url: str, name: str = "Cliente", wait_seconds: float = 30.0
) -> tuple[int, str, str]:
    """Post a signed text-message webhook from ``number`` to the proxy at ``url``.

    Returns:
        The proxy's status, its answer's text, and the sender's wa_id.

    Raises:
        BlocklistError: the number is no phone number, the app secret is empty, or the proxy cannot be reached.
    """
    secret = require_secret(connector)
    identity = parse(number, connector.region)
    if identity.kind != "phone":
        raise BlocklistError(f"--from must be a phone number (got the BSUID {identity.value})")
    body = meta_bytes(text_message_webhook(connector, identity.value, text, name))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait_seconds)) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            return response.status, await response.text(), identity.value
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BlocklistError(f"cannot reach the proxy at {url} ({type(exc).__name__}); is it running?") from None


# --- the sink -----------------------------------------------------------------------------------------------------


def sink_address(connector: ConnectorConfig) -> tuple[str, int, str]:
    """Host, port and path of the connector's ``forward_webhooks_to``, where the sink stands in.

    Raises:
        BlocklistError: the URL is not plain HTTP (the sink serves no TLS).
    """
    parts = urlsplit(connector.forward_webhooks_to)
    if parts.scheme != "http" or not parts.hostname:
        raise BlocklistError(
            f"forward_webhooks_to of {connector.phone_number_id} is {connector.forward_webhooks_to}; the sink serves "
            "plain HTTP: give --host and --port"
        )
    return parts.hostname, parts.port or 80, parts.path or "/"


def _signature_ok(secrets_: list[str], body: bytes, header: str) -> bool:
    # Every secret is compared (constant time each), so timing says nothing about which one matched.
    results = [hmac.compare_digest(sign(secret, body), header) for secret in secrets_]
    return any(results)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def describe(payload: Any) -> Iterator[str]:
    """One line per item of a forwarded webhook: messages, statuses, calls, anything else by field.

    Whatever the body holds, this never raises: an item of an unexpected shape is shown by its field alone.
    """
    entries = _dicts(payload.get("entry")) if isinstance(payload, dict) else []
    for entry in entries:
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            field = str(change.get("field", "?"))
            names = {
                str(c.get("wa_id")): str(c["profile"].get("name", ""))
                for c in _dicts(value.get("contacts"))
                if isinstance(c.get("profile"), dict)
            }
            metadata = value.get("metadata")
            pnid = str(metadata.get("phone_number_id", "-")) if isinstance(metadata, dict) else "-"
            shown = False
            for message in _dicts(value.get("messages")):
                sender = str(message.get("from") or message.get("from_user_id") or "?")
                kind = str(message.get("type", "?"))
                text = message.get("text")
                body = text.get("body") if kind == "text" and isinstance(text, dict) else None
                who = international(sender) + (f" ({names[sender]})" if names.get(sender) else "")
                what = f'text "{body}"' if body is not None else kind
                yield f"message from {who} to {pnid}: {what}"
                shown = True
            for status in _dicts(value.get("statuses")):
                recipient = international(str(status.get("recipient_id", "?")))
                yield f"status {status.get('status', '?')} of {status.get('id', '?')} to {recipient} on {pnid}"
                shown = True
            for call in _dicts(value.get("calls")):
                yield f"call {call.get('event', '?')} from {international(str(call.get('from', '?')))} on {pnid}"
                shown = True
            if not shown:
                yield f"{field} event on {pnid}"


def sink_app(config: Config, path: str, out: Callable[[str], None], raw: bool = False) -> web.Application:
    """The stand-in contact center: ``POST path`` with a good signature → 200 and lines printed.

    Missing signature → 401, wrong one → 403 (what a strict consumer answers; the proxy then answers Meta 502 and
    Meta retries).
    """
    app_secrets = [c.app_secret for c in config.connectors if c.app_secret]

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("X-Hub-Signature-256", "")
        stamp = time.strftime("%H:%M:%S")
        if not header:
            out(f"{stamp} refused: no X-Hub-Signature-256 header")
            return web.json_response({"error": "missing signature"}, status=401)
        if not _signature_ok(app_secrets, body, header):
            out(f"{stamp} refused: X-Hub-Signature-256 does not match any connector's app secret")
            return web.json_response({"error": "bad signature"}, status=403)
        try:
            payload = json.loads(body)
        except ValueError:
            out(f"{stamp} signature ok, but the body is not JSON ({len(body)} bytes)")
            return web.json_response({"error": "not JSON"}, status=400)
        for line in describe(payload):
            out(f"{stamp} {line}  [signature ok]")
        if raw:
            out(json.dumps(payload, ensure_ascii=False, indent=2))
        return web.Response(text="EVENT_RECEIVED")

    app = web.Application(client_max_size=config.webhooks.max_body_bytes)
    app.router.add_post(path, receive)
    return app
