"""How Meta's Graph API might read a request: every reading at once, so a test can ask whether ANY reaches a user.

The gateway must refuse whatever it cannot read one way only; this module is the other side of that bargain, a
deliberately generous reader standing in for Meta. For one request it takes every method it may apply (the HTTP
method and every override: ``?method=``, a body ``method``, ``X-HTTP-Method-Override`` and friends), every path it
may normalise to (percent-decoding once or twice, path parameters and extensions dropped, any letter case, node IDs
without leading zeros or ``+``, version segments anywhere, extra segments after the edge), every value of every
parameter (first and last of duplicates, PHP-style ``to[]`` names, query and form and JSON and multipart readings of
the same body, file parts as text, gzip, BOM and UTF-16 decoded) and every item of a ``batch`` anywhere (with its
``relative_url`` and body). A request *reaches* a blocked user if any combination sends to, marks read a message of,
lets into a group, or approves the join request of, that user.

Written independently of :mod:`wa_blocklist.proxy.graph.classify` (it shares only
:func:`wa_blocklist.proxy.graph.identity.match_key`, the WhatsApp number variants, which are facts about WhatsApp
rather than a reading of a request).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from wa_blocklist.proxy.graph.identity import match_key

SEND_EDGES = {"messages", "marketing_messages", "calls"}


@dataclass
class World:
    """What Meta knows: the connector, who is blocked there, and which messages and join requests are theirs."""

    pnid: str
    country_code: str
    blocked_numbers: set[str]
    blocked_bsuids: set[str] = field(default_factory=set)
    blocked_messages: set[str] = field(default_factory=set)
    blocked_join_requests: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.blocked_keys = {match_key(n) for n in self.blocked_numbers}

    def is_blocked_recipient(self, value: Any) -> bool:
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, (list, tuple)):
            return any(self.is_blocked_recipient(v) for v in value)
        if isinstance(value, dict):
            return any(self.is_blocked_recipient(v) for v in value.values())
        text = str(value).strip()
        if text.upper() in {b.upper() for b in self.blocked_bsuids}:
            return True
        text = re.sub(r"\(\s*0\s*\)", "", text)  # trunk prefix written after the country code
        digits = re.sub(r"\D", "", text)
        if not digits:
            return False
        candidates = {digits, digits.lstrip("0"), self.country_code + digits, self.country_code + digits.lstrip("0")}
        if digits.startswith("00"):
            candidates.add(digits[2:])
        for candidate in list(candidates):
            cc = self.country_code
            if candidate.startswith(cc + "0"):
                candidates.add(cc + candidate[len(cc) + 1 :].lstrip("0"))
        return any(match_key(c) in self.blocked_keys for c in candidates if c)


# --- readings -------------------------------------------------------------------------------------------------------

_VERSION = re.compile(r"^v[0-9]+(\.[0-9]+)?$", re.IGNORECASE)


def path_readings(raw_path: str) -> set[tuple[str, ...]]:
    """Every segment list Meta might route ``raw_path`` to (versions dropped, canonical segments)."""
    texts = {raw_path, unquote(raw_path), unquote(unquote(raw_path))}
    out: set[tuple[str, ...]] = set()
    for text in texts:
        for drop_params in (False, True):
            segments: list[str] = []
            for seg in text.split("/"):
                if drop_params:
                    seg = seg.split(";", 1)[0]
                seg = seg.strip().strip("\x00").strip()
                if not seg or seg == ".":
                    continue
                if seg == "..":
                    if segments:
                        segments.pop()
                    continue
                if _VERSION.match(seg):
                    continue
                seg = re.sub(r"\.[A-Za-z0-9]+$", "", seg)  # messages.json
                seg = seg.lower() if not re.fullmatch(r"[+0-9]+", seg) else seg.lstrip("+").lstrip("0")
                segments.append(seg)
            out.add(tuple(segments))
            if len(segments) > 2:
                out.add(tuple(segments[:2]))  # messages/x read as messages
    return out


def _php_name(name: str) -> str:
    name = re.sub(r"\[.*$", "", name)
    return name.replace(".", "_").replace(" ", "_")


def _add(params: dict[str, list[Any]], name: str, value: Any) -> None:
    for key in {name, _php_name(name), _php_name(name).lower()}:
        params.setdefault(key, []).append(value)


def _texts(body: bytes, headers: dict[str, str]) -> list[str]:
    raws = [body]
    encoding = {k.lower(): v for k, v in headers.items()}.get("content-encoding", "").lower()
    if "gzip" in encoding or body[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError, zlib.error):
            raws.append(gzip.decompress(body))
    if "deflate" in encoding:
        with contextlib.suppress(zlib.error):
            raws.append(zlib.decompress(body))
    out: list[str] = []
    for raw in raws:
        for codec in ("utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "latin-1"):
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError:
                continue
            if codec.startswith("utf-16") and not (raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw):
                continue
            out.append(text.lstrip("\ufeff"))
    return out


def _json_all(text: str) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    try:
        top = json.loads(text, object_pairs_hook=lambda items: items)  # keep every duplicate at the top
    except (ValueError, RecursionError):
        return pairs
    if isinstance(top, list) and all(isinstance(i, tuple) and len(i) == 2 for i in top):
        for name, value in top:
            pairs.append((name, _plain(value)))
    return pairs


def _plain(value: Any) -> Any:
    """Undo the pairs-list form of nested objects (keeping the last of duplicates, and all of them as a list)."""
    if isinstance(value, list) and value and all(isinstance(i, tuple) and len(i) == 2 for i in value):
        out: dict[str, Any] = {}
        for k, v in value:
            out[k] = _plain(v)
        return out
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    from email.parser import BytesParser
    from email.policy import HTTP

    try:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
    except (UnicodeEncodeError, ValueError):
        return []
    if not message.is_multipart():
        return []
    out: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            out.append((name, payload.decode("utf-8", errors="replace")))
    return out


def param_readings(raw_query: str, body: bytes, headers: dict[str, str]) -> dict[str, list[Any]]:
    """Every value of every parameter in every reading of query and body."""
    params: dict[str, list[Any]] = {}
    for text in {raw_query, unquote(raw_query)}:
        for name, value in parse_qsl(text, keep_blank_values=True):
            _add(params, name, value)
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    for text in _texts(body, headers):
        for name, value in _json_all(text.strip()):
            _add(params, name, value)
        for name, value in parse_qsl(text.strip(), keep_blank_values=True):
            _add(params, name, value)
        if "multipart" in content_type.lower():
            for name, value in _multipart(text.encode("utf-8", errors="replace"), content_type):
                _add(params, name, value)
    for name in ("participants", "join_requests", "block_users", "batch", "typing_indicator"):
        for value in list(params.get(name, [])):
            if isinstance(value, str):
                with contextlib.suppress(ValueError, RecursionError):
                    params[name].append(json.loads(value))
    return params


def methods(method: str, params: dict[str, list[Any]], headers: dict[str, str]) -> set[str]:
    found = {method.upper()}
    if found & {"PUT", "PATCH"}:
        found.add("POST")  # some Graph endpoints take PUT/PATCH as a create or update: the generous reading
    for value in params.get("method", []):
        if isinstance(value, str):
            found.add(value.strip().upper())
    for name, value in headers.items():
        if "method" in name.lower():
            found.add(value.strip().upper())
    return found


def _flatten(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(_flatten(value))
        else:
            out.append(value)
    return out


def reaches(
    world: World, method: str, raw_target: str, headers: dict[str, str], body: bytes, depth: int = 0
) -> list[str]:
    """Why this request may reach a blocked user under some reading (empty when it cannot)."""
    raw_path, _, raw_query = raw_target.partition("?")
    params = param_readings(raw_query, body, headers)
    why: list[str] = []
    verbs = methods(method, params, headers)
    for item in _flatten(params.get("batch", [])) if depth < 3 else []:
        if not isinstance(item, dict):
            continue
        sub_body = item.get("body", "")
        sub_bytes = json.dumps(sub_body).encode() if isinstance(sub_body, dict) else str(sub_body).encode()
        sub_method = str(item.get("method", "GET"))
        relative = "/" + str(item.get("relative_url", "")).lstrip("/")
        why += [f"batch item: {w}" for w in reaches(world, sub_method, relative, {}, sub_bytes, depth + 1)]
    for segments in path_readings(raw_path):
        if len(segments) < 2:
            continue
        node, edge = segments[0], segments[1]
        if "POST" not in verbs:
            continue
        if edge in SEND_EDGES and node == world.pnid:
            for name in ("to", "recipient"):
                for value in params.get(name, []):
                    if world.is_blocked_recipient(value):
                        why.append(f"{edge} {name}={str(value)[:40]!r}")
            for value in params.get("message_id", []):
                if isinstance(value, str) and value in world.blocked_messages:
                    why.append(f"read receipt on {value}")
        if edge == "participants":
            for value in _flatten(params.get("participants", [])):
                if world.is_blocked_recipient(value):
                    why.append("participant added")
        if edge == "join_requests":
            for value in _flatten(params.get("join_requests", [])):
                if isinstance(value, dict):
                    value = value.get("join_request_id", value.get("id"))
                if isinstance(value, str) and value in world.blocked_join_requests:
                    why.append("join request approved")
    return sorted(set(why))
