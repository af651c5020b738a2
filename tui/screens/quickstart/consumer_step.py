"""Step 4 — Create Consumer: the caller's identity, and its API key (shown once)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual.widget import Widget
from textual.widgets import Checkbox, Input

from store import repo
from store.spec import ConsumerSpec

from ...fields import entity_field, live_checks
from .step import WizardStep


class ConsumerStep(WizardStep):
    """Consumer Name (``my-app``) and "Create Key": the plain key is returned once, never stored."""

    TABLE = "consumers"
    NOUN = "consumer"
    DEFAULT_NAME = "my-app"
    INTRO = (
        "A consumer is a caller — your application. Next creates it with a gateway API key, "
        "shown once: copy it (c) before closing. aigw keeps only its hash."
    )
    LIVE_CHECKS: ClassVar = live_checks("consumers")

    def compose_fields(self) -> Iterable[Widget]:
        yield entity_field(self.TABLE, "name", Input(self.DEFAULT_NAME, id="name"))
        yield entity_field(self.TABLE, "description", Input("", id="description"))
        yield entity_field(
            self.TABLE, "create_key", Checkbox("Create Key (shown once) when I press Next", True, id="create-key")
        )

    def fill(self, spec: Any | None) -> None:
        self.set_value("name", spec.name if spec else self.unique_name(self.DEFAULT_NAME))
        self.set_value("description", spec.description if spec else "")

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self._create_key = True

    def want_key(self, wanted: bool) -> None:
        self.query_one("#create-key", Checkbox).value = wanted

    def build_spec(self) -> ConsumerSpec:
        spec = self.base_spec() or ConsumerSpec(name="")
        spec.name = self.value("name").strip()
        spec.description = self.value("description").strip()
        spec.api_keys = []
        spec.api_key_hashes = None  # keep the keys it has
        self._create_key = bool(self.query_one("#create-key", Checkbox).value)
        return spec

    def write(self, session: Any, spec: Any, original: str | None) -> tuple[Any, str | None]:
        saved = repo.save(session, self.TABLE, spec, original=original)
        key = repo.create_consumer_key(session, saved.name) if self._create_key else None
        return saved, key
