"""uvicorn's HTTP/1.1 protocol (h11) with deadlines for the bytes no handler is waiting for.

uvicorn times nothing between a connection's first byte and the end of a request's headers: its
keep-alive timeout runs only between requests, and each byte that arrives cancels it. A client that
sends half a request line and waits (slowloris) held its connection, and a file descriptor, for good:
300 such connections were all still open after 20 s, and would have stayed. The same held for the rest
of a body sent after its answer (a 405, a 413 from the headers, a 503 at ``--timeout``): uvicorn reads
it only to throw it away, and a byte a second kept the connection. uvicorn has no option for either
(its issue #157 lists ``--timeout-request-start`` as not done; ``limit_concurrency`` answers 503 to new
requests once such connections fill it, and ``h11_max_incomplete_event_size`` bounds the bytes of a head,
not the time). nginx's ``client_header_timeout`` and ``lingering_time`` are what this copies. A body
being read by a handler is not timed here: ``--timeout`` bounds an API request, upload included.

``--max-connections`` is uvicorn's ``limit_concurrency``: a request on a connection beyond it is answered 503
and the connection closed. uvicorn still accepts such a connection and waits for its request, so one that
sends nothing gets OVER_LIMIT_HEAD_S, not HEAD_TIMEOUT_S, before it is closed. uvicorn's own answer is plain
text with no Retry-After, from an app of its own, and it has no option for another; this protocol makes the same
check and hands the request to catdog's app marked OVER_LIMIT, which answers as the API answers its other limits.

Over https the protocol starts once the TLS handshake is done; :class:`HandshakeDeadlineLoop` bounds the handshake.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # as uvicorn's H11Protocol takes it
from starlette.responses import JSONResponse  # limits.error_response's, which this lower layer cannot import
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds from a connection's start (or the first byte of a later request on it) to the end of the
# request's headers. A request head is a packet or two; a phone on a poor network sends it in well under this.
HEAD_TIMEOUT_S = 10.0
# Seconds the rest of a body may keep arriving after its request was answered (nginx's lingering_time):
# the server reads it, so that a client still sending sees the answer rather than a reset connection.
LINGER_S = 30.0
# Seconds for the request head of a connection that came while --max-connections were open: a client sends its
# request at once and is answered 503; a silent one would hold a socket beyond the limit for HEAD_TIMEOUT_S.
OVER_LIMIT_HEAD_S = 1.0
# The scope extension that marks a request over --max-connections; its value is {"connections": the limit}.
OVER_LIMIT = "catdog.over_connection_limit"
# The HTTP versions served; h11 reads a request line of any ("HTTP/2.0", "HTTP/9.9"), and answers it as HTTP/1.1.
HTTP_VERSIONS = (b"1.0", b"1.1")
# The key, in the app's lifespan state, of its counter of the answers this protocol gives without the app (400, 431,
# 505): a callable (method or None, status). uvicorn hands that state to every connection; the app is a layer above.
COUNT_ANSWER = "catdog.count_protocol_answer"


class HeadTimeoutProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection which waits too long for bytes no handler reads.

    Awaited are a request's head (``their_state`` IDLE: HEAD_TIMEOUT_S from the connection's start or
    the head's first byte) and the rest of the body of a request already answered (``our_state`` DONE,
    ``their_state`` SEND_BODY: LINGER_S from its first late byte). A deadline is never extended by a
    byte; when it passes, the connection is closed without an answer, as nginx and Go close theirs.
    Between requests uvicorn's keep-alive timeout closes an idle connection first. A connection beyond
    ``limit_concurrency`` has OVER_LIMIT_HEAD_S for its head, and its request goes to the app marked OVER_LIMIT
    (answered 503, the connection closed).
    """

    _deadline: asyncio.TimerHandle | None = None
    _deadline_for: float | None = None  # the limit the armed deadline enforces (a head's limit or LINGER_S)
    _head_limit = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _HeadMeasuringConnection(h11.SERVER, self._max_head_size)
        # This class checks the limit itself (see `app`): uvicorn's check, on a limit it is given, would answer first.
        self.max_open, self.limit_concurrency = self.limit_concurrency, None

    @property
    def app(self) -> ASGIApp:
        """The app for the request whose head has just arrived: uvicorn reads this once per request, at the moment
        its own ``limit_concurrency`` check would run, so the same counts decide: connections open (this one
        included) and requests in flight, before this one's task is added."""
        if self.max_open is not None and max(len(self.connections), len(self.tasks)) >= self.max_open:
            return self._over_limit
        if self.conn.their_http_version not in HTTP_VERSIONS:
            return self._version_not_supported
        if self.conn.head_size > self._max_head_size:
            return self._head_too_long
        return self._app

    @app.setter
    def app(self, app: ASGIApp) -> None:  # uvicorn sets it in its __init__
        self._app = app

    async def _over_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The app answers it (catdog's limits middleware): JSON with Retry-After, counted in /metrics. The limit
        # counts this connection too, so `catdog serve` gives it as --max-connections + 1.
        connections = self.max_open - 1
        self.logger.warning("Exceeded concurrency limit (--max-connections %d): answered 503.", connections)
        marked = {**scope.get("extensions", {}), OVER_LIMIT: {"connections": connections}}
        await self._app({**scope, "extensions": marked}, receive, send)

    async def _head_too_long(self, scope: Scope, receive: Receive, send: Send) -> None:
        # h11 bounds only a head still incomplete: one read whole, blank line and all, reached the app.
        await self._refuse(scope, receive, send, 431, self._head_too_long_sentence)

    async def _version_not_supported(self, scope: Scope, receive: Receive, send: Send) -> None:
        # h11 reads any "HTTP/d.d" request line. HTTP/2's preface ("PRI * HTTP/2.0", then "SM") is one: it was answered
        # twice, first about OPTIONS and the target *, then "not HTTP/1.1" for the "SM".
        sentence = f"This server speaks HTTP/1.1, not HTTP/{scope['http_version']}."
        await self._refuse(scope, receive, send, 505, sentence)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, sentence: str) -> None:
        """Answer ``status`` with ``sentence`` in the API's shape, close the connection and count it."""
        answer = JSONResponse({"error": sentence}, status_code=status, headers={"connection": "close"})
        await answer(scope, receive, send)
        self._count(scope["method"], status)

    def _count(self, method: str | None, status: int) -> None:
        """Count an answer the app never saw in its /metrics (``method`` None: the request line was not read)."""
        count = self.app_state.get(COUNT_ANSWER)
        if count is not None:  # an app without it (not catdog's, or run without its lifespan)
            count(method, status)

    @property
    def _max_head_size(self) -> int:
        return self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE

    @property
    def _head_too_long_sentence(self) -> str:
        return f"The request's headers are over {self._max_head_size // 1024} KiB; send fewer or shorter."

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # counts this connection in self.connections
        # As `app` decides on a request's 503: its connections, this one included, against the limit.
        if self.max_open is not None and len(self.connections) >= self.max_open:
            self._head_limit = OVER_LIMIT_HEAD_S
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot read, in the API's shape (``{"error": ...}``) rather than plain
        text ("Invalid HTTP request received."): a head over h11's size limit (``h11_max_incomplete_event_size``,
        16 KiB) is 431 and says so, anything else is 400. ``msg`` is uvicorn's plain-text sentence, not used.

        uvicorn calls this in its ``except h11.RemoteProtocolError``, so that error is the one being handled; its
        ``error_status_hint`` is h11's own word that the head outgrew the limit. The size of h11's buffer is not:
        a damaged chunk size or a pipelined request, read with the bytes sent after it, left more than 16 KiB there
        and were told their headers were too long."""
        import sys
        from http import HTTPStatus

        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # Answered already (a 405 while the body still came, then a damaged chunk): no second answer can be sent,
            # and trying was "Fatal error: protocol.data_received() call failed" with h11's traceback in the log.
            self.transport.close()
            return
        too_long = getattr(sys.exc_info()[1], "error_status_hint", 400) == 431  # h11's "Receive buffer too long"
        status = HTTPStatus(431 if too_long else 400)
        sentence = (
            self._head_too_long_sentence if too_long else "The request is not HTTP/1.1 that this server can read."
        )
        answer = JSONResponse({"error": sentence}, status_code=status)
        # uvicorn's default headers (date, and server where it is on), which every answer of the app carries.
        headers = [*self.server_state.default_headers, *answer.raw_headers, (b"connection", b"close")]
        head = h11.Response(status_code=status, headers=headers, reason=status.phrase)
        for event in (head, h11.Data(data=answer.body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
        self._count(None, status)

    def _unsupported_upgrade_warning(self) -> None:
        """Nothing: a request asking for another protocol (``Upgrade: h2c``, as ``curl --http2`` sends; ``websocket``)
        is answered over HTTP/1.1, which RFC 9110 (7.8) allows. uvicorn logged two warnings for each, the second
        telling the operator to install a WebSocket library, of no use to catdog, which serves none."""

    def _watch(self) -> None:
        """Arm the deadline for what the connection awaits now, once; disarm it while a handler is at work."""
        their, ours = self.conn.their_state, self.conn.our_state
        if self.transport.is_closing():
            limit = None
        elif their is h11.IDLE:
            limit = self._head_limit
        elif their is h11.SEND_BODY and ours is h11.DONE:
            limit = LINGER_S
        else:
            limit = None
        if limit != self._deadline_for:
            self._arm(limit)

    def _arm(self, limit: float | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(limit, self._too_slow) if limit is not None else None
        self._deadline_for = limit

    def _too_slow(self) -> None:
        self._deadline, self._deadline_for = None, None
        if not self.transport.is_closing():
            self.transport.close()


class _HeadMeasuringConnection(h11.Connection):
    """h11's connection, which keeps the bytes of the last request head it read, as they came: h11 bounds only a
    head still incomplete, and the head it parsed had lost the whitespace around each header's value (a 30 KB
    cookie of spaces read as a few bytes). A request's target in absolute form comes out in origin form."""

    head_size = 0

    def next_event(self) -> Any:
        buffered = len(self._receive_buffer)
        event = super().next_event()
        if isinstance(event, h11.Request):
            self.head_size = buffered - len(self._receive_buffer)
            return _in_origin_form(event)
        return event


