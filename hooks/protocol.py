"""uvicorn's h11 protocol with a deadline on each request head (request line and headers).

uvicorn has no such timeout: `timeout_keep_alive` runs only between requests and is cancelled by the first byte of
the next one, and neither h11 nor uvicorn bounds the time a client takes to send a request head
(`h11_max_incomplete_event_size` bounds its size, not its duration; uvicorn's issue #157 lists
`--timeout-request-start` as not done). A connection that sends a request line and then nothing (or one byte a
second) holds its place in `limit_concurrency` for as long as it likes, and 33 of them make the server answer 503
to everyone. This subclass arms one absolute deadline whenever the connection waits for a request head (when it is
opened and after each response), disarms it when h11 has parsed the head, and closes the connection when it
passes: trickling bytes does not extend it. Bodies have their own bound in the app (`webhook_app.BODY_TIMEOUT`).

Use it with `uvicorn.Config(http=header_timeout_protocol(seconds))` (`webhook_app.uvicorn_config` does), or on
uvicorn's command line as `--http hooks.protocol:HeadTimeoutH11Protocol` (the default deadline).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0  # seconds for a request line and headers (a few hundred bytes from the Hub)

log = logging.getLogger("gradshield.webhook")

_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: 34\r\n\r\nthe request headers came too late\n"
)


class HeadTimeoutH11Protocol(H11Protocol):
    """`H11Protocol` that closes a connection whose request head is not complete `head_timeout` seconds after the
    connection began waiting for it (answering 408 when part of a head had arrived)."""

    head_timeout: float = HEAD_TIMEOUT

    _head_deadline: asyncio.TimerHandle | None = None
    _head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        if data and self.conn.their_state is h11.IDLE:
            self._head_started = True
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Armed while h11 waits for a request head (state IDLE on the client's side), disarmed otherwise."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_deadline is None:
            self._head_started = bool(self.conn.trailing_data[0])  # a pipelined head already in the buffer
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)
        elif not waiting:
            self._disarm_head()

    def _disarm_head(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_started:
            # h11 cannot send a response before it has parsed a request: the answer is written as bytes
            self.transport.write(_TIMEOUT_ANSWER)
            log.warning(
                "closed a connection from %s: its request headers were not complete within %g s",
                self.client[0] if self.client else "?",
                self.head_timeout,
            )
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:  # pragma: no cover - h11 in a state that cannot say so; closing is enough
            pass
        self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class with a deadline of `seconds` (uvicorn builds one protocol object per connection from a
    class, so the setting travels as a class attribute)."""
    if not seconds > 0:
        raise ValueError(f"the header timeout must be a positive number of seconds, not {seconds!r}")
    return type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout": float(seconds)})


__all__ = ["HEAD_TIMEOUT", "HeadTimeoutH11Protocol", "header_timeout_protocol"]
