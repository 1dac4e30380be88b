"""Limits enforced before a request reaches its handler: body size, upload and work slots, timeout, connections."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catdog.images import tenths_up
from catdog.serve.paths import route_path
from catdog.serve.protocol import OVER_LIMIT
from catdog.serve.settings import ServeSettings


class BodyTooLargeError(Exception):
    """Raised while streaming a body without Content-Length past the limit; answered with 413."""


class ServerBusyError(Exception):
    """Raised when a body has arrived but every work slot is taken; answered with 503."""


class LimitsMiddleware:
    """413 for bodies over the limit (from Content-Length, or while streaming); 503 over the upload or work limit.

    A request holds an upload slot while its body arrives and a work slot once it has arrived, so
    clients that trickle their uploads use memory (bounded: uploads x body limit) but never the
    slots of the requests the model is working on.
    """

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings
        self.uploading = 0
        self.working = 0

    def files(self, path: str) -> int:
        return self.settings.max_files if path.endswith("/batch") else 1

    def body_limit(self, path: str) -> int:
        files = self.files(path)
        return self.settings.max_file_bytes * files + 64 * 1024 * files  # room for multipart headers

    def too_large(self, path: str, size: int | None = None) -> str:
        files, mb = self.files(path), self.settings.max_file_bytes / 1e6
        what = f"the {mb:g} MB limit for one photo" if files == 1 else f"the limit of {files} photos of {mb:g} MB"
        return f"The upload is {tenths_up(size)} MB, over {what}." if size else f"The upload is over {what}."

    def busy(self, what: str, limit: int) -> str:
        return f"The server is busy (its limit of {limit} {what} at once is reached); try again shortly."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and OVER_LIMIT in scope.get("extensions", {}):  # --max-connections, on any path
            message = self.busy("connections", scope["extensions"][OVER_LIMIT]["connections"])
            # The connection is closed after the answer, as uvicorn closed it: this one is beyond the limit.
            await busy_response(message, {"Connection": "close"})(scope, receive, send)
            return
        if scope["type"] != "http" or not route_path(scope).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        limit = self.body_limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            await error_response(413, self.too_large(scope["path"], int(declared)))(scope, receive, send)
            return
        if self.uploading >= self.settings.max_uploads:
            await busy_response(self.busy("uploads", self.settings.max_uploads))(scope, receive, send)
            return
        received, slot = 0, "upload"

        async def counted_receive():
            nonlocal received, slot
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLargeError(self.too_large(scope["path"]))
            if slot == "upload" and message["type"] == "http.request" and not message.get("more_body", False):
                self.uploading -= 1  # the body is here: from upload slot to work slot
                slot = None
                if self.working >= self.settings.max_concurrent:
                    raise ServerBusyError(self.busy("requests in work", self.settings.max_concurrent))
                self.working += 1
                slot = "work"
            return message

        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.uploading += 1
        try:
            # The whole request, upload included, is bounded: a slow client cannot hold a slot forever.
            await asyncio.wait_for(self.app(scope, counted_receive, tracked_send), self.settings.timeout)
        except asyncio.TimeoutError:
            if not started:
                message = (
                    f"The request took longer than {self.settings.timeout:g} s; try again when the server is less busy."
                )
                await error_response(503, message, {"Retry-After": "5"})(scope, receive, send)
        finally:
            if slot == "upload":
                self.uploading -= 1
            elif slot == "work":
                self.working -= 1


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def busy_response(message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """503 for a limit of slots or connections reached: the client may retry in a second."""
    return error_response(503, message, {"Retry-After": "1"} | (headers or {}))
