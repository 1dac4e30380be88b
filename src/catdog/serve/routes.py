"""The JSON API under ``/api/v1``, and ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from catdog import __version__
from catdog.fsutil import counted, first_few, listed, printable
from catdog.images import ImageError, ImageTooLargeError, NotAnImageError, UnsupportedFormatError, with_name
from catdog.inference.outputs import LOOKS_LIKE_FLOOR
from catdog.inference.predictor import Prediction
from catdog.serve.settings import ApiError, ServeSettings
from catdog.serve.state import MODEL_FAILED_TO_LOAD, MODEL_LOADING, ServeState, limits, photo_too_large


class PredictionOut(BaseModel):
    """The Prediction contract (DESIGN.md); an unusable photo in a batch has ``error`` instead."""

    filename: str = Field(description="The uploaded file's name; `upload` for a raw body.")
    label: str | None = Field(
        None, description="`cat`, `dog` or `neither` (a model of other classes: its own); `unsure` under --threshold."
    )
    confidence: float | None = Field(None, description="The label's probability.")
    probabilities: dict[str, float] | None = Field(
        None, description="The model's classes (and `neither`, for a model with a gate), summing to 1."
    )
    looks_like: str | None = Field(
        None,
        description=(
            "On a `neither` answer: the ImageNet class the photo looks most like, e.g. `sorrel`; absent where the "
            f"backbone gives it an ImageNet probability under {LOOKS_LIKE_FLOOR} (too weak to name)."
        ),
    )
    looks_like_means: str | None = Field(None, description="What `looks_like` is (WordNet's definition).")
    error: str | None = Field(None, description="Instead of an answer, for an unusable photo in a batch: why.")


class ErrorOut(BaseModel):
    error: str


def image_error_status(err: ImageError) -> int:
    """415 for content that is not a usable image format, 413 over a limit, 400 for damaged images."""
    if isinstance(err, ImageTooLargeError):
        return 413
    if isinstance(err, (NotAnImageError, UnsupportedFormatError)):
        return 415
    return 400


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _clean_name(name: str | None, default: str) -> str:
    """The client's file name, only ever echoed back (never used as a path)."""
    name = os.path.basename((name or "").replace("\\", "/")).strip()
    return name[:200] or default


@asynccontextmanager
async def _form(request: Request, max_files: int, one_photo: bool = False):
    """The multipart form, at most ``max_files`` files; ``one_photo``: a route that takes one (not a batch)."""
    try:
        async with request.form(max_files=max_files, max_fields=max_files + 8) as form:
            yield form
    except StarletteHTTPException as err:
        if str(err.detail).startswith("Too many files") and one_photo:
            batch = ": send several to /api/v1/predict/batch instead" if request.url.path.endswith("/predict") else ""
            raise ApiError(413, f"{request.url.path} takes one photo{batch}.") from None
        if str(err.detail).startswith("Too many files"):
            raise ApiError(413, too_many_files(max_files)) from None
        raise ApiError(400, f"The multipart body cannot be read: {err.detail}") from None


def too_many_files(max_files: int) -> str:
    return f"Too many files: send at most {counted(max_files, 'photo')} in one request (--max-files)."


def _uploads(form, fields: tuple[str, ...]) -> list[UploadFile]:
    """The file fields named ``fields``, in the order sent (``files`` and ``file`` mixed in one batch too)."""
    return [value for field, value in form.multi_items() if field in fields and isinstance(value, UploadFile)]


NO_PHOTO = "No photo: send it as the multipart file field 'file' or as a raw image/* body."
NO_PHOTOS = "No photos: send them as multipart file fields named 'files'."
# How to send photos, said to a body of the wrong kind (after "The API reads no JSON ...: " to a JSON one).
SEND_A_PHOTO = "send the photo as the multipart file field 'file' or as the raw body."
SEND_PHOTOS = "send the photos as multipart/form-data file fields named 'files'."
NOT_MULTIPART = SEND_PHOTOS[0].upper() + SEND_PHOTOS[1:]  # not .capitalize(): it lowercases the rest ("JSON")


