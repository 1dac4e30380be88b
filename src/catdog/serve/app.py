"""The web service: the page at ``/`` and the JSON API under ``/api/v1`` (OpenAPI at ``/docs``).

Every photo goes the same way as in ``catdog predict``: :func:`catdog.preprocess.to_uint8` (via
:meth:`Predictor._square`) in a thread pool, then :class:`MicroBatcher` → one forward pass →
:meth:`Predictor.to_predictions`. Uploads stay in memory (or in Starlette's anonymous spool
files); nothing a client sends is written under a name the client chose.

This module assembles the app: the routes (:mod:`catdog.serve.routes`, :mod:`catdog.serve.app_routes`),
the limits and trailing-slash middleware (:mod:`catdog.serve.limits`, :mod:`catdog.serve.paths`), the model's
state (:mod:`catdog.serve.state`), the error handlers and the page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
from collections.abc import Iterable
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from catdog import __version__, webapp
from catdog.serve import app_routes
from catdog.serve.batcher import ModelFailedError
from catdog.serve.limits import BodyTooLargeError, LimitsMiddleware, ServerBusyError, busy_response, error_response
from catdog.serve.metrics import MetricsMiddleware
from catdog.serve.paths import ApiTrailingSlashMiddleware, is_asterisk_form, not_found, register_names, route_path
from catdog.serve.protocol import COUNT_ANSWER
from catdog.serve.routes import router
from catdog.serve.settings import SETTINGS_ENV, ApiError, ServeSettings
from catdog.serve.state import ServeState


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, __: ClientDisconnect) -> Response:
        # The client hung up mid-upload: nothing to answer, nothing to log. 499 is nginx's name for it.
        return Response(status_code=499)

    @app.exception_handler(ModelFailedError)
    async def model_failed(_: Request, err: ModelFailedError) -> JSONResponse:
        return error_response(500, str(err))  # the batcher logged it once, with the model's own message

    @app.exception_handler(BodyTooLargeError)
    async def too_large(_: Request, err: BodyTooLargeError) -> JSONResponse:
        return error_response(413, str(err))

    @app.exception_handler(ServerBusyError)
    async def busy(_: Request, err: ServerBusyError) -> JSONResponse:
        return busy_response(str(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        headers = getattr(err, "headers", None)
        if is_asterisk_form(request.scope):  # `*` names the whole server, for OPTIONS alone (RFC 9112, 3.2.4)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": _methods(_api_routes(request.app))})
            only = "The request target * asks what the whole server takes, for OPTIONS alone"
            return error_response(400, f"{only}; {request.method} needs a path.")
        if err.status_code == 405:  # the path exists, not for this method
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
            if request.method == "OPTIONS":  # what may be done here (RFC 9110, 9.3.7): no error
                return Response(status_code=204, headers=headers)
        if err.status_code == 404 and route_path(request.scope).startswith("/app/"):  # as the app's own errors
            headers = webapp.APP_HEADERS | (headers or {})
        message = {404: not_found(request), 405: f"Method {request.method} is not allowed here."}
        return error_response(err.status_code, message.get(err.status_code, str(err.detail)), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"Invalid request: {where}: {first.get('msg', 'invalid value')}.")


def _allowed_methods(request: Request) -> str:
    """The methods answered at the request's path, for its ``Allow`` header: OPTIONS, and those of every route there.

    Starlette's 405 names the first route's alone: "GET" at /healthz, whose HEAD is another route.
    """
    return _methods(route for route in _api_routes(request.app) if route.matches(request.scope)[0] is not Match.NONE)


def _api_routes(app: FastAPI) -> list[APIRoute]:
    # The routers' own lists: the app's holds an included router as one opaque entry (FastAPI 0.165).
    routes = (*router.routes, *app_routes.router.routes, *app.router.routes)
    return [route for route in routes if isinstance(route, APIRoute)]


def _methods(routes: Iterable[APIRoute]) -> str:
    """An ``Allow`` header's value: OPTIONS, and the methods of ``routes``."""
    return ", ".join(sorted({"OPTIONS"}.union(*(route.methods for route in routes))))


# The multipart parser logs a warning, then raises what the client is told in a 400: no line for the log.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

