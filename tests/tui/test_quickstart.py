"""Quick Start storyboards: the six steps walked with the keyboard against the mock vendor
and a real ``aigw serve`` started by the wizard, each ending with an assertion on the stored rows."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import free_port
from mock_vendor import MockVendor
from pilot_helpers import wait_until
from seed import seed
from textual.widgets import Button, Input, Select, Static

from store import repo
from store.db import Store
from store.keys import hash_key
from store.spec import GatewaySpec, ModelKeySpec
from store.validation import check_credential, check_name, check_url
from tui.app import AigwApp, _first_section
from tui.gateway_process import GatewayController
from tui.modals.secret import ShowSecretModal
from tui.screens.quickstart import QuickStartScreen
from tui.screens.quickstart.progress import Progress, load_progress, save_progress
from tui.screens.quickstart.step import NEW

SIZE = (160, 48)
CREDENTIAL = "sk-hunyuan-typed-0001"


@pytest.fixture
def gw(store: Store) -> Iterator[GatewayController]:
    """Gateway settings on free ports; whatever the wizard started is stopped at the end."""
    with store.session() as s:
        repo.save_gateway(s, GatewaySpec(listen=f"127.0.0.1:{free_port()}", admin_listen=f"127.0.0.1:{free_port()}"))
    controller = GatewayController(store)
    try:
        yield controller
    finally:
        controller.stop()


def config(store: Store) -> Any:
    with store.session() as s:
        return repo.load_config(s)


def app_for(store: Store, gw: GatewayController | None = None) -> AigwApp:
    return AigwApp(store, start_section="quickstart", gateway=gw, poll_interval=None)


async def wizard(pilot: Any, app: AigwApp) -> QuickStartScreen:
    await wait_until(
        pilot, lambda: isinstance(app.screen, QuickStartScreen) and app.screen.started, what="Quick Start loaded"
    )
    await pilot.pause()
    return app.screen  # type: ignore[return-value]


async def at_step(pilot: Any, qs: QuickStartScreen, index: int) -> None:
    await wait_until(pilot, lambda: qs.index == index and not qs.busy and qs.app.screen is qs, what=f"step {index + 1}")
    await pilot.pause()


def step(qs: QuickStartScreen, index: int) -> Any:
    return qs.steps[index] if index < 5 else qs.invoke


def type_into(step_widget: Any, name: str, text: str) -> None:
    """Set a field as typing would (``Input.Changed`` runs the live check); focus moves there."""
    box = step_widget.control(name)
    box.focus()
    box.value = text


async def replace_text(pilot: Any, text: str) -> None:
    """Keyboard only: go to the end of the focused field, delete to the left, type."""
    await pilot.press("end", "ctrl+u", *text)


async def walk_to_invoke(pilot: Any, qs: QuickStartScreen, vendor_url: str) -> str:
    """Steps 1–5 with Enter and the defaults; only the credential and the address typed.
    Returns the consumer key shown once in step 4."""
    await at_step(pilot, qs, 0)
    assert qs.focused is step(qs, 0).query_one("#credential", Input)
    await pilot.press(*CREDENTIAL, "enter")
    await at_step(pilot, qs, 1)
    svc = step(qs, 1)
    assert svc.query_one("#name", Input).value == "hunyuan-service"
    assert svc.value("vendor") == "hunyuan" and svc.value("keys") == "hunyuan-key"
    assert svc.value("default_model") == "hunyuan-turbos-latest"
    assert qs.focused is svc.query_one("#name", Input)
    await pilot.press("tab", "tab", "tab")  # vendor, protocol, address
    assert qs.focused is svc.query_one("#address", Input)
    await replace_text(pilot, vendor_url)
    await pilot.press("enter")
    await at_step(pilot, qs, 2)
    assert step(qs, 2).value("base_path") == "/hunyuan"
    assert step(qs, 2).value("services") == "hunyuan-service"
    await pilot.press("enter")
    await at_step(pilot, qs, 3)
    assert step(qs, 3).value("name") == "my-app"
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(qs.app.screen, ShowSecretModal), what="key shown once")
    modal = qs.app.screen
    key = str(modal.query_one("#secret-key", Static).visual)
    assert key.startswith("sk-aigw-")
    await pilot.press("enter")  # Done
    await at_step(pilot, qs, 4)
    grp = step(qs, 4)
    assert grp.value("consumers") == ["my-app"] and grp.value("model_apis") == ["hunyuan-api"]
    await pilot.press("enter")
    await at_step(pilot, qs, 5)
    return key


class TestWalk:
    async def test_six_steps_with_the_keyboard_end_in_the_vendors_answer(
        self, store: Store, gw: GatewayController, fresh_vendor: MockVendor
    ) -> None:
        app = app_for(store, gw)
        async with app.run_test(size=SIZE) as pilot:
            qs = await wizard(pilot, app)
            steps = str(qs.query_one("#quickstart-steps", Static).visual)
            assert steps == "1 Model Key · 2 Model Service · 3 Model API · 4 Consumer · 5 Consumer Group · 6 Invoke"
            key = await walk_to_invoke(pilot, qs, fresh_vendor.url)
            inv = qs.invoke
            url = inv.query_one("#access-url", Static)
            port = config(store).gateway.listen.rsplit(":", 1)[1]
            assert str(url.visual) == f"http://127.0.0.1:{port}/hunyuan/v1/chat/completions"
            curl = str(inv.query_one("#curl", Static).visual)
            assert "hunyuan-turbos-latest" in curl and key not in curl  # masked
            assert qs.focused is inv.query_one("#send", Button)
            await pilot.press("enter")
            result = inv.query_one("#result", Static)
            await wait_until(
                pilot, lambda: result.has_class("-ok") or result.has_class("-failed"), timeout=60, what="answer"
            )
            assert "Hello from mock (hunyuan-turbos-latest)" in str(result.visual), str(result.visual)
            assert gw.status().is_up
            sent = fresh_vendor.requests[-1]
            assert sent.authorization == f"Bearer {CREDENTIAL}"
        cfg = config(store)
        assert [k.name for k in cfg.model_keys] == ["hunyuan-key"]
        assert cfg.model_keys[0].credential == CREDENTIAL  # stored as typed
        svc = cfg.model_services[0]
        assert (svc.name, svc.vendor, svc.address, svc.keys, svc.key_policy, svc.model_policy) == (
            "hunyuan-service",
            "hunyuan",
            fresh_vendor.url.rstrip("/"),
            ["hunyuan-key"],
            "polling",
            "specified",
        )
        api = cfg.model_apis[0]
        assert (api.name, api.base_path, api.routes, api.services, api.path_simplification) == (
            "hunyuan-api",
            "/hunyuan",
            ["/v1/chat/completions"],
            ["hunyuan-service"],
            True,
        )
        assert [c.name for c in cfg.consumers] == ["my-app"]
        assert cfg.consumers[0].api_key_hashes == ["sha256:" + hash_key(key)]  # only hashed
        grp = cfg.consumer_groups[0]
        assert (grp.name, grp.consumers, grp.model_apis) == ("my-apps", ["my-app"], ["hunyuan-api"])
        progress = load_progress(store)
        assert progress.step == 5 and progress.done
        assert _first_section(store) == "instance"  # finished: the console opens as usual
        assert key not in progress.to_json() and CREDENTIAL not in progress.to_json()


def seed_to_invoke(store: Store, address: str) -> str:
    """The five example entities and a run saved at step 6, as a restarted console finds them."""
    key = seed(store, address=address, credential=CREDENTIAL)
    assert key
    save_progress(
        store,
        Progress(
            step=5,
            names={
                "model_keys": "hunyuan-key",
                "model_services": "hunyuan-service",
                "model_apis": "hunyuan-api",
                "consumers": "my-app",
                "consumer_groups": "my-apps",
            },
        ),
    )
    return key


async def send(pilot: Any, qs: QuickStartScreen) -> Static:
    result = qs.invoke.query_one("#result", Static)
    result.remove_class("-ok", "-failed")
    await pilot.press("ctrl+t")
    await wait_until(
        pilot,
        lambda: (result.has_class("-ok") or result.has_class("-failed")) and not qs.busy,
        timeout=60,
        what="answer",
    )
    return result


class TestNavigation:
    async def test_back_keeps_what_was_typed_and_next_updates(self, store: Store, fresh_vendor: MockVendor) -> None:
        app = app_for(store)
        async with app.run_test(size=SIZE) as pilot:
            qs = await wizard(pilot, app)
            type_into(step(qs, 0), "credential", CREDENTIAL)
            type_into(step(qs, 0), "description", "primary vendor key")
            await pilot.press("enter")
            await at_step(pilot, qs, 1)
            assert step(qs, 0).original == "hunyuan-key"
            type_into(step(qs, 1), "name", "hy-svc")  # typed, not saved
            await pilot.press("ctrl+b")
            await at_step(pilot, qs, 0)
            assert step(qs, 0).value("description") == "primary vendor key"
            assert step(qs, 0).value("name") == "hunyuan-key"
            type_into(step(qs, 0), "name", "hy-key")  # rename the saved key
            await pilot.press("ctrl+n")
            await at_step(pilot, qs, 1)
            assert step(qs, 1).value("name") == "hy-svc"  # still what was typed
            assert step(qs, 1).value("keys") == "hy-key"  # follows step 1's rename
        cfg = config(store)
        assert [(k.name, k.credential, k.description) for k in cfg.model_keys] == [
            ("hy-key", CREDENTIAL, "primary vendor key")
        ]  # updated, not a second key
        assert load_progress(store).step == 1

    async def test_validation_stops_next_with_the_message_at_the_field(self, store: Store) -> None:
        app = app_for(store)
        async with app.run_test(size=SIZE) as pilot:
            qs = await wizard(pilot, app)
            key = step(qs, 0)
            await pilot.press("enter")  # no credential typed
            cred = key.field("credential")
            await wait_until(pilot, lambda: cred.has_class("-invalid") and not qs.busy, what="credential error")
            assert cred.error == check_credential("")
            assert qs.index == 0 and qs.focused is key.query_one("#credential", Input)
            await pilot.press(*"env:1B")
            assert "env:" in cred.error  # the live check, from store.validation
            type_into(key, "name", "Bad Name")
            await pilot.press("enter")
            name = key.field("name")
            await wait_until(pilot, lambda: name.has_class("-invalid") and not qs.busy, what="name error")
            assert name.error == check_name("Bad Name")
            assert qs.index == 0
            type_into(key, "name", "hunyuan-key")
            type_into(key, "credential", "env:HUNYUAN_API_KEY")
            await pilot.press("enter")
            await at_step(pilot, qs, 1)
            svc = step(qs, 1)
            type_into(svc, "address", "ftp://vendor")
            await pilot.press("enter")
            address = svc.field("address")
            await wait_until(pilot, lambda: address.has_class("-invalid") and not qs.busy, what="address error")
            assert address.error == check_url("ftp://vendor")
            assert qs.index == 1
        cfg = config(store)
        assert [(k.name, k.credential) for k in cfg.model_keys] == [("hunyuan-key", "env:HUNYUAN_API_KEY")]
        assert cfg.model_services == []

    async def test_a_restarted_console_resumes_at_the_saved_step(self, store: Store, fresh_vendor: MockVendor) -> None:
        assert _first_section(store) == "quickstart"  # offered on first start with an empty store
        app = app_for(store)
        async with app.run_test(size=SIZE) as pilot:
            qs = await wizard(pilot, app)
            type_into(step(qs, 0), "credential", CREDENTIAL)
            await pilot.press("enter")
            await at_step(pilot, qs, 1)
            type_into(step(qs, 1), "address", fresh_vendor.url)
            await pilot.press("enter")
            await at_step(pilot, qs, 2)
        assert load_progress(store).names == {"model_keys": "hunyuan-key", "model_services": "hunyuan-service"}
        assert _first_section(store) == "quickstart"  # an unfinished run reopens Quick Start

        app = app_for(store)
        async with app.run_test(size=SIZE) as pilot:
            qs = await wizard(pilot, app)
            await at_step(pilot, qs, 2)
            assert step(qs, 2).value("services") == "hunyuan-service"
            await pilot.press("ctrl+b")
            await at_step(pilot, qs, 1)
            svc = step(qs, 1)
            assert svc.original == "hunyuan-service" and svc.value("address") == fresh_vendor.url.rstrip("/")
            assert svc.value("use") == "hunyuan-service"
            await pilot.press("ctrl+n")
            await at_step(pilot, qs, 2)
            await pilot.press("enter")
            await at_step(pilot, qs, 3)
        cfg = config(store)
        assert [s.name for s in cfg.model_services] == ["hunyuan-service"]  # updated, not duplicated
        assert [a.name for a in cfg.model_apis] == ["hunyuan-api"]
        assert load_progress(store).step == 3

    async def test_existing_entities_can_be_picked(self, store: Store) -> None:
        with store.session() as s:
            repo.save(s, "model_keys", ModelKeySpec("team-key", "sk-team-0001", "shared"))
        app = app_for(store)
        async with app.run_test(size=SIZE) as pilot:
            qs = await wizard(pilot, app)
            key = step(qs, 0)
            assert key.value("use") == NEW and key.value("name") == "hunyuan-key"
            await pilot.press("tab", "tab")  # credential → description → the picker
            assert qs.focused is key.query_one("#use", Select)
            await pilot.press("enter")  # open the picker
            await pilot.press("down", "enter")  # "Use existing: team-key"
            await wait_until(pilot, lambda: key.original == "team-key", what="picked")
            assert key.value("name") == "team-key" and key.value("description") == "shared"
            assert key.value("credential") == ""  # never shown; empty = unchanged
            await pilot.press("ctrl+n")
            await at_step(pilot, qs, 1)
            assert step(qs, 1).value("keys") == "team-key"
        cfg = config(store)
        assert [(k.name, k.credential) for k in cfg.model_keys] == [("team-key", "sk-team-0001")]
        assert load_progress(store).names == {"model_keys": "team-key"}


class TestDiagnosis:
    async def test_each_failure_names_the_step_to_go_back_to(
        self, store: Store, gw: GatewayController, fresh_vendor: MockVendor
    ) -> None:
        key = seed_to_invoke(store, fresh_vendor.url)
        app = app_for(store, gw)
        async with app.run_test(size=SIZE) as pilot:
            qs = await wizard(pilot, app)
            await at_step(pilot, qs, 5)
            box = qs.invoke.query_one("#api-key", Input)
            assert box.value == "" and qs.focused is box  # a restarted console never has the key
            box.value = key  # pasted

            fresh_vendor.reject_keys[CREDENTIAL] = 401  # the vendor rejects the model key
            result = await send(pilot, qs)
            assert result.has_class("-failed") and "model key" in str(result.visual)
            assert qs.invoke.fix_step == 0 and qs.focused is qs.invoke.query_one("#fix", Button)
            await pilot.press("enter")  # "Go back to step 1: Model Key"
            await at_step(pilot, qs, 0)
            fresh_vendor.reject_keys.clear()
            qs.go(5)
            await at_step(pilot, qs, 5)

            with store.session() as s:  # the vendor address is unreachable
                svc = repo.get(s, "model_services", "hunyuan-service")
                svc.address = f"http://127.0.0.1:{free_port()}/v1"
                repo.save(s, "model_services", svc, original=svc.name)
            result = await send(pilot, qs)
            assert "cannot reach the vendor" in str(result.visual) and qs.invoke.fix_step == 1
            await pilot.press("ctrl+f")
            await at_step(pilot, qs, 1)
            with store.session() as s:
                svc.address = fresh_vendor.url
                repo.save(s, "model_services", svc, original=svc.name)
                grp = repo.get(s, "consumer_groups", "my-apps")
                grp.model_apis = []  # no grant
                repo.save(s, "consumer_groups", grp, original=grp.name)
            qs.go(5)
            await at_step(pilot, qs, 5)
            result = await send(pilot, qs)
            assert "not authorized" in str(result.visual) and qs.invoke.fix_step == 4

            box.value = "sk-aigw-" + "x" * 43  # a key the gateway does not know
            result = await send(pilot, qs)
            assert "does not accept this API key" in str(result.visual) and qs.invoke.fix_step == 3
            assert box.value not in str(result.visual)

            await pilot.press("ctrl+k")  # or create a new key for the consumer, shown once
            await wait_until(pilot, lambda: isinstance(app.screen, ShowSecretModal), what="new key shown")
            new_key = str(app.screen.query_one("#secret-key", Static).visual)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen is qs and box.value == new_key, what="key filled in")
            assert new_key not in str(qs.invoke.query_one("#curl", Static).visual)
        hashes = config(store).consumers[0].api_key_hashes
        assert sorted(hashes) == sorted("sha256:" + hash_key(k) for k in (key, new_key))

    async def test_gateway_that_cannot_start_is_diagnosed(
        self, store: Store, gw: GatewayController, fresh_vendor: MockVendor
    ) -> None:
        key = seed_to_invoke(store, fresh_vendor.url)
        port = int(config(store).gateway.listen.rsplit(":", 1)[1])
        with socket.socket() as busy:  # something else holds the gateway's port
            busy.bind(("127.0.0.1", port))
            busy.listen()
            app = app_for(store, gw)
            async with app.run_test(size=SIZE) as pilot:
                qs = await wizard(pilot, app)
                await at_step(pilot, qs, 5)
                qs.invoke.query_one("#api-key", Input).value = key
                result = await send(pilot, qs)
                assert "gateway did not start" in str(result.visual)
                assert qs.invoke.fix_step == 5
                assert "Start the gateway" in str(qs.invoke.query_one("#fix", Button).label)
        assert not fresh_vendor.requests
