"""Builders of realistic Meta webhook payloads (WhatsApp Cloud API), shaped like the examples in Meta's docs.

Every builder returns plain dicts; ``envelope`` wraps changes into the POST body Meta sends to the callback URL,
``encode`` serialises it with Meta's escaping, so tests can sign and compare the exact bytes.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

WABA_ID = "102290129340398"
TIMESTAMP = "1764037200"
_ids = itertools.count(1)

DISPLAY_NUMBERS = {"111111111111111": "576015550100", "222222222222222": "551140000000"}


def wamid() -> str:
    """A fresh message ID shaped like Meta's."""
    return f"wamid.HBgMNTczMDAxMjM0NTY3FQIAEhggQ0{next(_ids):014d}AA=="


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise with the escaping Meta's encoder uses (non-ASCII as ``\\uXXXX``, ``/`` as ``\\/``).

    With the spaced separators on top, these bytes always differ from the proxy's compact re-serialisation, so a
    test can tell the original body from a copy.
    """
    return json.dumps(payload).replace("/", "\\/").encode()


def envelope(*changes: dict[str, Any], waba_id: str = WABA_ID) -> dict[str, Any]:
    """One POST: all changes in one entry (Meta groups by WhatsApp Business Account)."""
    return {"object": "whatsapp_business_account", "entry": [{"id": waba_id, "changes": list(changes)}]}


def entries(*groups: list[dict[str, Any]]) -> dict[str, Any]:
    """One POST with several entries, each holding a list of changes."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": f"{WABA_ID[:-1]}{i}", "changes": changes} for i, changes in enumerate(groups)],
    }


def metadata(pnid: str) -> dict[str, str]:
    return {"display_phone_number": DISPLAY_NUMBERS.get(pnid, "15550001111"), "phone_number_id": pnid}


def change(pnid: str, field: str = "messages", **value: Any) -> dict[str, Any]:
    """``{"value": {...}, "field": field}`` with ``messaging_product`` and ``metadata`` for the connector."""
    return {"value": {"messaging_product": "whatsapp", "metadata": metadata(pnid), **value}, "field": field}


def contact(
    wa_id: str | None = None, user_id: str | None = None, name: str = "Cliente", username: str | None = None
) -> dict[str, Any]:
    """A ``contacts[]`` item; with usernames the wa_id may be absent and only the BSUID ``user_id`` present."""
    profile: dict[str, Any] = {"name": name}
    if username:
        profile["username"] = username
    item: dict[str, Any] = {"profile": profile}
    if wa_id:
        item["wa_id"] = wa_id
    if user_id:
        item["user_id"] = user_id
    return item


def message(kind: str, sender: str | None = None, user_id: str | None = None, **content: Any) -> dict[str, Any]:
    """An inbound ``messages[]`` item of type ``kind`` (content goes under its own key by default)."""
    item: dict[str, Any] = {}
    if sender:
        item["from"] = sender
    if user_id:
        item["from_user_id"] = user_id
    item.update({"id": wamid(), "timestamp": TIMESTAMP, "type": kind})
    item.update(content)
    return item


def reply_context(business: str = "576015550100") -> dict[str, str]:
    return {"from": business, "id": wamid()}


def _media(mime: str, **extra: Any) -> dict[str, Any]:
    return {
        "mime_type": mime,
        "sha256": "3gS/7Tl1e4B0vSqb5fVHZVOhO9nxiySl7kXYCeHahhI=",
        "id": "1266781571337263",
        **extra,
    }


def text(sender: str | None, body: str = "Hola, necesito ayuda", user_id: str | None = None) -> dict[str, Any]:
    return message("text", sender, user_id, text={"body": body})


