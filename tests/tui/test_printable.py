"""A client-chosen string never reaches the terminal raw: not from ``aigw logs``, not in the console."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pilot_helpers import wait_until

from store.db import Store
from store.usage import insert_records
from tui.app import AigwApp
from tui.cli import main
from tui.modals.request_detail import RequestDetailModal
from tui.printable import printable
from tui.widgets.traffic_table import TrafficTable

HOSTILE = "\x1b[2J\nforged"


def hostile_record(store: Store) -> dict[str, Any]:
    rec = {
        "ts": time.time() - 5,
        "request_id": "req-\x1b]0;title\x07",
        "path": "/v1/chat/completions",
        "consumer": "app",
        "api": "chat",
        "service": "svc",
        "model": HOSTILE,
        "status": 404,
        "latency_ms": 3.0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost": 0.0,
        "stream": False,
        "estimated": False,
        "error": "model \u202eforged\u202c not found",
    }
    with store.session() as s:
        insert_records(s, [rec])
    return rec


def no_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def test_printable_escapes_controls_and_keeps_text() -> None:
    assert printable(HOSTILE) == "\\x1b[2J\\nforged"
    assert printable("模型 héllo-1") == "模型 héllo-1"
    assert printable("x\x9by\x7f") == "x\\x9by\\x7f"


@pytest.mark.parametrize("as_json", [False, True])
def test_logs_print_no_raw_control_characters(
    store: Store, db_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    hostile_record(store)
    store.dispose()
    assert main(["logs", "--db", str(db_path), *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    no_controls(out)
    if as_json:
        assert json.loads(out)[0]["model"] == HOSTILE  # still the same value for a program
    else:
        assert len(out.splitlines()) == 1 and "\\x1b[2J\\nforged" in out


async def test_console_shows_the_escapes(store: Store) -> None:
    rec = hostile_record(store)
    app = AigwApp(store, start_section="traffic", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.screen.query_one(TrafficTable)
        await wait_until(pilot, lambda: table.rows, what="the stored record listed")
        line = table.render_line(1).text
        no_controls(line)
        assert "\\x1b[2J\\nforg" in line
        app.push_screen(RequestDetailModal(rec))
        await pilot.pause()
        shown = " ".join(str(w.visual) for w in app.screen.query("Static, Label"))
        no_controls(shown)
        assert "\\u202eforged" in shown
