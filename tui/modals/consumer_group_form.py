"""Create or edit a consumer group: members, authorized model APIs, per-consumer rate limits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input

from store.spec import ConsumerGroupSpec

from ..fields import entity_field, live_checks
from ..widgets.marked_list import MarkedSelectionList
from .form import EntityForm, as_number


class ConsumerGroupForm(EntityForm):
    """Group name, consumers (members), authorized model APIs, requests/tokens per minute."""

    TABLE = "consumer_groups"
    NOUN = "consumer group"
    LIVE_CHECKS: ClassVar = live_checks("consumer_groups")

    def compose_fields(self) -> Iterable[Widget]:
        o: ConsumerGroupSpec | None = self.original
        consumers = [c.name for c in self.config.consumers]
        apis = [a.name for a in self.config.model_apis]
        members = list(o.consumers) if o else (consumers[:1] if len(consumers) == 1 else [])
        grants = list(o.model_apis) if o else (apis[:1] if len(apis) == 1 else [])
        yield entity_field(self.TABLE, "name", Input(o.name if o else "", id="name"))
        yield entity_field(
            self.TABLE,
            "consumers",
            MarkedSelectionList[str](*[(c, c, c in members) for c in consumers], id="consumers"),
        )
        yield entity_field(
            self.TABLE, "model_apis", MarkedSelectionList[str](*[(a, a, a in grants) for a in apis], id="model-apis")
        )
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "requests_per_minute",
                Input(str(o.requests_per_minute) if o else "0", id="requests-per-minute"),
            )
            yield entity_field(
                self.TABLE, "tokens_per_minute", Input(str(o.tokens_per_minute) if o else "0", id="tokens-per-minute")
            )
        yield entity_field(self.TABLE, "description", Input(o.description if o else "", id="description"))

    def build_spec(self) -> ConsumerGroupSpec:
        return ConsumerGroupSpec(
            name=self.value("name").strip(),
            consumers=self.value("consumers"),
            model_apis=self.value("model_apis"),
            requests_per_minute=int(as_number(self.value("requests_per_minute"), "requests_per_minute", integer=True)),
            tokens_per_minute=int(as_number(self.value("tokens_per_minute"), "tokens_per_minute", integer=True)),
            description=self.value("description").strip(),
        )
