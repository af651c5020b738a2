"""Opening the store: what it must not do to other connections to the same file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from store.db import open_store


def test_opening_the_store_again_keeps_the_locks_of_open_connections(tmp_path: Path) -> None:
    db = tmp_path / "aigw.db"
    first = open_store(str(db))
    try:
        with first.engine.connect() as conn:  # an open connection of this process, as a running gateway has
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
            open_store(str(db)).dispose()
            # Another process opens and closes a connection: it must see ours and leave the WAL alone.
            code = (
                f"import sqlite3; c = sqlite3.connect({str(db)!r}); "
                "c.execute('SELECT count(*) FROM sqlite_master').fetchall(); c.close()"
            )
            subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
            assert Path(f"{db}-wal").exists()
    finally:
        first.dispose()
    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        check.close()
