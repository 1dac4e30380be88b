"""The web service: the page at ``/`` and the JSON API under ``/api/v1`` (OpenAPI at ``/docs``).

Every photo goes the same way as in ``catdog predict``: :func:`catdog.preprocess.to_uint8` (via
:meth:`Predictor._square`) in a thread pool, then :class:`MicroBatcher` → one forward pass →
:meth:`Predictor.to_predictions`. Uploads stay in memory (or in Starlette's anonymous spool
files); nothing a client sends is written under a name the client chose.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catdog import __version__
from catdog.images import ImageError, ImageTooLargeError, NotAnImageError, UnsupportedFormatError
from catdog.inference.predictor import Prediction, Predictor, _name_in_error
from catdog.preprocess import stack_uint8
from catdog.serve import app_routes
from catdog.serve.batcher import MicroBatcher, ModelFailedError
from catdog.serve.metrics import MetricsMiddleware, ServeMetrics

log = logging.getLogger("catdog.serve")


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()

SETTINGS_ENV = "CATDOG_SERVE_SETTINGS"  # JSON settings for worker processes (``--workers N``)


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``catdog serve`` can configure about the app (host and port belong to uvicorn)."""

    model: str | None = None  # None: the built-in model
    max_file_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    max_files: int = 32  # files in one batch request
    max_concurrent: int = 64  # API requests being worked on (body received) at once; more get 503
    max_uploads: int = 128  # API requests still receiving their body at once; more get 503
    timeout: float = 30.0  # seconds for one API request
    max_batch: int = 32  # images in one forward pass
    max_wait_ms: float = 5.0  # how long a forward pass waits for more images
    decode_threads: int = 0  # 0: one per CPU core
    threshold: float | None = None  # answer "unsure" below this confidence
    neither_threshold: float | None = None  # answer "neither" below this P(cat or dog) (default: the model's)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


