"""The example entities written straight through the store, for tests that start mid-story."""

from __future__ import annotations

from store import repo
from store.db import Store
from store.spec import ConsumerGroupSpec, ConsumerSpec, ModelApiSpec, ModelKeySpec, ModelServiceSpec


def seed(
    store: Store, *, address: str = "", credential: str = "sk-vendor-secret-0001", upto: str = "consumer_groups"
) -> str | None:
    """Key → service → API → consumer (+ key) → group with the grant; returns the consumer key."""
    order = ["model_keys", "model_services", "model_apis", "consumers", "consumer_groups"]
    steps = order[: order.index(upto) + 1]
    key: str | None = None
    with store.session() as s:
        if "model_keys" in steps:
            repo.save(s, "model_keys", ModelKeySpec("hunyuan-key", credential))
        if "model_services" in steps:
            repo.save(
                s,
                "model_services",
                ModelServiceSpec(
                    "hunyuan-service",
                    vendor="hunyuan" if not address else "custom",
                    address=address,
                    keys=["hunyuan-key"],
                    default_model="hunyuan-2.0-instruct-20251111",
                ),
            )
        if "model_apis" in steps:
            repo.save(s, "model_apis", ModelApiSpec("hunyuan-api", base_path="/hunyuan", services=["hunyuan-service"]))
        if "consumers" in steps:
            repo.save(s, "consumers", ConsumerSpec("my-app"))
            key = repo.create_consumer_key(s, "my-app")
        if "consumer_groups" in steps:
            repo.save(
                s, "consumer_groups", ConsumerGroupSpec("my-apps", consumers=["my-app"], model_apis=["hunyuan-api"])
            )
    return key
