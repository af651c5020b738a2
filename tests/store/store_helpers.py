"""Store-tier test helpers: a small valid configuration to break one rule at a time."""

from __future__ import annotations

import pytest

from store.errors import StoreError
from store.spec import (
    Config,
    ConsumerGroupSpec,
    ConsumerSpec,
    GatewaySpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
    Price,
)
from store.validation import validate_config


def base_config() -> Config:
    """Valid: two keys, two services, one API, one consumer, one group granting the API."""
    return Config(
        gateway=GatewaySpec(),
        model_keys=[
            ModelKeySpec("k1", "sk-vendor-literal-1"),
            ModelKeySpec("k2", "env:VENDOR_KEY"),
        ],
        model_services=[
            ModelServiceSpec(
                "s1",
                vendor="custom",
                address="http://127.0.0.1:9/v1",
                keys=["k1"],
                default_model="m1",
                prices={"m1": Price(1.0, 2.0)},
            ),
            ModelServiceSpec("s2", vendor="hunyuan", keys=["k2", "k1"], default_model="hunyuan-lite"),
        ],
        model_apis=[ModelApiSpec("a1", base_path="/a1", services=["s1"])],
        consumers=[ConsumerSpec("c1")],
        consumer_groups=[ConsumerGroupSpec("g1", consumers=["c1"], model_apis=["a1"])],
    )


def problems(cfg: Config) -> list[tuple[str, str, str]]:
    """``(table, entry, field)`` of every broken rule; fails the test if ``cfg`` is valid."""
    with pytest.raises(StoreError) as info:
        validate_config(cfg)
    return [(e.table, e.entry, e.field) for e in info.value.errors]


def refused(cfg: Config, table: str, entry: str, field: str, text: str = "") -> StoreError:
    """Assert ``cfg`` is refused naming exactly ``table[entry].field`` (and ``text`` in the message)."""
    with pytest.raises(StoreError) as info:
        validate_config(cfg)
    err = info.value
    where = [(e.table, e.entry, e.field) for e in err.errors]
    assert (table, entry, field) in where, f"expected {table}[{entry}].{field}, got {where}"
    if text:
        msgs = [e.message for e in err.errors if (e.table, e.entry, e.field) == (table, entry, field)]
        assert any(text in m for m in msgs), msgs
    return err


def accepted(cfg: Config) -> Config:
    validate_config(cfg)
    return cfg