class ApiError(Exception):
    """A client-facing failure: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class PredictionOut(BaseModel):
    """The Prediction contract (DESIGN.md); an unusable photo in a batch has ``error`` instead."""

    filename: str
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None


class ErrorOut(BaseModel):
    error: str


def image_error_status(err: ImageError) -> int:
    """415 for content that is not a usable image format, 413 over a limit, 400 for damaged images."""
    if isinstance(err, ImageTooLargeError):
        return 413
    if isinstance(err, (NotAnImageError, UnsupportedFormatError)):
        return 415
    return 400


class ServeState:
    """The model, the micro-batcher and the thread pools of one running app."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self.model_info: dict[str, Any] = {}
        self._answered = 0  # photos answered or refused, so the trimmer knows when memory was freed
        self.decode_pool = ThreadPoolExecutor(
            max_workers=settings.decode_threads or os.cpu_count() or 1, thread_name_prefix="catdog-decode"
        )

    async def load(self) -> None:
        """Load the model in a thread (the server answers /healthz and /readyz meanwhile)."""
        try:
            predictor = await asyncio.to_thread(self._load_and_warm_up)
        except Exception as err:  # reported by /readyz and every API call; the server stays up
            self.load_error = str(err) or type(err).__name__
            log.error("The model could not be loaded: %s", self.load_error)
            return
        self.model_info = describe_model(predictor)
        self.metrics.model.info({k: str(self.model_info[k]) for k in ("name", "architecture", "version")})
        self.batcher = MicroBatcher(
            predictor,
            max_batch=self.settings.max_batch,
            max_wait=self.settings.max_wait_ms / 1000,
            on_batch=self.metrics.observe_batch,
        )
        self.batcher.start()
        self.predictor = predictor
        self.metrics.ready.set(1)
        log.info("Model '%s' loaded; ready.", predictor.name)

    def _load_and_warm_up(self) -> Predictor:
        predictor = Predictor.load(
            self.settings.model,
            threshold=self.settings.threshold,
            neither_threshold=self.settings.neither_threshold,
            max_pixels=self.settings.max_pixels,
        )
        # One forward pass now, so that the first request does not pay for lazy initialisation.
        side = predictor.pre.resize_size
        predictor.forward_uint8(stack_uint8([np.zeros((side, side, 3), np.uint8)]))
        return predictor

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> tuple[Predictor, MicroBatcher]:
        if self.load_error is not None:
            raise ApiError(503, f"The model could not be loaded: {self.load_error}")
        if self.predictor is None or self.batcher is None:
            raise ApiError(503, "The model is still loading; try again in a few seconds.", {"Retry-After": "2"})
        return self.predictor, self.batcher

    async def classify(self, name: str, data: bytes) -> Prediction:
        """One photo → Prediction; raises :class:`ImageError` (message naming ``name``) for unusable input."""
        predictor, batcher = self.ready()
        if len(data) > self.settings.max_file_bytes:
            raise ImageTooLargeError(
                f"'{name}' is {len(data) / 1e6:.1f} MB, over the {self.settings.max_file_bytes / 1e6:g} MB limit "
                "for one photo."
            )
        batcher.expect()
        try:
            try:
                square = await asyncio.get_running_loop().run_in_executor(self.decode_pool, predictor._square, data)
            except BaseException as err:
                batcher.unexpect()
                if isinstance(err, ImageError):
                    raise type(err)(_name_in_error(str(err), name)) from None
                raise
            return await batcher.predict(square, name, expected=True)
        finally:
            self._answered += 1

    async def trim_memory(self, period: float = 1.0) -> None:
        """Hand freed memory back to the OS once a second while photos come in, and once after the last.

        Decode and inference threads free large temporary buffers into glibc's per-thread arenas,
        which keep them: without the trim the server's RSS creeps up by tens of MiB per few hundred
        odd-sized uploads. Trimming here rather than after each photo means the buffers that the
        last batch freed are trimmed too, and a busy server trims at most once a period.
        """
        if _MALLOC_TRIM is None:
            return
        trimmed_at = 0
        while True:
            await asyncio.sleep(period)
            if self._answered != trimmed_at:
                trimmed_at = self._answered
                await asyncio.to_thread(_MALLOC_TRIM, 0)


def describe_model(predictor: Predictor) -> dict[str, Any]:
    """What ``GET /api/v1/model`` answers: classes, architecture, metrics, version."""
    info = predictor.info
    digest = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:12]
    labels = predictor.answers
    if predictor.threshold is not None:
        labels.append("unsure")
    return {
        "name": predictor.name if predictor.name == "builtin" else os.path.basename(os.path.normpath(predictor.name)),
        "classes": list(predictor.classes),
        "labels": labels,
        "architecture": info.get("architecture", "unknown"),
        "backend": info.get("backend", "torch"),
        "image_size": predictor.pre.image_size,
        "neither_threshold": predictor.gate_threshold,
        "metrics": info.get("metrics", {}),
        "version": str(info.get("version") or digest),
        "catdog_version": __version__,
    }


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _clean_name(name: str | None, default: str) -> str:
    """The client's file name, only ever echoed back (never used as a path)."""
    name = os.path.basename((name or "").replace("\\", "/")).strip()
    return name[:200] or default


@asynccontextmanager
async def _form(request: Request, max_files: int):
    try:
        async with request.form(max_files=max_files, max_fields=max_files + 8) as form:
            yield form
    except StarletteHTTPException as err:
        if str(err.detail).startswith("Too many files"):
            raise ApiError(413, f"Too many files: send at most {max_files} photos in one request.") from None
        raise ApiError(400, f"The multipart body cannot be read: {err.detail}") from None


def _uploads(form, fields: tuple[str, ...]) -> list[UploadFile]:
    return [value for field in fields for value in form.getlist(field) if isinstance(value, UploadFile)]


