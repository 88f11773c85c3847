"""The one walker over Meta's webhook shape, shared by the proxy's receiver and the bot plugins (pure: no server,
no Redis).

A webhook body is ``{"object": "whatsapp_business_account", "entry": [{"id", "changes": [{"field", "value"}]}]}``.
A change whose ``value.metadata.phone_number_id`` is set belongs to that business number (a connector); one without
it is an account-level event (``entry[].id`` is then the WhatsApp Business Account ID). Inside a value the walker
finds every *item* that concerns one user, classifies it by :class:`Kind`, and the :data:`POLICY` table (the same
table docs/webhooks.md shows) says, per kind, whether the item is removed when its user is blocked and whether it
counts as the user writing (Meta's 24-hour rule for blocking):

=====================  ===========  ========  ===============================================================
kind                   removed      activity  where
=====================  ===========  ========  ===============================================================
``message``            yes          yes       ``messages[]`` from a user (every type, ``system``, reactions,
                                              group messages, ``request_welcome``)
``contact``            yes (1)      no        ``contacts[]``
``status``             no           no        ``statuses[]`` (the business's own messages)
``user_call``          yes          yes       ``calls[]`` with ``direction: USER_INITIATED`` (or none)
``business_call``      no           no        ``calls[]`` with ``direction: BUSINESS_INITIATED``
``history_thread``     yes          no        ``history[].threads[]`` (coexistence history sync)
``group_event``        yes          no        ``groups[]`` join requests (created/revoked) of a user
``group_participant``  yes          no        ``groups[].added_participants[]`` / ``removed_participants[]``
                                              of an event a user started (joined by link, left)
``user_preference``    no           no        ``user_preferences[]`` (compliance signals)
``user_id_update``     no           no        ``user_id_update[]`` (a user's BSUID changed)
``echo``               no           no        ``message_echoes[]`` (what the business sent from the app)
=====================  ===========  ========  ===============================================================

(1) a ``contacts[]`` entry stays only when the same value keeps items of that user and removes none (a status with
contacts); otherwise it goes with the user's items.

A history chunk keeps its ``metadata`` (sync progress) with an empty ``threads`` list when its every thread goes; a
group event goes as a whole when its every listed participant goes. A ``system`` message telling a blocked user's new
wa_id or BSUID (``user_changed_number``, ``user_changed_user_id``) and a ``user_id_update`` of a blocked user name
the identity the block must follow to (:attr:`Item.new_wa_id`, :attr:`Item.new_bsuid`).
Everything else (``errors[]``, ``state_sync[]``, account-level fields, group lifecycle/settings/status updates,
events the business started) is kept untouched. A value left with nothing but envelope keys is dropped, and an entry
left with no change is dropped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

WABA_OBJECT = "whatsapp_business_account"
ENVELOPE_KEYS = frozenset({"messaging_product", "metadata", "contacts"})
"""Keys of a change value that carry no event of their own: a value left with only these is not forwarded."""

MAX_ID_LENGTH = 512
"""Message / join-request IDs that are learned: visible ASCII (``!`` to ``~``), at most this long (Meta's are far
shorter)."""


class Kind(StrEnum):
    """What one item of a change value is, for the policy table."""

    MESSAGE = "message"
    CONTACT = "contact"
    STATUS = "status"
    USER_CALL = "user_call"
    BUSINESS_CALL = "business_call"
    HISTORY_THREAD = "history_thread"
    GROUP_EVENT = "group_event"
    GROUP_PARTICIPANT = "group_participant"
    USER_PREFERENCE = "user_preference"
    USER_ID_UPDATE = "user_id_update"
    ECHO = "echo"


@dataclass(frozen=True)
class Rule:
    """Policy for one kind of item.

    Attributes:
        remove: the item is removed when its user is blocked.
        activity: the item counts as the user writing to the business (the 24-hour rule).
    """

    remove: bool
    activity: bool


Policy = Mapping[Kind, Rule]

POLICY: Policy = {
    Kind.MESSAGE: Rule(remove=True, activity=True),
    Kind.CONTACT: Rule(remove=True, activity=False),
    Kind.STATUS: Rule(remove=False, activity=False),
    Kind.USER_CALL: Rule(remove=True, activity=True),
    Kind.BUSINESS_CALL: Rule(remove=False, activity=False),
    Kind.HISTORY_THREAD: Rule(remove=True, activity=False),
    Kind.GROUP_EVENT: Rule(remove=True, activity=False),
    Kind.GROUP_PARTICIPANT: Rule(remove=True, activity=False),
    Kind.USER_PREFERENCE: Rule(remove=False, activity=False),
    Kind.USER_ID_UPDATE: Rule(remove=False, activity=False),
    Kind.ECHO: Rule(remove=False, activity=False),
}
"""The webhook policy table (docs/webhooks.md): what happens to each kind of item when its user is blocked."""

JOIN_REQUEST_TYPES = frozenset({"group_join_request_created", "group_join_request_revoked"})
CHANGED_NUMBER_TYPES = frozenset({"user_changed_number", "customer_changed_number", "user_changed_user_id"})
"""``system`` message types that tell a user's new wa_id (``wa_id``/``new_wa_id``) or new BSUID (``user_id``)."""


