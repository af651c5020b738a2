"""Pilot storyboards for the entity screens, each ending with an assertion on the stored rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pilot_helpers import wait_until
from seed import seed
from textual.widgets import DataTable, Input, Select, SelectionList, Static

from store import repo
from store.db import Store
from store.spec import ModelKeySpec
from store.validation import check_name
from tui.app import AigwApp
from tui.modals.confirm import ConfirmModal
from tui.modals.form import EntityForm
from tui.modals.secret import ShowSecretModal
from tui.widgets.form_field import FormField

SIZE = (160, 48)


def app_for(store: Store, section: str) -> AigwApp:
    return AigwApp(store, start_section=section, poll_interval=None)


def config(store: Store) -> Any:
    with store.session() as s:
        return repo.load_config(s)


async def open_section(pilot: Any, app: AigwApp, screen_name: str) -> Any:
    await wait_until(
        pilot, lambda: type(app.screen).__name__ == screen_name and app.screen.config is not None, what=screen_name
    )
    return app.screen


async def wait_screen(pilot: Any, app: AigwApp, cls: type) -> Any:
    return await wait_until(pilot, lambda: isinstance(app.screen, cls) and app.screen, what=cls.__name__)


def table_names(screen: Any) -> list[str]:
    table = screen.query_one("#entity-table", DataTable)
    return [str(k.value) for k in table.rows]


class TestModelKeys:
    async def test_create_edit_delete(self, store: Store) -> None:
        app = app_for(store, "model-keys")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_section(pilot, app, "ModelKeysScreen")
            await pilot.press("n")
            form = await wait_screen(pilot, app, EntityForm)
            await pilot.press(*"hunyuan-key", "tab", *"sk-live-credential-123")
            assert form.query_one("#credential", Input).password  # masked while typed
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: "hunyuan-key" in table_names(screen), what="row")
            row = screen.query_one("#entity-table", DataTable).get_row("hunyuan-key")
            assert "sk-live" not in " ".join(str(c) for c in row)  # never shown after entry

            await pilot.press("enter")  # edit: the credential field starts empty = unchanged
            form = await wait_screen(pilot, app, EntityForm)
            assert form.query_one("#credential", Input).value == ""
            form.query_one("#description", Input).value = "Hunyuan production key"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: config(store).model_keys[0].description, what="saved")
            assert config(store).model_keys[0].credential == "sk-live-credential-123"

            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            await wait_until(pilot, lambda: not config(store).model_keys, what="deleted")
        assert config(store).model_keys == []

    async def test_env_credential_and_reveal(self, store: Store) -> None:
        app = app_for(store, "model-keys")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_section(pilot, app, "ModelKeysScreen")
            await pilot.press("n")
            form = await wait_screen(pilot, app, EntityForm)
            await pilot.press(*"env-key", "tab", *"env:HUNYUAN_API_KEY")
            await pilot.press("ctrl+l")
            assert not form.query_one("#credential", Input).password  # reveal is explicit
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: "env-key" in table_names(screen), what="row")
            cells = screen.query_one("#entity-table", DataTable).get_row("env-key")
            assert "env:HUNYUAN_API_KEY" in str(cells[1])
        assert config(store).model_keys[0].credential == "env:HUNYUAN_API_KEY"

    async def test_validation_message_shown_at_the_field(self, store: Store) -> None:
        app = app_for(store, "model-keys")
        async with app.run_test(size=SIZE) as pilot:
            await open_section(pilot, app, "ModelKeysScreen")
            await pilot.press("n")
            form = await wait_screen(pilot, app, EntityForm)
            await pilot.press(*"Bad Name", "tab", *"env:1BAD")
            await pilot.press("ctrl+s")
            name_field = form.query_one("#field-name", FormField)
            await wait_until(pilot, lambda: name_field.has_class("-invalid"), what="name error")
            assert name_field.error == check_name("Bad Name")
            assert "env:" in form.query_one("#field-credential", FormField).error
            assert app.screen is form  # not saved, still open
        assert config(store).model_keys == []

    async def test_refused_delete_names_who_uses_it(self, store: Store) -> None:
        seed(store, upto="model_services")
        app = app_for(store, "model-keys")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_section(pilot, app, "ModelKeysScreen")
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            msg = screen.query_one("#entity-message", Static)
            await wait_until(pilot, lambda: msg.has_class("-error"), what="refusal")
            assert "model service 'hunyuan-service'" in str(msg.visual)
        assert [k.name for k in config(store).model_keys] == ["hunyuan-key"]

    async def test_filter(self, store: Store) -> None:
        with store.session() as s:
            for name in ("openai-key", "hunyuan-key", "deepseek-key"):
                repo.save(s, "model_keys", ModelKeySpec(name, "env:X"))
        app = app_for(store, "model-keys")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_section(pilot, app, "ModelKeysScreen")
            await wait_until(pilot, lambda: len(table_names(screen)) == 3, what="rows")
            await pilot.press("slash", *"hunyuan")
            await wait_until(pilot, lambda: table_names(screen) == ["hunyuan-key"], what="filtered")
            await pilot.press("escape")
            await wait_until(pilot, lambda: len(table_names(screen)) == 3, what="filter cleared")


class TestModelServices:
    async def test_vendor_preset_fills_address_and_models(self, store: Store) -> None:
        seed(store, upto="model_keys")
        app = app_for(store, "model-services")
        async with app.run_test(size=SIZE) as pilot:
            await open_section(pilot, app, "ModelServicesScreen")
            await pilot.press("n")
            form = await wait_screen(pilot, app, EntityForm)
            assert form.query_one("#address", Input).value == "https://api.hunyuan.cloud.tencent.com/v1"
            assert form.query_one("#default-model", Input).value == "hunyuan-2.0-instruct-20251111"
            await pilot.press(*"deepseek-service")
            form.query_one("#vendor", Select).value = "deepseek"
            await wait_until(
                pilot,
                lambda: form.query_one("#address", Input).value == "https://api.deepseek.com/v1",
                what="address from preset",
            )
            assert form.query_one("#default-model", Input).value == "deepseek-chat"
            assert form.query_one("#keys", SelectionList).selected == ["hunyuan-key"]
            form.query_one("#prices", Input).value = "deepseek-chat=0.27/1.1"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: config(store).model_services, what="saved")
        svc = config(store).model_services[0]
        assert (svc.name, svc.vendor, svc.address, svc.keys) == (
            "deepseek-service",
            "deepseek",
            "https://api.deepseek.com/v1",
            ["hunyuan-key"],
        )
        assert svc.prices["deepseek-chat"].output == 1.1

    async def test_missing_key_is_reported_at_the_keys_field(self, store: Store) -> None:
        app = app_for(store, "model-services")
        async with app.run_test(size=SIZE) as pilot:
            await open_section(pilot, app, "ModelServicesScreen")
            await pilot.press("n")
            form = await wait_screen(pilot, app, EntityForm)
            await pilot.press(*"svc", "ctrl+s")
            field = form.query_one("#field-keys", FormField)
            await wait_until(pilot, lambda: field.has_class("-invalid"), what="keys error")
            assert "at least one model key" in field.error
        assert config(store).model_services == []


class TestModelApis:
    async def test_create_with_base_path(self, store: Store) -> None:
        seed(store, upto="model_services")
        app = app_for(store, "model-apis")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_section(pilot, app, "ModelApisScreen")
            await pilot.press("n")
            form = await wait_screen(pilot, app, EntityForm)
            await pilot.press(*"hunyuan-api")
            form.query_one("#base-path", Input).value = "hunyuan"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: "hunyuan-api" in table_names(screen), what="row")
            cells = screen.query_one("#entity-table", DataTable).get_row("hunyuan-api")
            assert str(cells[-1]) == "http://127.0.0.1:8080/hunyuan/v1/chat/completions"
        api = config(store).model_apis[0]
        assert (api.base_path, api.routes, api.services) == ("/hunyuan", ["/v1/chat/completions"], ["hunyuan-service"])

    async def test_route_management_shows_urls_curl_and_diagnoses_a_stopped_gateway(self, store: Store) -> None:
        key = seed(store)
        with store.session() as s:
            gw = repo.load_config(s).gateway
            gw.listen = "127.0.0.1:1"  # nothing listens there
            repo.save_gateway(s, gw)
        app = app_for(store, "model-apis")
        async with app.run_test(size=SIZE) as pilot:
            await open_section(pilot, app, "ModelApisScreen")
            await pilot.press("t")
            detail = await wait_until(
                pilot,
                lambda: type(app.screen).__name__ == "RouteManagementScreen" and app.screen,
                what="route management",
            )
            curl = str(detail.query_one("#routes-curl", Static).visual)
            assert "http://127.0.0.1:1/hunyuan/v1/chat/completions" in curl
            assert '"model": "hunyuan-2.0-instruct-20251111"' in curl
            detail.query_one("#tryit-key", Input).value = key or ""
            await pilot.press("ctrl+t")
            result = detail.query_one("#tryit-result", Static)
            await wait_until(pilot, lambda: "not running" in str(result.visual), what="diagnosis")


class TestConsumers:
    async def test_key_shown_once_stored_hashed_then_revoked(self, store: Store, db_path: Path) -> None:
        app = app_for(store, "consumers")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_section(pilot, app, "ConsumersScreen")
            await pilot.press("n")
            await wait_screen(pilot, app, EntityForm)
            await pilot.press(*"my-app", "ctrl+s")
            modal = await wait_screen(pilot, app, ShowSecretModal)
            key = str(modal.query_one("#secret-key", Static).visual)
            assert key.startswith("sk-aigw-") and len(key) >= 40
            assert "shown only once" in str(modal.query_one("#secret-warning", Static).visual)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen is screen, what="modal closed")
            keys = screen.query_one("#consumer-keys", DataTable)
            await wait_until(
                pilot,
                lambda: keys.row_count == 1 and keys.get_row_at(0)[0].plain.startswith("sk-aigw-"),
                what="key listed",
            )
            assert key not in keys.get_row_at(0)[0].plain  # listed by prefix only

            with store.session() as s:
                assert repo.consumer_for_key(s, key) == "my-app"
            store.engine.dispose()
            data = b"".join(p.read_bytes() for p in db_path.parent.glob("aigw.db*"))
            assert key.encode() not in data  # only the hash is stored

            keys.focus()
            await pilot.press("x")
            await pilot.pause()
            await pilot.press("y")
            await wait_until(pilot, lambda: not config(store).consumers[0].api_key_hashes, what="revoked")
        with store.session() as s:
            assert repo.consumer_for_key(s, key) is None

    async def test_create_key_for_existing_consumer(self, store: Store) -> None:
        seed(store, upto="consumers")
        app = app_for(store, "consumers")
        async with app.run_test(size=SIZE) as pilot:
            await open_section(pilot, app, "ConsumersScreen")
            await pilot.press("k")
            modal = await wait_screen(pilot, app, ShowSecretModal)
            key = str(modal.query_one("#secret-key", Static).visual)
        with store.session() as s:
            assert repo.consumer_for_key(s, key) == "my-app"
            assert len(repo.list_consumer_keys(s, "my-app")) == 2


class TestConsumerGroups:
    async def test_grant_and_revoke(self, store: Store) -> None:
        seed(store, upto="consumers")
        app = app_for(store, "consumer-groups")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_section(pilot, app, "ConsumerGroupsScreen")
            await pilot.press("n")
            form = await wait_screen(pilot, app, EntityForm)
            await pilot.press(*"my-apps")
            form.query_one("#model-apis", SelectionList).deselect_all()
            form.query_one("#requests-per-minute", Input).value = "600"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: "my-apps" in table_names(screen), what="group row")
            group = config(store).consumer_groups[0]
            assert (group.consumers, group.model_apis, group.requests_per_minute) == (["my-app"], [], 600)

            await pilot.press("a")  # Add Authorization
            await wait_until(pilot, lambda: type(app.screen).__name__ == "PickModal", what="picker")
            await pilot.press("space", "ctrl+s")
            await wait_until(
                pilot, lambda: config(store).consumer_groups[0].model_apis == ["hunyuan-api"], what="granted"
            )
            apis = screen.query_one("#group-apis", DataTable)
            await wait_until(
                pilot, lambda: apis.row_count == 1 and "hunyuan-api" in str(apis.get_row_at(0)[0]), what="grant listed"
            )

            apis.focus()
            await pilot.press("x")
            await pilot.pause()
            await pilot.press("y")
            await wait_until(pilot, lambda: config(store).consumer_groups[0].model_apis == [], what="revoked")
        assert config(store).consumer_groups[0].consumers == ["my-app"]

    async def test_refused_delete_of_granted_api(self, store: Store) -> None:
        seed(store)
        app = app_for(store, "model-apis")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            screen = await open_section(pilot, app, "ModelApisScreen")
            await pilot.press("d")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmModal)  # in use: said at once, nothing asked
            msg = screen.query_one("#entity-message", Static)
            assert "in use by consumer group 'my-apps'" in str(msg.visual)
            assert "model_apis[" not in str(msg.visual)
            notes = list(app._notifications)
            assert notes and notes[-1].timeout <= 5 and "model_apis[" not in notes[-1].message
        assert [a.name for a in config(store).model_apis] == ["hunyuan-api"]


class TestInstanceInfo:
    async def test_edit_gateway_settings(self, store: Store) -> None:
        app = app_for(store, "instance")
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: type(app.screen).__name__ == "InstanceScreen" and app.screen.settings is not None,
                what="instance",
            )
            await pilot.press("e")
            form = await wait_screen(pilot, app, EntityForm)
            form.query_one("#public-url", Input).value = "https://gw.example.com/"
            form.query_one("#listen", Input).value = "0.0.0.0:9090"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: config(store).gateway.listen == "0.0.0.0:9090", what="saved")
            await wait_until(pilot, lambda: app.screen.settings.public_url == "https://gw.example.com", what="reloaded")
            await pilot.pause()
            assert "https://gw.example.com" in app.export_screenshot()
        assert config(store).gateway.public_url == "https://gw.example.com"

    async def test_editing_settings_keeps_the_fields_the_form_does_not_show(self, store: Store) -> None:
        from store import repo

        with store.session() as s:
            gw = repo.load_config(s).gateway
            gw.redis_url, gw.redis_failure, gw.workers = "redis://127.0.0.1:6379/0", "refuse", 2
            repo.save_gateway(s, gw)
        app = app_for(store, "instance")
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: type(app.screen).__name__ == "InstanceScreen" and app.screen.settings is not None,
                what="instance",
            )
            await pilot.press("e")
            form = await wait_screen(pilot, app, EntityForm)
            form.query_one("#listen", Input).value = "0.0.0.0:9191"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: config(store).gateway.listen == "0.0.0.0:9191", what="saved")
        gw = config(store).gateway
        assert (gw.redis_url, gw.redis_failure, gw.workers) == ("redis://127.0.0.1:6379/0", "refuse", 2)
