"""The path a request is routed by: without ``--root-path``'s prefix, and an API path without its trailing
slashes."""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.convertors import StringConvertor, register_url_convertor
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

# The scope's key for the path as the client sent it, when ApiTrailingSlashMiddleware took its slashes off.
_ASKED_PATH = "catdog.asked_path"


def route_path(scope: Scope) -> str:
    """The path the routes match: under ``--root-path /prefix`` uvicorn puts the prefix in front of every path
    (``/prefix/api/v1/predict``), and the router takes it off again, as this does; the limits once let those by.

    Starlette's router uses ``get_route_path`` for this, but it lives in ``starlette._utils``, a private module
    that is documented nowhere and may change in any release: catdog keeps its own two lines."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def is_asterisk_form(scope: Scope) -> bool:
    """A request target of ``*`` (``OPTIONS *``, RFC 9110, 9.3.7): uvicorn hands it on as the path, after
    ``--root-path``'s prefix."""
    return scope["path"] == scope.get("root_path", "") + "*"


def register_names(kind: str, names: Iterable[str]) -> None:
    """A path convertor ``{name:kind}`` that matches only ``names``: a route for a fixed set of files matches no
    other name, so GET, HEAD and OPTIONS on a file that is not there are the router's 404 alike (a route that
    matched any name answered OPTIONS with a 204 where GET said 404)."""

    class OneOf(StringConvertor):
        regex = "|".join(re.escape(name) for name in names)

    register_url_convertor(kind, OneOf())


def asked_path(request: Request) -> str:
    """The path the client asked for, trailing slashes and all (``request.url.path`` is the one routed)."""
    return request.scope.get(_ASKED_PATH, request.url.path)


def not_found(request: Request) -> str:
    """The 404's sentence, for any path catdog serve has nothing at: the path as asked, ``--root-path`` included
    (a route's own ``/app/{name}`` would leave out the prefix the client asked under)."""
    return f"Nothing is served at {asked_path(request)}."


class ApiTrailingSlashMiddleware:
    """``/api/v1/predict/`` is answered as ``/api/v1/predict``: the router's 307 to the path without the slash made
    ``curl -X POST --data-binary @cat.jpg .../predict/`` print nothing (curl does not follow a POST's redirect). One
    path per operation stays in the OpenAPI document."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if path.startswith("/api/") and path.endswith("/"):
            # All of them: "//" would get the 307 again. A 404 names the path as asked (asked_path).
            scope = {**scope, "path": scope["path"].rstrip("/"), _ASKED_PATH: scope["path"]}
        await self.app(scope, receive, send)