class PayloadError(ValueError):
    """A body that is not a WhatsApp Business Account webhook; ``code`` is a short slug for the error answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Person(NamedTuple):
    """One user as an item names them: a wa_id, a BSUID, or both (empty string when absent).

    A named tuple: items are grouped and looked up by person several times per webhook, and a tuple hashes and
    compares in C.
    """

    wa_id: str = ""
    bsuid: str = ""

    def __bool__(self) -> bool:
        return bool(self.wa_id or self.bsuid)


_NOBODY = Person()
_new_person = tuple.__new__


@dataclass(slots=True)
class Item:
    """One user's item inside a change value.

    Attributes:
        kind: what it is (see :data:`POLICY`).
        path: where it sits in the value, e.g. ``("messages", 2)`` or ``("history", 0, "threads", 1)``.
        person: its user, completed from the value's ``contacts[]``.
        message_id: an inbound message's ID (``messages[]`` only), to learn who sent it.
        join_request_id: a group join request's ID, to learn who asked.
        new_wa_id: the user's new wa_id (``system`` message ``user_changed_number``).
        new_bsuid: the user's new BSUID (``system`` message ``user_changed_user_id``, ``user_id_update``).
        call_id: a user-initiated ``connect`` call's ID (rejected at Meta when the caller is blocked).
        text: what the user typed or tapped (a text message's body, a button reply's text or title), for the
            opt-out keywords of :mod:`wa_blocklist.proxy.graph.optout`; "" for other messages.
    """

    kind: Kind
    path: tuple[str | int, ...]
    person: Person
    message_id: str = ""
    join_request_id: str = ""
    new_wa_id: str = ""
    new_bsuid: str = ""
    call_id: str = ""
    text: str = ""


@dataclass
class Change:
    """One ``entry[e].changes[c]``: where it is, whom it is for, and the user items in its value."""

    where: tuple[int, int]
    field: str
    value: dict[str, Any]
    pnid: str  # "" for an account-level change
    waba_id: str  # entry[].id ("" if absent)
    items: list[Item] = dataclasses.field(default_factory=list)

    @property
    def account_level(self) -> bool:
        return not self.pnid


def parse(body: bytes) -> dict[str, Any]:
    """Parse and shape-check a webhook body.

    Any JSON text is read without a crash (lone surrogate escapes included); what is not a WhatsApp Business Account
    webhook raises :class:`PayloadError`. ``NaN``/``Infinity`` are not JSON and are refused.
    """
    try:
        # json.loads(body, parse_constant=...) without a decoder built per call or its two whitespace regexes: the
        # bytes decoded as json.loads decodes them, JSON's whitespace around the value, one value and nothing else.
        text = body.decode(json.detect_encoding(body), "surrogatepass").strip(_JSON_SPACE)
        payload, end = _DECODER.scan_once(text, 0)  # type: ignore[attr-defined]
    except (StopIteration, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; Recursion: absurd nesting
        raise PayloadError("invalid_json", "the webhook body is not valid JSON") from None
    if end != len(text):
        raise PayloadError("invalid_json", "the webhook body is not valid JSON")
    check(payload)
    return payload  # type: ignore[no-any-return]


def check(payload: Any) -> None:
    """Shape-check an already parsed webhook body (see :func:`parse`); raises :class:`PayloadError`."""
    if not isinstance(payload, dict):
        raise PayloadError("invalid_payload", "the webhook body must be a JSON object")
    if payload.get("object") != WABA_OBJECT:
        raise PayloadError("wrong_object", f"'object' must be '{WABA_OBJECT}'")
    entries = payload.get("entry")
    if not isinstance(entries, list) or not entries:
        raise PayloadError("invalid_payload", "'entry' must be a non-empty list")
    count = 0
    for e, entry in enumerate(entries):
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise PayloadError("invalid_payload", f"entry[{e}].changes must be a list")
        for c, change in enumerate(changes):
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                raise PayloadError("invalid_payload", f"entry[{e}].changes[{c}].value must be an object")
            count += 1
    if not count:
        raise PayloadError("invalid_payload", "the webhook holds no changes")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_JSON_SPACE = " \t\n\r"
"""JSON's whitespace (RFC 8259 §2): what may stand around the value."""


