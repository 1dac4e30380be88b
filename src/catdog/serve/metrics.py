"""Prometheus metrics of one app: requests by route and status, latency, batch sizes, model version."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServeMetrics:
    """A private registry per app, so that several apps (tests, workers) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "catdog_http_requests", "HTTP requests by route, method and status.", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "catdog_http_request_duration_seconds",
            "Time from request to the end of the response, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "catdog_batch_size",
            "Images per forward pass (micro-batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "catdog_batch_duration_seconds",
            "Time of one forward pass.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.predictions = Counter(
            "catdog_predictions", "Answers given, by label ('error' for unusable images).", ["label"],
            registry=self.registry,
        )  # fmt: skip
        self.model = Info("catdog_model", "The model being served.", registry=self.registry)
        self.ready = Gauge("catdog_model_ready", "1 once the model is loaded.", registry=self.registry)

    def count_request(self, route: str, method: str | None, status: int) -> None:
        """One answer, under ``route`` (a template or ``unmatched``): a method not in METHODS, or none, is "other".

        ``int``: the protocol's 400 and 431 are HTTPStatus, whose str is "HTTPStatus.BAD_REQUEST" before Python 3.11.
        """
        self.requests.labels(route, method if method in METHODS else "other", str(int(status))).inc()

    def count_unrouted(self, method: str | None, status: int) -> None:
        """An answer given before any route matched: the protocol's 400, 431 and 505 (its COUNT_ANSWER)."""
        self.count_request(UNMATCHED, method, status)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)


# The methods counted by name; any other is "other". uvicorn's h11 server takes any token as a method, so a client
# sending a new one each request (FOO1, FOO2, ...; up to its 16 kB of headers) added series without bound: memory
# and a /metrics page that grew with every request.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


# The route of an answer no route gave: a path nothing is served at, and refusals made before routing.
UNMATCHED = "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request by its route template (never the raw path: bounded label values).

    ``routes``: the app's routes, for an answer given before the router ran (the limits' 413 and 503): counted under
    the route its path matches, as the same refusal is when the route gives it (a body over the limit streamed).
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def route_of(self, scope: Scope) -> str:
        """The template of the route that answered, else of the first its path matches; ``unmatched`` for none."""
        route = scope.get("route") or next((r for r in self.routes if r.matches(scope)[0] is not Match.NONE), None)
        return getattr(route, "path_format", None) or UNMATCHED  # /app/{name}, not /app/{name:app_file}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = self.route_of(scope)
            self.metrics.count_request(path, scope["method"], status)
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
