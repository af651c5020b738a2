"""The hardening suites' gateway configuration: the gateway suite's, plus APIs to tell apart.

Built on ``tests/gateway/gateway_config.gateway_toml`` (every policy, distinctive
credentials) with three additions: two APIs whose services live on two different
mock-vendor paths (``/alpha/v1`` and ``/beta/v1``) so a test can see which API a
request really reached; a consumer granted only ``alpha``; and an API in front of the
byte-level :class:`~fault_vendor.FaultVendor`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

_GATEWAY_TESTS = str(Path(__file__).resolve().parent.parent / "gateway")
if _GATEWAY_TESTS not in sys.path:
    sys.path.append(_GATEWAY_TESTS)  # appended: a test folder must never shadow a real module

from gateway_config import ALL_SECRETS, CRED, ENV_VALUE, gateway_toml, new_key  # noqa: E402
from mock_vendor import MockVendor  # noqa: E402

__all__ = ["ALL_SECRETS", "CRED", "ENV_VALUE", "Keys", "hardening_toml", "new_key"]

#: timeout_s of the service in front of the fault vendor (slow first byte → 504 after it).
FAULT_TIMEOUT_S = 1.5


@dataclass
class Keys:
    app: str = field(default_factory=lambda: new_key("app"))
    off: str = field(default_factory=lambda: new_key("off"))
    lonely: str = field(default_factory=lambda: new_key("lonely"))
    alpha_only: str = field(default_factory=lambda: new_key("alphaonly"))


def hardening_toml(vendor: MockVendor, fault_url: str, dead_port: int, keys: Keys) -> str:
    base = gateway_toml(vendor, dead_port, keys.app, keys.off, keys.lonely)
    extra = f"""
[[model_services]]
name = "alpha-svc"
vendor = "custom"
address = "{vendor.base}/alpha/v1"
keys = ["k1"]
model_policy = "passthrough"
default_model = "alpha-model"

[[model_services]]
name = "beta-svc"
vendor = "custom"
address = "{vendor.base}/beta/v1"
keys = ["k2"]
model_policy = "passthrough"
default_model = "beta-model"

[[model_services]]
name = "fault-svc"
vendor = "custom"
address = "{fault_url}"
keys = ["k1"]
default_model = "fault-model"
timeout_s = {FAULT_TIMEOUT_S}
# one fault after another on purpose: each must reach the vendor, not an open circuit
circuit_failures = 0

[[model_apis]]
name = "alpha"
scenario = "text-generation"
routes = ["/v1/chat/completions", "/v1/completions"]
base_path = "/alpha"
services = ["alpha-svc"]

[[model_apis]]
name = "beta"
scenario = "text-generation"
routes = ["/v1/chat/completions", "/v1/completions"]
base_path = "/beta"
services = ["beta-svc"]

[[model_apis]]
name = "faulty"
scenario = "text-generation"
routes = ["/v1/chat/completions"]
base_path = "/faulty"
services = ["fault-svc"]

[[consumers]]
name = "alpha-only"
api_keys = ["{keys.alpha_only}"]

[[consumer_groups]]
name = "g-alpha"
consumers = ["alpha-only"]
model_apis = ["alpha"]

[[consumer_groups]]
name = "g-more"
consumers = ["app"]
model_apis = ["alpha", "beta", "faulty", "secret"]
"""
    return base + extra
