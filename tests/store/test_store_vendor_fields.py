"""A model service's ``proxy`` and ``ca_file``: their rules, and their way through export and import."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from store_helpers import accepted, base_config, refused

from store import config_io, repo
from store.db import Store
from store.validation import validate_config


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("pem")
    cert, key = folder / "ca.pem", folder / "key.pem"
    subprocess.run(
        [
            # An EC key: made in milliseconds, where an RSA one takes up to half a second.
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=test-ca"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert


@pytest.mark.parametrize("good", ["", "none", " NONE ", "http://proxy:3128", "http://u:p%40ss@10.0.0.1:8080"])
def test_proxy_accepted(good: str) -> None:
    cfg = base_config()
    cfg.model_services[0].proxy = good
    accepted(cfg)


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        ("https://proxy:3128", "http:// forward proxy"),
        ("socks5://proxy:1080", "http:// forward proxy"),
        ("http://:3128", "no host"),
        ("http://proxy:99999", "not a valid proxy URL"),
        ("http://proxy:3128/path", "only http://"),
    ],
)
def test_proxy_refused_without_echoing_it(bad: str, text: str) -> None:
    cfg = base_config()
    cfg.model_services[0].proxy = bad
    err = refused(cfg, "model_services", "s1", "proxy", text)
    assert bad.strip() not in str(err)  # its userinfo may be a password


def test_ca_file_accepted_and_made_absolute(pem: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pem.parent)
    cfg = base_config()
    cfg.model_services[0].ca_file = pem.name
    validate_config(cfg)
    assert cfg.model_services[0].ca_file == str(pem)


def test_ca_file_must_exist_and_hold_pem(tmp_path: Path) -> None:
    cfg = base_config()
    cfg.model_services[0].ca_file = str(tmp_path / "missing.pem")
    err = refused(cfg, "model_services", "s1", "ca_file", "cannot read")
    assert str(err).startswith("model_services[s1].ca_file: ") and "\n" not in str(err)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cfg.model_services[0].ca_file = str(junk)
    refused(cfg, "model_services", "s1", "ca_file", "no PEM certificate")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    cfg.model_services[0].ca_file = str(broken)
    refused(cfg, "model_services", "s1", "ca_file", "not a valid PEM")


def test_round_trip_through_export_and_import(pem: Path) -> None:
    cfg = base_config()
    cfg.model_services[0].proxy = "http://proxy:3128"
    cfg.model_services[0].ca_file = str(pem)
    validate_config(cfg)
    text = config_io.dumps(cfg)
    assert f'ca_file = "{pem}"' in text and 'proxy = "http://proxy:3128"' in text
    back = config_io.parse(text).config
    assert (back.model_services[0].proxy, back.model_services[0].ca_file) == ("http://proxy:3128", str(pem))
    assert "proxy" not in config_io.to_document(back)["model_services"][1]  # empty: left out


def test_stored_and_loaded(store: Store, pem: Path) -> None:
    cfg = base_config()
    cfg.model_services[0].proxy = "none"
    cfg.model_services[0].ca_file = str(pem)
    with store.session() as s:
        repo.save(s, "model_keys", cfg.model_keys[0])
        repo.save(s, "model_services", cfg.model_services[0])
        got = repo.find(repo.load_config(s), "model_services", "s1")
    assert (got.proxy, got.ca_file) == ("none", str(pem))