async def read_one_image(request: Request) -> tuple[str, bytes]:
    """A multipart field ``file``, or the raw body (any non-form content type; the content decides)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with _form(request, max_files=1) as form:
            uploads = _uploads(form, ("file",))
            if not uploads:
                raise ApiError(422, "No photo: send it as the multipart file field 'file' or as a raw image/* body.")
            return _clean_name(uploads[0].filename, "upload"), await uploads[0].read()
    data = await request.body()
    if not data:
        raise ApiError(422, "No photo: the request body is empty; send an image/* body or a multipart field 'file'.")
    return "upload", data


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
ERRORS = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "Damaged image or unreadable request.",
        413: "Over a limit: bytes per photo, megapixels, photos per batch.",
        415: "Not an image, or an unsupported format.",
        422: "No photo in the request.",
        500: "The model failed on a photo (a fault of the server; its log has the details).",
        503: "The model is still loading, the server is busy, or the request timed out.",
    }.items()
}

router = APIRouter()


@router.post("/api/v1/predict", response_model=None, responses={200: {"model": PredictionOut}, **ERRORS},
             openapi_extra=IMAGE_BODY)  # fmt: skip
async def predict(request: Request) -> JSONResponse:
    """Classify one photo: cat, dog or neither, with calibrated probabilities."""
    state = _state(request)
    state.ready()  # 503 before reading a large body when the model is not there
    name, data = await read_one_image(request)
    try:
        prediction = await state.classify(name, data)
    except ImageError as err:
        state.metrics.predictions.labels("error").inc()
        raise ApiError(image_error_status(err), str(err)) from None
    state.metrics.predictions.labels(prediction.label or "").inc()
    return JSONResponse(prediction.to_dict())


BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["files"],
                }
            }
        },
    }
}


@router.post("/api/v1/predict/batch", response_model=None, responses={200: {"model": list[PredictionOut]}, **ERRORS},
             openapi_extra=BATCH_BODY)  # fmt: skip
async def predict_batch(request: Request) -> JSONResponse:
    """Classify several photos (multipart fields ``files``); an unusable photo gets an ``error`` entry."""
    state = _state(request)
    state.ready()
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "Send the photos as multipart/form-data file fields named 'files'.")
    async with _form(request, max_files=state.settings.max_files) as form:
        uploads = _uploads(form, ("files", "file"))
        if not uploads:
            raise ApiError(422, "No photos: send them as multipart file fields named 'files'.")
        items = [(_clean_name(u.filename, f"upload-{i + 1}"), await u.read()) for i, u in enumerate(uploads)]

    async def one(name: str, data: bytes) -> Prediction:
        try:
            return await state.classify(name, data)
        except ImageError as err:
            return Prediction(source=name, error=str(err), source_key="filename")

    results = await asyncio.gather(*(one(name, data) for name, data in items))
    for r in results:
        state.metrics.predictions.labels(r.label if r.ok else "error").inc()
    return JSONResponse([r.to_dict() for r in results])


@router.post("/api/v1/explain", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "The Grad-CAM heat map over the photo."},
    501: {"model": ErrorOut, "description": "Heat maps need a PyTorch model (not a bare ONNX file)."}, **ERRORS},
    openapi_extra=IMAGE_BODY)  # fmt: skip
async def explain(request: Request) -> Response:
    """A Grad-CAM heat map (PNG) showing which parts of the photo drove the answer."""
    state = _state(request)
    predictor, _ = state.ready()
    name, data = await read_one_image(request)
    if len(data) > state.settings.max_file_bytes:
        raise ApiError(413, f"'{name}' is over the {state.settings.max_file_bytes / 1e6:g} MB limit for one photo.")
    from catdog.errors import ModelError
    from catdog.explain import explain_png

    try:
        # Grad-CAM needs gradients of the torch module: run it in the decode pool, off the event loop.
        png = await asyncio.get_running_loop().run_in_executor(state.decode_pool, explain_png, predictor, data)
    except ImageError as err:
        raise ApiError(image_error_status(err), _name_in_error(str(err), name)) from None
    except ModelError as err:  # a bare .onnx file has no torch model to take gradients of
        raise ApiError(501, str(err)) from None
    return Response(png, media_type="image/png")


@router.get("/api/v1/model")
async def model_info(request: Request) -> dict:
    """The model being served: classes, labels it can answer, architecture, metrics, version."""
    state = _state(request)
    state.ready()
    limits = {
        "max_file_bytes": state.settings.max_file_bytes,
        "max_pixels": state.settings.max_pixels,
        "max_files": state.settings.max_files,
    }
    return {**state.model_info, "limits": limits}


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorOut}})
async def readyz(request: Request) -> dict:
    """Readiness: 200 once the model is loaded, 503 before (or when it failed to load)."""
    _state(request).ready()
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- limits, enforced before a request reaches its handler -------------------------------------


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
        return self.settings.max_files if path.rstrip("/").endswith("/batch") else 1

    def body_limit(self, path: str) -> int:
        files = self.files(path)
        return self.settings.max_file_bytes * files + 64 * 1024 * files  # room for multipart headers

    def too_large(self, path: str, size: int | None = None) -> str:
        files, mb = self.files(path), self.settings.max_file_bytes / 1e6
        what = f"the {mb:g} MB limit for one photo" if files == 1 else f"the limit of {files} photos of {mb:g} MB"
        return f"The upload is {size / 1e6:.1f} MB, over {what}." if size else f"The upload is over {what}."

    def busy(self, what: str, limit: int) -> str:
        return f"The server is busy (its limit of {limit} {what} at once is reached); try again shortly."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        limit = self.body_limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            await _error(413, self.too_large(scope["path"], int(declared)))(scope, receive, send)
            return
        if self.uploading >= self.settings.max_uploads:
            await _busy(self.busy("uploads", self.settings.max_uploads))(scope, receive, send)
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
                await _error(503, message, {"Retry-After": "5"})(scope, receive, send)
        finally:
            if slot == "upload":
                self.uploading -= 1
            elif slot == "work":
                self.working -= 1


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _busy(message: str) -> JSONResponse:
    """503 for a limit of slots reached: the client may retry in a second."""
    return _error(503, message, {"Retry-After": "1"})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, __: ClientDisconnect) -> Response:
        # The client hung up mid-upload: nothing to answer, nothing to log. 499 is nginx's name for it.
        return Response(status_code=499)

    @app.exception_handler(ModelFailedError)
    async def model_failed(_: Request, err: ModelFailedError) -> JSONResponse:
        return _error(500, str(err))  # the batcher logged it once, with the model's own message

    @app.exception_handler(BodyTooLargeError)
    async def too_large(_: Request, err: BodyTooLargeError) -> JSONResponse:
        return _error(413, str(err))

    @app.exception_handler(ServerBusyError)
    async def busy(_: Request, err: ServerBusyError) -> JSONResponse:
        return _busy(str(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = {404: f"Not found: {request.url.path}", 405: f"Method {request.method} is not allowed here."}
        return _error(err.status_code, message.get(err.status_code, str(err.detail)), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"Invalid request: {where}: {first.get('msg', 'invalid value')}.")


# -- the page -----------------------------------------------------------------------------

PAGE_HEADERS = {
    # The page is self-contained: scripts and styles inline, images from blob: URLs, the API on this origin.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


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
            yield
        finally:
            loading.cancel()
            trimming.cancel()
            await state.close()

    app = FastAPI(
        title="catdog",
        version=__version__,
        summary="Cats, dogs or neither: classify photos over HTTP.",
        lifespan=lifespan,
    )
    app.state.serve = state
    app.include_router(router)
    app.include_router(app_routes.router)  # /app: the phone app (catdog.webapp)
    _install_error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.add_middleware(LimitsMiddleware, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings come from ``$CATDOG_SERVE_SETTINGS``."""
    text = os.environ.get(SETTINGS_ENV)
    return create_app(ServeSettings.from_json(text) if text else None)
