"""The model service form's proxy and CA file inputs: checked like an import, saved to the store."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pilot_helpers import wait_until
from seed import seed
from test_entity_screens import SIZE, app_for, config, open_section, wait_screen
from textual.widgets import Input

from store.db import Store
from tui.modals.form import EntityForm
from tui.widgets.form_field import FormField


async def test_proxy_and_ca_file_saved_after_their_checks(store: Store, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    pem = tmp_path / "ca.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca"),
            *("-keyout", str(tmp_path / "key.pem"), "-out", str(pem)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    seed(store, upto="model_keys")
    app = app_for(store, "model-services")
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, app, "ModelServicesScreen")
        await pilot.press("n")
        form = await wait_screen(pilot, app, EntityForm)
        await pilot.press(*"proxied")
        form.query_one("#proxy", Input).value = "socks5://p:1080"
        proxy_field = form.query_one("#field-proxy", FormField)
        await wait_until(pilot, lambda: proxy_field.has_class("-invalid"), what="proxy checked as typed")
        assert "http:// forward proxy" in proxy_field.error
        form.query_one("#proxy", Input).value = "http://proxy.internal:3128"
        form.query_one("#ca-file", Input).value = str(tmp_path / "missing.pem")
        await pilot.press("ctrl+s")
        ca_field = form.query_one("#field-ca-file", FormField)
        await wait_until(pilot, lambda: ca_field.has_class("-invalid"), what="ca_file error")
        assert "cannot read" in ca_field.error
        form.query_one("#ca-file", Input).value = str(pem)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: config(store).model_services, what="saved")
    svc = config(store).model_services[0]
    assert (svc.proxy, svc.ca_file) == ("http://proxy.internal:3128", str(pem))
