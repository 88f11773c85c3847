"""Numbers as people read them: ``573005550001`` → ``+57 300 5550001`` (libphonenumber's international format).

Only for showing (admin API entries, CLI lists, the trial tools); matching and storage use canonical digits.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers


@lru_cache(maxsize=65_536)
def international(digits: str) -> str:
    """The international format of canonical digits (E.164 without ``+``); other text (a BSUID) unchanged.

    Digits that libphonenumber cannot read as a possible number are shown as ``+`` and the digits.
    """
    if not digits.isdigit():
        return digits
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return "+" + digits
    if not phonenumbers.is_possible_number(number):
        return "+" + digits
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def masked(number: str) -> str:
    """Enough of a number to correlate (logs, refusals), not the whole of it: ``5730012****``."""
    return number if len(number) <= 6 else number[:-4] + "****"
