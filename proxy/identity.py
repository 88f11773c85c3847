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

from .errors import InvalidNumber

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


def from_wa_id(wa_id: str) -> Identity:
    """Identity for a wa_id as Meta sends it (digits), without validating the number plan.

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


def recipient_readings(text: str, default_country: str = "") -> list[Identity]:
    """Every user a send's recipient field may reach: the number as written, and each way the Graph API may read it.

    Meta prepends the business number's country code to a number written without ``+``, and ``00`` is the
    international call prefix, so ``3001234567`` or ``0057 300 1234567`` sent from a Colombian number can reach
    +57 300 123 4567. A check must cover every reading, or a blocked user is reached by writing the number another way.

    Args:
        text: the ``to`` / ``recipient`` value.
        default_country: the connector's country (ISO code), used for the national reading; "" for none.

    Raises:
        InvalidNumber: the value is neither a BSUID nor a number's digits.
    """
    return list(_readings(text, default_country))


@lru_cache(maxsize=16_384)
def _readings(text: str, default_country: str) -> tuple[Identity, ...]:
    # Memoised: a contact center sends to the same few thousand recipients all day, and parsing a number with
    # phonenumbers costs more than the rest of a send's check. Pure function of its arguments; errors are not cached.
    first = recipient(text)
    if first.kind != "phone":
        return (first,)
    found = {first.key: first}
    raw = text.strip()
    if first.value.startswith("00") and _DIGITS.match(first.value[2:]):
        other = from_wa_id(first.value[2:])
        found.setdefault(other.key, other)
    if default_country and not raw.startswith("+"):
        try:
            local = phonenumbers.parse(raw, default_country)
        except phonenumbers.NumberParseException:
            local = None
        if local is not None and phonenumbers.is_valid_number(local):
            other = from_wa_id(phonenumbers.format_number(local, phonenumbers.PhoneNumberFormat.E164))
            found.setdefault(other.key, other)
    return tuple(found.values())


def parse(text: str, default_country: str = "") -> Identity:
    """Parse what a supervisor typed into an identity.

    Accepts ``+57 300-123 4567``, ``573001234567``, ``00 57 300 123 4567``, a local number when
    ``default_country`` is given (``(300) 123 4567`` with ``CO``), and BSUIDs (``US.1349…``).

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
    digits = re.sub(r"[^0-9]", "", raw)
    international = raw.startswith("+") or raw.startswith("00")
    if raw.startswith("00"):
        digits = digits[2:]
    candidates: list[str] = []
    if international or not default_country:
        candidates.append(digits)
    elif _is_real_number(digits):
        candidates.append(digits)  # already international, as a wa_id is
    else:
        try:
            local = phonenumbers.parse(raw, default_country)
        except phonenumbers.NumberParseException:
            local = None
        if local is not None:
            candidates.append(phonenumbers.format_number(local, phonenumbers.PhoneNumberFormat.E164)[1:])
    for candidate in candidates:
        if _DIGITS.match(candidate) and _is_real_number(candidate):
            return Identity("phone", candidate, match_key(candidate))
    if not international and not default_country:
        raise InvalidNumber(
            f"{_shorten(raw)!r} is not a valid international number: include the country code, e.g. +57 300 123 4567"
        )
    raise InvalidNumber(f"{_shorten(raw)!r} is not a valid phone number")


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
