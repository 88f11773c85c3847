"""Opt-out keywords: a user who writes "BAJA" or "STOP" stops getting template and marketing sends.

An opt-out is the outbound-only cousin of a block: the user may still write (their messages are forwarded) and
free-form replies inside the service window still go out, but ``messages`` with ``type: template`` and
``marketing_messages`` to them are refused with :data:`wa_blocklist.proxy.graph.errors.RECIPIENT_OPTED_OUT`. A user
opts out or back in by sending one of the connector's keywords as a whole message (text, or the title of a button
reply), compared after
:func:`normalise`: case, accents, surrounding spaces and punctuation do not matter, other words around it do
("STOP" opts out, "please don't stop" does not).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Literal

Keyword = Literal["optout", "optin"]

DEFAULT_OPTOUT_KEYWORDS: tuple[str, ...] = (
    # en
    "STOP", "STOP ALL", "UNSUBSCRIBE", "OPT OUT", "OPTOUT", "QUIT", "END",
    # es
    "BAJA", "DAR DE BAJA", "DARME DE BAJA", "CANCELAR", "PARAR", "DETENER", "NO MAS", "ALTO",
    # pt
    "SAIR", "PARE", "CANCELAR INSCRICAO", "DESCADASTRAR",
)  # fmt: skip
"""Keywords that opt a user out when a connector sets none (es, pt, en)."""

DEFAULT_OPTIN_KEYWORDS: tuple[str, ...] = (
    "START", "UNSTOP", "SUBSCRIBE",  # en
    "ALTA", "DAR DE ALTA", "REANUDAR",  # es
    "VOLTAR", "RETOMAR", "ASSINAR",  # pt
)  # fmt: skip
"""Keywords that opt a user back in when a connector sets none."""

MAX_KEYWORD = 64
"""Longest keyword (and so longest message) worth comparing: a longer message is never a keyword."""


def normalise(text: str) -> str:
    """The comparable form of a message or keyword: accents removed, case folded, inner whitespace folded to one
    space, and spaces, punctuation and symbols (emoji included) at either end stripped.

    ``"  ¡Bája! "`` → ``"baja"``; ``"Dar  de BAJA."`` → ``"dar de baja"``.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    words = " ".join(bare.split())
    start, end = 0, len(words)
    while start < end and not words[start].isalnum():
        start += 1
    while end > start and not words[end - 1].isalnum():
        end -= 1
    return words[start:end]


class KeywordMatcher:
    """A connector's opt-out and opt-in keywords, normalised once.

    Args:
        optout: keywords that opt a user out.
        optin: keywords that opt a user back in (a keyword in both lists opts out: the safer reading).
    """

    def __init__(self, optout: Iterable[str], optin: Iterable[str]) -> None:
        self.optout = frozenset(k for k in map(normalise, optout) if k)
        self.optin = frozenset(k for k in map(normalise, optin) if k) - self.optout

    def match(self, text: str) -> Keyword | None:
        """``"optout"`` / ``"optin"`` when the whole message is one of the keywords, else None."""
        if not text or len(text) > 4 * MAX_KEYWORD:
            return None
        word = normalise(text)
        if word in self.optout:
            return "optout"
        if word in self.optin:
            return "optin"
        return None
