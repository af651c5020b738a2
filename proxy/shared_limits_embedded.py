"""Limits shared by the workers of one ``aigw serve``, with nothing to install: the
supervisor holds the counts (one :class:`~proxy.limits.MemoryLimiter`) and each worker
asks it over a Unix socket.

The wire: frames of a 4-byte big-endian length and a JSON array. A worker sends
``["c", id, consumer, quota, unit, period, api, rpm, tpm, tokens, cost]`` to check a
request (its estimates made where the body is) and ``["s", id, consumer, quota, unit,
period, api, tpm, forwarded, ts, total, cost]`` once it is done; the supervisor answers a
check with ``["d", id, allowed, header lines, error]``. Model keys' slots travel on the
same connection (:mod:`proxy.shared_slots_embedded`). Frames a worker makes in one turn
of its event loop leave in one write. Everything the supervisor does runs on its loop:
counts are exact across workers, as in one process. A worker that goes away releases its
reservations with its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson

from .context import RequestContext, Usage
from .errors import GatewayError, limits_unavailable
from .limits import ALLOW, Decision, MemoryLimiter, estimates, limited
from .routes import Consumer, Snapshot
from .shared_slots_embedded import SlotTable, WorkerSlotCounter

log = logging.getLogger("aigw.limits")

_LEN = struct.Struct(">I")
#: A frame larger than this is a broken peer, not a request.
MAX_FRAME = 1 << 20


def _frame(msg: list[Any]) -> bytes:
    body = orjson.dumps(msg)
    return _LEN.pack(len(body)) + body


def _error_of(err: GatewayError | None) -> list[Any] | None:
    if err is None:
        return None
    return [err.status, err.type, err.code, err.message, err.headers]


class _Frames(asyncio.Protocol):
    """Splits the byte stream into frames and hands each to ``on_frame``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if n > MAX_FRAME:
                assert self.transport is not None
                self.transport.close()
                return
            if len(buf) < 4 + n:
                break
            msg = orjson.loads(bytes(buf[4 : 4 + n]))
            del buf[: 4 + n]
            self.on_frame(msg)

    def on_frame(self, msg: list[Any]) -> None:
        raise NotImplementedError


def _consumer(name: str, quota: float, unit: str, period: str) -> Consumer:
    return Consumer(name=name, enabled=True, quota=quota, quota_unit=unit, quota_period=period)


class LimitsServer:
    """The supervisor's side: one :class:`MemoryLimiter` answering every worker."""

    def __init__(self, limiter: MemoryLimiter) -> None:
        self.limiter = limiter
        #: Model keys' slots in flight over every worker.
        self.slots = SlotTable()
        self._conns = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        #: Checks waiting for a quota to load from the records.
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, path: str) -> None:
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: _ServerConn(self), path)

    def next_conn(self) -> int:
        return next(self._conns)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


