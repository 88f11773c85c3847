"""Cells of an exported CSV file that no spreadsheet runs as a formula, whatever separator it splits them on.

A spreadsheet runs a cell starting with ``=``, ``+``, ``-`` or ``@`` (CSV injection). Our files are written with
``,``, but Excel in many locales (es-CO, pt-BR...) opens a ``.csv`` with ``;`` as the separator, and others use a
tab: a reason such as ``x;=1+1;`` is one harmless cell for us and a formula cell for them. Quoting does not help,
since a reader with another separator does not see our quotes where we put them.

So every place where *any* of those separators could start a cell, the start of the text and right after each
``,``, ``;``, tab or line break (spaces skipped), gets a ``'`` before a formula character: spreadsheets show the
text and never run it. Fullwidth forms (``＝ ＋ － ＠``) are treated alike, since some spreadsheets fold them. The
change is exactly reversible (:func:`unguard`): a ``'`` already standing before a formula character gets one more,
so a restore takes back precisely what was exported.

Bidirectional control characters (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C) are removed from every
cell: a right-to-left override makes a reason display as something else than it is.
"""

from __future__ import annotations

import re

FORMULA_STARTS = "=+-@＝＋－＠"
SEPARATORS = ",;\t\r\n"

BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_NO_BIDI = str.maketrans("", "", BIDI_CONTROLS)

# A cell start: the text's start, or just after a separator; then spaces, then the quotes a previous guard added,
# then a formula character.
_GUARD = re.compile(rf"(^|[{SEPARATORS}])( *)('*)(?=[{re.escape(FORMULA_STARTS)}])")
_UNGUARD = re.compile(rf"(^|[{SEPARATORS}])( *)'('*)(?=[{re.escape(FORMULA_STARTS)}])")
# A cell that starts with a tab or carriage return (some spreadsheets drop it and read what follows).
_LEAD_GUARD = re.compile(r"^('*)(?=[\t\r])")
_LEAD_UNGUARD = re.compile(r"^'('*)(?=[\t\r])")


def strip_bidi(text: str) -> str:
    """``text`` without bidirectional control characters."""
    return text.translate(_NO_BIDI)


def guard(text: str) -> str:
    """A cell's text made safe for spreadsheets with any separator (see the module docstring)."""
    text = _LEAD_GUARD.sub(lambda m: f"'{m.group(1)}", strip_bidi(text))
    return _GUARD.sub(lambda m: f"{m.group(1)}{m.group(2)}'{m.group(3)}", text)


def unguard(text: str) -> str:
    """The text :func:`guard` was given (bidi controls apart): one added ``'`` removed at each cell start."""
    text = _UNGUARD.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}", text)
    return _LEAD_UNGUARD.sub(lambda m: m.group(1), text)
