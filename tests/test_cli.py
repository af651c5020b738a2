"""The ``aigw`` command on a real store: import/export, logs, usage, files and every error path.

Most runs call ``tui.cli.main`` in-process (fast); a few run the real ``aigw`` as a
subprocess (``python -m tui.cli``) to see what a user's shell sees.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import repo
from store.db import open_store
from store.keys import hash_key
from store.models import SCHEMA_VERSION
from store.usage import insert_records
from tui.cli import main

EXAMPLE = Path(__file__).parent / "cli" / "example.toml"
REPO_ROOT = Path(__file__).resolve().parent.parent

PLAIN_KEY = "sk-aigw-T3stKeyT3stKeyT3stKeyT3stKeyT3stKey0123"
LITERAL_CREDENTIAL = "sk-vendor-LiteralSecretValue-42"

#: A configuration touching every table and most fields, valid as a whole.
RICH = f"""
[gateway]
listen = "127.0.0.1:18080"
public_url = "https://gw.example.com/"
admin_listen = "127.0.0.1:18081"

[[model_keys]]
name = "env-key"
credential = "env:VENDOR_API_KEY"
description = "read at request time — ünïcode ok"

[[model_keys]]
name = "literal-key"
credential = "{LITERAL_CREDENTIAL}"

[[model_services]]
name = "alpha"
vendor = "custom"
address = "http://127.0.0.1:9/v1/"
keys = ["literal-key", "env-key"]
key_policy = "failover"
model_policy = "passthrough"
models = ["alpha-*", "beta.1"]
default_model = "alpha-large"
unlisted_model = "default"
timeout_s = 30
[model_services.prices."alpha-*"]
input = 1
output = 2.5
[model_services.prices."beta.1"]
input = 0.25
output = 0

[[model_services]]
name = "hy"
vendor = "hunyuan"
keys = ["env-key"]
default_model = "hunyuan-lite"

[[model_apis]]
name = "chat"
base_path = "chat/"
routes = ["/v1/chat/completions", "/v1/completions"]
service_type = "multi"
routing = "weight"
services = ["alpha", "hy"]
weights = [70, 30]

[[model_apis]]
name = "emb"
scenario = "embeddings"
base_path = "/emb"
services = ["hy"]
fallback_services = ["alpha"]
path_simplification = false
cors_origins = ["https://App.example.com/", "*"]

[[consumers]]
name = "app"
api_keys = ["{PLAIN_KEY}"]
quota = 100000
quota_unit = "tokens"
quota_period = "day"

[[consumers]]
name = "off"
enabled = false
api_key_hashes = ["sha256:{"ab" * 32}"]

