"""Writes SVG screenshots of every console screen from a demo store: ``python -m tui.screenshots``.

The demo store is deterministic (fixed names, a fixed demo consumer key and key date,
an admin address nothing listens on), so the snapshot tests use it too.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlmodel import select

from store import __version__, models, repo, usage
from store.db import Store, open_store
from store.spec import (
    ConsumerGroupSpec,
    ConsumerSpec,
    GatewaySpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
    Price,
)

#: A made-up key that only exists in the demo store (its hash is stored, like any key).
DEMO_CONSUMER_KEY = "sk-aigw-demoDEMOdemoDEMOdemoDEMOdemoDEMOdemo0"
DEMO_DATE = datetime(2026, 5, 7, 17, 26, tzinfo=UTC)
#: The demo's "now": its traffic is the four minutes before it.
DEMO_NOW = DEMO_DATE.timestamp() + 3600
DEMO_DIR = Path(tempfile.gettempdir()) / "aigw-demo"
SIZE = (160, 48)


def build_demo_store(directory: Path = DEMO_DIR) -> Store:
    """A fresh store holding the Quick Start setup and a second vendor, in ``directory``."""
    shutil.rmtree(directory, ignore_errors=True)
    store = open_store(str(directory / "aigw.db"))
    with store.session() as s:
        # Nothing listens on port 1: the console shows a stopped gateway, never a real one.
        repo.save_gateway(s, GatewaySpec(listen="127.0.0.1:8080", admin_listen="127.0.0.1:1"))
        repo.save(
            s, "model_keys", ModelKeySpec("hunyuan-key", "sk-hunyuan-demo-credential", description="Hunyuan API key")
        )
        repo.save(
            s, "model_keys", ModelKeySpec("lkeap-key", "env:LKEAP_API_KEY", description="read from the environment")
        )
        repo.save(
            s,
            "model_services",
            ModelServiceSpec(
                "hunyuan-service",
                vendor="hunyuan",
                keys=["hunyuan-key"],
                default_model="hunyuan-2.0-instruct-20251111",
                prices={"hunyuan-2.0-instruct-20251111": Price(0.8, 2.0)},
            ),
        )
        repo.save(
            s,
            "model_services",
            ModelServiceSpec(
                "deepseek-service",
                vendor="lkeap",
                keys=["lkeap-key"],
                model_policy="passthrough",
                default_model="deepseek-v3.1",
                models=["deepseek-*"],
            ),
        )
        repo.save(
            s,
            "model_apis",
            ModelApiSpec(
                "hunyuan-api",
                base_path="/hunyuan",
                services=["hunyuan-service"],
                description="Text generation with Hunyuan",
            ),
        )
        repo.save(s, "model_apis", ModelApiSpec("deepseek-api", base_path="/deepseek", services=["deepseek-service"]))
        repo.save(
            s, "consumers", ConsumerSpec("my-app", api_keys=[DEMO_CONSUMER_KEY], description="the example application")
        )
        repo.save(
            s, "consumers", ConsumerSpec("batch-jobs", quota=5_000_000, quota_unit="tokens", quota_period="month")
        )
        repo.save(
            s,
            "consumer_groups",
            ConsumerGroupSpec(
                "my-apps",
                consumers=["my-app", "batch-jobs"],
                model_apis=["hunyuan-api", "deepseek-api"],
                requests_per_minute=600,
                tokens_per_minute=200_000,
            ),
        )
        for ck in s.exec(select(models.ConsumerKey)).all():
            ck.created_at = DEMO_DATE
            s.add(ck)
        s.commit()
        usage.insert_records(s, demo_traffic(DEMO_NOW))
        for node in demo_nodes(DEMO_NOW, repo.get_revision(s)):
            s.add(node)
        s.commit()
    return store


def demo_nodes(now: float, revision: int) -> list[models.Node]:
    """Two gateways on other machines: one live (its admin address is loopback there, so
    this console cannot follow it and says so), one stale (it stopped without a word)."""
    return [
        models.Node(
            id="gw-a-4121-1f2e3d",
            host="gw-a",
            listen="0.0.0.0:8080",
            admin_listen="127.0.0.1:8081",
            workers=4,
            version=__version__,
            revision=revision,
            started_at=now - 7200,
            last_seen=now - 2,
        ),
        models.Node(
            id="gw-b-977-a0b1c2",
            host="gw-b",
            listen="0.0.0.0:8080",
            admin_listen="0.0.0.0:8081",
            workers=2,
            version=__version__,
            revision=revision,
            started_at=now - 86400 * 2,
            last_seen=now - 95,
        ),
    ]


def demo_traffic(now: float) -> list[dict[str, Any]]:
    """Four minutes of requests before ``now``: both APIs, a streamed answer, a 429 and a 502,
    so Traffic's table and sparklines and Usage's totals show what a working gateway looks like."""
    out: list[dict[str, Any]] = []
    for i in range(48):
        ts = now - 240 + i * 5
        hunyuan = i % 3 != 2
        status = 429 if i % 17 == 9 else 502 if i == 30 else 200
        prompt, completion = (0, 0) if status != 200 else (40 + i * 3, 120 + (i * 37) % 200)
        model = "hunyuan-2.0-instruct-20251111" if hunyuan else "deepseek-v3.1"
        out.append(
            {
                "ts": ts,
                "request_id": f"demo-{i:04d}",
                "path": f"/{'hunyuan' if hunyuan else 'deepseek'}/v1/chat/completions",
                "consumer": "batch-jobs" if i % 4 == 3 else "my-app",
                "api": "hunyuan-api" if hunyuan else "deepseek-api",
                "service": "hunyuan-service" if hunyuan else "deepseek-service",
                "model": model,
                "status": status,
                "latency_ms": 380.0 + (i * 53) % 900,
                "ttfb_ms": 120.0 + (i * 29) % 300,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "cost": (prompt * 0.8 + completion * 2.0) / 1e6 if hunyuan else 0.0,
                "stream": i % 5 == 0,
                "estimated": False,
                "error": "" if status == 200 else ("rate_limited" if status == 429 else "upstream_error"),
            }
        )
    return out


@contextmanager
def demo_clock(now: float = 0.0) -> Iterator[None]:
    """Hold the clock the Traffic, Usage and nodes panes read at ``now`` (the demo's time), so the
    same store renders the same picture on any day — the screenshots test relies on it."""
    import time as real_time

    from .data import limits, nodes, traffic_feed
    from .screens import usage as usage_screen

    frozen = SimpleNamespace(time=lambda: now or DEMO_NOW, monotonic=real_time.monotonic)
    modules = (traffic_feed, usage_screen, limits, nodes)
    saved = [m.time for m in modules]
    for m in modules:
        m.time = frozen  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, t in zip(modules, saved, strict=True):
            m.time = t  # type: ignore[attr-defined]


def demo_app(store: Store, section: str) -> Any:
    from .app import AigwApp

    return AigwApp(store, start_section=section, poll_interval=None)


Shot = tuple[str, str, tuple[str, ...]]

#: (file name, section, keys pressed before the screenshot).
SHOTS: tuple[Shot, ...] = (
    ("instance-info", "instance", ()),
    ("quick-start", "quickstart", ()),
    ("key-management", "model-keys", ()),
    ("model-key-form", "model-keys", ("n",)),
    ("model-services", "model-services", ()),
    ("model-service-form", "model-services", ("enter",)),
    ("model-apis", "model-apis", ()),
    ("route-management", "model-apis", ("down", "t")),
    ("consumers", "consumers", ("down",)),
    ("consumer-groups", "consumer-groups", ()),
    ("consumer-group-apis", "consumer-groups", ("right_square_bracket",)),
    ("traffic", "traffic", ()),
    ("usage", "usage", ()),
)


async def settle(pilot: Any, app: Any, until: Callable[[], bool] | None = None, timeout: float = 10) -> None:
    """Wait for thread workers (loads) to finish so the screenshot shows data."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        await pilot.pause(0.05)
        busy = [w for w in app.workers if not w.is_finished and w.group not in ("gateway-poll", "traffic-stream")]
        if not busy and (until is None or until()):
            break
    from textual.widgets import Input

    for box in app.screen.query(Input):
        box.cursor_blink = False  # a blinking cursor would make every picture differ
    await pilot.pause(0.1)
    # Tables size themselves on an idle pass after they are filled; on a busy machine that
    # can come late. The picture is taken once two looks in a row agree.
    last = app.export_screenshot()
    while loop.time() < deadline:
        await pilot.pause(0.1)
        now = app.export_screenshot()
        if now == last:
            break
        last = now


def ready(app: Any) -> Callable[[], bool]:
    """The section's first load has been shown (entity screens: ``config``; Usage: ``total``)."""
    return lambda: getattr(app.screen, "config", True) is not None and getattr(app.screen, "total", True) != {}


async def take(
    store: Store,
    name: str,
    section: str,
    keys: tuple[str, ...],
    out: Path,
    size: tuple[int, int] = SIZE,
    before: Callable[[Any], Awaitable[None]] | None = None,
) -> Path:
    app = demo_app(store, section)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app, ready(app))
        for key in keys:
            await pilot.press(key)
            await settle(pilot, app)
        path = out / f"{name}.svg"
        app.save_screenshot(filename=path.name, path=str(out))
    return path


async def take_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    store = build_demo_store()
    try:
        with demo_clock():
            return [await take(store, name, section, keys, out) for name, section, keys in SHOTS]
    finally:
        store.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tui.screenshots", description=__doc__)
    p.add_argument("-o", "--out", default="screenshots", help="folder for the SVG files (default: screenshots)")
    args = p.parse_args(argv)
    for path in asyncio.run(take_all(Path(args.out))):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