def changes(payload: dict[str, Any]) -> list[Change]:
    """Every change of a parsed payload (see :func:`parse`) with its user items."""
    found: list[Change] = []
    for e, entry in enumerate(payload["entry"]):
        waba_id = _text(entry.get("id"))
        for c, change in enumerate(entry["changes"]):
            value = change["value"]
            metadata = value.get("metadata")
            pnid = _text(metadata.get("phone_number_id")) if isinstance(metadata, dict) else ""
            item = Change((e, c), _text(change.get("field")), value, pnid, waba_id)
            if pnid:
                item.items = _complete(_items(value))
            found.append(item)
    return found


# --- finding items -------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(container: Any, key: str) -> list[Any]:
    items = container.get(key) if isinstance(container, dict) else None
    return items if isinstance(items, list) else []


def _person(item: Any, wa_field: str, bsuid_field: str) -> Person:
    if not isinstance(item, dict):
        return _NOBODY
    wa_id, bsuid = item.get(wa_field), item.get(bsuid_field)
    # tuple.__new__: the named tuple's own __new__ is a Python function, called for every item of every webhook
    return _new_person(Person, (wa_id if isinstance(wa_id, str) else "", bsuid if isinstance(bsuid, str) else ""))


def _id(value: Any) -> str:
    # Visible ASCII only: these become Redis key names, and what Meta sends (wamid.…, numeric IDs) is ASCII. For ASCII
    # text, printable means space to "~", so printable without a space is exactly "!" to "~".
    if (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and value.isascii()
        and value.isprintable()
        and " " not in value
    ):
        return value
    return ""


def _items(value: dict[str, Any]) -> list[Item]:
    # One pass per list the value has, in a fixed order (contacts first: _complete pairs identities from them).
    items: list[Item] = []
    add = items.append
    get = value.get
    if isinstance(found := get("contacts"), list):
        for i, contact in enumerate(found):
            add(Item(Kind.CONTACT, ("contacts", i), _person(contact, "wa_id", "user_id")))
    if isinstance(found := get("messages"), list):
        for i, message in enumerate(found):
            if not isinstance(message, dict):
                continue
            system = message.get("system")
            new_wa_id = new_bsuid = ""
            if isinstance(system, dict) and system.get("type") in CHANGED_NUMBER_TYPES:
                new_wa_id = _text(system.get("new_wa_id")) or _text(system.get("wa_id"))
                new_bsuid = _text(system.get("user_id"))
            add(
                Item(
                    Kind.MESSAGE,
                    ("messages", i),
                    _person(message, "from", "from_user_id"),
                    message_id=_id(message.get("id")),
                    new_wa_id=new_wa_id,
                    new_bsuid=new_bsuid,
                    text=typed_text(message),
                )
            )
    if isinstance(found := get("statuses"), list):
        for i, status in enumerate(found):
            # A status of a group message names the group in recipient_id and the member in recipient_participant_*.
            person = _person(status, "recipient_participant_id", "recipient_participant_user_id")
            add(Item(Kind.STATUS, ("statuses", i), person or _person(status, "recipient_id", "recipient_user_id")))
    if isinstance(found := get("calls"), list):
        for i, call in enumerate(found):
            if not isinstance(call, dict):
                continue
            if _text(call.get("direction")).upper() == "BUSINESS_INITIATED":
                add(Item(Kind.BUSINESS_CALL, ("calls", i), _person(call, "to", "to_user_id")))
            else:
                connect = call.get("event") == "connect"
                add(
                    Item(
                        Kind.USER_CALL, ("calls", i), _person(call, "from", "from_user_id"),
                        call_id=_id(call.get("id")) if connect else "",
                    )
                )  # fmt: skip
    if isinstance(found := get("history"), list):
        for h, chunk in enumerate(found):
            for t, thread in enumerate(_list(chunk, "threads")):
                add(Item(Kind.HISTORY_THREAD, ("history", h, "threads", t), _thread_person(thread)))
    if isinstance(found := get("groups"), list):
        for g, group in enumerate(found):
            items += _group_items(g, group)
    if isinstance(found := get("user_preferences"), list):
        for i, pref in enumerate(found):
            add(Item(Kind.USER_PREFERENCE, ("user_preferences", i), _person(pref, "wa_id", "user_id")))
    if isinstance(found := get("user_id_update"), list):
        for i, update in enumerate(found):
            change = _person(update, "wa_id", "")
            bsuids = update.get("user_id") if isinstance(update, dict) else None
            previous = _person(bsuids, "", "previous").bsuid
            current = _person(bsuids, "", "current").bsuid
            add(Item(Kind.USER_ID_UPDATE, ("user_id_update", i), Person(change.wa_id, previous), new_bsuid=current))
    if isinstance(found := get("message_echoes"), list):
        for i, echo in enumerate(found):
            add(Item(Kind.ECHO, ("message_echoes", i), _person(echo, "to", "to_user_id")))
    return items