class _ServerConn(_Frames):
    def __init__(self, server: LimitsServer) -> None:
        super().__init__()
        self.server = server
        self.base = server.next_conn() << 40
        #: Holds of checks not settled yet, so a worker that dies gives them back.
        self.open: dict[int, Consumer] = {}
        #: Model key slots this worker holds (kept by the server's :class:`SlotTable`).
        self.slots: dict[str, int] = {}

    def send(self, msg: list[Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(msg))

    def on_frame(self, msg: list[Any]) -> None:
        lim = self.server.limiter
        if msg[0] == "a":
            _, rid, key, limit = msg
            self.send(["g", rid, self.server.slots.take(self, key, limit)])
        elif msg[0] == "r":
            self.server.slots.give_back(self, msg[1])
        elif msg[0] == "c":
            consumer = _consumer(*msg[2:6])
            if consumer.quota and not lim.holds_quota(consumer):
                # A quota the supervisor has not loaded yet (a worker's snapshot came first):
                # from the records, then the check, as one process would before serving it.
                task = asyncio.get_running_loop().create_task(self._admit_loaded(consumer, msg))
                self.server.tasks.add(task)
                task.add_done_callback(self.server.tasks.discard)
                return
            self._admit(consumer, msg)
        elif msg[0] == "s":
            _, rid, name, quota, unit, period, api, tpm, forwarded, ts, total, cost = msg
            self.open.pop(rid, None)
            lim.account(self.base | rid, _consumer(name, quota, unit, period), api, tpm, forwarded, ts, total, cost)

    def _admit(self, consumer: Consumer, msg: list[Any]) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the worker is gone (while its quota loaded): nothing to hold for it
        _, rid, _, _, _, _, api, rpm, tpm, tokens, cost = msg
        d = self.server.limiter.admit(self.base | rid, consumer, api, rpm, tpm, tokens, cost)
        if d.allowed:
            self.open[rid] = consumer
        self.transport.write(_frame(["d", rid, d.allowed, d.headers.decode("latin-1"), _error_of(d.error)]))

    async def _admit_loaded(self, consumer: Consumer, msg: list[Any]) -> None:
        await self.server.limiter.restore_consumers([consumer])
        self._admit(consumer, msg)

    def connection_lost(self, exc: Exception | None) -> None:
        for rid, consumer in self.open.items():
            self.server.limiter.account(self.base | rid, consumer, "", False, False, 0.0, 0, 0.0)
        self.open.clear()
        self.server.slots.drop(self)


class _ClientConn(_Frames):
    def __init__(self, owner: WorkerLimiter) -> None:
        super().__init__()
        self.owner = owner

    def on_frame(self, msg: list[Any]) -> None:
        slots = self.owner.slots
        if msg[0] == "g":
            if slots is not None:
                slots.granted(msg[1], msg[2])
        elif msg[0] == "f":
            if slots is not None:
                slots.freed(msg[1])
        elif msg[0] == "d":
            fut = self.owner.waiting.pop(msg[1], None)
            if fut is not None and not fut.done():
                _, _, allowed, lines, err = msg
                error = None if err is None else GatewayError(err[0], err[1], err[2], err[3], err[4])
                fut.set_result(Decision(allowed, error, lines.encode("latin-1")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost()


class WorkerLimiter:
    """A worker's :class:`~proxy.limits.Limiter`: every count is the supervisor's."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.waiting: dict[int, asyncio.Future[Decision]] = {}
        self._conn: _ClientConn | None = None
        self._ids = itertools.count(1)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        #: Request id per ``id(ctx)`` for the checks admitted and not settled yet.
        self._sent: dict[int, int] = {}
        #: Called when the supervisor's socket closes (the worker then stops).
        self.on_lost: Callable[[], None] | None = None
        #: The model key slots counted through this connection, once made.
        self.slots: WorkerSlotCounter | None = None

    async def connect(self) -> None:
        _, proto = await asyncio.get_running_loop().create_unix_connection(lambda: _ClientConn(self), self.path)
        self._conn = proto

    def lost(self) -> None:
        """The supervisor is gone: checks waiting fail, and the worker is told (it stops)."""
        self._conn = None
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the supervisor's limits are gone"))
        self.waiting.clear()
        if self.slots is not None:
            self.slots.lost()
        if self.on_lost is not None:
            self.on_lost()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def send(self, msg: list[Any]) -> None:
        """One frame to the supervisor, with the others of this turn of the loop."""
        self._send(_frame(msg))

    def _send(self, frame: bytes) -> None:
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self._conn is not None and self._conn.transport is not None and out:
            self._conn.transport.write(b"".join(out))

    @staticmethod
    def _who(consumer: Consumer) -> list[Any]:
        return [consumer.name, consumer.quota, consumer.quota_unit, consumer.quota_period]

    def check(self, ctx: RequestContext) -> Decision | Awaitable[Decision]:
        if not limited(ctx):
            return ALLOW
        consumer, api = ctx.consumer, ctx.api
        assert consumer is not None and api is not None
        if self._conn is None:  # the supervisor is gone: this worker is stopping
            return Decision(False, limits_unavailable())
        limits = ctx.snapshot.limits.get((consumer.name, api.name))
        rpm = limits.requests_per_minute if limits else 0
        tpm = limits.tokens_per_minute if limits else 0
        tokens, cost = estimates(ctx, consumer, tpm)
        rid = next(self._ids)
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        self._sent[id(ctx)] = rid
        self._send(_frame(["c", rid, *self._who(consumer), api.name, rpm, tpm, tokens, cost]))
        return fut

    def settle(self, ctx: RequestContext, usage: Usage | None) -> None:
        rid = self._sent.pop(id(ctx), None)
        consumer, api = ctx.consumer, ctx.api
        if rid is None or consumer is None or api is None:
            return
        limits = ctx.snapshot.limits.get((consumer.name, api.name))
        tpm = bool(limits and limits.tokens_per_minute)
        total = usage.total_tokens if usage else 0
        forwarded = ctx.service is not None
        self._send(_frame(["s", rid, *self._who(consumer), api.name, tpm, forwarded, ctx.ts, total, ctx.cost]))

    async def restore(self, snapshot: Snapshot) -> None:
        return None  # the supervisor loads quotas before its workers start, and on its own reloads

    def current_use(self, snapshot: Snapshot) -> dict[str, Any]:
        return {}  # the supervisor answers /limits from the counts it holds

    @property
    def shared(self) -> bool:
        return self._conn is not None

    def describe(self) -> dict[str, Any]:
        return {"backend": "supervisor", "shared": self._conn is not None}

    async def close(self) -> None:
        self._flush()
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
