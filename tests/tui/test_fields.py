"""Forms and Quick Start show each field the same way; placeholders read as examples; one reveal key."""

from __future__ import annotations

from typing import Any

from pilot_helpers import wait_until
from test_quickstart import wizard
from textual.widgets import Input

from store.db import Store
from tui.app import AigwApp
from tui.fields import REVEAL_KEY
from tui.modals.form import EntityForm
from tui.widgets.form_field import FormField

PAIRS = [("model-keys", 0), ("model-services", 1), ("model-apis", 2), ("consumers", 3), ("consumer-groups", 4)]


def shown(root: Any) -> dict[str, tuple[str, str, str]]:
    """field → (label, hint, placeholder) as on screen."""
    out = {}
    for f in root.query(FormField):
        placeholder = f.control.placeholder if isinstance(f.control, Input) else ""
        out[f.field] = (f.label, f.hint, placeholder)
    return out


async def test_form_and_quick_start_show_a_field_alike(store: Store) -> None:
    app = AigwApp(store, start_section="quickstart", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        qs = await wizard(pilot, app)
        steps = [shown(s) for s in qs.steps]
        for section, index in PAIRS:
            await app.switch_mode(section)
            await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None)
            await pilot.press("n")
            form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen)
            fields = shown(form)
            for name, (label, hint, placeholder) in steps[index].items():
                if name in fields and name != "use":
                    assert fields[name][0] == label, (section, name)
                    assert fields[name][1] == hint or not hint or not fields[name][1], (section, name)
                    assert fields[name][2] == placeholder, (section, name)
            for name, (_, _, placeholder) in fields.items():
                # An example, not something that looks typed in already.
                assert not placeholder or placeholder.startswith("e.g.") or " " in placeholder, (section, name)
            await pilot.press("escape")
            await pilot.pause()


async def test_base_path_says_where_empty_serves(store: Store) -> None:
    app = AigwApp(store, start_section="model-apis", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None)
        await pilot.press("n")
        form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen)
        field = form.query_one("#field-base-path", FormField)
        assert "root /" in field.hint and field.control.placeholder.startswith("e.g. /")


async def test_one_key_reveals_the_credential_and_ctrl_r_stays_restart(store: Store) -> None:
    app = AigwApp(store, start_section="model-keys", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None)
        await pilot.press("n")
        form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen)
        box = form.query_one("#credential", Input)
        assert box.password
        await pilot.press(REVEAL_KEY)
        assert not box.password
        assert not any(b.key == "ctrl+r" for b in form._bindings.key_to_bindings.get("ctrl+r", []))
        assert REVEAL_KEY in form.query_one("#field-credential", FormField).hint
    qs_app = AigwApp(store, start_section="quickstart", poll_interval=None)
    async with qs_app.run_test(size=(160, 48)) as pilot:
        qs = await wizard(pilot, qs_app)
        box = qs.steps[0].query_one("#credential", Input)
        box.focus()
        await pilot.press(REVEAL_KEY)
        assert not box.password
