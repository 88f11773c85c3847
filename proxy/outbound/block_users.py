"""Meta's Block Users API through the proxy: ``POST|DELETE|GET /{ver}/{pnid}/block_users``.

A client (pywa, a bot, a contact center) that blocks users the way Meta documents it gets them blocked in
this proxy's blocklist too, with the same rules and Meta's response shapes:

1. The body is checked (``messaging_product: whatsapp``, 1 to 1,000 ``block_users`` items, each with ``user``
   or ``user_id``) and every user is checked against **our** rules first: a number we cannot read gets the
   per-user error 100, a block of a user who has not written to the connector in the last 24 hours gets
   131047 "Re-engagement required", and an unblock of a user whose block was made anywhere but through this
   API (a supervisor's block: admin API or page, CLI, CSV import, a plugin) gets 10 "Permission denied" unless
   ``gateway.block_users_unblock: allow``, with an ``unblock_refused`` audit record. Those users are never sent
   to Meta.
2. The remaining users are forwarded to Meta with the caller's own token (the original bytes when nobody was
   refused). Meta therefore authenticates every change: a request Meta refuses as a whole (bad token,
   malformed) is answered with Meta's response unchanged and changes nothing here; an unreachable Meta is a
   Graph-style 502/504 and changes nothing here.
3. Every user Meta blocked (or unblocked) is applied to our blocklist as actor ``graph_api`` with source
   ``block_users_api``. A user Meta refused stays as it was here, with Meta's error.
4. The answer merges both sides per user: ``added_users`` / ``removed_users`` for users done on both sides,
   ``failed_users`` (with ``errors[]``) otherwise; any failure makes it HTTP 400 with the top-level error
   139100, as Meta does. When the sides disagree (Meta blocked, we could not), the user is in
   ``failed_users`` and the details say which side has it.

``GET`` returns **our** blocklist in Meta's list shape (``data[]`` with ``wa_id`` or ``user_id``,
``paging.cursors.after``), after a one-item probe of Meta's list with the caller's token, so only a caller
Meta accepts can read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from ..base.errors import BadRequest, InvalidNumber, NotBlocked, NotRecentlyActive, StoreUnavailable
from ..blocklist.meta_sync import FORWARDED_BY_GATEWAY
from ..blocklist.service import Actor, BlockCheck
from ..config import ConnectorConfig
from ..graph import identity as ids
from ..graph.classify import PERMISSION_DENIED, Target
from ..graph.errors import BAD_REQUEST, SERVICE_UNAVAILABLE, error_envelope
from ..graph.identity import Identity
from ..store.schema import iso_ms
from .gateway import Gateway, GraphRefusal, bad_request, store_unavailable

ACTOR = Actor(name="graph_api", source="block_users_api")
MAX_USERS = 1000
BULK_FAILED = 139100
REENGAGEMENT_REQUIRED = 131047
DEFAULT_LIST_LIMIT = 100


@dataclass
class UserResult:
    """One requested user and what became of it."""

    input: str
    field: str
    item: dict[str, Any]
    identity: Identity | None = None
    wa_id: str = ""
    error: dict[str, Any] | None = None

    def fail(self, code: int, message: str, details: str) -> None:
        self.error = {"message": message, "code": code, "error_data": {"details": details}}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input}
        if self.identity is not None and self.identity.kind == "bsuid":
            out["user_id"] = self.identity.value
        elif self.wa_id or self.identity is not None:
            out["wa_id"] = self.wa_id or (self.identity.value if self.identity else "")
        if self.error is not None:
            out["errors"] = [self.error]
        return out


async def handle_block_users(gateway: Gateway, request: web.Request, target: URL, route: Target) -> web.StreamResponse:
    """Handle one Block Users API request for a phone number ID (see the module docstring)."""
    connector = gateway.connector_for(route.node)
    if connector is None:  # gateway.unknown_connectors: pass
        return await gateway.forward(request, target)
    body, params = await gateway.read_inspected(request, route)  # refuses batch, overrides, duplicates
    if route.method == "GET":
        return await _list(gateway, request, target, params.fields, connector)
    users = _requested_users(params.fields)
    action = "block" if route.method == "POST" else "unblock"
    try:
        for user in users:
            await _check_ours(gateway, connector, action, user)
    except StoreUnavailable:
        if connector.on_store_error == "allow":
            return await gateway.forward(request, target, body=body)
        raise store_unavailable() from None
    accepted = [u for u in users if u.error is None]
    if accepted:
        forwarded = body if len(accepted) == len(users) else _body_for(accepted)
        meta = await _ask_meta(gateway, request, target, forwarded)
        if isinstance(meta, web.Response):
            return meta
        _merge_meta(action, accepted, *meta)
        await _apply_ours(gateway, connector, action, [u for u in accepted if u.error is None])
    return _answer(action, users)


def _requested_users(fields: dict[str, Any]) -> list[UserResult]:
    if fields.get("messaging_product") != "whatsapp":
        raise bad_request('messaging_product must be "whatsapp"')
    items = fields.get("block_users")
    if not isinstance(items, list) or not items:
        raise bad_request('block_users must be a non-empty list such as [{"user": "+16505551234"}]')
    if len(items) > MAX_USERS:
        raise bad_request(f"block_users has {len(items)} users; at most {MAX_USERS} are allowed in one request")
    users: list[UserResult] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad_request(f"block_users[{i}] must be an object with a user or user_id field")
        present = [k for k in ("user", "user_id") if k in item]
        if len(present) != 1:
            raise bad_request(f"block_users[{i}] must have exactly one of user or user_id")
        value = item[present[0]]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise bad_request(f"block_users[{i}].{present[0]} must be a non-empty string")
        users.append(UserResult(input=value, field=present[0], item=item))
    return users


async def _check_ours(gateway: Gateway, connector: ConnectorConfig, action: str, user: UserResult) -> None:
    """Our rules, read-only: the identity must be readable; a block needs inbound activity in the last 24 h."""
    pnid = connector.phone_number_id
    try:
        if user.field == "user_id":
            found = ids.bsuid(user.input)
            if found is None:
                raise InvalidNumber(f"{user.input[:40]!r} is not a business-scoped user ID such as US.1234567890")
            user.identity = found
        else:
            user.identity = gateway.service.parse_number(pnid, user.input)
    except InvalidNumber as exc:
        user.fail(BAD_REQUEST, "Invalid parameter", exc.message)
        return
    if action == "unblock":
        await _check_unblock(gateway, connector, user)
        return
    check = await gateway.service.may_block(pnid, user.identity.value)
    if check is BlockCheck.ALREADY_BLOCKED:
        return  # blocking again is idempotent, as at Meta
    if check is BlockCheck.NOT_RECENTLY_ACTIVE:
        user.fail(
            REENGAGEMENT_REQUIRED,
            "Re-engagement required",
            "User has not messaged this connector in the last 24 hours (as seen by the blocklist proxy); "
            "WhatsApp only allows blocking users who wrote recently",
        )


async def _check_unblock(gateway: Gateway, connector: ConnectorConfig, user: UserResult) -> None:
    """A block made anywhere but through this API is a supervisor's: lifted here only with the policy's consent."""
    assert user.identity is not None
    pnid = connector.phone_number_id
    try:
        entry = await gateway.service.get(pnid, user.identity.value)
    except NotBlocked:
        return
    if entry.source == ACTOR.source or gateway.config.gateway.block_users_unblock == "allow":
        return
    user.fail(
        PERMISSION_DENIED,
        "Permission denied",
        f"this user was blocked through {entry.source} by {entry.blocked_by!r}, not through the Block Users API; "
        "only a supervisor can lift that block (admin API, page or CLI), or set gateway.block_users_unblock: allow",
    )
    await gateway.service.store.add_audit(
        pnid,
        {
            "action": "unblock_refused",
            "number": entry.number,
            "type": entry.kind,
            "by": ACTOR.name,
            "source": ACTOR.source,
            "reason": f"a Graph API caller tried to lift a block made through {entry.source}",
            "at": iso_ms(gateway.service.now_ms()),
        },
    )


def _body_for(users: list[UserResult]) -> bytes:
    return json.dumps({"messaging_product": "whatsapp", "block_users": [u.item for u in users]}).encode()


async def _ask_meta(
    gateway: Gateway, request: web.Request, target: URL, body: bytes
) -> tuple[int, dict[str, Any]] | web.Response:
    """Forward to Meta; Meta's answer as ``(status, block_users object)``, or Meta's own response when Meta
    refused the request as a whole (it is returned unchanged)."""
    async with gateway.upstream(request.method, target, request.headers, None, body) as resp:
        raw = await resp.read()
        status = resp.status
        content_type = resp.headers.get("Content-Type", "application/json")
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    result = parsed.get("block_users") if isinstance(parsed, dict) else None
    if isinstance(result, dict):
        return status, result
    if 200 <= status < 300:
        return status, {}
    response = web.Response(status=status, body=raw)
    response.headers["Content-Type"] = content_type
    return response


def _merge_meta(action: str, users: list[UserResult], status: int, result: dict[str, Any]) -> None:
    done_key = "added_users" if action == "block" else "removed_users"
    done = {str(u.get("input")): u for u in result.get(done_key, []) or [] if isinstance(u, dict)}
    failed = {str(u.get("input")): u for u in result.get("failed_users", []) or [] if isinstance(u, dict)}
    for user in users:
        if user.input in failed:
            meta_user = failed[user.input]
            user.wa_id = str(meta_user.get("wa_id", "") or "")
            errors = [e for e in meta_user.get("errors", []) or [] if isinstance(e, dict)]
            if errors:
                user.error = errors[0]
            else:
                user.fail(BULK_FAILED, "Failed to block/unblock users", "Meta reported this user as failed")
        elif user.input in done:
            user.wa_id = str(done[user.input].get("wa_id", "") or "")
        elif not 200 <= status < 300:
            user.fail(
                BULK_FAILED,
                "Failed to block/unblock users",
                f"Meta answered HTTP {status} without a result for this user",
            )


async def _apply_ours(gateway: Gateway, connector: ConnectorConfig, action: str, users: list[UserResult]) -> None:
    """Apply to our blocklist what Meta applied; a failure here is reported per user, naming the disagreement."""
    pnid = connector.phone_number_id
    verb = "blocked" if action == "block" else "unblocked"
    token = FORWARDED_BY_GATEWAY.set(True)
    try:
        for user in users:
            assert user.identity is not None
            try:
                if action == "block":
                    await gateway.service.block(pnid, user.identity.value, actor=ACTOR)
                else:
                    await gateway.service.unblock(pnid, user.identity.value, actor=ACTOR)
            except NotBlocked:
                pass  # unblocking a user not blocked here: the end state is what was asked
            except NotRecentlyActive:
                user.fail(
                    REENGAGEMENT_REQUIRED,
                    "Re-engagement required",
                    f"Meta {verb} this user, but the blocklist proxy did not: "
                    "no message from the user in the last 24 hours",
                )
            except StoreUnavailable:
                user.fail(
                    SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    f"Meta {verb} this user, but the blocklist proxy's store is unavailable, "
                    "so the proxy did not; retry",
                )
            except BadRequest as exc:
                user.fail(
                    BAD_REQUEST, "Invalid parameter", f"Meta {verb} this user, but the proxy did not: {exc.message}"
                )
    finally:
        FORWARDED_BY_GATEWAY.reset(token)


def _answer(action: str, users: list[UserResult]) -> web.Response:
    done_key = "added_users" if action == "block" else "removed_users"
    done = [u.to_json() for u in users if u.error is None]
    failed = [u.to_json() for u in users if u.error is not None]
    result: dict[str, Any] = {done_key: done}
    body: dict[str, Any] = {"messaging_product": "whatsapp", "block_users": result}
    if not failed:
        return web.json_response(body)
    result["failed_users"] = failed
    verb = "block" if action == "block" else "unblock"
    body["error"] = error_envelope(
        BULK_FAILED,
        "Failed to block/unblock users",
        f"Failed to {verb} some users, see the block_users response list for details",
    )["error"]
    return web.json_response(body, status=400)


async def _list(
    gateway: Gateway, request: web.Request, target: URL, fields: dict[str, Any], connector: ConnectorConfig
) -> web.StreamResponse:
    limit_raw = fields.get("limit", "")
    if not isinstance(limit_raw, (str, int)) or isinstance(limit_raw, bool):
        raise bad_request("limit must be a whole number")
    limit_text = str(limit_raw).strip()
    if limit_text and not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 4):
        raise bad_request("limit must be a whole number")
    limit = int(limit_text) if limit_text else DEFAULT_LIST_LIMIT
    if not 1 <= limit <= 500:
        raise bad_request("limit must be between 1 and 500")
    after = fields.get("after") or None
    if after is not None and (not isinstance(after, str) or len(after) > 200):
        raise bad_request("after must be a cursor this API returned")
    probe = target.with_query({"limit": "1"})
    async with gateway.upstream("GET", probe, request.headers, None, None) as resp:
        if not 200 <= resp.status < 300:
            raw = await resp.read()
            response = web.Response(status=resp.status, body=raw)
            response.headers["Content-Type"] = resp.headers.get("Content-Type", "application/json")
            return response
    try:
        entries, cursor = await gateway.service.list_blocks(connector.phone_number_id, limit=limit, cursor=after)
    except StoreUnavailable:
        raise store_unavailable() from None
    except BadRequest as exc:
        raise bad_request(exc.message) from None
    except (ValueError, TypeError):  # a cursor that decodes to something else than one of ours (nan, 1_0, ...)
        raise bad_request("after is not a cursor this API returned; start again without it") from None
    data = [{"messaging_product": "whatsapp", ("user_id" if e.kind == "bsuid" else "wa_id"): e.number} for e in entries]
    paging: dict[str, Any] = {"cursors": {"after": cursor} if cursor else {}}
    return web.json_response({"data": data, "paging": paging})


__all__ = ["GraphRefusal", "handle_block_users"]
