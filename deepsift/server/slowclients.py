"""Slow clients: a request's headers must arrive within a deadline, and its body must keep moving.

uvicorn times out only an idle connection *between* requests (its keep-alive). A client that
opens a connection and sends nothing, sends its headers a byte at a time, or stops in the middle
of its body holds that connection, and one of the process's file descriptors, for ever: a few
thousand such connections from one machine, costing it nothing, and the server takes no one
else's (slowloris). :class:`GuardedH11Protocol` (what ``deepsift serve`` runs) closes them: a
request whose headers are not complete ``header_timeout`` seconds after its first byte (or after
the connection opened) gets a ``408`` and the connection is closed; so is one whose body sends no
byte for ``body_idle_timeout`` seconds, or has not all arrived ``body_idle_timeout`` seconds plus one
second per KiB of its declared length after its headers (the route sees the client go away). A request whose body
has arrived is never timed: its route may take as long as it needs.
"""
from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MIN_BODY_RATE = 1024
"""Bytes per second a body of declared length must average (after ``body_idle_timeout``): a byte a minute
would otherwise keep a connection open for ever."""
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: 31\r\nconnection: close\r\n\r\nthe request arrived too slowly\n")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on a request's headers and an idle limit on its body."""

    def __init__(self, *args: Any, header_timeout: float = 10.0, body_idle_timeout: float = 60.0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.header_timeout, self.body_idle_timeout = header_timeout, body_idle_timeout
        self._guard: asyncio.TimerHandle | None = None
        self._guarding: str | None = None  # "headers" or "body" while a timer runs
        self._timed_cycle: Any = None  # the request whose body deadline is set
        self._body_deadline = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection; its first request's headers are due within ``header_timeout``."""
        super().connection_made(transport)
        self._arm("headers")

    def data_received(self, data: bytes) -> None:
        """Feed h11, then time what the request still owes: its headers (a fixed deadline) or its body (idle time)."""
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # a request begun, its headers not complete: the deadline set at its first byte holds
            if self._guarding != "headers":
                self._arm("headers")
        elif state is h11.SEND_BODY:  # every byte of the body restarts its idle time, up to the body's deadline
            if self._timed_cycle is not self.cycle:
                self._timed_cycle = self.cycle
                length = dict(self.headers or []).get(b"content-length", b"")
                self._body_deadline = self.loop.time() + self.body_idle_timeout + \
                    (int(length) / MIN_BODY_RATE if length.isdigit() else float("inf"))
            self._arm("body", min(self.body_idle_timeout, self._body_deadline - self.loop.time()))
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the timer, then close as uvicorn does."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, what: str, delay: float | None = None) -> None:
        self._disarm()
        delay = self.header_timeout if delay is None else max(delay, 0.0)
        self._guarding, self._guard = what, self.loop.call_later(delay, self._expired, what)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
        self._guard, self._guarding = None, None

    def _expired(self, what: str) -> None:
        self._guard, self._guarding = None, None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if (what == "headers" and state is not h11.IDLE) or (what == "body" and state is not h11.SEND_BODY):
            return  # it moved on meanwhile
        if what == "body" and (self.flow.read_paused or getattr(self.cycle, "waiting_for_100_continue", False)):
            # the route has not taken the body so far (or asked for it): the server is the slow one
            self._body_deadline = max(self._body_deadline, self.loop.time() + self.body_idle_timeout)
            self._arm("body", self.body_idle_timeout)
            return
        if what == "headers" and self.conn.our_state is h11.IDLE:
            self.transport.write(TIMEOUT_RESPONSE)  # no response begun: say why before closing
        self.transport.close()
