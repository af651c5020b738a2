"""The supervisor's admin listener: one instance, answered by asking every worker.

Each worker serves its own admin app on a private Unix socket; this app (on
``admin_listen``) sums ``/metrics`` into one set of series, merges every worker's
``/events``, sends ``/reload`` and ``/cache/clear`` to each (each worker holds its own
in-memory cache; with Redis they clear one store together, and the entries each
removed add up to what there was) and lists each worker in ``/healthz``. ``/limits``
is the supervisor's own: it holds the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from store import __version__

from .admin import HEARTBEAT_S, _AdminRunner, _authorized, _denied, _json
from .state import CLIENT_TIMEOUT_S

if TYPE_CHECKING:
    from .supervisor import Supervisor, Worker

log = logging.getLogger("aigw")

SUPERVISOR = web.AppKey("aigw_supervisor", object)
#: Seconds a worker may take to answer an admin request of the supervisor's.
WORKER_TIMEOUT_S = 5.0
#: Gauges that are not summed over workers: the revision served (the newest) and whether
#: the limits are shared (only when every worker's are).
_NOT_SUMMED = {"aigw_config_revision": max, "aigw_limits_shared": min}


async def worker_get(path: str, url: str, *, timeout: float = WORKER_TIMEOUT_S, token: str = "") -> Any:
    """GET ``url`` from the worker admin app on ``path``; JSON decoded, else text."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=path), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as s,
        s.get(f"http://worker{url}", headers=headers) as r,
    ):
        r.raise_for_status()
        if r.content_type == "application/json":
            return await r.json()
        return await r.text()


