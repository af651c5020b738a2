"""Key Management: the vendor API keys (model keys) — listed without ever showing a secret."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text

from ..modals.model_key_form import ModelKeyForm
from .entity import EntityScreen


def credential_label(credential: str | None) -> Text:
    """``env:VAR`` is not a secret and helps; a literal key is only said to exist."""
    if credential and credential.startswith("env:"):
        return Text(credential, style="cyan")
    return Text("•••••••• stored", style="dim")


class ModelKeysScreen(EntityScreen):
    SECTION = "model-keys"
    TABLE = "model_keys"
    NOUN = "model key"
    COLUMNS = ("Key Name", "Credential", "Used by", "Description")
    PALETTE: ClassVar = (
        ("New model key", "Store a vendor API key (or env:VAR)", "new"),
        ("Edit model key", "Edit the highlighted model key", "edit"),
        ("Delete model key", "Delete the highlighted model key", "delete"),
        ("Filter model keys", "Narrow the model key list", "filter"),
    )

    def row(self, spec: Any) -> tuple[Any, ...]:
        users = [s.name for s in (self.config.model_services if self.config else []) if spec.name in s.keys]
        return (
            Text(spec.name, style="bold"),
            credential_label(spec.credential),
            Text(", ".join(users) or "—"),
            Text(spec.description),
        )

    def form(self, original: Any | None) -> ModelKeyForm:
        assert self.config is not None
        return ModelKeyForm(self.store, self.config, original)
