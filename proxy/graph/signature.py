"""Meta's webhook signatures and Meta's JSON form: pure functions shared by the proxy and the plugins.

Meta signs ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`` over bodies it writes as ASCII
JSON: every non-ASCII character escaped as ``\\uXXXX`` with lowercase hex digits (characters outside the Basic
Multilingual Plane as a surrogate pair), and ``/`` escaped as ``\\/`` (raw deliveries show ``"image\\/jpeg"`` and
``"https:\\/\\/lookaside.fbsbx.com\\/..."``). A body we rebuild is written the same way, so that a consumer hashing the
raw bytes and a consumer re-escaping the text before hashing (whatsapp-api-js ``verifyRequestSignature``) compute the
same digest: on an ASCII body re-escaping changes nothing.
"""

from __future__ import annotations

import functools
import hmac
import json
from json.encoder import encode_basestring_ascii
from typing import Any

SIGNATURE_HEADER = "X-Hub-Signature-256"
LEGACY_SIGNATURE_HEADER = "X-Hub-Signature"
"""SHA-1, still sent by Meta and checked by some older consumers."""

_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


# _ENCODER's C encoder, made once (JSONEncoder.encode makes one per call) and without the check for circular
# references: what is written is a parsed JSON payload, which cannot refer to itself.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = (
    _c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, False)
    if _c_make_encoder is not None
    else None
)


@functools.lru_cache(maxsize=64)
def _keyed(secret: str, digest: str) -> hmac.HMAC:
    """An HMAC keyed with ``secret`` and fed nothing yet, copied for each body: the key's setup (OpenSSL's digest and
    MAC look-up, the padded key) is done once per app secret and digest instead of once per signature."""
    return hmac.new(secret.encode(), digestmod=digest)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta would send for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    mac = _keyed(secret, "sha256").copy()
    mac.update(body)
    return "sha256=" + mac.hexdigest()


def sign_sha1(secret: str, body: bytes) -> str:
    """The legacy ``X-Hub-Signature`` value: ``sha1=<hex HMAC-SHA1>``."""
    mac = _keyed(secret, "sha1").copy()
    mac.update(body)
    return "sha1=" + mac.hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """True if ``header`` is the ``X-Hub-Signature-256`` of ``body`` under ``secret`` (constant-time compare).

    A missing, empty or malformed header is simply not valid; surrounding whitespace is ignored.
    """
    if not header or not secret:
        return False
    presented = header.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented, sign(secret, body).encode())


def verify_any(secrets: list[str], body: bytes, header: str | None) -> str | None:
    """The first of ``secrets`` that ``header`` verifies ``body`` under, or None. Every secret is tried (no early
    exit on a mismatch), so timing does not tell which one matched."""
    found: str | None = None
    for secret in secrets:
        if verify(secret, body, header) and found is None:
            found = secret
    return found


def meta_dumps(payload: Any) -> bytes:
    """Serialise ``payload`` the way Meta serialises webhook bodies: compact ASCII JSON, ``\\uXXXX`` lowercase escapes
    (surrogate pairs for emoji; a lone surrogate stays a lone ``\\udXXX`` escape), ``/`` written ``\\/``.

    ``/`` only occurs inside JSON strings, so replacing it in the encoded text cannot touch the structure; an escaped
    backslash before it (``\\\\``) stays a backslash followed by ``\\/``.
    """
    text = "".join(_C_ENCODE(payload, 0)) if _C_ENCODE is not None else _ENCODER.encode(payload)
    return text.replace("/", "\\/").encode("ascii")