def image(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message("image", sender, user_id, image=_media("image/jpeg", caption="factura"))


def audio(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message("audio", sender, user_id, audio=_media("audio/ogg; codecs=opus", voice=True))


def video(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message("video", sender, user_id, video=_media("video/mp4", caption="el daño"))


def document(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "document", sender, user_id, document=_media("application/pdf", filename="contrato.pdf", caption="firmado")
    )


def sticker(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message("sticker", sender, user_id, sticker=_media("image/webp", animated=False))


def location(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "location",
        sender,
        user_id,
        location={"latitude": 4.6533, "longitude": -74.0836, "name": "Oficina", "address": "Cra 7 # 71-21, Bogotá"},
    )


def shared_contacts(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "contacts",
        sender,
        user_id,
        contacts=[
            {
                "name": {"formatted_name": "Ana Pérez", "first_name": "Ana", "last_name": "Pérez"},
                "phones": [{"phone": "+57 310 555 0199", "wa_id": "573105550199", "type": "CELL"}],
                "emails": [{"email": "ana@example.com", "type": "WORK"}],
            }
        ],
    )


def button_reply(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "interactive",
        sender,
        user_id,
        context=reply_context(),
        interactive={"type": "button_reply", "button_reply": {"id": "confirm-yes", "title": "Sí"}},
    )


def list_reply(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "interactive",
        sender,
        user_id,
        context=reply_context(),
        interactive={
            "type": "list_reply",
            "list_reply": {"id": "plan-pro", "title": "Plan Pro", "description": "Soporte 24/7"},
        },
    )


def nfm_reply(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "interactive",
        sender,
        user_id,
        context=reply_context(),
        interactive={
            "type": "nfm_reply",
            "nfm_reply": {"response_json": '{"flow_token":"abc","rating":"5"}', "body": "Sent", "name": "flow"},
        },
    )


def button(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "button", sender, user_id, context=reply_context(), button={"text": "No gracias", "payload": "OPT_OUT"}
    )


def reaction(sender: str | None, user_id: str | None = None, emoji: str = "👍") -> dict[str, Any]:
    return message("reaction", sender, user_id, reaction={"message_id": wamid(), "emoji": emoji})


def order(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "order",
        sender,
        user_id,
        order={
            "catalog_id": "1429852671144000",
            "text": "para el martes",
            "product_items": [{"product_retailer_id": "SKU-42", "quantity": 2, "item_price": 35000, "currency": "COP"}],
        },
    )


def system(sender: str | None, new_wa_id: str = "573009998877", user_id: str | None = None) -> dict[str, Any]:
    """``user_changed_number``: system messages come without ``contacts[]``."""
    return message(
        "system",
        sender,
        user_id,
        system={
            "body": "Cliente changed from 573001234567 to 573009998877",
            "wa_id": new_wa_id,
            "type": "user_changed_number",
        },
    )


def request_welcome(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message("request_welcome", sender, user_id)


def unsupported(sender: str | None, user_id: str | None = None) -> dict[str, Any]:
    return message(
        "unsupported",
        sender,
        user_id,
        errors=[
            {
                "code": 131051,
                "title": "Message type unknown",
                "message": "Message type unknown",
                "error_data": {"details": "Message type is currently not supported."},
            }
        ],
    )


MESSAGE_BUILDERS = {
    "text": text,
    "image": image,
    "audio": audio,
    "video": video,
    "document": document,
    "sticker": sticker,
    "location": location,
    "contacts": shared_contacts,
    "interactive_button_reply": button_reply,
    "interactive_list_reply": list_reply,
    "interactive_nfm_reply": nfm_reply,
    "button": button,
    "reaction": reaction,
    "order": order,
    "system": system,
    "request_welcome": request_welcome,
    "unsupported": unsupported,
}
"""Every inbound message type, by name."""


def messages_change(
    pnid: str, messages: list[dict[str, Any]], contacts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A ``messages`` change; contacts default to one per sender (none for system messages, as Meta does)."""
    if contacts is None:
        contacts = []
        seen: set[tuple[str | None, str | None]] = set()
        for m in messages:
            ids = (m.get("from"), m.get("from_user_id"))
            if m["type"] != "system" and ids not in seen:
                seen.add(ids)
                contacts.append(contact(*ids))
    value: dict[str, Any] = {}
    if contacts:
        value["contacts"] = contacts
    value["messages"] = messages
    return change(pnid, **value)


def status(recipient: str | None, state: str = "delivered", recipient_user_id: str | None = None) -> dict[str, Any]:
    """A ``statuses[]`` item about one of our outbound messages."""
    item: dict[str, Any] = {"id": wamid(), "status": state, "timestamp": TIMESTAMP}
    if recipient:
        item["recipient_id"] = recipient
    if recipient_user_id:
        item["recipient_user_id"] = recipient_user_id
    if state != "read":
        item["conversation"] = {"id": "7b4d0a3f5e2c1b0a9f8e7d6c5b4a3f2e", "origin": {"type": "service"}}
        item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "service", "type": "regular"}
    if state == "failed":
        item["errors"] = [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": "Message failed to send because more than 24 hours have passed."},
            }
        ]
    return item


def statuses_change(pnid: str, *items: dict[str, Any]) -> dict[str, Any]:
    return change(pnid, statuses=list(items))


def errors_change(pnid: str) -> dict[str, Any]:
    """A value-level ``errors[]`` (not tied to one user), e.g. a rate limit hit."""
    return change(
        pnid,
        errors=[
            {
                "code": 130429,
                "title": "Rate limit hit",
                "message": "(#130429) Rate limit hit",
                "error_data": {"details": "Cloud API message throughput has been reached."},
            }
        ],
    )


def call(
    event: str,
    sender: str | None,
    business: str = "576015550100",
    user_id: str | None = None,
    call_id: str | None = None,
    direction: str = "USER_INITIATED",
) -> dict[str, Any]:
    """A ``calls[]`` item: ``connect`` carries the SDP offer, ``terminate`` the outcome."""
    item: dict[str, Any] = {"id": call_id or f"wacid.HBgLMTIxODU1NTI4MjgVAgARGBIyRkU{next(_ids):08d}"}
    if direction == "USER_INITIATED":
        if sender:
            item["from"] = sender
        if user_id:
            item["from_user_id"] = user_id
        item["to"] = business
    else:
        item["from"] = business
        if sender:
            item["to"] = sender
    item.update({"event": event, "timestamp": TIMESTAMP, "direction": direction})
    if event == "connect":
        item["session"] = {"sdp_type": "offer", "sdp": "v=0\r\no=- 7669997803033704573 2 IN IP4 127.0.0.1\r\n..."}
    else:
        item.update({"status": "Completed", "start_time": TIMESTAMP, "end_time": "1764037260", "duration": 60})
    return item


def calls_change(pnid: str, *calls: dict[str, Any]) -> dict[str, Any]:
    contacts = [contact(c.get("from"), c.get("from_user_id")) for c in calls if c["direction"] == "USER_INITIATED"]
    value: dict[str, Any] = {}
    if contacts:
        value["contacts"] = contacts
    value["calls"] = list(calls)
    return change(pnid, "calls", **value)


def user_preferences_change(pnid: str, wa_id: str, value: str = "stop") -> dict[str, Any]:
    """A marketing opt-out (``user_preferences`` field)."""
    return change(
        pnid,
        "user_preferences",
        contacts=[contact(wa_id)],
        user_preferences=[
            {
                "wa_id": wa_id,
                "detail": "User requested to stop marketing messages",
                "category": "marketing_messages",
                "value": value,
                "timestamp": TIMESTAMP,
            }
        ],
    )
