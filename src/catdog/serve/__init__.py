"""The web service: FastAPI app, micro-batcher and the static page (``catdog serve``)."""

from catdog.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