PAGE_HEADERS = {
    # The page is self-contained: scripts and styles inline, images from blob: URLs, the API on this origin.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# Swagger UI for /docs, copied out of npm at build time (web/build_app.py): served from here, not a CDN, so
# the API's page works offline like the rest of catdog.
DOCS_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
register_names("docs_file", DOCS_FILES)


def _docs_page() -> HTMLResponse:
    """/docs: Swagger UI from this server, under a Content-Security-Policy like the page's.

    Its one inline script (FastAPI's call to SwaggerUIBundle) is allowed by its hash, not by 'unsafe-inline':
    nothing else inline runs. Swagger UI shows its icons as data: URLs and a response image ("Try it out" on
    /api/v1/explain) from a blob: URL, and "Try it out" fetches from this origin; its styles come from
    swagger-ui.css (what it sets inline goes through the DOM, which the policy allows).
    """
    # Relative URLs, as on the page: behind a proxy that serves catdog under /prefix/ they stay under it.
    html = get_swagger_ui_html(
        openapi_url="openapi.json",
        title="catdog API",
        swagger_js_url="docs/swagger-ui-bundle.js",
        swagger_css_url="docs/swagger-ui.css",
        swagger_favicon_url="app/icon.svg",
    ).body
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in re.findall(rb"<script>(.*?)</script>", html, re.DOTALL)
    )
    csp = (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'"
    )
    return HTMLResponse(html, headers=PAGE_HEADERS | {"Content-Security-Policy": csp})


def _page() -> str:
    return (resources.files("catdog.serve") / "static" / "index.html").read_text(encoding="utf-8")


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app; the model loads in the background once the server starts."""
    settings = settings or ServeSettings()
    state = ServeState(settings)
    page = _page()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        loading = asyncio.create_task(state.load())
        trimming = asyncio.create_task(state.trim_memory())
        try:
            # uvicorn hands this state to catdog's protocol too, which counts the answers it gives without the app.
            yield {COUNT_ANSWER: state.metrics.count_unrouted}
        finally:
            loading.cancel()
            trimming.cancel()
            await state.close()

    app = FastAPI(
        title="catdog",
        version=__version__,
        summary="Cats, dogs or neither: classify photos over HTTP.",
        lifespan=lifespan,
        docs_url=None,  # below, with Swagger UI from this server
        openapi_url=None,  # below too: a route of FastAPI's own, so that /metrics counts it under its path
    )
    app.state.serve = state
    app.include_router(router)
    app.include_router(app_routes.router)  # /app: the phone app (catdog.webapp)
    _install_error_handlers(app)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.api_route("/openapi.json", methods=["GET", "HEAD"], include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        schema = app.openapi()
        # Behind a proxy under --root-path, "Try it out" must send there (FastAPI's own route says so too).
        root = request.scope.get("root_path", "").rstrip("/")
        return JSONResponse({**schema, "servers": [{"url": root}]} if root else schema)

    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs() -> HTMLResponse:
        return _docs_page()

    @app.api_route("/docs/{name:docs_file}", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_file(request: Request, name: str) -> Response:
        path = resources.files("catdog.serve") / "static" / "docs" / name
        if not path.is_file():  # not copied in at build time (web/build_app.py)
            return error_response(404, not_found(request))
        return app_routes.FileAnswer(str(path), media_type=DOCS_FILES[name])

    app.add_middleware(LimitsMiddleware, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=_api_routes(app))  # every route added by now
    app.add_middleware(ApiTrailingSlashMiddleware)  # outside the limits and metrics: they see the path routed
    if settings.cors_origins:
        # Pages of these sites may read the answers (without it, only this server's own pages can). Outermost, so
        # that every answer carries the headers, the limits' 413 and 503 too: a page reads their sentence. Without
        # cookies: the API has none. A public site's page calling a server on the LAN is asked about first by
        # Chrome (Private Network Access): the sites named may.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_private_network=True,
            expose_headers=["Retry-After", "X-Explained"],
        )
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings come from ``$CATDOG_SERVE_SETTINGS``."""
    text = os.environ.get(SETTINGS_ENV)
    return create_app(ServeSettings.from_json(text) if text else None)
