"""The admin web page (``/admin/``): static files shipped in the package, served with strict security headers.

The page is plain HTML, CSS and one JavaScript module: no build step, nothing loaded from another origin. It talks
to the admin API (``/admin/api/``) with the bearer token the supervisor types in, kept in ``sessionStorage``; no
cookie is ever set, so there is no CSRF surface. Serving the files needs no token: they hold no data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from aiohttp.helpers import ETAG_ANY

STATIC_PACKAGE = "wa_blocklist.proxy.admin"
STATIC_FILES: dict[str, str] = {
    "index.html": "text/html",
    "admin.js": "text/javascript",
    "admin.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
"""Every file the page is made of, with its media type. Nothing else under ``static/`` is served."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
"""No inline script or style, no other origin; forms never navigate (the script handles them)."""

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass(frozen=True)
class StaticFile:
    """One file of the page, read once at start-up."""

    body: bytes
    content_type: str
    etag: str
    """The opaque part of the (weak) entity tag: a digest of ``body``."""


def load_static_files() -> dict[str, StaticFile]:
    """Read the page's files from the installed package.

    Raises:
        FileNotFoundError: a file is missing from the package (a broken install fails at start, not per request).
    """
    folder = resources.files(STATIC_PACKAGE).joinpath("static")
    loaded: dict[str, StaticFile] = {}
    for name, content_type in STATIC_FILES.items():
        body = folder.joinpath(name).read_bytes()
        loaded[name] = StaticFile(body, content_type, hashlib.sha256(body).hexdigest()[:32])
    return loaded


def _serve(request: web.Request, file: StaticFile) -> web.Response:
    # no-cache means "revalidate": an upgraded proxy is picked up at once, an unchanged file costs a 304.
    # The tag is weak because the same file goes out gzipped or not, and both representations share it.
    headers = {**SECURITY_HEADERS, "ETag": f'W/"{file.etag}"', "Cache-Control": "no-cache"}
    if any(tag.value in (file.etag, ETAG_ANY) for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if file.content_type.startswith("text/") or file.content_type.endswith("+xml") else None
    response = web.Response(body=file.body, content_type=file.content_type, charset=charset, headers=headers)
    response.enable_compression()  # gzip or deflate when the browser accepts it; the files hold no secrets
    return response


def setup_page(app: web.Application) -> None:
    """Register the page's routes on the admin sub-application (mounted at ``/admin/``).

    Routes: ``GET /admin`` redirects to ``/admin/``; ``GET /admin/`` is the page; ``GET /admin/static/{name}``
    serves its script, style sheet and icon.
    """
    files = load_static_files()

    async def redirect_to_page(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(request.app.router["admin_page"].url_for())

    async def index(request: web.Request) -> web.Response:
        return _serve(request, files["index.html"])

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "index.html" or name not in files:
            raise web.HTTPNotFound()
        return _serve(request, files[name])

    # "" becomes "/admin" once the sub-app is mounted: relative links in the page only work below "/admin/".
    app.router.add_get("", redirect_to_page, name="admin_page_redirect")
    app.router.add_get("/", index, name="admin_page")
    app.router.add_get("/static/{name}", static, name="admin_static")
