"""Identities: typed numbers, wa_ids, WhatsApp's national variants and BSUIDs."""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wa_blocklist.proxy.base.errors import ConfigError, InvalidNumber
from wa_blocklist.proxy.blocklist.service import BlocklistService
from wa_blocklist.proxy.config import Config, ConnectorConfig, parse_config
from wa_blocklist.proxy.graph import identity
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED

from fakes import FakeGraph
from support import ADMIN_TOKEN, PNID, PNID_BR, ConfigFactory, wrote_recently


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


# --- one number reader: every written form of a number reads to the key of its E.164 form ---------------------------

REGIONS = ["CO", "BR", "MX", "AR", "CL", "PE", "GB", "DE", "FR", "IT", "ES", "NL", "IN", "US"]
NUMBERS = settings(max_examples=400, deadline=None, derandomize=True, database=None)


@st.composite
def real_numbers(draw: st.DrawFn) -> tuple[str, phonenumbers.PhoneNumber]:
    """A valid number of one of REGIONS: a region's example mobile or landline with its last digits redrawn."""
    region = draw(st.sampled_from(REGIONS))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    national = str(example.national_number)
    tail = draw(st.text(alphabet="0123456789", min_size=4, max_size=4))
    number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}", None)
    assume(phonenumbers.is_valid_number(number))
    return region, number


