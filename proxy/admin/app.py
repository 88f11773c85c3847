"""The admin sub-application (``/admin/``): the JSON API's routes, the page, and the middlewares that guard them."""

from __future__ import annotations

from aiohttp import web

from .api import routes as api_routes
from .auth import SharedAuthThrottle
from .changes import routes as change_routes
from .csv_routes import routes as csv_routes
from .everywhere import routes as everywhere_routes
from .http import THROTTLE, auth_middleware, error_middleware
from .page import setup_page


def create_admin_app() -> web.Application:
    """The admin sub-application, mounted at ``/admin/``."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[THROTTLE] = SharedAuthThrottle()
    app.add_routes(csv_routes)
    app.add_routes(change_routes)  # PATCH a block, restore an export
    app.add_routes(everywhere_routes)  # block on every connector, opt-outs (issue 19)
    app.add_routes(api_routes)
    setup_page(app)
    app.on_response_prepare.append(_no_sniffing)
    return app


async def _no_sniffing(request: web.Request, response: web.StreamResponse) -> None:
    # API answers echo user text (numbers, reasons) in JSON: a browser must never render them as anything else.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
