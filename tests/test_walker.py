"""The pure webhook walker (proxy.payload) and Meta's signature/serialisation (proxy.signature), without a server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.graph import payload as wp
from wa_blocklist.proxy.graph.signature import meta_dumps, sign, verify, verify_any

import payloads as p

PNID = "106540352242922"
USER = "16505551234"
BSUID = "US.13491208655302741918"
OTHER = "16505559999"


def only(payload: dict[str, Any]) -> wp.Change:
    [change] = wp.changes(payload)
    return change


def blocked(*ids: str) -> Any:
    return lambda person: bool({person.wa_id, person.bsuid} & set(ids) - {""})


# --- Meta's form ----------------------------------------------------------------------------------------------


def test_meta_form_reproduces_a_raw_meta_body_byte_for_byte():
    # Written the way raw deliveries are: compact, \u00e9 lowercase, "\/" for slashes, emoji as a surrogate pair.
    raw = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":'
        b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":'
        b'"106540352242922"},"messages":[{"from":"16505551234","id":"wamid.HBgLMTY1MDU1NTEyMzQVAgASGCA=",'
        b'"timestamp":"1764037200","type":"image","image":{"caption":"Hola quiero un caf\\u00e9 \\ud83d\\ude00",'
        b'"mime_type":"image\\/jpeg","url":"https:\\/\\/lookaside.fbsbx.com\\/whatsapp_business\\/attachments\\/?mid=1"'
        b'}}]},"field":"messages"}]}]}'
    )
    assert meta_dumps(json.loads(raw)) == raw


def _escape_unicode(text: str) -> str:
    """What whatsapp-api-js's escapeUnicode does before hashing: every char outside \\0-~ as \\uXXXX (lowercase)."""
    return re.sub(r"[^\x00-~]", lambda m: "\\u" + format(ord(m.group()), "04x"), text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300)
@given(json_values)
def test_meta_form_is_ascii_round_trips_and_survives_re_escaping(value):
    body = meta_dumps(value)
    text = body.decode("ascii")  # ASCII, lone surrogates included (as \udXXX escapes)
    assert json.loads(body) == value or value != value
    assert _escape_unicode(text) == text  # a re-escaping consumer hashes the same bytes
    assert verify("secret", body, sign("secret", body))


def test_lone_surrogates_are_written_as_escapes():
    value = json.loads(b'{"t":"a\\ud83d b \\ude00"}')
    assert meta_dumps(value) == b'{"t":"a\\ud83d b \\ude00"}'


def test_verify_is_strict():
    body = b'{"a":1}'
    good = sign("s3cret", body)
    assert verify("s3cret", body, good) and verify("s3cret", body, f"  {good} ")
    for header in (None, "", "sha256=", good.upper(), "sha1=" + good[7:], sign("other", body), good + "0", "é" * 9):
        assert not verify("s3cret", body, header)
    assert not verify("", body, sign("", body))  # no secret, nothing verifies
    assert verify_any(["x", "s3cret", "y"], body, good) == "s3cret"
    assert verify_any(["x"], body, good) is None


# --- parsing ----------------------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_never_raises_anything_but_payload_error(body):
    try:
        payload = wp.parse(body)
    except wp.PayloadError as exc:
        assert exc.code in {"invalid_json", "invalid_payload", "wrong_object"}
    else:
        wp.changes(payload)


def test_nan_is_not_json():
    with pytest.raises(wp.PayloadError):
        wp.parse(b'{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"x":NaN}}]}]}')


# --- items and policy -------------------------------------------------------------------------------------------


def test_account_level_change_has_no_items():
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": p.WABA_ID, "changes": [{"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}]}],
    }
    change = only(payload)
    assert change.account_level and change.waba_id == p.WABA_ID and change.items == []


def test_messages_contacts_and_statuses_are_classified_and_completed_from_contacts():
    value = p.messages_change(PNID, [p.text(None, user_id=BSUID)], contacts=[p.contact(USER, BSUID)])
    value["value"]["statuses"] = [p.status(OTHER)]
    change = only(p.envelope(value))
    kinds = {(i.kind, i.person) for i in change.items}
    assert (wp.Kind.MESSAGE, wp.Person(USER, BSUID)) in kinds  # completed from contacts[]
    assert (wp.Kind.STATUS, wp.Person(OTHER, "")) in kinds
    [message] = [i for i in change.items if i.kind is wp.Kind.MESSAGE]
    assert message.message_id.startswith("wamid.")


def test_blocked_users_message_and_contact_removed_statuses_kept():
    value = p.messages_change(PNID, [p.text(USER), p.text(OTHER)])
    value["value"]["statuses"] = [p.status(USER)]
    result = wp.filter_value(only(p.envelope(value)), blocked(USER))
    assert result.value is not None
    assert [m["from"] for m in result.value["messages"]] == [OTHER]
    assert [c["wa_id"] for c in result.value["contacts"]] == [OTHER]  # USER's contact goes with USER's message
    assert len(result.value["statuses"]) == 1
    assert [i.kind for i in result.removed] == [wp.Kind.MESSAGE, wp.Kind.CONTACT]


def test_a_status_keeps_its_contact_of_a_blocked_user():
    value = p.statuses_change(PNID, p.status(USER))
    value["value"]["contacts"] = [p.contact(USER, BSUID)]
    change = only(p.envelope(value))
    assert wp.filter_value(change, blocked(USER)).value is change.value