def _trunk_forms(region: str, number: phonenumbers.PhoneNumber) -> list[str]:
    """The number written internationally with the national trunk prefix kept, as people write it."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.national_prefix != "0":
        return []
    cc = number.country_code
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    forms = [f"+{cc} (0){number.national_number}", f"+{cc} 0 {number.national_number}"]
    if re.sub(r"[^0-9]", "", national).startswith("0"):  # 07400 123456, 011 15-2345-6789 (Argentine mobile, 15)
        forms += [f"+{cc} (0){national.replace('0', '', 1)}", f"+{cc} {national.replace('0', '', 1)}"]
    else:  # e.g. Brazil's (11) 96123-4567: the 0 goes before the area code
        forms.append(f"+{cc} 0 {national}")
    return forms


def _written_forms(region: str, number: phonenumbers.PhoneNumber, separator: str) -> list[tuple[str, str]]:
    """(form, region to read it with) for every way the number may be written."""
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    forms = [
        (e164, ""),
        (e164[1:], ""),  # a wa_id
        (international, ""),
        (international.replace(" ", separator), ""),
        ("00" + e164[1:], ""),
        ("00 " + international[1:], ""),
        (national, region),
        (national.replace(" ", separator), region),
    ]
    forms += [(form, "") for form in _trunk_forms(region, number)]
    forms += [(form.replace(" ", separator), "") for form in _trunk_forms(region, number)]
    return forms


@NUMBERS
@given(found=real_numbers(), separator=st.sampled_from([" ", "-", ".", "", "  ", " - "]))
def test_every_written_form_reads_to_the_key_of_its_e164_form(
    found: tuple[str, phonenumbers.PhoneNumber], separator: str
) -> None:
    region, number = found
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    key = identity.match_key(e164[1:])
    for form, read_with in _written_forms(region, number, separator):
        # what a supervisor types is stored under the key a send to the E.164 form is looked up by...
        try:
            typed = identity.parse(form, read_with)
        except InvalidNumber as exc:
            # ...unless the national form is also someone's international number: then the supervisor is asked
            assert read_with and "type it with + and the country code" in exc.message, (form, exc.message)
        else:
            assert typed.key == key, (form, read_with, typed)
        # ...and a send written this way is checked against that key, whichever reading Meta takes
        readings = identity.recipient_readings(form, read_with)
        assert key in {r.key for r in readings}, (form, read_with, readings)
        # the same form on a connector of the number's own region is read the same way
        assert key in {r.key for r in identity.recipient_readings(form, region)}, (form, region)


@NUMBERS
@given(found=real_numbers())
def test_a_national_number_without_a_region_is_refused_in_a_send_unless_it_is_international(
    found: tuple[str, phonenumbers.PhoneNumber],
) -> None:
    _, number = found
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    try:
        readings = identity.recipient_readings(national, "")
    except InvalidNumber as exc:
        assert "write the number in international form" in exc.message
    else:
        # the digits are someone's international number: that one is checked (never an unchecked pass)
        assert any(phonenumbers.is_valid_number(phonenumbers.parse("+" + r.value, None)) for r in readings)


typed_text = st.text(alphabet=st.sampled_from("+0123456789 ()-./x\t0"), max_size=30) | st.text(max_size=30)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(text=typed_text, region=st.sampled_from([*REGIONS, "", "ZZ", "xx", "co", "001"]))
def test_the_reader_raises_nothing_but_invalid_number(text: str, region: str) -> None:
    parsed: identity.Identity | None = None
    for read in (identity.parse, identity.recipient_readings):
        try:
            result = read(text, region)
        except InvalidNumber as exc:
            assert exc.message and exc.status == 400
        else:
            assert result
            parsed = result if isinstance(result, identity.Identity) else parsed
    if parsed is not None:  # what a supervisor's block is stored under is among what a send to it is checked by
        assert parsed.key in {r.key for r in identity.recipient_readings(text, region)}


@pytest.mark.parametrize(
    ("typed", "region", "digits"),
    [
        ("+44 (0)7911 123456", "", "447911123456"),
        ("+49 (0)151 12345678", "", "4915112345678"),
        ("+54 11 15 1234 5678", "", "5491112345678"),  # Argentine mobile written with 15: WhatsApp's 549 11 ...
        ("+54 9 11 1234 5678", "", "5491112345678"),
        ("011 15 1234-5678", "AR", "5491112345678"),
        ("+55 0 11 91234 5678", "", "5511912345678"),
        ("+55 (0)11 91234-5678", "", "5511912345678"),
        ("0 11 91234 5678", "BR", "5511912345678"),
        ("+33 (0)6 12 34 56 78", "", "33612345678"),
        ("+39 06 1234 5678", "", "390612345678"),  # Italy keeps its 0: it is not a trunk prefix
        ("07911 123456", "GB", "447911123456"),
        ("(300) 123 4567", "CO", "573001234567"),
    ],
)
def test_trunk_prefixes_are_removed_and_the_stored_key_is_the_one_a_send_is_checked_by(
    typed: str, region: str, digits: str
) -> None:
    found = identity.parse(typed, region)
    assert found.value == digits
    # the key stored for what the supervisor typed is the key of every reading of a send to the canonical number
    assert found.key in {r.key for r in identity.recipient_readings("+" + digits)}
    assert found.key in {r.key for r in identity.recipient_readings(digits)}
    # and a send written the way the supervisor typed it is matched too
    assert found.key in {r.key for r in identity.recipient_readings(typed, region)}


def test_a_national_number_in_a_send_on_a_connector_without_region_is_refused() -> None:
    with pytest.raises(InvalidNumber, match="international form"):
        identity.recipient_readings("3001234567", "")
    # the connector's region reads it; a wa_id or a + number needs none
    assert "573001234567" in {r.key for r in identity.recipient_readings("3001234567", "CO")}
    assert [r.key for r in identity.recipient_readings("573001234567", "")] == ["573001234567"]
    assert {r.key for r in identity.recipient_readings("+1 555 010 0000", "")} == {"15550100000"}


def test_a_send_without_plus_is_checked_with_every_reading_meta_may_take() -> None:
    keys = {r.key for r in identity.recipient_readings("0057 300 1234567", "CO")}
    # 00 as the international prefix; Colombia's 005 carrier prefix (+7 ...); 57 + the 16 digits is no one's number
    assert keys == {"00573001234567", "573001234567", "73001234567"}
    # Meta's own example: "1 (631) 555-1234" sent from an Indian business number may reach +91 1 631 555 1234
    keys = {r.key for r in identity.recipient_readings("1 (631) 555-1234", "IN")}
    assert keys == {"16315551234", "9116315551234"}  # as a wa_id, and with the business's country code prepended
    # a wa_id sent without "+" from a Colombian number: 57 + 573001234567 is too long to be anyone's
    assert [r.key for r in identity.recipient_readings("573001234567", "CO")] == ["573001234567"]


def test_a_typed_number_that_is_national_and_international_at_once_is_refused() -> None:
    # (321) 234-5678 is a Florida number, and +32 12 34 56 78 a Belgian one
    assert phonenumbers.is_valid_number(phonenumbers.parse("3212345678", "US"))
    assert phonenumbers.is_valid_number(phonenumbers.parse("+3212345678", None))
    with pytest.raises(InvalidNumber, match="both an international number and a national number of US"):
        identity.parse("321 234 5678", "US")
    assert identity.parse("+1 321 234 5678", "US").value == "13212345678"
    assert identity.parse("+32 12 34 56 78", "US").value == "3212345678"
    # a send written that way is checked against both
    assert {"3212345678", "13212345678"} <= {r.key for r in identity.recipient_readings("321 234 5678", "US")}


# --- through the running proxy: the key a supervisor's block is stored under is the one every send is checked by ---

NO_REGION = "333333333333333"


@pytest.fixture
def config(make_config: ConfigFactory) -> Config:
    """The test connectors with their region from display_number (no default_country), and one with no region."""

    def regions_from_display_numbers(data: dict[str, Any]) -> None:
        for connector in data["connectors"]:
            connector.pop("default_country", None)
        bare = {**data["connectors"][0], "phone_number_id": NO_REGION, "name": "Sin región"}
        bare.pop("display_number")
        data["connectors"].append(bare)

    return make_config(regions_from_display_numbers)


async def _send(client: TestClient[Any, Any], pnid: str, to: str) -> tuple[int, Any]:
    message = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hola"}}
    response = await client.post(f"/v21.0/{pnid}/messages", json=message, headers={"Authorization": "Bearer bot"})
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("pnid", "wa_id", "typed", "sends"),
    [
        (PNID_BR, "5511912345678", "+55 0 11 91234-5678",
         ["5511912345678", "+55 11 91234-5678", "551112345678", "011 91234-5678", "(11) 91234-5678",
          "+55 (0)11 91234 5678"]),
        (PNID, "5491112345678", "+54 11 15 1234-5678",
         ["5491112345678", "541112345678", "+54 9 11 1234 5678", "+54 11 15 1234 5678", "0054 9 11 1234 5678"]),
        (PNID, "447911123456", "+44 (0)7911 123456", ["447911123456", "+44 7911 123456", "+44 (0)7911 123456"]),
        (PNID, "573001234567", "300 123 4567", ["3001234567", "+57 300 123 4567", "(300) 123-4567", "573001234567"]),
    ],
)  # fmt: skip
async def test_a_block_typed_in_any_form_holds_against_every_form_of_a_send(
    client: TestClient[Any, Any], service: BlocklistService, fake_graph: FakeGraph,
    pnid: str, wa_id: str, typed: str, sends: list[str],
) -> None:  # fmt: skip
    assert service.connector(pnid).region == {PNID: "CO", PNID_BR: "BR"}[pnid]  # from display_number
    await wrote_recently(service, pnid, wa_id)
    blocked = await client.post(
        f"/admin/api/connectors/{pnid}/blocks",
        json={"number": typed},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert blocked.status == 201, await blocked.text()  # the user wrote: no 409, the typed form found them
    assert (await blocked.json())["number"] == wa_id
    for to in sends:
        status, body = await _send(client, pnid, to)
        assert (status, body["error"]["code"]) == (400, RECIPIENT_BLOCKED), (to, body)
    assert fake_graph.requests == []
    assert (await _send(client, pnid, "+57 300 987 6543"))[0] == 200  # someone else still gets through


async def test_a_national_number_on_a_connector_without_region_is_refused(
    client: TestClient[Any, Any], fake_graph: FakeGraph
) -> None:
    status, body = await _send(client, NO_REGION, "3001234567")
    assert status == 400 and "international form" in str(body), body
    assert fake_graph.requests == []
    assert (await _send(client, NO_REGION, "+57 300 123 4567"))[0] == 200
    assert (await _send(client, NO_REGION, "573001234567"))[0] == 200  # a wa_id is an international number
