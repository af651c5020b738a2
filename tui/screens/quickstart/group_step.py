"""Step 5 — Create Consumer Group and grant: step 4's consumer as member, step 3's API authorized."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual.widget import Widget
from textual.widgets import Input, SelectionList

from store.spec import ConsumerGroupSpec

from ...fields import entity_field, live_checks
from ...widgets.marked_list import MarkedSelectionList
from .step import WizardStep


class GroupStep(WizardStep):
    """Group name, Consumers (members) and Authorized Model APIs (Add Authorization)."""

    TABLE = "consumer_groups"
    NOUN = "consumer group"
    DEFAULT_NAME = "my-apps"
    INTRO = (
        "A consumer group holds consumers and the model APIs they may call. The consumer from "
        "step 4 joins it and the API from step 3 is authorized (space toggles an entry)."
    )
    LIVE_CHECKS: ClassVar = live_checks("consumer_groups")

    def compose_fields(self) -> Iterable[Widget]:
        yield entity_field(self.TABLE, "name", Input(self.DEFAULT_NAME, id="name"))
        yield entity_field(self.TABLE, "consumers", MarkedSelectionList[str](id="consumers"))
        yield entity_field(self.TABLE, "model_apis", MarkedSelectionList[str](id="model-apis"))

    def _sync_list(self, list_id: str, options: list[str], wanted: str, keep: list[str] | None = None) -> None:
        """Rebuild a multi-picker; the entity an earlier step chose is ticked when it changes."""
        w = self.query_one(f"#{list_id}", SelectionList)
        chosen = set(w.selected) if keep is None else set(keep)
        if wanted and self._auto_refs.get(list_id) != wanted:
            chosen.add(wanted)
            self._auto_refs[list_id] = wanted
        w.clear_options()
        w.add_options([(o, o, o in chosen) for o in options])

    def refresh_refs(self) -> None:
        cfg = self.ctx.config
        self._sync_list("consumers", [c.name for c in cfg.consumers], self.ctx.name("consumers"))
        self._sync_list("model-apis", [a.name for a in cfg.model_apis], self.ctx.name("model_apis"))

    def fill(self, spec: Any | None) -> None:
        self.set_value("name", spec.name if spec else self.unique_name(self.DEFAULT_NAME))
        cfg = self.ctx.config
        members = list(spec.consumers) if spec else []
        grants = list(spec.model_apis) if spec else []
        # Picking an existing group still adds this run's consumer and API: that is the step's point.
        self._auto_refs.clear()
        self._sync_list("consumers", [c.name for c in cfg.consumers], self.ctx.name("consumers"), members)
        self._sync_list("model-apis", [a.name for a in cfg.model_apis], self.ctx.name("model_apis"), grants)

    def build_spec(self) -> ConsumerGroupSpec:
        spec = self.base_spec() or ConsumerGroupSpec(name="")
        spec.name = self.value("name").strip()
        spec.consumers = self.value("consumers")
        spec.model_apis = self.value("model_apis")
        return spec
