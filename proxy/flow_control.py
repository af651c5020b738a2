"""Back-pressure for one client connection, in both directions.

A connection stops reading while any of several things holds it: answers not yet taken
by the client (the transport's write buffer is above its high-water mark), complete
requests waiting behind a busy handler, or a request body nobody has asked for yet (so
an unauthenticated client cannot make the gateway read its body). Reading resumes only
once every hold is released. Writers wait in :meth:`FlowControl.drain` while the
transport's buffer is above the mark, as uvicorn's and aiohttp's servers do; without
this a client pipelining requests and never reading their answers grew the gateway's
memory without bound.
"""

from __future__ import annotations

import asyncio

#: Reading is held: the client is not taking its answers.
WRITING = 1
#: Reading is held: complete requests are queued behind the one being answered.
QUEUED = 2
#: Reading is held: a request's head is in and its handler has not asked for the body.
BODY = 4
#: Reading is held for good: the connection was refused and reads nothing more.
DONE = 8


class FlowControl:
    """The read holds and write pause of one transport."""

    __slots__ = ("_holds", "_lost", "_transport", "_writable", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._holds = 0
        self._lost = False
        self.write_paused = False
        # Made the first time the client falls behind: most connections never do, and an
        # Event with its waiters' deque is ~0.8 KB on each of thousands of open connections.
        self._writable: asyncio.Event | None = None

    @property
    def read_paused(self) -> bool:
        return self._holds != 0

    def hold(self, reason: int) -> None:
        if not self._holds and not self._lost:
            self._transport.pause_reading()
        self._holds |= reason

    def release(self, reason: int) -> None:
        if not self._holds & reason:
            return
        self._holds &= ~reason
        if not self._holds and not self._lost:
            self._transport.resume_reading()

    # the transport's calls (through the protocol)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._writable is None:
            self._writable = asyncio.Event()
        else:
            self._writable.clear()
        self.hold(WRITING)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()
        self.release(WRITING)

    def connection_lost(self) -> None:
        self._lost = True
        if self._writable is not None:
            self._writable.set()  # wake every writer: each sees the connection is gone

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""
        if self.write_paused and not self._lost and self._writable is not None:
            await self._writable.wait()
        if self._lost:
            raise ConnectionResetError("client closed the connection")
