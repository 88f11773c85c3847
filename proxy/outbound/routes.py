"""The outbound face's routes: the gateway's catch-all handler, and the direct way to it for plain Graph paths.

Every request that is not for one of the proxy's own faces goes to :meth:`Gateway.handle`. aiohttp's router finds
that out by walking its resource index, building a match and wrapping the handler in the application's middleware
chain, which costs about as much as parsing the request. :func:`gateway_first` decides it from the path itself for
the requests whose path the router could not read any other way (a plain ``/…`` path with no percent escape, dot
segment or empty segment, outside the proxy's own prefixes, and no ``Expect`` header), and runs them through the
same request middleware (request ID, context, metrics) straight to the gateway. Everything else takes the router as
before. Same behaviour either way: the whole test suite runs through it, since the test clients serve the same app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from ..base.logs import tag_upstream
from .block_users import handle_block_users
from .gateway import Gateway

Middleware = Callable[
    [web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]
]

OTHER_FACES = ("/admin", "/webhooks", "/metrics", "/healthz", "/readyz")
"""Path prefixes of the proxy's own faces (and anything starting like them): always left to the router."""


def setup_gateway(app: web.Application) -> Gateway:
    """Register the gateway's catch-all route; call it last, after every other route."""
    gateway = Gateway(app, block_users=handle_block_users)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    return gateway


def routed_directly(raw_path: str) -> bool:
    """Whether a request target is one the router would give the catch-all route however it reads it."""
    path = raw_path.partition("?")[0]
    return (
        path.startswith("/")
        and not path.startswith(OTHER_FACES)
        and "%" not in path
        and "/." not in path
        and "//" not in path
        and "\\" not in path
    )


def gateway_first(app: web.Application, middleware: Middleware, gateway: Gateway) -> None:
    """Send plain Graph paths straight to the gateway (see the module docstring); the rest to the router.

    Args:
        app: the proxy application, not yet started.
        middleware: the application's request middleware
            (:func:`wa_blocklist.proxy.base.logs.make_request_middleware`), run exactly as the router would.
        gateway: the catch-all route's handler.
    """
    routed = app._handle

    async def answer(request: web.Request) -> web.StreamResponse:
        response = await gateway.handle(request)
        if not response.prepared:  # the router's on_response_prepare signal does this for routed requests
            tag_upstream(response.headers)
        return response

    async def dispatch(request: web.Request) -> web.StreamResponse:
        if hdrs.EXPECT in request.headers or not routed_directly(request.raw_path):
            return await routed(request)
        return await middleware(request, answer)

    # aiohttp's server calls the application's _handle for each request (Application._make_handler); there is no
    # public hook between the server and the router, and subclassing Application is deprecated.
    app._handle = dispatch  # type: ignore[method-assign]
