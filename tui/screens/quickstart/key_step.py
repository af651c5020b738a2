"""Step 1 — Create Model Key: the vendor credential the gateway sends, typed masked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual.widget import Widget
from textual.widgets import Input

from store.spec import ModelKeySpec

from ...fields import FIELDS, entity_field, live_checks
from .step import WizardStep


class KeyStep(WizardStep):
    """Key Name (``hunyuan-key``), Credential Content (masked; ``env:VAR`` allowed), description."""

    TABLE = "model_keys"
    NOUN = "model key"
    DEFAULT_NAME = "hunyuan-key"
    INTRO = (
        "Model keys hold the credential the gateway uses to call the vendor. Paste the API key "
        "you got from Hunyuan (or any vendor). Applications never see it."
    )
    LIVE_CHECKS: ClassVar = live_checks("model_keys")

    def compose_fields(self) -> Iterable[Widget]:
        yield entity_field(self.TABLE, "name", Input(self.DEFAULT_NAME, id="name"))
        yield entity_field(self.TABLE, "credential", Input("", password=True, id="credential"))
        yield entity_field(self.TABLE, "description", Input("", id="description"))

    def fill(self, spec: Any | None) -> None:
        self.set_value("name", spec.name if spec else self.unique_name(self.DEFAULT_NAME))
        box = self.query_one("#credential", Input)
        if spec is not None:
            box.value = ""  # a stored credential is never shown; empty = keep it

        box.placeholder = (
            "unchanged — type a new key, or env:VAR, to replace it"
            if spec
            else FIELDS["model_keys"]["credential"].placeholder
        )
        self.set_value("description", spec.description if spec else "")

    def toggle_reveal(self) -> None:
        box = self.query_one("#credential", Input)
        box.password = not box.password

    def build_spec(self) -> ModelKeySpec:
        spec = self.base_spec() or ModelKeySpec(name="")
        credential = self.value("credential").strip()
        spec.name = self.value("name").strip()
        # Editing with the field left empty keeps the stored credential (None = unchanged).
        spec.credential = credential or (None if self.original else "")
        spec.description = self.value("description").strip()
        return spec

    def first_focus(self) -> Widget | None:
        box = self.query_one("#credential", Input)
        if self.original and not box.value:
            return self.query_one("#name", Input)
        return box