def _no_photo(form, fields: tuple[str, ...], sentence: str) -> ApiError:
    """The 422 for a form without a photo under ``fields``: ``sentence``, and in it what the form held instead (one
    sentence: "... body. 'file' came as ..." was two). A text field under the name is curl's usual slip
    (``-F file=photo.jpg``, without the @ that sends the file)."""
    texts = [field for field, value in form.multi_items() if field in fields and not isinstance(value, UploadFile)]
    others = sorted({field[:40] for field, value in form.multi_items() if isinstance(value, UploadFile)})
    if texts:
        held = f"'{texts[0]}' came as a text field (with curl, -F {texts[0]}=@photo.jpg: the @ sends the file)"
    elif others:  # every one counted; in catdog's quotes, control characters escaped (repr's quotes vary)
        names = [f"'{printable(name)}'" for name in others]
        held = f"the form's file fields are named {listed(first_few(names, 5))}"
    else:
        return ApiError(422, sentence)
    return ApiError(422, f"{sentence.removesuffix('.')}; {held}.")


# A url-encoded body is read as the photo: curl --data-binary @photo.jpg sends one so, intact, without -H. curl -d's has
# lost the photo's line breaks, which only its decoding shows ("header is damaged"): that refusal says how to send it.
FORM_BODY_HINT = (
    " A url-encoded body loses a photo's line breaks when sent with curl -d: send it with curl -F file=@photo.jpg, or"
    " curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg'."
)


