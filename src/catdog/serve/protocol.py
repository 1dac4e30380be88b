"""uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request's line and headers.

uvicorn times nothing between a connection's first byte and the end of a request's headers: its
keep-alive timeout runs only between requests, and each byte that arrives cancels it. A client that
sends half a request line and waits (slowloris) held its connection, and a file descriptor, for good:
300 such connections were all still open after 20 s, and would have stayed. uvicorn has no option
for it (its issue #157 lists ``--timeout-request-start`` as not done; ``limit_concurrency`` answers
503 to new requests once the idle connections fill it, and ``h11_max_incomplete_event_size`` bounds
the bytes of a head, not the time). Go's ``ReadHeaderTimeout`` and nginx's ``client_header_timeout``
are what this copies. The body is not timed here: ``--timeout`` bounds an API request, upload included.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds from a connection's start (or the first byte of a later request on it) to the end of the
# request's headers. A request head is a packet or two; a phone on a poor network sends it in well under this.
HEAD_TIMEOUT_S = 10.0


class HeadTimeoutProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request head is not complete within HEAD_TIMEOUT_S.

    The deadline runs while the connection waits for a request head (``their_state`` is IDLE) that has
    started, or from the connection's start: then the connection is closed without an answer, as nginx
    and Go close theirs. Between requests uvicorn's keep-alive timeout closes an idle connection first.
    """

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Arm the deadline while a head is awaited (once: a byte at a time does not extend it); else disarm it."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)
        else:
            self._stop_deadline()

    def _stop_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
