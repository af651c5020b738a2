"""The gateway configuration the proxy tests run against: every key, model and routing policy.

Every model key has a distinctive credential so tests can grep records, error bodies,
metrics and ``gateway.log`` for leaks. Services tell themselves apart at the mock
vendor by the key they send.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from helpers import GatewayProcess
from mock_vendor import MockVendor

CRED = {
    "k1": "sk-vendor-SECRET-ONE-7f3a91",
    "k2": "sk-vendor-SECRET-TWO-9b1c22",
    "k3": "sk-vendor-SECRET-THREE-c4d233",
}
ENV_VALUE = "sk-vendor-SECRET-ENV-5e6f44"
ALL_SECRETS = (*CRED.values(), ENV_VALUE)


def gateway_toml(vendor: MockVendor, dead_port: int, app_key: str, off_key: str, lonely_key: str) -> str:
    url = vendor.url
    dead = f"http://127.0.0.1:{dead_port}/v1"

    def svc(
        name: str,
        keys: list[str],
        *,
        address: str = url,
        extra: str = "",
        policy: str = "specified",
        default: str = "hunyuan-turbos-latest",
        key_policy: str = "polling",
    ) -> str:
        ks = ", ".join(f'"{k}"' for k in keys)
        return (
            f'[[model_services]]\nname = "{name}"\nvendor = "custom"\naddress = "{address}"\n'
            f'keys = [{ks}]\nkey_policy = "{key_policy}"\nmodel_policy = "{policy}"\n'
            f'default_model = "{default}"\n{extra}\n'
        )

    def api(
        name: str,
        base: str,
        services: list[str],
        *,
        scenario: str = "text-generation",
        routes: str = '["/v1/chat/completions", "/v1/completions"]',
        extra: str = "",
    ) -> str:
        ss = ", ".join(f'"{s}"' for s in services)
        if scenario == "embeddings":
            routes = '["/v1/embeddings"]'
        return (
            f'[[model_apis]]\nname = "{name}"\nscenario = "{scenario}"\nroutes = {routes}\n'
            f'base_path = "{base}"\nservices = [{ss}]\n{extra}\n'
        )

    parts = [
        *(f'[[model_keys]]\nname = "{k}"\ncredential = "{v}"\n\n' for k, v in CRED.items()),
        '[[model_keys]]\nname = "kenv"\ncredential = "env:AIGW_TEST_VENDOR_KEY"\n\n',
        '[[model_keys]]\nname = "kmissing"\ncredential = "env:AIGW_TEST_MISSING_KEY"\n\n',
        svc(
            "main",
            ["k1"],
            extra="[model_services.prices.hunyuan-turbos-latest]\n"
            'input = 0.8\noutput = 2.0\n[model_services.prices."hunyuan-*"]\ninput = 1.0\n'
            "output = 1.0\n",
        ),
        svc("poll", ["k1", "k2", "k3"], policy="passthrough", default="m-default"),
        svc("fail", ["k1", "k2"], key_policy="failover"),
        svc("plist", ["k1"], policy="passthrough", default="allowed-a", extra='models = ["allowed-a", "fam-*"]\n'),
        svc(
            "pdef",
            ["k1"],
            policy="passthrough",
            default="allowed-a",
            extra='models = ["allowed-a", "fam-*"]\nunlisted_model = "default"\n',
        ),
        svc("svc-a", ["k1"], policy="passthrough", default="alpha-1", extra='models = ["alpha-*"]\n'),
        svc("svc-b", ["k2"], policy="passthrough", default="beta-1"),
        svc("svc-c", ["k1"], policy="passthrough", default="gamma", extra='models = ["gamma"]\n'),
        svc("w1", ["k1"]),
        svc("w2", ["k2"]),
        svc("down", ["k1"], address=dead),
        svc("slow", ["k1"], extra="timeout_s = 1.5\n"),
        svc("backup", ["k3"]),
        svc("env-svc", ["kenv"]),
        svc("missing-svc", ["kmissing"]),
        svc("raw", ["k1"], address=vendor.base),
        svc("rand", ["k1", "k2"], key_policy="random"),
        api("hunyuan-api", "/hunyuan", ["main"]),
        api("emb", "/emb", ["main"], scenario="embeddings"),
        api("poll", "/poll", ["poll"]),
        api("fail", "/fail", ["fail"]),
        api("plist", "/plist", ["plist"]),
        api("pdef", "/pdef", ["pdef"]),
        api("bymodel", "/bymodel", ["svc-b", "svc-a"], extra='service_type = "multi"\nrouting = "model"\n'),
        api("strict", "/strict", ["svc-c", "svc-a"], extra='service_type = "multi"\nrouting = "model"\n'),
        api(
            "weight", "/weight", ["w1", "w2"], extra='service_type = "multi"\nrouting = "weight"\nweights = [80, 20]\n'
        ),
        api("fb", "/fb", ["main"], extra='fallback_services = ["backup"]\n'),
        api("fbdown", "/fbdown", ["down"], extra='fallback_services = ["backup"]\n'),
        api("fbslow", "/fbslow", ["slow"], extra='fallback_services = ["backup"]\n'),
        api("slowapi", "/slow", ["slow"]),
        api("downapi", "/down", ["down"]),
        api("env", "/env", ["env-svc"]),
        api("missing", "/missing", ["missing-svc"]),
        api("raw", "/raw", ["raw"], extra="path_simplification = false\n"),
        api("secret", "/secret", ["main"]),
        api("rand", "/rand", ["rand"]),
        f'[[consumers]]\nname = "app"\napi_keys = ["{app_key}"]\n\n',
        f'[[consumers]]\nname = "off"\nenabled = false\napi_keys = ["{off_key}"]\n\n',
        f'[[consumers]]\nname = "lonely"\napi_keys = ["{lonely_key}"]\n\n',
        '[[consumer_groups]]\nname = "apps"\nconsumers = ["app", "off"]\nmodel_apis = ['
        '"hunyuan-api", "emb", "poll", "fail", "plist", "pdef", "bymodel", "strict", "weight", '
        '"fb", "fbdown", "fbslow", "slowapi", "downapi", "env", "missing", "raw", "rand"]\n',
    ]
    return "".join(parts)


def new_key(tag: str) -> str:
    return f"sk-aigw-test-{tag}-" + secrets.token_urlsafe(24)


def limits_toml(vendor: MockVendor, keys: dict[str, str]) -> str:
    """One API per limit kind, each with its own consumer (so tests don't share windows)."""
    out = [
        f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n'
        f'[[model_services]]\nname = "main"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["k1"]\ndefault_model = "m"\n\n'
    ]
    groups = {  # consumer → (api, rpm, tpm, quota line)
        "burst": ("lim", 10, 0, ""),
        "toky": ("tok", 0, 30, ""),
        "quota-app": ("q", 0, 0, 'quota = 40\nquota_unit = "tokens"\nquota_period = "day"\n'),
        "changing": ("chg", 1, 0, ""),
    }
    for consumer, (api, rpm, tpm, quota) in groups.items():
        out.append(
            f'[[model_apis]]\nname = "{api}"\nbase_path = "/{api}"\nservices = ["main"]\n\n'
            f'[[consumers]]\nname = "{consumer}"\napi_keys = ["{keys[consumer]}"]\n{quota}\n'
            f'[[consumer_groups]]\nname = "g-{consumer}"\nconsumers = ["{consumer}"]\n'
            f'model_apis = ["{api}"]\nrequests_per_minute = {rpm}\n'
            f"tokens_per_minute = {tpm}\n\n"
        )
    return "".join(out)


@dataclass
class Gw:
    """The module's running gateway (the ``gw`` fixture) and the consumer keys it knows."""

    proc: GatewayProcess
    db: Path
    app_key: str
    off_key: str
    lonely_key: str

    @property
    def url(self) -> str:
        return self.proc.url