def _media_type(request: Request) -> str:
    """The body's media type, in lower case: ``Multipart/Form-Data`` is ``multipart/form-data`` (RFC 9110, 8.3.1)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _refuse_json(request: Request, send: str) -> None:
    """A JSON body is never a photo, whatever it holds: said before decoding, where it was "'upload' is not an image:
    its content is TEXT.", which did not say what to send, and the batch's "Send the photos as ...", which did not
    say why. ``send``: how to send them instead."""
    if _media_type(request) == "application/json":
        raise ApiError(415, f"The API reads no JSON (it fetches no URL): {send}")


def _unreadable(request: Request, message: str) -> str:
    """``message`` (a photo that cannot be decoded), with how to send one when it came as a url-encoded body."""
    return message + FORM_BODY_HINT if _media_type(request) == "application/x-www-form-urlencoded" else message


async def read_one_image(request: Request) -> tuple[str, bytes]:
    """A multipart field ``file``, or the raw body (any content type but JSON; the content decides the format)."""
    _refuse_json(request, SEND_A_PHOTO)
    if _media_type(request) == "multipart/form-data":
        async with _form(request, max_files=1, one_photo=True) as form:
            uploads = _uploads(form, ("file",))
            if not uploads:
                raise _no_photo(form, ("file",), NO_PHOTO)
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


# Real answers of the built-in model, shown as examples by /docs (without them Swagger UI showed "string" and
# "additionalProp1" as a Prediction); tests/test_serve.py checks them against the server's own answers.
CAT_ANSWER = {
    "filename": "cat.1.jpg",
    "label": "cat",
    "confidence": 0.999769,
    "probabilities": {"cat": 0.999769, "dog": 0.000223, "neither": 8e-06},
}
NEITHER_ANSWER = {
    "filename": "inet-n02389026_sorrel.JPEG",
    "label": "neither",
    "confidence": 1.0,
    "probabilities": {"cat": 0.0, "dog": 0.0, "neither": 1.0},
    "looks_like": "sorrel",
    "looks_like_means": "a horse of a brownish orange to light brown color",
}
NOT_AN_IMAGE = "'notes.jpg' is not an image: its content is text."
EXAMPLE_ANSWERS = {
    "cat": {"summary": "A cat", "value": CAT_ANSWER},
    "neither": {"summary": "A horse: neither, and what it looks like", "value": NEITHER_ANSWER},
}
EXAMPLE_BATCHES = {
    "cat and text": {
        "summary": "A cat and a text file",
        "value": [CAT_ANSWER, {"filename": "notes.jpg", "error": NOT_AN_IMAGE}],
    }
}

DEFAULTS = ServeSettings()
# The built-in model as /api/v1/model describes it with the default limits (its figures and version of 2026-12-07;
# tests/test_serve.py compares all but the version with the server's).
BUILTIN_MODEL_INFO = {
    "name": "builtin",
    "classes": ["cat", "dog"],
    "labels": ["cat", "dog", "neither"],
    "architecture": "tf_efficientnet_lite0",
    "backend": "onnx",
    "image_size": 224,
    "neither_threshold": 0.5,
    "heat_maps": True,
    "metrics": {
        "test_images": 2246,
        "test_accuracy": 0.9866,
        "test_log_loss": 0.0421,
        "val_images": 2237,
        "val_accuracy": 0.9884,
        "val_log_loss": 0.0318,
    },
    "version": "e8cf5d82a4c7",
    "catdog_version": __version__,
    "limits": limits(DEFAULTS),
}


def refusals(statuses: dict[int, tuple[str, str]]) -> dict[int, dict]:
    """/docs' entries for a route's refusals: what each status means there, and a sentence the route answers with it
    (the server's own, built by the same code where it holds a figure)."""
    server_faults = {
        500: ("The model failed to load, or failed on a photo (a fault of the server; its log has the details).",
              MODEL_FAILED_TO_LOAD),
        503: ("The model is still loading, the server is busy, or the request timed out.", MODEL_LOADING),
    }  # fmt: skip
    return {
        code: {
            "model": ErrorOut,
            "description": description,
            "content": {"application/json": {"example": {"error": example}}},
        }
        for code, (description, example) in (statuses | server_faults).items()
    }


# One photo (/predict, /explain): the photo itself is refused; in a batch the same photo gets an error entry instead.
# The 413's photo is just over the limit: a larger one's body is refused before its photo is read ("The upload is").
PHOTO_REFUSALS = refusals({
    400: ("Damaged image or unreadable request.",
          "'cat.1.jpg' is truncated or corrupt (the file ends before its image does)."),
    413: ("Over a limit: bytes per photo, megapixels, photos per request.",
          photo_too_large(DEFAULTS, "big.jpg", DEFAULTS.max_file_bytes + 50_000)),
    415: ("Not an image, or an unsupported format; JSON as the body.", NOT_AN_IMAGE),
    422: ("No photo in the request.", NO_PHOTO),
})  # fmt: skip
BATCH_REFUSALS = refusals({
    400: ("A multipart body that cannot be read.", "The multipart body cannot be read: Missing boundary in multipart."),
    413: ("Over a limit: photos per batch, or bytes of the whole request.", too_many_files(DEFAULTS.max_files)),
    415: ("Not a multipart/form-data body.", NOT_MULTIPART),
    422: ("No photo in the request.", NO_PHOTOS),
})  # fmt: skip


router = APIRouter()


@router.post("/api/v1/predict", response_model=None, responses={
             200: {"model": PredictionOut, "content": {"application/json": {"examples": EXAMPLE_ANSWERS}}},
             **PHOTO_REFUSALS},
             openapi_extra=IMAGE_BODY)  # fmt: skip
async def predict(request: Request) -> JSONResponse:
    """Classify one photo: cat, dog or neither, with calibrated probabilities."""
    state = _state(request)
    state.ready()  # its 503 (loading) or 500 (failed to load) before reading a large body
    name, data = await read_one_image(request)
    try:
        prediction = await state.classify(name, data)
    except ImageError as err:
        state.metrics.predictions.labels("error").inc()
        raise ApiError(image_error_status(err), _unreadable(request, str(err))) from None
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


@router.post("/api/v1/predict/batch", response_model=None, responses={
             200: {"model": list[PredictionOut], "content": {"application/json": {"examples": EXAMPLE_BATCHES}}},
             **BATCH_REFUSALS},
             openapi_extra=BATCH_BODY)  # fmt: skip
async def predict_batch(request: Request) -> JSONResponse:
    """Classify several photos (multipart fields ``files``); an unusable photo gets an ``error`` entry."""
    state = _state(request)
    state.ready()
    _refuse_json(request, SEND_PHOTOS)
    if _media_type(request) != "multipart/form-data":
        raise ApiError(415, NOT_MULTIPART)
    async with _form(request, max_files=state.settings.max_files) as form:
        uploads = _uploads(form, ("files", "file"))
        if not uploads:
            raise _no_photo(form, ("files", "file"), NO_PHOTOS)

        async def one(name: str, upload: UploadFile) -> Prediction:
            try:
                return await state.classify(name, upload)  # read when its turn to decode comes
            except ImageError as err:
                return Prediction(source=name, error=str(err), source_key="filename")

        names = [_clean_name(u.filename, f"upload-{i + 1}") for i, u in enumerate(uploads)]
        # Every photo done before the form (and its spool files) closes, even when one fails unexpectedly.
        results = await asyncio.gather(
            *(one(name, u) for name, u in zip(names, uploads, strict=True)), return_exceptions=True
        )
    for r in results:
        if isinstance(r, BaseException):
            raise r
    for r in results:
        state.metrics.predictions.labels(r.label if r.ok else "error").inc()
    return JSONResponse([r.to_dict() for r in results])


@router.post("/api/v1/explain", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "The Grad-CAM heat map over the photo; the X-Explained header "
          "names what it shows: the answer's class, or for a `neither` answer what the photo looks like."},
    501: {"model": ErrorOut, "description": "Heat maps need a PyTorch model (not a bare ONNX file)."},
    **PHOTO_REFUSALS},
    openapi_extra=IMAGE_BODY)  # fmt: skip
