"""Create or edit a consumer; a new consumer can get its first API key in the same step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Select, Switch

from store import repo
from store.spec import ConsumerSpec

from ..fields import entity_field, live_checks
from .form import EntityForm, as_number

UNIT_LABELS = (("tokens", "tokens"), ("requests", "requests"), ("cost", "cost"))
PERIOD_LABELS = (("per day", "day"), ("per week", "week"), ("per month", "month"), ("in total", "total"))


class ConsumerForm(EntityForm):
    """Consumer Name, enabled, quota; "Create an API key now" for a new consumer."""

    TABLE = "consumers"
    NOUN = "consumer"
    LIVE_CHECKS: ClassVar = live_checks("consumers")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The plain key made on save (new consumers only) — handed to the show-once modal.
        self.created_key: str | None = None

    def compose_fields(self) -> Iterable[Widget]:
        o: ConsumerSpec | None = self.original
        yield entity_field(self.TABLE, "name", Input(o.name if o else "", id="name"))
        yield entity_field(self.TABLE, "enabled", Switch(o.enabled if o else True, id="enabled"))
        with Horizontal(classes="form-row"):
            yield entity_field(self.TABLE, "quota", Input(f"{o.quota:g}" if o else "0", id="quota"))
            yield entity_field(
                self.TABLE,
                "quota_unit",
                Select(UNIT_LABELS, value=o.quota_unit if o else "tokens", allow_blank=False, id="quota-unit"),
            )
            yield entity_field(
                self.TABLE,
                "quota_period",
                Select(PERIOD_LABELS, value=o.quota_period if o else "month", allow_blank=False, id="quota-period"),
            )
        yield entity_field(self.TABLE, "description", Input(o.description if o else "", id="description"))
        if o is None:
            yield entity_field(
                self.TABLE, "create_key", Checkbox("Create an API key now (shown once)", True, id="create-key")
            )

    def build_spec(self) -> ConsumerSpec:
        return ConsumerSpec(
            name=self.value("name").strip(),
            enabled=bool(self.value("enabled")),
            quota=as_number(self.value("quota"), "quota"),
            quota_unit=self.value("quota_unit"),
            quota_period=self.value("quota_period"),
            description=self.value("description").strip(),
        )

    def write(self, session: Any, spec: Any) -> Any:
        saved = super().write(session, spec)
        if self.original is None and self.query_one("#create-key", Checkbox).value:
            self.created_key = repo.create_consumer_key(session, saved.name)
        return saved
