"""What ``catdog serve`` can configure (:class:`ServeSettings`), and the client-facing error (:class:`ApiError`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

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
    cors_origins: tuple[str, ...] = ()  # other sites whose pages may call the API from the browser ("*": any)

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
