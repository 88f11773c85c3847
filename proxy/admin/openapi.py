"""The OpenAPI 3.0 document of the admin API, served at ``/admin/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from .. import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_ENTRY = {
    "type": "object",
    "required": ["number", "display_number", "type", "blocked_at", "reason", "blocked_by", "source"],
    "properties": {
        "number": {"type": "string", "description": "canonical digits (E.164 without +) or a BSUID"},
        "display_number": {
            "type": "string",
            "description": "the number in international format (+57 300 5550001), or the BSUID, for showing",
        },
        "type": {"type": "string", "enum": ["phone", "bsuid"]},
        "blocked_at": {"type": "string", "format": "date-time"},
        "reason": {"type": "string"},
        "blocked_by": {"type": "string"},
        "source": {"type": "string"},
        "expires_at": {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "when a temporary block stops applying; null for a permanent block",
        },
    },
}
_CONNECTOR = {
    "type": "object",
    "required": ["phone_number_id", "name", "display_number", "region", "blocked_count"],
    "properties": {
        "phone_number_id": {"type": "string"},
        "name": {"type": "string"},
        "display_number": {"type": "string"},
        "region": {"type": "string", "description": "ISO region national numbers are read in ('' for none)"},
        "blocked_count": {"type": "integer", "minimum": 0},
    },
}
_AUDIT = {
    "type": "object",
    "required": ["id", "action", "number", "type", "by", "source", "reason", "at"],
    "properties": {
        "id": {"type": "string"},
        "action": {"type": "string", "enum": ["block", "unblock", "expire", "update", "optout", "optin"]},
        "number": {"type": "string"},
        "type": {"type": "string"},
        "by": {"type": "string"},
        "source": {"type": "string"},
        "reason": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
    },
}

_IMPORT_REPORT = {
    "type": "object",
    "required": ["dry_run", "summary", "rows"],
    "properties": {
        "dry_run": {"type": "boolean"},
        "summary": {
            "type": "object",
            "required": ["blocked", "already_blocked", "refused"],
            "properties": {k: {"type": "integer"} for k in ("blocked", "already_blocked", "refused")},
        },
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["row", "number", "outcome"],
                "properties": {
                    "row": {"type": "integer", "description": "line in the file; the header is row 1"},
                    "number": {"type": "string"},
                    "outcome": {"type": "string", "enum": ["blocked", "already_blocked", "refused"]},
                    "reason": {"type": "string", "description": "why the row was refused"},
                },
            },
        },
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad input",
        401: "Missing or unknown token",
        403: "Viewer token on a change",
        404: "Unknown connector, entry or route",
        409: "Not messaged in the last 24 hours",
        413: "Body too large (or, for an import, too many rows)",
        503: "Store unavailable (retry)",
    }
    return {
        str(s): {
            "description": text[s],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for s in statuses
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_body(properties: dict[str, Any], **limits: Any) -> dict[str, Any]:
    """A required JSON request body: an object with only ``properties`` (``limits``: required, minProperties)."""
    schema = {"type": "object", **limits, "additionalProperties": False, "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


def _listing(key: str, schema: str, description: str, *, paged: bool = False) -> dict[str, Any]:
    """A 200 answer ``{key: [schema, ...]}``, with ``next_cursor`` (null on the last page) when ``paged``."""
    properties: dict[str, Any] = {key: {"type": "array", "items": _ref(schema)}}
    if paged:
        properties["next_cursor"] = {"type": "string", "nullable": True}
    return _json({"type": "object", "required": list(properties), "properties": properties}, description)


def _created(schema: str, created: str, existing: str) -> dict[str, Any]:
    """The answers of a POST that makes something: 201 with it, or 200 with the one that was there already."""
    return {"201": _json(_ref(schema), created), "200": _json(_ref(schema), existing)}


def _csv_body(example: str) -> dict[str, Any]:
    """A required CSV request body."""
    return {"required": True, "content": {"text/csv": {"schema": {"type": "string", "example": example}}}}


def _path(name: str) -> dict[str, Any]:
    """A path parameter without a description."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_PNID = {"name": "pnid", "in": "path", "required": True, "schema": {"type": "string"}, "description": "phone number ID"}