async def worker_post(path: str, url: str, token: str) -> tuple[int, Any]:
    """POST ``url`` to the worker admin app on ``path``: its status and JSON answer."""
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=path), timeout=aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S)
        ) as s,
        s.post(f"http://worker{url}", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status, await r.json()


def sum_metrics(texts: list[str]) -> str:
    """One Prometheus text from several: series with the same name and labels added up."""
    families: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("# HELP "):
                family = line.split(" ", 3)[2]
                if family not in families:
                    families[family] = ([], {})
            if line.startswith("#"):
                comments = families.setdefault(family, ([], {}))[0]
                if line not in comments:
                    comments.append(line)
                continue
            series, _, value = line.rpartition(" ")
            families.setdefault(family, ([], {}))[1].setdefault(series, []).append(value)
    out: list[str] = []
    for family, (comments, samples) in families.items():
        out += comments
        pick = _NOT_SUMMED.get(family)
        for name, values in samples.items():
            nums = [float(v) for v in values]
            total = pick(nums) if pick is not None else sum(nums)
            exact = all("." not in v and "e" not in v for v in values)
            out.append(f"{name} {int(total) if exact else f'{total:.6f}'}")
    return "\n".join(out) + "\n"


#: A key's figures that are one number for everyone (not summed over workers).
_KEY_SAME = {"max_concurrency": max, "shared_in_flight": max}


def add_key_loads(into: dict[str, dict[str, Any]], loads: dict[str, Any]) -> None:
    """Add one worker's ``/healthz`` ``keys`` to ``into``: the instance's figures.

    Each worker reports the slots it holds, so their sum is the instance's count (the
    supervisor's, for a limited key); the bound, and a count read from Redis, are not summed."""
    for name, load in loads.items():
        if not isinstance(load, dict):
            continue
        entry = into.setdefault(name, {})
        for field, value in load.items():
            if not isinstance(value, int | float):
                continue
            pick = _KEY_SAME.get(field)
            old = entry.get(field)
            if old is None:
                entry[field] = value
            else:
                entry[field] = pick(old, value) if pick is not None else round(old + value, 6)


class SupervisorAdmin:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        app = web.Application()
        app[SUPERVISOR] = self
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/events", self.events)
        app.router.add_post("/reload", self.reload)
        app.router.add_get("/limits", self.limits)
        app.router.add_post("/cache/clear", self.cache_clear)
        self.runner = _AdminRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=2.0,
            handle_signals=False,
            keepalive_timeout=CLIENT_TIMEOUT_S,
        )

    async def start(self, host: str, port: int) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()

    async def cleanup(self) -> None:
        await self.runner.cleanup()

    async def _each(self, url: str, *, token: str = "") -> list[tuple[Worker, Any]]:
        """Every worker's answer to ``url`` (an exception where it did not answer)."""
        ws = self.sup.workers
        got = await asyncio.gather(
            *(worker_get(self.sup.admin_socket(w), url, token=token) for w in ws), return_exceptions=True
        )
        return list(zip(ws, got, strict=True))

    # ---------------------------------------------------------------- endpoints

    async def healthz(self, request: web.Request) -> web.Response:
        sup, state = self.sup, self.sup.state
        workers: list[dict[str, Any]] = []
        total = in_flight = 0
        revision = state.snapshot.revision
        limits: dict[str, Any] | None = None
        keys: dict[str, dict[str, Any]] = {}
        cache: dict[str, Any] | None = None
        for w, h in await self._each("/healthz"):
            entry: dict[str, Any] = {"index": w.index, "pid": w.pid, "state": w.state, "restarts": w.restarts}
            if isinstance(h, dict):
                total += int(h.get("requests_total", 0))
                in_flight += int(h.get("in_flight", 0))
                revision = max(revision, int(h.get("revision", 0)))
                entry.update(revision=h.get("revision"), requests_total=h.get("requests_total"))
                entry["in_flight"] = h.get("in_flight")
                if isinstance(h.get("limits"), dict) and (limits is None or not h["limits"].get("shared")):
                    limits = h["limits"]
                if isinstance(h.get("keys"), dict):
                    add_key_loads(keys, h["keys"])
                if isinstance(h.get("cache"), dict) and (cache is None or h["cache"].get("detail")):
                    cache = h["cache"]  # a worker that cannot reach Redis says so for the instance
            elif w.state == "running":
                entry["state"] = "unreachable"
            workers.append(entry)
        if not sup.redis:
            limits = {"backend": "supervisor", "shared": True}
        return _json(
            {
                "status": "ok" if all(e["state"] == "running" for e in workers) else "degraded",
                "version": __version__,
                "revision": revision,
                "listen": state.info.listen,
                "admin_listen": state.info.admin_listen,
                "public_url": state.info.public_url,
                "pid": os.getpid(),
                "started_at": state.started_at,
                "requests_total": total,
                "in_flight": in_flight,
                "db": state.store.location.describe(),
                "keys": keys,
                "limits": limits,
                "cache": cache,
                "workers": workers,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        texts = [t for _, t in await self._each("/metrics") if isinstance(t, str)]
        return web.Response(
            text=sum_metrics(texts),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def reload(self, request: web.Request) -> web.Response:
        state = self.sup.state
        if not _authorized(state, request):
            return _denied()
        revision = await state.reload(force=True)
        answers = await self._post_each("/reload")
        got = [a[1] if isinstance(a, tuple) else a for a in answers]
        failed = [w.index for w, g in zip(self.sup.workers, got, strict=True) if not isinstance(g, dict)]
        for g in got:
            if isinstance(g, dict) and isinstance(g.get("revision"), int):
                revision = max(revision, g["revision"])
        if failed:
            return _json(
                {
                    "error": {
                        "message": f"workers {failed} did not reload; see gateway.log",
                        "type": "api_error",
                        "code": "reload_failed",
                    }
                },
                status=500,
            )
        return _json({"status": "ok", "revision": revision})

    async def _post_each(self, url: str) -> list[tuple[int, Any] | BaseException]:
        token = self.sup.state.admin_token
        return await asyncio.gather(
            *(worker_post(self.sup.admin_socket(w), url, token) for w in self.sup.workers), return_exceptions=True
        )

    async def cache_clear(self, request: web.Request) -> web.Response:
        """Every worker clears (``?api=NAME`` passed on); ``cleared`` is the sum of theirs."""
        state = self.sup.state
        if not _authorized(state, request):
            return _denied()
        url = "/cache/clear" + (f"?{request.query_string}" if request.query_string else "")
        answers = await self._post_each(url)
        cleared, failed = 0, []
        for w, got in zip(self.sup.workers, answers, strict=True):
            if isinstance(got, tuple) and got[0] == 404:  # a name no worker knows: theirs to say
                return _json(got[1], status=404)
            if isinstance(got, tuple) and got[0] == 200 and isinstance(got[1], dict):
                cleared += int(got[1].get("cleared", 0))
            else:
                failed.append(w.index)
        if failed:
            return _json(
                {
                    "error": {
                        "message": f"workers {failed} did not clear their response cache; see gateway.log",
                        "type": "api_error",
                        "code": "cache_unavailable",
                    }
                },
                status=503,
            )
        return _json({"cleared": cleared})

    async def limits(self, request: web.Request) -> web.Response:
        state = self.sup.state
        if not _authorized(state, request):
            return _denied()
        if self.sup.redis:  # the counts are in Redis: any worker's view is as good
            for _, got in await self._each("/limits", token=state.admin_token):
                if isinstance(got, dict):
                    return _json(got)
        snap = state.snapshot
        return _json({"revision": snap.revision, "consumers": state.limiter.current_use(snap)})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Every worker's records, as they come; a worker replaced is followed again."""
        state = self.sup.state
        if not _authorized(state, request):
            return _denied()
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await resp.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
        readers = [asyncio.get_running_loop().create_task(self._follow(w, queue)) for w in self.sup.workers]
        loop = asyncio.get_running_loop()
        try:
            await resp.write(b": connected\n\n")
            last = loop.time()
            # Until every worker's stream has ended (they end when the workers have drained).
            while not (queue.empty() and all(t.done() for t in readers)):
                try:
                    item = await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    if loop.time() - last >= HEARTBEAT_S:
                        await resp.write(b": ping\n\n")
                        last = loop.time()
                    continue
                await resp.write(item)
                last = loop.time()
        finally:
            for t in readers:
                t.cancel()
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def _follow(self, w: Worker, queue: asyncio.Queue[bytes]) -> None:
        token = self.sup.state.admin_token
        while True:
            try:
                async with (
                    aiohttp.ClientSession(
                        connector=aiohttp.UnixConnector(path=self.sup.admin_socket(w)),
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=WORKER_TIMEOUT_S),
                    ) as s,
                    s.get("http://worker/events", headers={"Authorization": f"Bearer {token}"}) as r,
                ):
                    buf = b""
                    async for chunk in r.content.iter_any():
                        buf += chunk
                        while b"\n\n" in buf:
                            item, buf = buf.split(b"\n\n", 1)
                            if item and not item.startswith(b":"):  # the worker's own pings stay here
                                with contextlib.suppress(asyncio.QueueFull):
                                    queue.put_nowait(item + b"\n\n")
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            if self.sup.stopping:
                return
            await asyncio.sleep(0.2)  # a worker being replaced: follow the new one