async def explain(request: Request) -> Response:
    """A Grad-CAM heat map (PNG) showing which parts of the photo drove the answer."""
    state = _state(request)
    predictor, _ = state.ready()
    name, data = await read_one_image(request)
    if len(data) > state.settings.max_file_bytes:
        raise ApiError(413, photo_too_large(state.settings, name, len(data)))
    from catdog.errors import ModelError
    from catdog.explain import explain_png

    try:
        # Grad-CAM needs gradients of the torch module: run it in the decode pool, off the event loop.
        png, explained = await asyncio.get_running_loop().run_in_executor(
            state.decode_pool, explain_png, predictor, data
        )
    except ImageError as err:
        raise ApiError(image_error_status(err), _unreadable(request, with_name(str(err), name))) from None
    except ModelError as err:  # a bare .onnx file has no torch model to take gradients of
        raise ApiError(501, str(err)) from None
    # What the map shows: the answer's class, or for `neither` what the photo looks like (percent-encoded: a header).
    return Response(png, media_type="image/png", headers={"X-Explained": quote(explained, safe=" '-,()")})


@router.head("/api/v1/model", include_in_schema=False)  # a client checking the model is up, as /readyz answers
@router.get(
    "/api/v1/model",
    responses={
        200: {"content": {"application/json": {"example": BUILTIN_MODEL_INFO}}},
        500: {"model": ErrorOut, "description": "The model failed to load."},
        503: {"model": ErrorOut, "description": "The model is still loading."},
    },
)
async def model_info(request: Request) -> dict:
    """The model being served: classes, labels it can answer, architecture, metrics, version."""
    state = _state(request)
    state.ready()
    return {**state.model_info, "limits": limits(state.settings)}


# HEAD too: load balancers and uptime checkers often probe with it (kept out of the OpenAPI document, where
# one function under two methods is one operation id twice).
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", responses={500: {"model": ErrorOut}, 503: {"model": ErrorOut}})
async def readyz(request: Request) -> dict:
    """Readiness: 200 once the model is loaded, 503 before, 500 when it failed to load."""
    _state(request).ready()
    return {"status": "ready"}


@router.head("/metrics", include_in_schema=False)  # as every GET route: a probe of the scrape target
@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