_NUMBER = {
    "name": "number",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the number in any written form, or a BSUID",
}
_REASON = {"type": "string", "maxLength": 500}
_NUMBER_AND_REASON = {"number": {"type": "string", "example": "+57 300 123 4567"}, "reason": _REASON}
"""The fields every body that names a number shares: the number in any written form (or a BSUID) and a reason."""
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
_CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"}}
_DRY_RUN = {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}, "description": "write nothing"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "wa-blocklist-proxy admin API", "version": __version__},
    "servers": [{"url": "/admin/api"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _ERROR,
            "Entry": _ENTRY,
            "Connector": _CONNECTOR,
            "ReferenceCheck": {
                "type": "object",
                "required": ["known", "blocked", "unknown_references"],
                "properties": {
                    "known": {"type": "boolean"},
                    "blocked": {"type": "boolean"},
                    "unknown_references": {"type": "string", "enum": ["refuse", "pass"]},
                },
            },
            "AuditRecord": _AUDIT,
            "ImportReport": _IMPORT_REPORT,
        },
    },
    "paths": {
        "/session": {
            "get": {
                "summary": "Who the token belongs to",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["name", "role"],
                            "properties": {"name": {"type": "string"}, "role": {"enum": ["viewer", "admin"]}},
                        },
                        "The token's name and role",
                    ),
                    **_errors(401, 503),
                },
            }
        },
        "/connectors": {
            "get": {
                "summary": "Configured connectors with their count of blocked numbers",
                "responses": {
                    "200": _listing("connectors", "Connector", "Connectors"),
                    **_errors(401, 503),
                },
            }
        },
        "/connectors/{pnid}": {
            "get": {
                "summary": "One connector",
                "parameters": [_PNID],
                "responses": {
                    "200": _json(_ref("Connector"), "The connector"),
                    **_errors(401, 404, 503),
                },
            }
        },
        "/connectors/{pnid}/blocks": {
            "get": {
                "summary": "Blocked numbers, newest first",
                "parameters": [_PNID, {"name": "q", "in": "query", "schema": {"type": "string"}}, _LIMIT, _CURSOR],
                "responses": {
                    "200": _listing("blocks", "Entry", "A page of entries", paged=True),
                    **_errors(400, 401, 404, 503),
                },
            },
            "post": {
                "summary": "Block a number (only if it messaged the connector in the last 24 hours)",
                "parameters": [_PNID],
                "requestBody": _json_body(
                    {
                        **_NUMBER_AND_REASON,
                        "duration": {
                            "type": "string",
                            "example": "7d",
                            "description": "a temporary block: 30m, 12h, 1d, 7d, 2w or seconds "
                            "(at most a year); not with expires_at",
                        },
                        "expires_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "a temporary block's end, with a time zone, in the next "
                            "year; not with duration",
                        },
                    },
                    required=["number"],
                ),
                "responses": {
                    **_created("Entry", "Blocked", "Already blocked (the existing entry)"),
                    **_errors(400, 401, 403, 404, 409, 413, 503),
                },
            },
        },
        "/connectors/{pnid}/blocks/{number}": {
            "get": {
                "summary": "The block entry of a number",
                "parameters": [_PNID, _NUMBER],
                "responses": {
                    "200": _json(_ref("Entry"), "The entry"),
                    **_errors(400, 401, 404, 503),
                },
            },
            "delete": {
                "summary": "Unblock a number (always allowed)",
                "parameters": [
                    _PNID,
                    _NUMBER,
                    {"name": "reason", "in": "query", "schema": _REASON},
                ],
                "responses": {"204": {"description": "Unblocked"}, **_errors(400, 401, 403, 404, 503)},
            },
            "patch": {
                "summary": "Change a block's reason and/or expiry (audited as update)",
                "description": "Blocking an already-blocked number with POST keeps its entry as it is; this is the "
                "explicit way to change it. expires_at null makes the block permanent.",
                "parameters": [_PNID, _NUMBER],
                "requestBody": _json_body(
                    {
                        "reason": _REASON,
                        "duration": {"type": "string", "example": "7d", "description": "from now"},
                        "expires_at": {"type": "string", "format": "date-time", "nullable": True},
                    },
                    minProperties=1,
                ),
                "responses": {
                    "200": _json(_ref("Entry"), "The updated entry"),
                    **_errors(400, 401, 403, 404, 413, 503),
                },
            },
        },
        "/connectors/{pnid}/blocks.csv": {
            "get": {
                "summary": "Export the blocklist as CSV (number,reason,expires_at,type,blocked_at,blocked_by,source)",
                "parameters": [_PNID],
                "responses": {
                    "200": {"description": "The CSV file", "content": {"text/csv": {"schema": {"type": "string"}}}},
                    **_errors(401, 404, 503),
                },
            }
        },
        "/connectors/{pnid}/blocks/import": {
            "post": {
                "summary": "Import a CSV file (header number,reason[,duration|expires_at]); each row is reported",
                "description": "The whole file is checked first: bad encoding, bad CSV, a bad header or more than "
                "64000 rows refuse it whole (400 invalid_csv / 413 too_many_rows, nothing written). Then each row "
                "is blocked, already blocked, or refused with its reason (24-hour rule, bad number, duplicate).",
                "parameters": [_PNID, _DRY_RUN],
                "requestBody": _csv_body("number,reason\n+57 300 123 4567,spam\n"),
                "responses": {
                    "200": _json(_ref("ImportReport"), "The per-row report"),
                    **_errors(400, 401, 403, 404, 413, 503),
                },
            }
        },
        "/connectors/{pnid}/blocks/restore": {
            "post": {
                "summary": "Restore an exported CSV as it was (admin only; no 24-hour rule)",
                "description": "Each row keeps its reason, expires_at, blocked_by and blocked_at; rows whose block "
                "has expired are refused, numbers already blocked are left as they are. Audited with the source "
                "admin_api_restore.",
                "parameters": [_PNID, _DRY_RUN],
                "requestBody": _csv_body(
                    "number,reason,expires_at,type,blocked_at,blocked_by,source\n"
                    "573001234567,spam,,phone,2026-11-25T03:31:24.031Z,supervisor,admin_api\n"
                ),
                "responses": {
                    "200": _json(_ref("ImportReport"), "The per-row report"),
                    **_errors(400, 401, 403, 404, 413, 503),
                },
            }
        },
        "/connectors/{pnid}/check/{number}": {
            "get": {
                "summary": "Whether a number or BSUID is blocked, following wa_id/BSUID links",
                "parameters": [_PNID, _NUMBER],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["blocked", "matched"],
                            "properties": {
                                "blocked": {"type": "boolean"},
                                "matched": {"type": "string", "nullable": True},
                            },
                        },
                        "The answer, with the blocked entry's number when blocked",
                    ),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/connectors/{pnid}/messages/{message_id}/check": {
            "get": {
                "summary": "Whether the sender of an inbound message is blocked (read receipts, typing indicators)",
                "parameters": [
                    _PNID,
                    _path("message_id"),
                ],
                "responses": {
                    "200": _json(
                        _ref("ReferenceCheck"),
                        "known: seen in a verified webhook; blocked: its sender is blocked on the connector",
                    ),
                    **_errors(401, 404, 503),
                },
            }
        },
        "/join_requests/{join_request_id}/check": {
            "get": {
                "summary": "Whether the user behind a group join request is blocked on any connector",
                "parameters": [_path("join_request_id")],
                "responses": {
                    "200": _json(
                        _ref("ReferenceCheck"),
                        "known: seen in a verified webhook; blocked: its user is blocked on a connector",
                    ),
                    **_errors(401, 503),
                },
            }
        },
        "/connectors/{pnid}/audit": {
            "get": {
                "summary": "Every block and unblock on the connector, newest first",
                "parameters": [_PNID, _LIMIT, _CURSOR],
                "responses": {
                    "200": _listing("records", "AuditRecord", "A page of audit records", paged=True),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
    },
}


# --- issue 19: block everywhere, opt-outs ------------------------------------------------------------------------

_OUTCOMES = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["phone_number_id", "name", "outcome", "detail", "block"],
                "properties": {
                    "phone_number_id": {"type": "string"},
                    "name": {"type": "string"},
                    "outcome": {
                        "type": "string",
                        "enum": ["blocked", "already_blocked", "not_recently_active", "invalid_number", "unblocked",
                                 "not_blocked"],
                    },
                    "detail": {"type": "string", "description": "what happened on this connector and why"},
                    "block": {"allOf": [_ref("Entry")], "nullable": True},
                },
            },
        }
    },
}  # fmt: skip
_OPTOUT = {
    "type": "object",
    "required": ["number", "display_number", "type", "opted_out_at", "reason", "by", "source"],
    "properties": {
        "number": {"type": "string"},
        "display_number": {"type": "string"},
        "type": {"type": "string", "enum": ["phone", "bsuid"]},
        "opted_out_at": {"type": "string", "format": "date-time"},
        "reason": {"type": "string", "description": 'for a keyword, keyword "BAJA"'},
        "by": {"type": "string", "description": "user (a keyword), or the admin token / CLI user"},
        "source": {"type": "string", "description": "keyword, admin_api, cli"},
    },
}
_CONNECTORS_QUERY = {
    "name": "connectors",
    "in": "query",
    "schema": {"type": "string"},
    "description": "phone number IDs separated by commas (all connectors when absent)",
}
_REASON_QUERY = {"name": "reason", "in": "query", "schema": _REASON}

