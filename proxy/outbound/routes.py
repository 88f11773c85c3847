"""The outbound face's route: the gateway's catch-all handler, with Block Users API calls handed to their module."""

from __future__ import annotations

from aiohttp import web

from .block_users import handle_block_users
from .gateway import Gateway


def setup_gateway(app: web.Application) -> None:
    """Register the gateway's catch-all route; call it last, after every other route."""
    gateway = Gateway(app, block_users=handle_block_users)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