def typed_text(message: dict[str, Any]) -> str:
    """What a user typed or tapped: ``text.body``, a template quick-reply ``button.text``, or the ``title`` of an
    interactive button or list reply; "" for every other message."""
    kind = message.get("type")
    if kind == "text":
        return _text(_get(message, "text", "body"))
    if kind == "button":
        return _text(_get(message, "button", "text"))
    if kind == "interactive":
        return _text(_get(message, "interactive", "button_reply", "title")) or _text(
            _get(message, "interactive", "list_reply", "title")
        )
    return ""


def _get(node: Any, *path: str) -> Any:
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _thread_person(thread: Any) -> Person:
    """A history thread's user: its ``id`` (the user's wa_id), else ``context`` or the first message from a user."""
    if not isinstance(thread, dict):
        return Person()
    person = Person(_text(thread.get("id")), _text(thread.get("user_id")))
    if person:
        return person
    return _person(thread.get("context"), "wa_id", "user_id")


def _group_items(g: int, group: Any) -> Iterator[Item]:
    if not isinstance(group, dict):
        return
    kind = _text(group.get("type"))
    if kind in JOIN_REQUEST_TYPES:
        person = _person(group, "wa_id", "user_id") or _person(group, "from", "from_user_id")
        join_id = _id(group.get("join_request_id")) if kind == "group_join_request_created" else ""
        yield Item(Kind.GROUP_EVENT, ("groups", g), person, join_request_id=join_id)
        return
    if _text(group.get("initiated_by")).lower() == "business":
        return  # the business added or removed people: its own action, like a status
    for list_name in ("added_participants", "removed_participants"):
        for p, participant in enumerate(_list(group, list_name)):
            yield Item(Kind.GROUP_PARTICIPANT, ("groups", g, list_name, p), _person(participant, "wa_id", "user_id"))


def _complete(items: list[Item]) -> list[Item]:
    """Items naming one identity get the other from the value's ``contacts[]`` (wa_id ↔ BSUID)."""
    pairs = [i.person for i in items if i.kind is Kind.CONTACT and i.person.wa_id and i.person.bsuid]
    if pairs:
        by_wa = {wa: uid for wa, uid in pairs}
        by_uid = {uid: wa for wa, uid in pairs}
        for i in items:
            wa, uid = i.person
            if wa and not uid and wa in by_wa:
                i.person = Person(wa, by_wa[wa])
            elif uid and not wa and uid in by_uid:
                i.person = Person(by_uid[uid], uid)
    return [i for i in items if i.person.wa_id or i.person.bsuid]


