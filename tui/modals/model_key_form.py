"""Create or edit a model key: the vendor credential is typed masked and never shown again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Input

from store.spec import ModelKeySpec
from store.validation import check_credential, check_description, check_name

from ..widgets.form_field import FormField
from .form import EntityForm, as_number


class ModelKeyForm(EntityForm):
    """Key Name, Credential Content (masked; ``env:VAR`` allowed), Description."""

    TABLE = "model_keys"
    NOUN = "model key"
    LIVE_CHECKS: ClassVar = {"name": check_name, "credential": check_credential, "description": check_description}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+r",
            "reveal",
            "Reveal/hide credential",
            id="key-reveal",
            tooltip="Show what you typed in the credential field (hidden again on repeat)",
        ),
    ]

    def compose_fields(self) -> Iterable[Widget]:
        o = self.original
        yield FormField("Key Name", Input(o.name if o else "", placeholder="hunyuan-key", id="name"), field="name")
        placeholder = (
            "unchanged — type a new key, or env:VAR, to replace it"
            if o
            else "the vendor API key, or env:HUNYUAN_API_KEY"
        )
        yield FormField(
            "Credential Content",
            Input("", placeholder=placeholder, password=True, id="credential"),
            field="credential",
            hint="Masked; ctrl+r reveals what you typed. env:VAR reads the variable when the gateway sends a request.",
        )
        yield FormField(
            "Max concurrency (0 = unlimited)",
            Input(str(o.max_concurrency) if o else "0", id="max-concurrency"),
            field="max_concurrency",
            hint="Requests in flight with this key at most (Hunyuan allows 5 concurrent sessions per account)",
        )
        yield FormField(
            "Description (optional)", Input(o.description if o else "", id="description"), field="description"
        )

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
