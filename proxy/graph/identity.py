"""Who a WhatsApp user is: phone numbers, wa_ids and business-scoped user IDs (BSUIDs).

A phone number is kept as canonical digits (E.164 without ``+``). WhatsApp does not always use the number a
person types: Brazilian mobiles appear with or without the ninth digit, Mexican mobiles as ``521…`` or ``52…``,
Argentine mobiles as ``549…`` or ``54…``. Every form of one number maps to one **match key**, and blocks are
stored and looked up by that key, so a block holds against every form.

A BSUID (``CC.<alphanumerics>``, e.g. ``US.13491208655302741918``) is its own identity; the store links it to a
wa_id when a webhook shows both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import phonenumbers

from ..base.errors import InvalidNumber

_BSUID = re.compile(r"^([A-Za-z]{2})\.([A-Za-z0-9]{1,128})$")
_TYPED_NUMBER = re.compile(r"^\+?[0-9 ()./\-]{4,40}$")
_DIGITS = re.compile(r"^[0-9]{6,20}$")

REGIONS: frozenset[str] = frozenset(phonenumbers.SUPPORTED_REGIONS)
"""ISO regions libphonenumber can read national numbers for (``CO``, ``BR``, ...)."""


@dataclass(frozen=True)
class Identity:
    """One user identity on WhatsApp.

    Attributes:
        kind: ``phone`` or ``bsuid``.
        value: canonical digits for a phone, ``CC.xxxx`` for a BSUID: what lists and entries show.
        key: the match key that every form of the same identity shares; the store indexes by it.
    """

    kind: Literal["phone", "bsuid"]
    value: str
    key: str


def match_key(digits: str) -> str:
    """Collapse the WhatsApp variants of one mobile number into one key.

    Args:
        digits: canonical digits (E.164 without ``+``), e.g. a wa_id.

    Returns:
        Brazil ``55 DD 9 XXXXXXXX`` → ``55 DD XXXXXXXX``; Mexico ``52 1 XXXXXXXXXX`` → ``52 XXXXXXXXXX``;
        Argentina ``54 9 XXXXXXXXXX`` → ``54 XXXXXXXXXX``; any other number unchanged.
    """
    if len(digits) == 13:
        if digits.startswith("55") and digits[4] == "9":
            return digits[:4] + digits[5:]
        if digits.startswith("521") or digits.startswith("549"):
            return digits[:2] + digits[3:]
    return digits


def _variants(digits: str) -> list[str]:
    """The other forms WhatsApp may use for this number (used to validate the forms phonenumbers rejects)."""
    key = match_key(digits)
    forms = [digits, key]
    if len(key) == 12 and key.startswith("55"):
        forms.append(key[:4] + "9" + key[4:])
    elif len(key) == 12 and key.startswith(("52", "54")):
        forms.append(key[:2] + ("1" if key.startswith("52") else "9") + key[2:])
    return forms


def _is_real_number(digits: str) -> bool:
    for form in _variants(digits):
        try:
            parsed = phonenumbers.parse("+" + form, None)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return True
    return False


def region_of(number: str) -> str:
    """The ISO region a business number belongs to, for reading national numbers sent from it.

    Args:
        number: the number as people know it, e.g. ``+57 601 555 0100`` (a leading ``+`` is assumed).

    Returns:
        The region libphonenumber gives the number (``CO``); for a number in no region's plan (Meta's ``+1 555``
        test numbers) the main region of its country code (``US``); "" for a non-geographic code (``+800``).

    Raises:
        InvalidNumber: ``number`` is not a phone number with a country code.
    """
    raw = number.strip()
    example = "write it with the country code, e.g. +57 601 555 0100"
    if not _TYPED_NUMBER.match(raw):
        raise InvalidNumber(f"{_shorten(raw)!r} is not a phone number: {example}")
    written = raw if raw.startswith("+") else "+" + raw.removeprefix("00")
    try:
        parsed = phonenumbers.parse(written, None)
    except phonenumbers.NumberParseException:
        raise InvalidNumber(f"{_shorten(raw)!r} is not a phone number with a country code: {example}") from None
    region = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code or 0
    )
    if region == phonenumbers.UNKNOWN_REGION:
        raise InvalidNumber(f"{_shorten(raw)!r} has no known country code")
    return "" if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY else region


def bsuid(text: str) -> Identity | None:
    """Return the identity for a BSUID string, or None if ``text`` is not one."""
    found = _BSUID.match(text.strip())
    if not found:
        return None
    value = f"{found.group(1).upper()}.{found.group(2)}"
    return Identity("bsuid", value, value)


@lru_cache(maxsize=16_384)
def from_wa_id(wa_id: str) -> Identity:
    """Identity for a wa_id as Meta sends it (digits), without validating the number plan.

    Memoised like :func:`recipient_readings`: every webhook reads its users' wa_ids several times (recording, owners,
    automatic entries), and the same users write all day. Pure function of its argument; errors are not cached.

    Webhooks and send bodies carry what WhatsApp uses; we must match them even for ranges phonenumbers does
    not know yet, so only the shape is checked.

    Raises:
        InvalidNumber: if ``wa_id`` is not 6-20 digits (after dropping a leading ``+`` and separators).
    """
    digits = re.sub(r"[\s()./\-]", "", wa_id.strip()).removeprefix("+")
    if not _DIGITS.match(digits):
        raise InvalidNumber(f"{_shorten(wa_id)!r} is not a WhatsApp ID (expected the number's digits)")
    return Identity("phone", digits, match_key(digits))


def recipient(text: str) -> Identity:
    """Identity for a recipient field of a send request: a BSUID or a number in any written form."""
    found = bsuid(text)
    return found if found is not None else from_wa_id(text)


def recipient_readings(text: str, region: str = "") -> list[Identity]:
    """Every user a send's recipient field may reach: the number as written, and each way the Graph API may read it.

    Meta strips separators, reads ``00`` as the international call prefix, may drop a trunk prefix written after
    the country code (``+44 (0)7911 123456``, ``+54 11 15 …`` → ``+54 9 11 …``), and reads a number written
    without ``+`` in the business number's country (``3001234567`` sent from a Colombian number reaches
    +57 300 123 4567). A check must cover every reading, or a blocked user is reached by writing the number
    another way; each reading carries WhatsApp's match key (BR ninth digit, MX ``521``, AR ``549``).

    Args:
        text: the ``to`` / ``recipient`` value.
        region: the connector's ISO region (:attr:`wa_blocklist.proxy.config.ConnectorConfig.region`), for the national
            reading; "" when the connector has none.

    Raises:
        InvalidNumber: the value is neither a BSUID nor a number's digits, or it is written without ``+`` and
            only a national reading makes it a real number while the connector has no region to read it with.
    """
    return list(_readings(text, region.upper() if region.upper() in REGIONS else ""))


@lru_cache(maxsize=16_384)
def _readings(text: str, region: str) -> tuple[Identity, ...]:
    # Memoised: a contact center sends to the same few thousand recipients all day, and parsing a number with
    # phonenumbers costs more than the rest of a send's check. Pure function of its arguments; errors are not cached.
    first = recipient(text)
    if first.kind != "phone":
        return (first,)
    raw = text.strip()
    found: dict[str, Identity] = {}
    international = [first.value]
    if first.value.startswith("00"):
        international.append(first.value[2:])
    for digits in international:
        _add(found, digits)
        _add(found, _e164("+" + digits))  # libphonenumber: trunk prefix after the country code removed
        _add(found, _trunk_removed(digits))  # the same where libphonenumber reads a carrier code into it
    if raw.startswith("+"):
        _add(found, _e164(raw))
        return tuple(found.values())
    if region:
        _add(found, _e164(raw, region))
        # Meta prepends the business number's country code to a number written without "+"; libphonenumber's
        # national reading drops a trunk prefix, the literal one keeps it: check both. A literal reading of a length
        # no number of that country can have reaches nobody, and is left out (a wa_id sent without "+" is the
        # common case: 57 + 573001234567 is no one's number).
        prepended = f"{phonenumbers.country_code_for_region(region)}{first.value}"
        if _possible(prepended):
            _add(found, prepended)
    elif not any(_is_real_number(d) for d in international if _DIGITS.match(d)):
        raise InvalidNumber(
            f"{_shorten(raw)!r} has no country code and this connector has no region to read a national number "
            "with: write the number in international form, e.g. +57 300 123 4567"
        )
    return tuple(found.values())


def _add(found: dict[str, Identity], digits: str | None) -> None:
    if digits and _DIGITS.match(digits):
        found.setdefault(match_key(digits), Identity("phone", digits, match_key(digits)))


def _trunk_removed(digits: str) -> str | None:
    """International digits with the country's trunk prefix removed after the country code, or None.

    ``57 0 321…`` → ``57 321…``: libphonenumber keeps the 0 there because Colombia's ``03`` is also a carrier
    prefix, but a person writing ``+57 (0)321 …`` means the mobile.
    """
    if not digits.isdigit() or digits.startswith("0"):
        return None  # no country code starts with 0
    for length in range(1, min(3, len(digits)) + 1):
        code = int(digits[:length])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
                code, phonenumbers.region_code_for_country_code(code)
            )
            prefix = metadata.national_prefix if metadata is not None else None
            rest = digits[length:]
            return digits[:length] + rest[len(prefix) :] if prefix and rest.startswith(prefix) else None
    return None


def _possible(digits: str) -> bool:
    """Whether international ``digits`` have a length some number of their country can have."""
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse("+" + digits, None)))
    except phonenumbers.NumberParseException:
        return False


def _e164(text: str, region: str | None = None) -> str | None:
    """libphonenumber's reading of ``text`` as digits (trunk and international prefixes removed), or None."""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]


