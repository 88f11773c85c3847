"""Identities: typed numbers, wa_ids, WhatsApp's national variants and BSUIDs."""

from __future__ import annotations

import pytest

from proxy import identity
from proxy.config import ConnectorConfig, parse_config
from proxy.errors import ConfigError, InvalidNumber


@pytest.mark.parametrize(
    ("typed", "digits"),
    [
        ("+57 300-123 4567", "573001234567"),
        ("573001234567", "573001234567"),
        ("+57 (300) 123.4567", "573001234567"),
        ("0057 300 123 4567", "573001234567"),
        ("+55 11 91234-5678", "5511912345678"),
        ("+1 650 555 1234", "16505551234"),
    ],
)
def test_typed_numbers_become_canonical_digits(typed: str, digits: str) -> None:
    found = identity.parse(typed)
    assert found.kind == "phone"
    assert found.value == digits


def test_local_numbers_use_the_connector_country() -> None:
    assert identity.parse("300 123 4567", "CO").value == "573001234567"
    assert identity.parse("(11) 91234-5678", "BR").value == "5511912345678"
    # a wa_id typed without + is still read as international
    assert identity.parse("573001234567", "BR").value == "573001234567"


@pytest.mark.parametrize(
    "forms",
    [
        ["+55 11 91234-5678", "5511912345678", "551112345678", "+55 (11) 1234-5678"],  # Brazil, with/without the 9
        ["+52 1 55 1234 5678", "5215512345678", "+52 55 1234 5678", "525512345678"],  # Mexico 521 / 52
        ["+54 9 11 1234-5678", "5491112345678", "+54 11 1234 5678", "541112345678"],  # Argentina 549 / 54
    ],
)
def test_national_variants_share_one_match_key(forms: list[str]) -> None:
    keys = {identity.parse(f).key for f in forms}
    assert len(keys) == 1
    assert keys == {identity.from_wa_id(forms[1]).key}


def test_different_numbers_keep_different_keys() -> None:
    assert identity.parse("+55 11 91234-5678").key != identity.parse("+55 21 91234-5678").key
    assert identity.parse("+57 300 123 4567").key != identity.parse("+57 300 123 4568").key
    # a Brazilian landline (10 national digits starting 2-5) is not collapsed with anything
    assert identity.parse("+55 11 3123-4567").key == "551131234567"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("hello", "is not a phone number"),
        ("+57 300 abc", "is not a phone number"),
        ("<script>alert(1)</script>", "is not a phone number"),
        ("+999 123 456 789", "is not a valid phone number"),
        ("3001234567", "include the country code"),
        ("+57 3", "is not a valid phone number"),
    ],
)
def test_garbage_is_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidNumber, match=message):
        identity.parse(text)


def test_bsuids_are_identities() -> None:
    found = identity.parse("us.13491208655302741918")
    assert (found.kind, found.value, found.key) == ("bsuid", "US.13491208655302741918", "US.13491208655302741918")
    assert identity.recipient("CO.abcDEF123").kind == "bsuid"
    assert identity.bsuid("US.") is None
    assert identity.bsuid("USA.123") is None


def test_wa_ids_are_read_leniently_but_must_be_digits() -> None:
    assert identity.from_wa_id("+57 300 123 4567").value == "573001234567"
    assert identity.recipient("16505551234").key == "16505551234"
    with pytest.raises(InvalidNumber):
        identity.from_wa_id("12ab")
    with pytest.raises(InvalidNumber):
        identity.recipient("x" * 500)


def _connector(**fields: object) -> ConnectorConfig:
    config = parse_config(
        {
            "connectors": [
                {
                    "phone_number_id": "106540352242922",
                    "app_secret": "a-secret",
                    "verify_token": "a-token",
                    "forward_webhooks_to": "http://127.0.0.1:9000/hook",
                    **fields,
                }
            ]
        },
        env={},
    )
    return config.connectors[0]


@pytest.mark.parametrize(
    ("fields", "region"),
    [
        ({"default_country": "br", "display_number": "+57 601 555 0100"}, "BR"),  # default_country wins
        ({"display_number": "+57 601 555 0100"}, "CO"),
        ({"display_number": "+55 11 4000 0000"}, "BR"),
        ({"display_number": "+1 555 010 0000"}, "US"),  # Meta's test numbers are in no plan: the code's region
        ({"display_number": "+800 1234 5678"}, ""),  # non-geographic
        ({}, ""),
    ],
)
def test_connector_region_comes_from_default_country_then_display_number(fields: dict[str, str], region: str) -> None:
    assert _connector(**fields).region == region


@pytest.mark.parametrize("number", ["sales line", "+999 1234", "12"])
def test_unreadable_display_number_is_a_config_error_naming_the_key(number: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _connector(display_number=number)
    assert any(p.startswith("connectors[0].display_number:") for p in caught.value.problems), caught.value.problems


def test_unknown_default_country_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"connectors\[0\]\.default_country"):
        _connector(default_country="XX")