[[consumer_groups]]
name = "team"
consumers = ["app", "off"]
model_apis = ["chat", "emb"]
requests_per_minute = 60
tokens_per_minute = 10000
"""


@dataclass
class Run:
    rc: int
    out: str
    err: str


@pytest.fixture
def aigw(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """``aigw(*args)`` runs the command in-process and returns its exit code and output."""

    def run(*args: str | Path) -> Run:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Run(rc, out, err)

    return run


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "aigw.db")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def revision(db: str) -> int:
    st = open_store(db)
    try:
        with st.session() as s:
            return repo.get_revision(s)
    finally:
        st.dispose()


def export(aigw, db: str, *extra: str) -> str:  # type: ignore[no-untyped-def]
    r = aigw("--db", db, "export", *extra)
    assert r.rc == 0, r.err
    return r.out


def one_line_error(r: Run) -> str:
    assert r.rc == 2, (r.rc, r.out, r.err)
    assert "Traceback" not in r.err
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("aigw: error: "), lines[0]
    return lines[0]


def file_bytes(db: str) -> bytes:
    out = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(db + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


# ---------------------------------------------------------------- the example file


def test_example_imports_verbatim(aigw, db: str) -> None:  # type: ignore[no-untyped-def]
    r = aigw("import", EXAMPLE, "--db", db)
    assert r.rc == 0, r.err
    for entry in (
        "model_keys[hunyuan-key]",
        "model_services[hunyuan-service]",
        "model_apis[hunyuan-api]",
        "consumers[my-app]",
        "consumer_groups[my-apps]",
    ):
        assert f"+ {entry}" in r.out
    st = open_store(db)
    try:
        with st.session() as s:
            cfg = repo.load_config(s)
            assert repo.consumer_for_key(s, "sk-aigw-example-key-0123456789abcdef") == "my-app"
            assert repo.get_revision(s) == 1
    finally:
        st.dispose()
    svc = cfg.model_services[0]
    assert svc.address == "https://api.hunyuan.cloud.tencent.com/v1"
    assert svc.prices["hunyuan-turbos-latest"].output == 2.0
    assert cfg.model_apis[0].base_path == "/hunyuan"
    assert cfg.consumer_groups[0].requests_per_minute == 600
    assert cfg.model_keys[0].credential == "env:HUNYUAN_API_KEY"


def test_example_round_trips(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    first = export(aigw, db)
    other = str(tmp_path / "other" / "aigw.db")
    assert aigw("--db", other, "import", write(tmp_path, "e.toml", first)).rc == 0
    assert export(aigw, other) == first
    assert "sha256:" + hash_key("sk-aigw-example-key-0123456789abcdef") in first


def test_reimport_is_a_noop(aigw, db: str) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    before, rev = export(aigw, db), revision(db)
    r = aigw("--db", db, "import", EXAMPLE)
    assert r.rc == 0 and "no changes" in r.out
    assert revision(db) == rev
    assert export(aigw, db) == before


# ---------------------------------------------------------------- round trip of everything


@pytest.mark.parametrize("secrets", [False, True])
def test_rich_round_trip(aigw, db: str, tmp_path: Path, secrets: bool) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH)).rc == 0
    flags = ["--include-secrets"] if secrets else []
    first = export(aigw, db, *flags)
    other = str(tmp_path / "empty" / "aigw.db")
    if secrets:
        assert aigw("--db", other, "import", write(tmp_path, "e.toml", first)).rc == 0
        assert export(aigw, other, *flags) == first
        assert export(aigw, other) == export(aigw, db)
    else:
        # a secret-less export cannot recreate the literal key in an empty store …
        r = aigw("--db", other, "import", write(tmp_path, "e.toml", first))
        line = one_line_error(r)
        assert "model_keys[literal-key].credential" in line
        assert revision(other) == 0
        # … but re-importing it over the original keeps everything, credential included
        r = aigw("--db", db, "import", tmp_path / "e.toml")
        assert r.rc == 0 and "no changes" in r.out
        assert export(aigw, db) == first
        assert LITERAL_CREDENTIAL in export(aigw, db, "--include-secrets")


def test_export_normalises(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH))
    text = export(aigw, db)
    assert 'base_path = "/chat"' in text
    assert 'address = "http://127.0.0.1:9/v1"' in text
    assert 'public_url = "https://gw.example.com"' in text
    assert "weights = [70, 30]" in text
    assert PLAIN_KEY not in text
    assert f'"sha256:{hash_key(PLAIN_KEY)}"' in text
    assert f'"sha256:{"ab" * 32}"' in text


# ---------------------------------------------------------------- secrets


def test_literal_credentials_only_with_include_secrets(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH))
    plain = export(aigw, db)
    assert LITERAL_CREDENTIAL not in plain
    assert 'credential = "env:VENDOR_API_KEY"' in plain
    assert "omitted" in plain  # says why the credential is missing
    full = export(aigw, db, "--include-secrets")
    assert f'credential = "{LITERAL_CREDENTIAL}"' in full
    assert 'credential = "env:VENDOR_API_KEY"' in full


def test_plain_consumer_key_not_in_database_after_import(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH)).rc == 0
    secret = PLAIN_KEY.removeprefix("sk-aigw-").encode()
    assert secret not in file_bytes(db)
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = file_bytes(db)
    assert hash_key(PLAIN_KEY).encode() in data
    assert secret not in data and PLAIN_KEY.encode() not in data
    st = open_store(db)
    try:
        with st.session() as s:
            assert repo.consumer_for_key(s, PLAIN_KEY) == "app"
            prefixes = [k.prefix for k in repo.list_consumer_keys(s, "app")]
    finally:
        st.dispose()
    assert prefixes and all(len(p) <= 16 for p in prefixes)


# ---------------------------------------------------------------- bad files change nothing

BAD_FILES = [
    ("syntax", '[[model_keys]\nname = "x"\n', "invalid TOML"),
    (
        "unknown field",
        '[[model_keys]]\nname = "new-key"\ncredential = "env:X"\ncolour = "red"\n',
        "model_keys[new-key].colour",
    ),
    ("unknown table", '[[model_keyz]]\nname = "x"\n', "model_keyz"),
    (
        "wrong type",
        '[[consumer_groups]]\nname = "g"\nrequests_per_minute = "600"\n',
        "consumer_groups[g].requests_per_minute",
    ),
    ("wrong type bool", '[[consumers]]\nname = "c"\nenabled = "yes"\n', "consumers[c].enabled"),
    (
        "broken reference",
        '[[model_apis]]\nname = "x-api"\nbase_path = "/x"\nservices = ["ghost"]\n',
        "model_apis[x-api].services",
    ),
    ("duplicate name", '[[consumers]]\nname = "twin"\n\n[[consumers]]\nname = "twin"\n', "consumers[twin].name"),
    (
        "bad enum",
        '[[model_services]]\nname = "hunyuan-service"\nvendor = "hunyuan"\nkeys = ["hunyuan-key"]\n'
        'key_policy = "sometimes"\ndefault_model = "hunyuan-lite"\n',
        "model_services[hunyuan-service].key_policy",
    ),
    (
        "dotdot base path",
        '[[model_apis]]\nname = "hunyuan-api"\nbase_path = "/a/../b"\nservices = ["hunyuan-service"]\n',
        "model_apis[hunyuan-api].base_path",
    ),
    ("missing name", '[[model_keys]]\ncredential = "env:X"\n', "model_keys[#2].name"),
    (
        "price field",
        '[[model_services]]\nname = "p"\nvendor = "hunyuan"\nkeys = ["hunyuan-key"]\n'
        'default_model = "m"\n[model_services.prices.m]\ninput = 1\ncached = 2\n',
        "model_services[p].prices.m.cached",
    ),
    (
        "negative price",
        '[[model_services]]\nname = "p"\nvendor = "hunyuan"\nkeys = ["hunyuan-key"]\n'
        'default_model = "m"\n[model_services.prices.m]\ninput = -1\n',
        "model_services[p].prices.m.input",
    ),
    (
        "weights",
        '[[model_apis]]\nname = "w"\nbase_path = "/w"\nservice_type = "multi"\nrouting = "weight"\n'
        'services = ["hunyuan-service"]\nweights = [0]\n',
        "model_apis[w].weights",
    ),
    (
        "base path taken",
        '[[model_apis]]\nname = "dup"\nbase_path = "hunyuan/"\nservices = ["hunyuan-service"]\n',
        "'dup'",
    ),
    ("gateway", '[gateway]\nlisten = "nowhere"\n', "gateway.listen"),
    (
        "cors origin with a path",
        '[[model_apis]]\nname = "c"\nbase_path = "/c"\nservices = ["hunyuan-service"]\n'
        'cors_origins = ["https://app.example.com/page"]\n',
        "model_apis[c].cors_origins",
    ),
]


@pytest.mark.parametrize(("case", "body", "names"), BAD_FILES, ids=[c for c, _, _ in BAD_FILES])
def test_bad_file_changes_nothing(aigw, db: str, tmp_path: Path, case: str, body: str, names: str) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    before, rev = export(aigw, db, "--include-secrets"), revision(db)
    # a valid new entity alongside the broken one: applying part of the file would show
    good = '[[model_keys]]\nname = "zz-extra"\ncredential = "env:ZZ"\n\n'
    path = write(tmp_path, "bad.toml", good + body)
    line = one_line_error(aigw("--db", db, "import", path))
    assert names in line, line
    if case == "base path taken":  # either API may be blamed; the message names both
        assert "hunyuan-api" in line and ".base_path" in line
    assert "sk-vendor" not in line
    assert export(aigw, db, "--include-secrets") == before
    assert revision(db) == rev
    # --dry-run refuses the same way
    assert one_line_error(aigw("--db", db, "import", "--dry-run", path)) == line


def test_many_problems_still_one_line(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body = '[[model_keys]]\nname = "A"\ncredential = ""\n\n[[consumers]]\nname = "c"\nquota = -1\n'
    line = one_line_error(aigw("--db", db, "import", write(tmp_path, "bad.toml", body)))
    assert "more problem" in line


def test_wrong_type_error_never_echoes_credential(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body = '[[model_keys]]\nname = "k"\ncredential = ["sk-very-secret-value"]\n'
    line = one_line_error(aigw("--db", db, "import", write(tmp_path, "bad.toml", body)))
    assert "model_keys[k].credential" in line and "sk-very-secret-value" not in line


# ---------------------------------------------------------------- dry run and prune


def test_dry_run_prints_plan_and_changes_nothing(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    before, rev = export(aigw, db), revision(db)
    changed = EXAMPLE.read_text(encoding="utf-8").replace("requests_per_minute = 600", "requests_per_minute = 60")
    changed += '\n[[model_keys]]\nname = "extra"\ncredential = "env:EXTRA"\n'
    path = write(tmp_path, "next.toml", changed)
    r = aigw("--db", db, "import", "--dry-run", path)
    assert r.rc == 0, r.err
    assert "dry run" in r.out
    assert "+ model_keys[extra]" in r.out
    assert "~ consumer_groups[my-apps]" in r.out
    assert export(aigw, db) == before and revision(db) == rev
    r = aigw("--db", db, "import", path)
    assert r.rc == 0 and "+ model_keys[extra]" in r.out
    assert revision(db) == rev + 1
    assert "requests_per_minute = 60\n" in export(aigw, db)


def test_dry_run_on_empty_store(aigw, db: str) -> None:  # type: ignore[no-untyped-def]
    r = aigw("--db", db, "import", "--dry-run", EXAMPLE)
    assert r.rc == 0 and "+ consumers[my-app]" in r.out
    assert revision(db) == 0
    assert "[[model_keys]]" not in export(aigw, db)


def test_prune(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH)).rc == 0
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    both = export(aigw, db)
    assert 'name = "alpha"' in both and 'name = "hunyuan-service"' in both  # absent = kept
    rev = revision(db)
    r = aigw("--db", db, "import", "--prune", "--dry-run", EXAMPLE)
    assert r.rc == 0 and "- model_services[alpha]" in r.out and "- consumers[app]" in r.out
    assert export(aigw, db) == both and revision(db) == rev
    r = aigw("--db", db, "import", "--prune", EXAMPLE)
    assert r.rc == 0, r.err
    for gone in (
        "model_keys[literal-key]",
        "model_services[alpha]",
        "model_apis[chat]",
        "consumers[off]",
        "consumer_groups[team]",
    ):
        assert f"- {gone}" in r.out
    assert revision(db) == rev + 1
    other = str(tmp_path / "o" / "aigw.db")
    aigw("--db", other, "import", EXAMPLE)
    assert export(aigw, db) == export(aigw, other)
    st = open_store(db)
    try:
        with st.session() as s:
            assert repo.consumer_for_key(s, PLAIN_KEY) is None
    finally:
        st.dispose()


def test_prune_refuses_when_kept_entity_references_pruned(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    before, rev = export(aigw, db), revision(db)
    # keeps the group (and its API, service, key) but not the consumer it lists
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("[[consumers]]")
    end = text.index("[[consumer_groups]]")
    path = write(tmp_path, "partial.toml", text[:start] + text[end:])
    line = one_line_error(aigw("--db", db, "import", "--prune", path))
    assert "consumer_groups[my-apps].consumers" in line and "my-app" in line
    assert export(aigw, db) == before and revision(db) == rev


def test_import_swaps_and_moves_unique_values(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Valid as a whole but not row by row: base paths swapped, a key moved, a path reused."""
    assert aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH)).rc == 0
    swapped = (
        RICH.replace('base_path = "chat/"', 'base_path = "TMP"')
        .replace('base_path = "/emb"', 'base_path = "/chat"')
        .replace('"TMP"', '"/emb"')
    )
    swapped = swapped.replace(f'api_keys = ["{PLAIN_KEY}"]', "api_key_hashes = []").replace(
        f'api_key_hashes = ["sha256:{"ab" * 32}"]', f'api_keys = ["{PLAIN_KEY}"]'
    )
    r = aigw("--db", db, "import", write(tmp_path, "swap.toml", swapped))
    assert r.rc == 0, r.err
    text = export(aigw, db)
    chat = text[text.index('name = "chat"') :]
    assert 'base_path = "/emb"' in chat.split("[[", 1)[0]
    st = open_store(db)
    try:
        with st.session() as s:
            assert repo.consumer_for_key(s, PLAIN_KEY) == "off"
    finally:
        st.dispose()
    # prune one API and give its base path to another in the same import
    reused = swapped.replace('base_path = "/chat"', 'base_path = "/gone"')
    cut = reused.index('[[model_apis]]\nname = "emb"')
    reused = reused[:cut] + reused[reused.index("[[consumers]]") :]
    reused = reused.replace('model_apis = ["chat", "emb"]', 'model_apis = ["chat"]').replace(
        'base_path = "/emb"', 'base_path = "/chat"'
    )
    r = aigw("--db", db, "import", "--prune", write(tmp_path, "reuse.toml", reused))
    assert r.rc == 0, r.err
    assert 'base_path = "/chat"' in export(aigw, db)


