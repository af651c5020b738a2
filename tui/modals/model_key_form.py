"""Create or edit a model key: the vendor credential is typed masked and never shown again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Input

from store.spec import ModelKeySpec

from ..fields import REVEAL_KEY, entity_field, live_checks
from .form import EntityForm, as_number


class ModelKeyForm(EntityForm):
    """Key Name, Credential Content (masked; ``env:VAR`` allowed), Description."""

    TABLE = "model_keys"
    NOUN = "model key"
    LIVE_CHECKS: ClassVar = live_checks("model_keys")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            REVEAL_KEY,
            "reveal",
            "Reveal/hide credential",
            id="key-reveal",
            tooltip="Show what you typed in the credential field (hidden again on repeat)",
        ),
    ]

    def compose_fields(self) -> Iterable[Widget]:
        o = self.original
        yield entity_field(self.TABLE, "name", Input(o.name if o else "", id="name"))
        # Editing: the stored credential is never shown; an empty field keeps it.
        placeholder = "unchanged — type a new key, or env:VAR, to replace it" if o else ""
        yield entity_field(self.TABLE, "credential", Input("", placeholder=placeholder, password=True, id="credential"))
        yield entity_field(
            self.TABLE, "max_concurrency", Input(str(o.max_concurrency) if o else "0", id="max-concurrency")
        )
        yield entity_field(self.TABLE, "description", Input(o.description if o else "", id="description"))

    def action_reveal(self) -> None:
        box = self.query_one("#credential", Input)
        box.password = not box.password

    def build_spec(self) -> ModelKeySpec:
        credential = self.value("credential").strip()
        return ModelKeySpec(
            name=self.value("name").strip(),
            credential=credential or (None if self.original else ""),
            description=self.value("description").strip(),
            max_concurrency=int(as_number(self.value("max_concurrency"), "max_concurrency", integer=True)),
        )