def references(
    changes: Iterable[Change], people: Sequence[Person]
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """What the items of verified changes say belongs to whom, for the gateway's checks of later requests.

    Returns:
        ``(message or user-placed call ID, index of its user in people)`` (read receipts, answering a call) and
        ``(join request ID, index of its user in people)`` (join approvals), for items whose user is in ``people``.
    """
    index = {person: i for i, person in enumerate(people)}
    items = [item for change in changes for item in change.items if item.person in index]
    owned = [(item.message_id or item.call_id, index[item.person]) for item in items if item.message_id or item.call_id]
    joins = [(item.join_request_id, index[item.person]) for item in items if item.join_request_id]
    return owned, joins


def users(changes: Iterable[Change], policy: Policy = POLICY) -> list[tuple[Person, bool]]:
    """The users some changes name, each once, with True when one of their items counts as writing (activity).

    Users of items the policy neither removes nor counts (statuses, echoes, preferences) are left out unless the item
    pairs a wa_id with a BSUID (a link worth learning), so a statuses-only webhook needs no blocklist look-up.
    """
    active: dict[Person, bool] = {}
    for change in changes:
        for item in change.items:
            rule = policy[item.kind]
            if rule.remove or rule.activity or (item.person.wa_id and item.person.bsuid):
                active[item.person] = active.get(item.person, False) or rule.activity
    return list(active.items())


# --- filtering -----------------------------------------------------------------------------------------------


@dataclass
class Filtered:
    """What :func:`filter_value` left of one value.

    Attributes:
        value: the value to forward (the same object when nothing was removed), or None when nothing is left.
        removed: the items taken out.
    """

    value: dict[str, Any] | None
    removed: list[Item]


def filter_value(change: Change, is_blocked: Callable[[Person], bool], policy: Policy = POLICY) -> Filtered:
    """Remove from one change value the items ``policy`` removes whose user ``is_blocked``."""
    kept_people: set[str] = set()
    doomed: list[Item] = []
    contacts: list[Item] = []
    for item in change.items:
        if item.kind is Kind.CONTACT:
            contacts.append(item)
        elif policy[item.kind].remove and is_blocked(item.person):
            doomed.append(item)
        else:
            kept_people.update(i for i in item.person if i)
    if contacts and policy[Kind.CONTACT].remove:
        gone_people = {i for item in doomed for i in item.person if i}
        for item in contacts:
            # A contact goes with its user's removed items; it stays only beside kept items of that user alone (a
            # status).
            if is_blocked(item.person):
                ids = {i for i in item.person if i}
                if ids & gone_people or not ids & kept_people:
                    doomed.append(item)
    if not doomed:
        return Filtered(change.value, [])
    value = _without(change.value, _promoted(change.value, {item.path for item in doomed}))
    if not set(value) - ENVELOPE_KEYS:
        return Filtered(None, doomed)
    return Filtered(value, doomed)


def _promoted(value: dict[str, Any], paths: set[tuple[str | int, ...]]) -> set[tuple[str | int, ...]]:
    """A group event all of whose participants go goes as a whole."""
    out = set(paths)
    for g, group in enumerate(_list(value, "groups")):
        members = [(n, p) for n in ("added_participants", "removed_participants") for p in range(len(_list(group, n)))]
        if members and all(("groups", g, n, p) in paths for n, p in members):
            out.add(("groups", g))
    return out


def _without(node: Any, paths: set[tuple[str | int, ...]]) -> Any:
    """A copy of ``node`` without the elements at ``paths``; containers left empty by a removal are removed too
    (Meta omits an empty list rather than sending ``[]``), untouched parts are shared, not copied."""
    trie: dict[Any, Any] = {}
    for path in sorted(paths, key=len):  # a removed element's own removed parts need no walk
        level = trie
        for step in path[:-1]:
            inner = level.get(step)
            if inner is _GONE:
                break
            level = inner if inner is not None else level.setdefault(step, {})
        else:
            level[path[-1]] = _GONE
    return _prune(node, trie)


def _prune(node: Any, trie: dict[Any, Any]) -> Any:
    # trie: key or index -> _GONE (the element goes) or the trie of what goes inside it.
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, child in node.items():
            inner = trie.get(key)
            if inner is None or inner is _GONE:  # a path ending at an object's key removes nothing
                out[key] = child
                continue
            new = _prune(child, inner)
            if new is not _EMPTIED:
                out[key] = new
            elif key in _KEEP_EMPTY:
                out[key] = []
        return out if out or not node else _EMPTIED
    if isinstance(node, list):
        kept: list[Any] = []
        for i, child in enumerate(node):
            inner = trie.get(i)
            if inner is None:
                kept.append(child)
            elif inner is not _GONE and (new := _prune(child, inner)) is not _EMPTIED:
                kept.append(new)
        return kept if kept else _EMPTIED
    return node


_KEEP_EMPTY = frozenset({"threads"})
"""Lists kept (empty) when their every element goes: a history chunk keeps its progress ``metadata`` and ``threads``."""

_EMPTIED: Any = object()
"""Marks a container whose every element was removed, so its parent drops it."""

_GONE: Any = object()
"""Marks, in :func:`_without`'s trie of paths, an element that goes as a whole."""


def rebuild(payload: dict[str, Any], kept: Mapping[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    """The payload with only the changes in ``kept`` (by ``(entry, change)`` index, filtered values in place);
    entries left without changes are dropped."""
    entries = []
    for e, entry in enumerate(payload["entry"]):
        changes_out = [{**change, "value": kept[(e, c)]} for c, change in enumerate(entry["changes"]) if (e, c) in kept]
        if changes_out:
            entries.append({**entry, "changes": changes_out})
    return {**payload, "entry": entries}


def count_changes(payload: dict[str, Any]) -> int:
    """How many changes a parsed payload holds."""
    return sum(len(entry["changes"]) for entry in payload["entry"])
