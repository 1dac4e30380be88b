"""``/app``: the phone app (see :mod:`catdog.webapp`), served with the model ``catdog serve`` runs.

Every answer carries cross-origin isolation headers (COOP/COEP), so the browser gives the app
WebAssembly threads. The model file and ``model.json`` come from the served model; the rest are the
package's files.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.responses import MalformedRangeHeader

from catdog import webapp
from catdog.errors import CatdogError
from catdog.fsutil import printable
from catdog.serve.paths import register_names
from catdog.serve.settings import ApiError
from catdog.serve.state import MODEL_FAILED_TO_LOAD

router = APIRouter(include_in_schema=False)
register_names("app_file", webapp.APP_FILES)
register_names("vendor_file", webapp.VENDOR_FILES)
log = logging.getLogger("catdog.serve")


class _AppState:
    """The served model's ONNX file, model.json and service worker, computed once."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.config: dict | None = None
        self.model_path: Path | None = None
        self.sw: str | None = None
        self.said_not_built = False  # the log names the missing files once


def _app_state(request: Request) -> _AppState:
    app_state = getattr(request.app.state, "phone_app", None)
    if app_state is None:
        app_state = request.app.state.phone_app = _AppState()
    return app_state


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status, headers=webapp.APP_HEADERS)  # compact, as every error


def _not_built(request: Request, err: webapp.AppNotBuiltError) -> Response:
    """503 in a sentence that names no folder of this machine; the log names it, once."""
    app_state = _app_state(request)
    if not app_state.said_not_built:
        app_state.said_not_built = True
        log.warning("%s", printable(str(err)))
    return _error(503, err.public)


async def _model(request: Request) -> _AppState:
    """The model's file and model.json; raises the serve app's ApiError (503) while the model loads."""
    app_state = _app_state(request)
    if app_state.config is not None:
        return app_state
    serve = request.app.state.serve
    predictor, _ = serve.ready()
    async with app_state.lock:
        if app_state.config is None:

            def compute() -> tuple[Path, dict, str | None]:
                try:
                    path = webapp.model_file(serve.settings.model)
                except CatdogError as err:  # its .onnx file moved or deleted since it loaded: a 500 and a traceback
                    log.error("The app's model file is gone: %s", printable(str(err)))  # the path: for the log alone
                    raise ApiError(500, MODEL_FAILED_TO_LOAD) from None
                config = webapp.app_config(predictor, path)
                try:
                    return path, config, webapp.service_worker(config)
                except webapp.AppNotBuiltError:
                    return path, config, None  # /app/sw.js says what is missing

            app_state.model_path, config, app_state.sw = await asyncio.to_thread(compute)
            app_state.config = config
    return app_state


class FileAnswer(FileResponse):
    """A file, whose Range header is ignored where it cannot be used (RFC 9110, 14.2: a unit other than bytes must
    be, an invalid range may be): Starlette answered both with a 400 in plain text ("Only support bytes range"),
    outside the API's JSON shape. A range beyond the file's end is still its 416."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        # Starlette's hook (FileResponse.__call__ calls it); no ranges is its answer for the whole file.
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


# The service worker keeps the copies; revalidate when online.
_FILE_HEADERS = webapp.APP_HEADERS | {"Cache-Control": "no-cache"}


def _file(path: Path) -> Response:
    media_type = webapp.MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileAnswer(path, media_type=media_type, headers=_FILE_HEADERS)


def _app_file(request: Request, name: str) -> Response:
    """One of the app's own files; the page and the manifest name the served model's answers once it is loaded
    (while it loads, the package's words: the service worker caches the files after the model is ready)."""
    if name not in webapp.WORDED_FILES:
        return _file(webapp.app_dir() / name)
    predictor = request.app.state.serve.predictor
    answers = None if predictor is None else predictor.answers
    media_type = webapp.MEDIA_TYPES[Path(name).suffix]
    return Response(webapp.app_file_bytes(name, answers), media_type=media_type, headers=_FILE_HEADERS)


# HEAD on every path of the app, as on the page and the API: a link checker that probes with it got 405s.
@router.api_route("/app", methods=["GET", "HEAD"])
async def app_redirect(request: Request) -> Response:
    """``/app`` → ``/app/``, the app's scope; the query goes along (``/app?backend=wasm`` lost it). Relative, so
    that behind a proxy ``/prefix/app`` goes to ``/prefix/app/`` (not to ``/app/``, outside it)."""
    query = request.url.query
    return RedirectResponse("app/" + (f"?{query}" if query else ""), status_code=308)


@router.api_route("/app/", methods=["GET", "HEAD"])
async def app_page(request: Request) -> Response:
    try:
        webapp.runtime_dir()
    except webapp.AppNotBuiltError as err:
        return _not_built(request, err)
    return _app_file(request, "index.html")


@router.api_route("/app/model.json", methods=["GET", "HEAD"])
async def app_model_config(request: Request) -> Response:
    app_state = await _model(request)
    return Response(json.dumps(app_state.config), media_type="application/json", headers=webapp.APP_HEADERS)


@router.api_route("/app/model.onnx", methods=["GET", "HEAD"])
async def app_model_file(request: Request) -> Response:
    app_state = await _model(request)
    if not app_state.model_path.exists():  # the cache was cleared under the server (catdog cache --clear)
        async with app_state.lock:
            app_state.config = None
        app_state = await _model(request)  # exported again
    return _file(app_state.model_path)


@router.api_route("/app/sw.js", methods=["GET", "HEAD"])
async def app_service_worker(request: Request) -> Response:
    app_state = await _model(request)
    if app_state.sw is None:
        try:
            webapp.runtime_dir()
        except webapp.AppNotBuiltError as err:
            return _not_built(request, err)
        app_state.sw = await asyncio.to_thread(webapp.service_worker, app_state.config)
    headers = dict(webapp.APP_HEADERS) | {"Cache-Control": "no-cache"}
    return Response(app_state.sw, media_type="text/javascript; charset=utf-8", headers=headers)


@router.api_route("/app/{name:app_file}", methods=["GET", "HEAD"])
async def app_file(request: Request, name: str) -> Response:
    return _app_file(request, name)


@router.api_route("/app/vendor/{name:vendor_file}", methods=["GET", "HEAD"])
async def app_runtime_file(request: Request, name: str) -> Response:
    try:
        return _file(webapp.runtime_dir() / name)
    except webapp.AppNotBuiltError as err:
        return _not_built(request, err)