def parse(text: str, region: str = "") -> Identity:
    """Parse what a supervisor typed (admin API and page, CLI, CSV) into the identity blocks are stored under.

    Accepts ``+57 300-123 4567``, ``573001234567``, ``00 57 300 123 4567``, a trunk prefix after the country
    code (``+44 (0)7911 123456``, ``+55 0 11 91234-5678``, ``+54 11 15 1234-5678``), a national number when the
    connector has a region (``(300) 123 4567`` with ``CO``), and BSUIDs (``US.1349…``). The result is a real
    number (libphonenumber, allowing WhatsApp's own variants) and its key is the one the gateway looks up for
    every reading of a send to it (:func:`recipient_readings`).

    Args:
        text: what was typed.
        region: the connector's ISO region for national numbers; "" for none.

    Raises:
        InvalidNumber: with a sentence saying what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidNumber("the number is empty")
    raw = text.strip()
    found = bsuid(raw)
    if found is not None:
        return found
    if not _TYPED_NUMBER.match(raw):
        raise InvalidNumber(
            f"{_shorten(raw)!r} is not a phone number: use digits with the country code, e.g. +57 300 123 4567"
        )
    region = region.upper() if region.upper() in REGIONS else ""
    digits = re.sub(r"[^0-9]", "", raw)
    international = raw.startswith("+") or digits.startswith("00")
    if digits.startswith("00"):
        digits = digits[2:]
    # libphonenumber's reading first (it removes a trunk prefix written after the country code), then the digits
    # as typed, which covers WhatsApp's variants that the numbering plan no longer lists (MX 521, BR without 9).
    candidates = [_e164("+" + digits), digits, _trunk_removed(digits)]
    if not international and region:
        national = _e164(raw, region)
        international_too = any(c and _DIGITS.match(c) and _is_real_number(c) for c in candidates)
        if (
            international_too
            and national is not None
            and _is_real_number(national)
            and match_key(national) not in {match_key(c or "") for c in candidates}
        ):
            raise InvalidNumber(
                f"{_shorten(raw)!r} is both an international number and a national number of {region}: "
                "type it with + and the country code"
            )
        candidates.append(national)
    for candidate in candidates:
        if candidate and _DIGITS.match(candidate) and _is_real_number(candidate):
            return Identity("phone", candidate, match_key(candidate))
    if not international and not region:
        raise InvalidNumber(
            f"{_shorten(raw)!r} is not a valid international number: include the country code, e.g. +57 300 123 4567"
        )
    raise InvalidNumber(f"{_shorten(raw)!r} is not a valid phone number")


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
