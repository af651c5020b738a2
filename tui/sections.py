"""The sidebar's sections, in the cloud console's order — one table the sidebar, the app's
modes, the number-key bindings and the command palette are all built from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    """One sidebar entry. ``screen`` is ``"module:Class"``, imported when first opened."""

    id: str
    title: str
    description: str
    screen: str


SECTIONS: tuple[Section, ...] = (
    Section(
        "instance",
        "Instance Info",
        "Gateway address, admin address, database and process",
        "tui.screens.instance:InstanceScreen",
    ),
    Section(
        "quickstart",
        "Quick Start",
        "Six guided steps from a vendor key to a first answer",
        "tui.screens.quickstart:QuickStartScreen",
    ),
    Section(
        "model-keys",
        "Key Management",
        "Vendor API keys the gateway uses (model keys)",
        "tui.screens.model_keys:ModelKeysScreen",
    ),
    Section(
        "model-services",
        "Model Services",
        "LLM vendors: address, keys, models, prices",
        "tui.screens.model_services:ModelServicesScreen",
    ),
    Section(
        "model-apis",
        "Model APIs",
        "Endpoints clients call: base path, routes, services",
        "tui.screens.model_apis:ModelApisScreen",
    ),
    Section("consumers", "Consumers", "Callers and their gateway API keys", "tui.screens.consumers:ConsumersScreen"),
    Section(
        "consumer-groups",
        "Consumer Groups",
        "Members, authorized model APIs, rate limits",
        "tui.screens.consumer_groups:ConsumerGroupsScreen",
    ),
    Section("traffic", "Traffic", "Live requests through the gateway", "tui.screens.traffic:TrafficScreen"),
    Section("usage", "Usage", "Tokens and cost by consumer, API and model", "tui.screens.usage:UsageScreen"),
)

BY_ID: dict[str, Section] = {s.id: s for s in SECTIONS}


def load_screen_class(section: Section) -> type:
    import importlib

    module, _, cls = section.screen.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