# A request target in absolute form (RFC 9112, 3.2.2): its scheme and authority, before the path.
_ABSOLUTE_FORM = re.compile(rb"https?://[^/?#]*", re.IGNORECASE)


def _in_origin_form(request: h11.Request) -> h11.Request:
    """``GET http://host/path?q`` as ``GET /path?q``: a server must accept the absolute form (RFC 9112, 3.2.2), which
    a client that takes it for a proxy sends; uvicorn took the whole URL for the path, and every such request was a
    404. The authority is dropped: the routes answer alike for any host."""
    scheme_and_host = _ABSOLUTE_FORM.match(request.target)
    if scheme_and_host is None:
        return request
    rest = request.target[scheme_and_host.end() :]
    target = rest if rest.startswith(b"/") else b"/" + rest
    return h11.Request(method=request.method, headers=request.headers, target=target, http_version=request.http_version)


class HandshakeDeadlineLoop(asyncio.SelectorEventLoop):
    """asyncio's event loop, whose TLS servers give a client HEAD_TIMEOUT_S for its handshake, not asyncio's 60 s.

    A client that opened TCP and never sent its ClientHello held the connection for a minute, unseen by
    :class:`HeadTimeoutProtocol` (uvicorn's protocol only starts after the handshake). uvicorn calls
    ``create_server`` without ``ssl_handshake_timeout`` and has no option for it; its ``loop`` option takes the
    event loop to run (uvicorn 0.36 and later), and this is that loop. asyncio closes a connection whose
    handshake takes longer, and logs nothing.
    """

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:  # type: ignore[override]
        if kwargs.get("ssl") is not None and kwargs.get("ssl_handshake_timeout") is None:
            kwargs["ssl_handshake_timeout"] = HEAD_TIMEOUT_S
        return await super().create_server(*args, **kwargs)