def test_value_left_with_envelope_keys_only_is_dropped():
    result = wp.filter_value(only(p.envelope(p.messages_change(PNID, [p.text(USER)]))), blocked(USER))
    assert result.value is None
    assert sorted(i.kind for i in result.removed) == [wp.Kind.CONTACT, wp.Kind.MESSAGE]


def test_nothing_blocked_returns_the_same_object():
    change = only(p.envelope(p.messages_change(PNID, [p.text(USER)])))
    assert wp.filter_value(change, blocked(OTHER)).value is change.value


def test_calls_user_initiated_removed_business_initiated_kept():
    incoming = p.call("connect", USER, call_id="wacid.in")
    outgoing = p.call("connect", USER, call_id="wacid.out", direction="BUSINESS_INITIATED")
    change = only(p.envelope(p.calls_change(PNID, incoming, outgoing)))
    result = wp.filter_value(change, blocked(USER))
    assert result.value is not None and [c["id"] for c in result.value["calls"]] == ["wacid.out"]
    assert [i.call_id for i in result.removed if i.kind is wp.Kind.USER_CALL] == ["wacid.in"]
    assert wp.POLICY[wp.Kind.USER_CALL].activity and not wp.POLICY[wp.Kind.BUSINESS_CALL].activity


def test_history_threads_of_a_blocked_user_removed():
    value = p.change(
        PNID,
        "history",
        history=[
            {
                "metadata": {"phase": 0, "chunk_order": 1, "progress": 100},
                "threads": [
                    {"id": USER, "messages": [{"from": USER, "id": "wamid.h1", "type": "text", "text": {"body": "x"}}]},
                    {"id": OTHER, "messages": [{"from": OTHER, "id": "wamid.h2", "type": "text"}]},
                ],
            }
        ],
    )
    result = wp.filter_value(only(p.envelope(value)), blocked(USER))
    assert result.value is not None
    assert [t["id"] for t in result.value["history"][0]["threads"]] == [OTHER]
    alone = wp.filter_value(only(p.envelope(value)), blocked(USER, OTHER))
    assert alone.value is not None  # the chunk keeps its sync progress, with no threads
    assert alone.value["history"] == [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 100}, "threads": []}]
    assert not any(wp.POLICY[i.kind].activity for i in only(p.envelope(value)).items)


def test_group_join_request_and_participant_events():
    join = {"timestamp": "1", "group_id": "G1", "type": "group_join_request_created", "join_request_id": "JR1",
            "wa_id": USER}  # fmt: skip
    joined = {"timestamp": "1", "group_id": "G1", "type": "group_participants_add", "reason": "invite_link",
              "added_participants": [{"wa_id": USER}, {"wa_id": OTHER}]}  # fmt: skip
    removed_by_us = {"timestamp": "1", "group_id": "G1", "type": "group_participants_remove",
                     "initiated_by": "business", "removed_participants": [{"wa_id": USER}]}  # fmt: skip
    value = p.change(PNID, "group_participants_update", groups=[join, joined, removed_by_us])
    change = only(p.envelope(value))
    assert [i.join_request_id for i in change.items if i.join_request_id] == ["JR1"]
    result = wp.filter_value(change, blocked(USER))
    assert result.value is not None
    groups = result.value["groups"]
    assert [g["type"] for g in groups] == ["group_participants_add", "group_participants_remove"]
    assert groups[0]["added_participants"] == [{"wa_id": OTHER}]
    assert groups[1] is removed_by_us  # the business's own action is untouched


def test_user_changed_number_is_a_removable_message_naming_the_new_wa_id():
    change = only(p.envelope(p.messages_change(PNID, [p.system(USER, new_wa_id=OTHER)])))
    [item] = change.items
    assert item.kind is wp.Kind.MESSAGE and item.new_wa_id == OTHER


def test_preferences_echoes_and_state_sync_are_kept():
    prefs = only(p.envelope(p.user_preferences_change(PNID, USER)))
    assert wp.filter_value(prefs, blocked(USER)).value is prefs.value
    echoes = only(p.envelope(p.change(PNID, "smb_message_echoes", message_echoes=[{"from": "1555", "to": USER}])))
    assert wp.filter_value(echoes, blocked(USER)).value is echoes.value
    sync = only(p.envelope(p.change(PNID, "smb_app_state_sync", state_sync=[{"contact": {"phone_number": USER}}])))
    assert wp.filter_value(sync, blocked(USER)).value is sync.value


def test_ids_that_cannot_be_redis_keys_are_not_learned():
    message = p.text(USER)
    message["id"] = "wamid.\ud83d"
    [item] = [i for i in only(p.envelope(p.messages_change(PNID, [message]))).items if i.kind is wp.Kind.MESSAGE]
    assert item.message_id == ""


def test_rebuild_keeps_only_the_kept_changes():
    payload = p.entries([p.messages_change(PNID, [p.text(USER)])], [p.statuses_change(PNID, p.status(OTHER))])
    out = wp.rebuild(payload, {(1, 0): payload["entry"][1]["changes"][0]["value"]})
    assert len(out["entry"]) == 1 and out["entry"][0]["id"] == payload["entry"][1]["id"]