OPENAPI["components"]["schemas"].update({"Outcomes": _OUTCOMES, "OptOut": _OPTOUT})
OPENAPI["paths"].update(
    {
        "/everywhere/blocks": {
            "post": {
                "summary": "Block a number on several or all connectors (24-hour rule per connector)",
                "description": "One block, one reason and one audit record per connector where the block is made. "
                "By default a connector where the number did not write in the last 24 hours is left alone "
                "(outcome not_recently_active); include_unsynced blocks it anyway where sync_to_meta is off.",
                "requestBody": _json_body(
                    {
                        **_NUMBER_AND_REASON,
                        "duration": {"type": "string", "example": "7d"},
                        "expires_at": {"type": "string", "format": "date-time"},
                        "connectors": {
                            "type": "array",
                            "items": {"type": "string"},
                            "minItems": 1,
                            "description": "phone number IDs; all connectors when absent",
                        },
                        "include_unsynced": {"type": "boolean", "default": False},
                    },
                    required=["number"],
                ),
                "responses": {
                    "200": _json(_ref("Outcomes"), "One outcome per connector"),
                    **_errors(400, 401, 403, 404, 413, 503),
                },
            }
        },
        "/everywhere/blocks/{number}": {
            "get": {
                "summary": "On which connectors a number is blocked",
                "parameters": [_NUMBER],
                "responses": {
                    "200": _json(_ref("Outcomes"), "blocked / not_blocked per connector"),
                    **_errors(401, 503),
                },
            },
            "delete": {
                "summary": "Unblock a number on several or all connectors",
                "parameters": [_NUMBER, _CONNECTORS_QUERY, _REASON_QUERY],
                "responses": {
                    "200": _json(_ref("Outcomes"), "unblocked / not_blocked per connector"),
                    **_errors(400, 401, 403, 404, 503),
                },
            },
        },
        "/connectors/{pnid}/optouts": {
            "get": {
                "summary": "Numbers opted out of template and marketing sends, newest first",
                "parameters": [_PNID],
                "responses": {
                    "200": _listing("optouts", "OptOut", "The opt-outs"),
                    **_errors(401, 404, 503),
                },
            },
            "post": {
                "summary": "Opt a number out of template and marketing sends (no 24-hour rule)",
                "parameters": [_PNID],
                "requestBody": _json_body(_NUMBER_AND_REASON, required=["number"]),
                "responses": {
                    **_created("OptOut", "Opted out", "Had opted out already"),
                    **_errors(400, 401, 403, 404, 413, 503),
                },
            },
        },
        "/connectors/{pnid}/optouts/{number}": {
            "get": {
                "summary": "The opt-out a template send to this number meets (any written form, following wa_id / "
                "BSUID links: what the gateway and the plugins check); viewer role enough",
                "parameters": [_PNID, _NUMBER],
                "responses": {
                    "200": _json(_ref("OptOut"), "Opted out: the entry"),
                    **_errors(400, 401, 404, 503),
                },
            },
            "delete": {
                "summary": "Opt a number back in",
                "parameters": [_PNID, _NUMBER, _REASON_QUERY],
                "responses": {"204": {"description": "Opted back in"}, **_errors(400, 401, 403, 404, 503)},
            },
        },
    }
)