# ---------------------------------------------------------------- files, modes, --db


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path | str) -> int:
    return stat.S_IMODE(Path(p).stat().st_mode)


def test_store_files_private(aigw, db: str, open_umask: None) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    assert mode(Path(db).parent) == 0o700
    assert mode(db) == 0o600
    for suffix in ("-wal", "-shm"):
        if Path(db + suffix).exists():
            assert mode(db + suffix) == 0o600


def test_export_to_file(aigw, db: str, tmp_path: Path, open_umask: None) -> None:  # type: ignore[no-untyped-def]
    aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH))
    out = tmp_path / "secret.toml"
    r = aigw("--db", db, "export", "-o", out, "--include-secrets")
    assert r.rc == 0 and r.out == ""
    assert mode(out) == 0o600
    assert out.read_text(encoding="utf-8") == export(aigw, db, "--include-secrets")
    loose = tmp_path / "loose.toml"
    loose.write_text("old", encoding="utf-8")
    loose.chmod(0o644)
    assert aigw("--db", db, "export", "--include-secrets", "--output", loose).rc == 0
    assert mode(loose) == 0o600  # an existing file is tightened before secrets go in
    plain = tmp_path / "plain.toml"
    assert aigw("--db", db, "export", "-o", plain).rc == 0
    assert plain.read_text(encoding="utf-8") == export(aigw, db)


