"""A database made by an older aigw opens in a newer one: columns added since get their defaults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store import repo
from store.db import open_store
from store.spec import Config, ModelKeySpec, ModelServiceSpec


def test_columns_added_since_a_table_was_made_are_added_with_their_defaults(tmp_path: Path) -> None:
    db = tmp_path / "data" / "aigw.db"
    st = open_store(str(db))
    with st.session() as s:
        repo.apply_config(
            s,
            Config(
                model_keys=[ModelKeySpec(name="k", credential="sk-x")],
                model_services=[ModelServiceSpec(name="s", vendor="openai", keys=["k"], default_model="m")],
            ),
            has_gateway=False,
            prune=False,
            dry_run=False,
        )
        s.commit()
    st.dispose()
    # What an older aigw left: the service table without the fields added since.
    con = sqlite3.connect(db)
    con.execute('ALTER TABLE model_services DROP COLUMN "proxy"')
    con.execute('ALTER TABLE model_services DROP COLUMN "ca_file"')
    con.commit()
    con.close()

    st = open_store(str(db))
    try:
        with st.session() as s:
            (svc,) = repo.load_config(s).model_services
        assert svc.name == "s" and svc.proxy == "" and svc.ca_file == ""
    finally:
        st.dispose()
    st = open_store(str(db))  # and again: nothing left to add, nothing fails
    st.dispose()


def test_an_index_that_was_unique_once_is_made_plain(tmp_path: Path) -> None:
    db = tmp_path / "data" / "aigw.db"
    open_store(str(db)).dispose()
    con = sqlite3.connect(db)  # an older aigw: one model API per base path
    con.execute("DROP INDEX ix_model_apis_base_path")
    con.execute("CREATE UNIQUE INDEX ix_model_apis_base_path ON model_apis (base_path)")
    con.commit()
    con.close()

    open_store(str(db)).dispose()
    con = sqlite3.connect(db)
    try:
        unique = con.execute(
            "SELECT \"unique\" FROM pragma_index_list('model_apis') WHERE name = 'ix_model_apis_base_path'"
        )
        assert unique.fetchone() == (0,)
    finally:
        con.close()