def test_db_option_before_or_after_command_and_env(aigw, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    a, b, c = (str(tmp_path / n / "aigw.db") for n in ("a", "b", "c"))
    assert aigw("--db", a, "import", EXAMPLE).rc == 0
    assert aigw("import", EXAMPLE, "--db", b).rc == 0
    monkeypatch.setenv("AIGW_DB", c)
    assert aigw("import", EXAMPLE).rc == 0
    for path in (a, b, c):
        assert revision(path) == 1
    assert export(aigw, a) == export(aigw, b) == aigw("export").out
    url = f"sqlite:///{tmp_path / 'u' / 'x.db'}"
    assert aigw("--db", url, "import", EXAMPLE).rc == 0
    assert (tmp_path / "u" / "x.db").exists()
    assert aigw("export", "--db", url).out == export(aigw, a)
    assert revision(c) == 1  # --db beat AIGW_DB


def test_newer_schema_refused(aigw, db: str) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 5),))
    con.commit()
    con.close()
    line = one_line_error(aigw("--db", db, "export"))
    assert "schema version" in line and str(SCHEMA_VERSION + 5) in line


# ---------------------------------------------------------------- error paths


def test_error_paths(aigw, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # never the user's real data folder
    non_utf8 = tmp_path / "latin1.toml"
    non_utf8.write_bytes(b'[[model_keys]]\nname = "caf\xe9"\n')
    a_file = write(tmp_path, "plain.txt", "x")
    cases = [
        (["frobnicate"], "frobnicate"),
        (["--db", db, "logs", "-n", "0"], "-n"),
        (["--db", db, "logs", "-n", "ten"], "'ten'"),
        (["--db", db, "usage", "--since", "last tuesday"], "last tuesday"),
        (["--db", db, "usage", "--since", "7x"], "7x"),
        (["--db", db, "usage", "--since", "99999999999999999999d"], "out of range"),
        (["--db", db, "usage", "--json", "--since", "0001-01-01T00:00:00+14:00"], "out of range"),
        (["--db", db, "logs", "-n", "99999999999999999999"], "-n"),
        (["--db", db, "usage", "--by", "colour"], "colour"),
        (["--db", db, "import", tmp_path / "missing.toml"], "missing.toml"),
        (["--db", db, "import", tmp_path], "directory"),
        (["--db", db, "import", non_utf8], "UTF-8"),
        (["--db", db, "import"], "FILE"),
        (["--db", db, "export", "-o", a_file / "out.toml"], "out.toml"),
        (["--db", db, "export", "-o", tmp_path / "nodir" / "out.toml"], "out.toml"),
        (["--db", db, "export", "-o", tmp_path], "cannot write"),
        (["--db", str(tmp_path), "export"], "directory"),
        (["--db", str(a_file / "x.db"), "export"], "x.db"),
        (["--db", db, "import", EXAMPLE, "--bogus"], "--bogus"),
        (["--db", "nosuchdriver://x/y", "export"], "cannot open database"),
    ]
    for argv, names in cases:
        line = one_line_error(aigw(*argv))
        assert names in line, (argv, line)
    assert not Path(db).exists() or revision(db) == 0
    assert not (tmp_path / "xdg").exists()  # a bad URL creates no folder


def test_gateway_only_import_bumps_once(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "gw.toml", '[gateway]\nlisten = "0.0.0.0:9000"\npublic_url = "http://gw.lan:9000/"\n')
    r = aigw("--db", db, "import", path)
    assert r.rc == 0 and "~ gateway" in r.out
    assert revision(db) == 1
    text = export(aigw, db)
    assert 'listen = "0.0.0.0:9000"' in text and 'public_url = "http://gw.lan:9000"' in text
    assert "no changes" in aigw("--db", db, "import", path).out
    assert revision(db) == 1


def test_import_file_with_bom(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    r = aigw("--db", db, "import", bom)
    assert r.rc == 0, r.err
    assert "+ consumers[my-app]" in r.out


def test_reimport_keeps_keys_made_in_the_console(aigw, db: str) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", EXAMPLE).rc == 0
    st = open_store(db)
    try:
        with st.session() as s:
            made = repo.create_consumer_key(s, "my-app")
            rev = repo.get_revision(s)
    finally:
        st.dispose()
    r = aigw("--db", db, "import", EXAMPLE)  # lists only its own plain key
    assert r.rc == 0 and "no changes" in r.out
    assert revision(db) == rev
    st = open_store(db)
    try:
        with st.session() as s:
            assert repo.consumer_for_key(s, made) == "my-app"
            assert repo.consumer_for_key(s, "sk-aigw-example-key-0123456789abcdef") == "my-app"
    finally:
        st.dispose()
    # an export lists both digests; importing it back is declarative and changes nothing
    text = export(aigw, db)
    assert f"sha256:{hash_key(made)}" in text and f"sha256:{hash_key('sk-aigw-example-key-0123456789abcdef')}" in text


def test_not_a_database(aigw, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite " * 100)
    assert "cannot open database" in one_line_error(aigw("--db", junk, "export"))


# ---------------------------------------------------------------- logs and usage

NOW = time.time()
RECORDS = [
    # (age in seconds, consumer, api, model, status, prompt, completion, cost)
    (3600, "app", "chat", "alpha-large", 200, 100, 50, 0.000225),
    (7200, "app", "chat", "alpha-small", 200, 10, 5, 0.0000225),
    (86400 * 2, "web", "chat", "alpha-large", 500, 7, 0, 0.0),
    (86400 * 3, "web", "emb", "hunyuan-embedding", 200, 40, 0, 0.00004),
    (86400 * 10, "app", "chat", "alpha-large", 200, 1000, 1000, 0.0035),
]


@pytest.fixture
def records_db(db: str) -> str:
    st = open_store(db)
    try:
        with st.session() as s:
            insert_records(
                s,
                [
                    {
                        "ts": NOW - age,
                        "request_id": f"req-{i}",
                        "path": "/chat/v1/chat/completions",
                        "consumer": c,
                        "api": a,
                        "service": "alpha",
                        "model": m,
                        "status": st_,
                        "latency_ms": 12.5,
                        "prompt_tokens": p,
                        "completion_tokens": ct,
                        "total_tokens": p + ct,
                        "cost": cost,
                        "stream": i % 2 == 0,
                        "estimated": i == 3,
                        "error": "upstream_error" if st_ >= 500 else "",
                    }
                    for i, (age, c, a, m, st_, p, ct, cost) in enumerate(RECORDS)
                ],
            )
    finally:
        st.dispose()
    return db


def test_logs_json(aigw, records_db: str) -> None:  # type: ignore[no-untyped-def]
    r = aigw("--db", records_db, "logs", "--json")
    assert r.rc == 0, r.err
    rows = json.loads(r.out)
    assert [d["request_id"] for d in rows] == ["req-4", "req-3", "req-2", "req-1", "req-0"]  # oldest first
    assert rows[-1]["prompt_tokens"] == 100 and rows[-1]["time"].endswith("Z")
    rows = json.loads(aigw("--db", records_db, "logs", "--json", "-n", "2").out)
    assert [d["request_id"] for d in rows] == ["req-1", "req-0"]


def test_logs_text(aigw, records_db: str) -> None:  # type: ignore[no-untyped-def]
    r = aigw("logs", "-n", "3", "--db", records_db)
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 3
    assert "req-0" in lines[-1] and "alpha-large" in lines[-1]
    assert "upstream_error" in lines[0]


def test_logs_empty_store(aigw, db: str) -> None:  # type: ignore[no-untyped-def]
    r = aigw("--db", db, "logs", "--json")
    assert r.rc == 0 and json.loads(r.out) == []


def _usage(aigw, db: str, *args: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    r = aigw("--db", db, "usage", "--json", *args)
    assert r.rc == 0, r.err
    return json.loads(r.out)  # type: ignore[no-any-return]


def test_usage_totals_exact(aigw, records_db: str) -> None:  # type: ignore[no-untyped-def]
    doc = _usage(aigw, records_db)
    assert doc["by"] == "consumer" and doc["since"] is None
    total = doc["total"]
    assert total["requests"] == 5
    assert total["errors"] == 1
    assert total["prompt_tokens"] == sum(r[5] for r in RECORDS)
    assert total["completion_tokens"] == sum(r[6] for r in RECORDS)
    assert total["total_tokens"] == sum(r[5] + r[6] for r in RECORDS)
    assert total["cost"] == pytest.approx(sum(r[7] for r in RECORDS), abs=1e-12)
    by = {row["consumer"]: row for row in doc["rows"]}
    assert by["app"]["requests"] == 3 and by["web"]["requests"] == 2
    assert by["app"]["total_tokens"] == 100 + 50 + 10 + 5 + 2000
    assert by["web"]["errors"] == 1


@pytest.mark.parametrize("by", ["api", "model"])
def test_usage_by(aigw, records_db: str, by: str) -> None:  # type: ignore[no-untyped-def]
    doc = _usage(aigw, records_db, "--by", by)
    idx = 2 if by == "api" else 3
    expected: dict[str, int] = {}
    for rec in RECORDS:
        expected[rec[idx]] = expected.get(rec[idx], 0) + rec[5] + rec[6]
    assert {row[by]: row["total_tokens"] for row in doc["rows"]} == expected
    assert doc["total"]["total_tokens"] == sum(expected.values())


def test_usage_since(aigw, records_db: str) -> None:  # type: ignore[no-untyped-def]
    doc = _usage(aigw, records_db, "--since", "7d")
    assert doc["total"]["requests"] == 4
    assert doc["total"]["prompt_tokens"] == 100 + 10 + 7 + 40
    assert doc["since"].endswith("Z")
    doc = _usage(aigw, records_db, "--since", "24h", "--by", "model")
    assert {row["model"] for row in doc["rows"]} == {"alpha-large", "alpha-small"}
    old = time.strftime("%Y-%m-%d", time.gmtime(NOW - 86400 * 30))
    assert _usage(aigw, records_db, "--since", old)["total"]["requests"] == 5


def test_usage_text(aigw, records_db: str) -> None:  # type: ignore[no-untyped-def]
    r = aigw("--db", records_db, "usage", "--by", "api")
    assert r.rc == 0
    lines = r.out.splitlines()
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert " 5 " in total and str(sum(r[5] + r[6] for r in RECORDS)) in total
    assert any(line.startswith("emb ") for line in lines)


# ---------------------------------------------------------------- the real command


def aigw_process(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_subprocess_import_export_round_trip(tmp_path: Path) -> None:
    db = str(tmp_path / "p" / "aigw.db")
    p = aigw_process("import", EXAMPLE, "--db", db)
    assert p.returncode == 0, p.stderr
    assert "consumers[my-app]" in p.stdout
    p = aigw_process("export", env={"AIGW_DB": db})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("# aigw configuration")
    assert 'base_path = "/hunyuan"' in p.stdout


def test_subprocess_bad_file(tmp_path: Path) -> None:
    db = str(tmp_path / "p" / "aigw.db")
    bad = write(tmp_path, "bad.toml", '[[model_apis]]\nname = "x"\nservices = ["nope"]\n')
    p = aigw_process("--db", db, "import", bad)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("aigw: error: ")
    assert "model_apis[x].services" in p.stderr
    assert p.stdout == ""


def test_subprocess_unknown_command() -> None:
    p = aigw_process("frobnicate")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("aigw: error: ") and p.stderr.count("\n") == 1


def test_database_failure_is_one_line(aigw, db: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    def locked(*_a: object, **_k: object) -> None:
        raise OperationalError("UPDATE meta …", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(repo, "apply_config", locked)
    line = one_line_error(aigw("--db", db, "import", EXAMPLE))
    assert "database is locked" in line


# ---------------------------------------------------------------- plain consumer keys


@pytest.mark.parametrize(
    "key", ["sk-aigw-zero\u200bwidth", "sk-aigw-c1\u009fcontrol", "sk-aigw-two words", "sk-ключ-12345678"]
)
def test_import_refuses_key_no_header_can_carry(aigw, db: str, tmp_path: Path, key: str) -> None:  # type: ignore[no-untyped-def]
    body = f'[[consumers]]\nname = "app"\napi_keys = ["{key}"]\n'
    line = one_line_error(aigw("--db", db, "import", write(tmp_path, "keys.toml", body)))
    assert "consumers[app].api_keys" in line and "visible ASCII characters" in line, line
    assert key not in line


def test_cors_origins_round_trip_normalised(aigw, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert aigw("--db", db, "import", write(tmp_path, "rich.toml", RICH)).rc == 0
    assert 'cors_origins = ["https://app.example.com", "*"]' in export(aigw, db)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--redis-url", "http://127.0.0.1:6379"],
            "aigw: error: --redis-url: must start with redis:// or rediss:// (TLS), e.g. redis://127.0.0.1:6379/0",
        ),
        (
            ["--workers", "0"],
            'aigw: error: --workers: must be a number of processes from 1 to 1024, or "auto" (one per CPU)',
        ),
    ],
)
def test_bad_scale_options_stop_serve_with_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    db = tmp_path / "data" / "aigw.db"
    out = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--db", str(db), "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [line]
