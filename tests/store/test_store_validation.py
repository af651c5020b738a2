"""Every rule of store/validation.py, one valid and one invalid case at a time."""

from __future__ import annotations

import pytest
from store_helpers import accepted, base_config, problems, refused

from store.errors import StoreError
from store.presets import PRESETS, VENDORS
from store.spec import (
    KEY_POLICIES,
    MODEL_POLICIES,
    QUOTA_PERIODS,
    QUOTA_UNITS,
    ROUTINGS,
    SCENARIOS,
    ConsumerGroupSpec,
    ConsumerSpec,
    ModelApiSpec,
    ModelKeySpec,
    Price,
)
from store.validation import (
    check_base_path,
    check_credential,
    check_listen,
    check_name,
    check_url,
    normalise_base_path,
)

TABLES = ("model_keys", "model_services", "model_apis", "consumers", "consumer_groups")


def first(cfg, table):  # type: ignore[no-untyped-def]
    return getattr(cfg, table)[0]


# ---------------------------------------------------------------- names

GOOD_NAMES = ["a", "0", "9lives", "a-b_c.d", "x" * 64, "hunyuan-2.0"]
BAD_NAMES = ["", "x" * 65, "Abc", "-abc", "_abc", ".abc", "a b", "a/b", "ä", "a:b", "a\n"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) is None


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses(name: str) -> None:
    assert check_name(name)


def test_name_length_message_counts() -> None:
    assert "65" in (check_name("x" * 65) or "")


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("name", ["Bad", "-x", "x" * 65, "sp ace"])
def test_bad_name_refused_in_every_table(table: str, name: str) -> None:
    cfg = base_config()
    entity = first(cfg, table)
    old = entity.name
    entity.name = name
    # keep references pointing at the renamed entity so only the name rule fires
    for s in cfg.model_services:
        s.keys = [name if k == old else k for k in s.keys]
    for a in cfg.model_apis:
        a.services = [name if k == old else k for k in a.services]
    for g in cfg.consumer_groups:
        g.consumers = [name if k == old else k for k in g.consumers]
        g.model_apis = [name if k == old else k for k in g.model_apis]
    err = refused(cfg, table, name, "name")
    assert f"{table}[{name}].name" in str(err)


@pytest.mark.parametrize("table", TABLES)
def test_good_name_accepted_in_every_table(table: str) -> None:
    cfg = base_config()
    entity = first(cfg, table)
    old, new = entity.name, "x" * 64
    entity.name = new
    for s in cfg.model_services:
        s.keys = [new if k == old else k for k in s.keys]
    for a in cfg.model_apis:
        a.services = [new if k == old else k for k in a.services]
    for g in cfg.consumer_groups:
        g.consumers = [new if k == old else k for k in g.consumers]
        g.model_apis = [new if k == old else k for k in g.model_apis]
    accepted(cfg)


@pytest.mark.parametrize("table", TABLES)
def test_duplicate_names_refused(table: str) -> None:
    cfg = base_config()
    import copy

    items = getattr(cfg, table)
    dup = copy.deepcopy(items[0])
    if table == "model_apis":
        dup.base_path = "/other"  # only the name repeats
    items.append(dup)
    refused(cfg, table, items[0].name, "name", "defined twice")


def test_same_name_in_different_tables_is_fine() -> None:
    cfg = base_config()
    cfg.consumers[0].name = "a1"
    cfg.consumer_groups[0].consumers = ["a1"]
    accepted(cfg)


# ---------------------------------------------------------------- descriptions


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("text", ["", "A tab\tis fine — and ünïcode", "d" * 1024])
def test_description_accepted(table: str, text: str) -> None:
    cfg = base_config()
    first(cfg, table).description = text
    accepted(cfg)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("text", ["d" * 1025, "two\nlines", "bell\x07", "cr\r"])
def test_description_refused(table: str, text: str) -> None:
    cfg = base_config()
    first(cfg, table).description = text
    refused(cfg, table, first(cfg, table).name, "description")


# ---------------------------------------------------------------- credentials

GOOD_CREDENTIALS = ["sk-abc", "env:HUNYUAN_API_KEY", "env:_X1", "env:lower_case", "k€y-ünicode", "c" * 8192]
BAD_CREDENTIALS = [
    None,
    "",
    " sk-abc",
    "sk-abc ",
    "sk abc",
    "sk-abc\n",
    "sk\tabc",
    "sk\x7fabc",
    "sk\x00abc",
    "env:",
    "env:1ABC",
    "env:A-B",
    "env:A B",
    "env:$X",
    "c" * 8193,
]


@pytest.mark.parametrize("cred", GOOD_CREDENTIALS)
def test_credential_accepted(cred: str) -> None:
    assert check_credential(cred) is None
    cfg = base_config()
    cfg.model_keys[0].credential = cred
    accepted(cfg)


@pytest.mark.parametrize("cred", BAD_CREDENTIALS)
def test_credential_refused(cred: str | None) -> None:
    assert check_credential(cred)
    cfg = base_config()
    cfg.model_keys[0].credential = cred
    err = refused(cfg, "model_keys", "k1", "credential")
    if cred and len(cred) > 3:
        # the refusal never echoes the secret
        assert cred.strip() not in str(err) or cred.startswith("env:")


# ---------------------------------------------------------------- URLs

GOOD_URLS = [
    "http://127.0.0.1:9/v1",
    "https://api.example.com/v1",
    "http://[::1]:8000/v1",
    "https://open.bigmodel.cn/api/paas/v4",
    "http://localhost",
]
BAD_URLS = [
    "ftp://example.com/v1",
    "api.example.com/v1",
    "http://",
    "https:///v1",
    "http://user:pw@example.com/v1",
    "http://user@example.com/v1",
    "http://h/v1?x=1",
    "http://h/v1#frag",
    "http://h:99999/v1",
    "http://h:abc/v1",
    "http://h/v 1",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_url_accepted(url: str) -> None:
    assert check_url(url) is None
    cfg = base_config()
    cfg.model_services[0].address = url
    accepted(cfg)


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_refused(url: str) -> None:
    assert check_url(url)
    cfg = base_config()
    cfg.model_services[0].address = url
    refused(cfg, "model_services", "s1", "address")


def test_url_with_credentials_message_does_not_echo_password() -> None:
    cfg = base_config()
    cfg.model_services[0].address = "http://user:hunter2secret@example.com/v1"
    err = refused(cfg, "model_services", "s1", "address", "credentials")
    assert "hunter2secret" not in str(err)


def test_address_trailing_slash_normalised() -> None:
    cfg = accepted(_with_address("  https://api.example.com/v1/  "))
    assert cfg.model_services[0].address == "https://api.example.com/v1"


def _with_address(addr: str):  # type: ignore[no-untyped-def]
    cfg = base_config()
    cfg.model_services[0].address = addr
    return cfg


def test_custom_vendor_needs_address() -> None:
    refused(_with_address(""), "model_services", "s1", "address", "required")


@pytest.mark.parametrize("vendor", [v for v in VENDORS if v != "custom"])
def test_preset_vendor_fills_empty_address(vendor: str) -> None:
    cfg = base_config()
    cfg.model_services[0].vendor = vendor
    cfg.model_services[0].address = ""
    accepted(cfg)
    assert cfg.model_services[0].address == PRESETS[vendor].address


def test_preset_address_can_be_overridden() -> None:
    cfg = base_config()
    cfg.model_services[1].address = "http://127.0.0.1:7/v1"
    accepted(cfg)
    assert cfg.model_services[1].address == "http://127.0.0.1:7/v1"


# ---------------------------------------------------------------- gateway

GOOD_LISTEN = ["127.0.0.1:8080", "0.0.0.0:1", "[::1]:65535", "localhost:8080", "::1:9000"]
BAD_LISTEN = ["8080", ":8080", "127.0.0.1:", "h:0", "h:65536", "h:x", "h:-1", "h st:80", "a/b:80", ""]


@pytest.mark.parametrize("value", GOOD_LISTEN)
def test_listen_accepted(value: str) -> None:
    assert check_listen(value) is None
    cfg = base_config()
    cfg.gateway.listen = value
    accepted(cfg)


@pytest.mark.parametrize("value", BAD_LISTEN)
@pytest.mark.parametrize("fld", ["listen", "admin_listen"])
def test_listen_refused(value: str, fld: str) -> None:
    assert check_listen(value)
    cfg = base_config()
    setattr(cfg.gateway, fld, value)
    err = refused(cfg, "gateway", "", fld)
    assert str(err).startswith(f"gateway.{fld}:")


def test_listen_and_admin_listen_must_differ() -> None:
    cfg = base_config()
    cfg.gateway.admin_listen = cfg.gateway.listen
    refused(cfg, "gateway", "", "admin_listen", "differ")


def test_public_url_checked_and_normalised() -> None:
    cfg = base_config()
    cfg.gateway.public_url = "https://gw.example.com/"
    accepted(cfg)
    assert cfg.gateway.public_url == "https://gw.example.com"
    cfg.gateway.public_url = "gw.example.com"
    refused(cfg, "gateway", "", "public_url")


# ---------------------------------------------------------------- base paths


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("hunyuan/", "/hunyuan"),
        ("hunyuan", "/hunyuan"),
        ("/hunyuan", "/hunyuan"),
        (" /a/b/ ", "/a/b"),
        ("/", ""),
        ("", ""),
        ("a/b", "/a/b"),
    ],
)
def test_base_path_normalised(raw: str, norm: str) -> None:
    assert normalise_base_path(raw) == norm
    cfg = base_config()
    cfg.model_apis[0].base_path = raw
    accepted(cfg)
    assert cfg.model_apis[0].base_path == norm


GOOD_PATHS = ["/hunyuan", "/a/b-c_d.e~f", "/v2", "/A1", "/x..y", "/.well"]
BAD_PATHS = [
    "/a/../b",
    "/..",
    "/a/..",
    "/a//b",
    "//a",
    "/%2e%2e",
    "/%2E",
    "/a%20b",
    "/a%2fb",
    "/a?x=1",
    "/a?",
    "/a#f",
    "/a\n/b",
    "/./a",
    "/a/.",
    "/.",
    "/a b",
    "/a:b",
    "/a;b",
    "/" + "a" * 200,
    "/é",
]


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_base_path_accepted(path: str) -> None:
    assert check_base_path(path) is None
    cfg = base_config()
    cfg.model_apis[0].base_path = path
    accepted(cfg)


@pytest.mark.parametrize("path", BAD_PATHS)
def test_base_path_refused(path: str) -> None:
    cfg = base_config()
    cfg.model_apis[0].base_path = path
    refused(cfg, "model_apis", "a1", "base_path")


def test_base_path_unique() -> None:
    cfg = base_config()
    cfg.model_apis.append(ModelApiSpec("a2", base_path="a1/", services=["s2"]))
    err = refused(cfg, "model_apis", "a2", "base_path", "already served by model API 'a1'")
    assert "model_apis[a2].base_path" in str(err)


@pytest.mark.parametrize("origin", ["*", "https://app.example.com", "http://localhost:3000", "http://[::1]:8080"])
def test_cors_origin_accepted(origin: str) -> None:
    cfg = base_config()
    cfg.model_apis[0].cors_origins = [origin]
    assert accepted(cfg).model_apis[0].cors_origins == [origin]


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path", "https://x:0", "null", ""])
def test_cors_origin_refused(origin: str) -> None:
    cfg = base_config()
    cfg.model_apis[0].cors_origins = [origin]
    err = refused(cfg, "model_apis", "a1", "cors_origins")
    assert "model_apis[a1].cors_origins" in str(err)


def test_cors_origins_normalised_as_browsers_send_them() -> None:
    cfg = base_config()
    cfg.model_apis[0].cors_origins = ["https://App.Example.com/", " * "]
    assert accepted(cfg).model_apis[0].cors_origins == ["https://app.example.com", "*"]


def test_apis_whose_routes_differ_share_a_base_path() -> None:
    cfg = base_config()
    cfg.model_apis.append(ModelApiSpec("a2", scenario="embeddings", base_path="/a1", services=["s2"]))
    accepted(cfg)


def test_apis_on_one_base_path_with_a_common_route_collide() -> None:
    cfg = base_config()
    cfg.model_apis.append(
        ModelApiSpec("a2", base_path="/a1", routes=["/v1/completions", "/v1/chat/completions"], services=["s2"])
    )
    err = refused(cfg, "model_apis", "a2", "base_path", "'/a1/v1/chat/completions' is already served by model API 'a1'")
    assert "model_apis[a2]" in str(err)


def test_request_paths_collide_at_root() -> None:
    cfg = base_config()
    cfg.model_apis[0].base_path = ""
    cfg.model_apis.append(ModelApiSpec("a2", base_path="/", routes=["/v1/chat/completions"], services=["s2"]))
    refused(cfg, "model_apis", "a2", "base_path", "already served")


def test_distinct_base_paths_do_not_collide() -> None:
    cfg = base_config()
    cfg.model_apis[0].base_path = ""
    cfg.model_apis.append(ModelApiSpec("a2", base_path="/v1x", services=["s2"]))
    cfg.model_apis.append(ModelApiSpec("a3", scenario="embeddings", base_path="/emb", services=["s2"]))
    accepted(cfg)


# ---------------------------------------------------------------- routes and scenarios


def test_routes_default_from_scenario() -> None:
    cfg = base_config()
    cfg.model_apis.append(ModelApiSpec("e1", scenario="embeddings", base_path="/e", services=["s2"]))
    accepted(cfg)
    assert cfg.model_apis[0].routes == ["/v1/chat/completions"]
    assert cfg.model_apis[1].routes == ["/v1/embeddings"]


def test_route_must_belong_to_scenario() -> None:
    cfg = base_config()
    cfg.model_apis[0].routes = ["/v1/embeddings"]
    refused(cfg, "model_apis", "a1", "routes", "not offered")
    cfg = base_config()
    cfg.model_apis[0].routes = ["/v1/chat/completions", "/v1/completions"]
    accepted(cfg)


def test_route_listed_twice() -> None:
    cfg = base_config()
    cfg.model_apis[0].routes = ["/v1/chat/completions", "/v1/chat/completions"]
    refused(cfg, "model_apis", "a1", "routes", "twice")


# ---------------------------------------------------------------- enums

ENUMS = [
    ("model_services", "vendor", VENDORS),
    ("model_services", "protocol", ("openai",)),
    ("model_services", "key_policy", KEY_POLICIES),
    ("model_services", "model_policy", MODEL_POLICIES),
    ("model_services", "unlisted_model", ("refuse", "default")),
    ("model_apis", "scenario", SCENARIOS),
    ("model_apis", "protocol", ("openai",)),
    ("model_apis", "service_type", ("single", "multi")),
    ("model_apis", "routing", ROUTINGS),
    ("consumers", "quota_unit", QUOTA_UNITS),
    ("consumers", "quota_period", QUOTA_PERIODS),
]


@pytest.mark.parametrize(("table", "fld", "allowed"), ENUMS)
def test_enum_bad_value_refused(table: str, fld: str, allowed: tuple[str, ...]) -> None:
    cfg = base_config()
    entity = first(cfg, table)
    setattr(entity, fld, "bogus")
    err = refused(cfg, table, entity.name, fld, "'bogus' is not one of")
    msg = next(e.message for e in err.errors if e.field == fld)
    for value in allowed:
        assert value in msg


@pytest.mark.parametrize(("table", "fld", "value"), [(t, f, v) for t, f, allowed in ENUMS for v in allowed])
def test_enum_every_value_accepted(table: str, fld: str, value: str) -> None:
    cfg = base_config()
    entity = first(cfg, table)
    setattr(entity, fld, value)
    if fld == "scenario" and value == "embeddings":
        entity.routes = []
    if fld == "service_type" and value == "multi":
        entity.services = ["s1", "s2"]
    if fld == "vendor":
        entity.address = "http://127.0.0.1:9/v1"
    accepted(cfg)


def test_enum_is_case_sensitive() -> None:
    cfg = base_config()
    cfg.model_services[0].key_policy = "Polling"
    refused(cfg, "model_services", "s1", "key_policy")


# ---------------------------------------------------------------- references


def test_service_key_must_exist() -> None:
    cfg = base_config()
    cfg.model_services[0].keys = ["nope"]
    refused(cfg, "model_services", "s1", "keys", "model key 'nope' does not exist")


def test_service_needs_a_key() -> None:
    cfg = base_config()
    cfg.model_services[0].keys = []
    refused(cfg, "model_services", "s1", "keys", "at least one")


def test_service_key_listed_twice() -> None:
    cfg = base_config()
    cfg.model_services[0].keys = ["k1", "k1"]
    refused(cfg, "model_services", "s1", "keys", "twice")


def test_api_service_must_exist() -> None:
    cfg = base_config()
    cfg.model_apis[0].services = ["nope"]
    refused(cfg, "model_apis", "a1", "services", "model service 'nope' does not exist")


def test_api_fallback_must_exist() -> None:
    cfg = base_config()
    cfg.model_apis[0].fallback_services = ["nope"]
    refused(cfg, "model_apis", "a1", "fallback_services", "model service 'nope' does not exist")


def test_api_fallback_valid_and_rules() -> None:
    cfg = base_config()
    cfg.model_apis[0].fallback_services = ["s2"]
    accepted(cfg)
    cfg = base_config()
    cfg.model_apis[0].fallback_services = ["s2", "s2"]
    refused(cfg, "model_apis", "a1", "fallback_services", "twice")
    cfg = base_config()
    cfg.model_apis[0].fallback_services = ["s1"]
    refused(cfg, "model_apis", "a1", "fallback_services", "already one of")


def test_group_consumer_must_exist() -> None:
    cfg = base_config()
    cfg.consumer_groups[0].consumers = ["c1", "ghost"]
    refused(cfg, "consumer_groups", "g1", "consumers", "consumer 'ghost' does not exist")


def test_group_model_api_must_exist() -> None:
    cfg = base_config()
    cfg.consumer_groups[0].model_apis = ["ghost"]
    refused(cfg, "consumer_groups", "g1", "model_apis", "model API 'ghost' does not exist")


@pytest.mark.parametrize("fld", ["consumers", "model_apis"])
def test_group_list_twice(fld: str) -> None:
    cfg = base_config()
    setattr(cfg.consumer_groups[0], fld, [*getattr(cfg.consumer_groups[0], fld)] * 2)
    refused(cfg, "consumer_groups", "g1", fld, "twice")


def test_empty_group_is_valid() -> None:
    cfg = base_config()
    cfg.consumer_groups.append(ConsumerGroupSpec("empty"))
    accepted(cfg)


# ---------------------------------------------------------------- single / multi and weights


def test_single_takes_exactly_one_service() -> None:
    cfg = base_config()
    cfg.model_apis[0].services = ["s1", "s2"]
    refused(cfg, "model_apis", "a1", "services", "exactly one")
    cfg.model_apis[0].services = []
    refused(cfg, "model_apis", "a1", "services", "at least one")


def test_multi_takes_one_or_more_services() -> None:
    cfg = base_config()
    cfg.model_apis[0].service_type = "multi"
    cfg.model_apis[0].services = ["s1", "s2"]
    accepted(cfg)
    cfg.model_apis[0].services = []
    refused(cfg, "model_apis", "a1", "services", "at least one")


def test_multi_services_listed_twice() -> None:
    cfg = base_config()
    cfg.model_apis[0].service_type = "multi"
    cfg.model_apis[0].services = ["s1", "s1"]
    refused(cfg, "model_apis", "a1", "services", "twice")


def _weighted(weights: list) -> object:  # type: ignore[type-arg]
    cfg = base_config()
    api = cfg.model_apis[0]
    api.service_type, api.routing, api.services, api.weights = "multi", "weight", ["s1", "s2"], weights
    return cfg


@pytest.mark.parametrize("weights", [[1, 100], [50, 50], [100, 1]])
def test_weights_accepted(weights: list[int]) -> None:
    accepted(_weighted(weights))  # type: ignore[arg-type]


@pytest.mark.parametrize("weights", [[], [50], [10, 20, 30]])
def test_weight_count_must_match_services(weights: list[int]) -> None:
    refused(_weighted(weights), "model_apis", "a1", "weights", "one weight per service")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 101, -5, 1.5, True, "7"])
def test_weight_range_and_type(bad: object) -> None:
    refused(_weighted([50, bad]), "model_apis", "a1", "weights")  # type: ignore[arg-type]


@pytest.mark.parametrize(("service_type", "routing"), [("single", "model"), ("multi", "model")])
def test_weights_only_with_weight_routing(service_type: str, routing: str) -> None:
    cfg = base_config()
    api = cfg.model_apis[0]
    api.service_type, api.routing, api.weights = service_type, routing, [100]
    if service_type == "multi":
        api.services, api.weights = ["s1", "s2"], [50, 50]
    refused(cfg, "model_apis", "a1", "weights", "apply only")


# ---------------------------------------------------------------- prices


@pytest.mark.parametrize("price", [Price(0, 0), Price(0.8, 2.0), Price(3, 15), Price(1e9, 0)])
def test_price_accepted(price: Price) -> None:
    cfg = base_config()
    cfg.model_services[0].prices = {"m1": price, "other-*": price}
    accepted(cfg)


@pytest.mark.parametrize(
    ("side", "bad"),
    [
        ("input", -0.01),
        ("output", -1),
        ("input", float("nan")),
        ("output", float("inf")),
        ("input", "1"),
        ("output", True),
        ("input", 1e10),
    ],
)
def test_price_refused(side: str, bad: object) -> None:
    cfg = base_config()
    price = Price()
    setattr(price, side, bad)
    cfg.model_services[0].prices = {"m1": price}
    refused(cfg, "model_services", "s1", f"prices.m1.{side}")


def test_price_model_name_checked() -> None:
    cfg = base_config()
    cfg.model_services[0].prices = {"bad model": Price(1, 1)}
    refused(cfg, "model_services", "s1", "prices.bad model")


# ---------------------------------------------------------------- models and default_model


def test_specified_needs_default_model() -> None:
    cfg = base_config()
    cfg.model_services[0].default_model = ""
    refused(cfg, "model_services", "s1", "default_model", "required")


def test_passthrough_without_default_is_fine() -> None:
    cfg = base_config()
    cfg.model_services[0].model_policy = "passthrough"
    cfg.model_services[0].default_model = ""
    accepted(cfg)


def test_unlisted_default_needs_default_model() -> None:
    cfg = base_config()
    s = cfg.model_services[0]
    s.model_policy, s.default_model, s.unlisted_model, s.models = "passthrough", "", "default", ["m1"]
    refused(cfg, "model_services", "s1", "default_model", "unlisted_model")


def test_default_model_must_be_in_models() -> None:
    cfg = base_config()
    cfg.model_services[0].models = ["m2", "m3"]
    refused(cfg, "model_services", "s1", "default_model", "not in this service's models")


@pytest.mark.parametrize("models", [[], ["m1"], ["m*"], ["x", "m?"], ["hunyuan-*", "m[0-9]"]])
def test_default_model_matches_models(models: list[str]) -> None:
    cfg = base_config()
    cfg.model_services[0].models = models
    accepted(cfg)


@pytest.mark.parametrize("bad", ["m*", "has space", "-lead", "a" * 300, "m?", "m1\n"])
def test_default_model_must_be_a_plain_name(bad: str) -> None:
    cfg = base_config()
    cfg.model_services[0].default_model = bad
    refused(cfg, "model_services", "s1", "default_model")


@pytest.mark.parametrize("bad", ["has space", "", "-x", "é", "m1\n"])
def test_models_patterns_checked(bad: str) -> None:
    cfg = base_config()
    cfg.model_services[0].models = ["m1", bad]
    refused(cfg, "model_services", "s1", "models")


@pytest.mark.parametrize(
    "good", ["gpt-4o", "Qwen/Qwen2.5-7B-Instruct", "deepseek-v3.1", "llama3:8b", "org/model@v2", "model+tuned"]
)
def test_model_names_accepted(good: str) -> None:
    cfg = base_config()
    cfg.model_services[0].default_model = good
    cfg.model_services[0].models = [good]
    accepted(cfg)


@pytest.mark.parametrize("bad", [0, -1, 3601, float("nan")])
def test_timeout_refused(bad: float) -> None:
    cfg = base_config()
    cfg.model_services[0].timeout_s = bad
    refused(cfg, "model_services", "s1", "timeout_s")


@pytest.mark.parametrize("good", [0.5, 1, 120, 3600])
def test_timeout_accepted(good: float) -> None:
    cfg = base_config()
    cfg.model_services[0].timeout_s = good
    accepted(cfg)


# ---------------------------------------------------------------- consumers and groups


@pytest.mark.parametrize("bad", [-1, -0.5, float("inf"), "10", True])
def test_quota_refused(bad: object) -> None:
    cfg = base_config()
    cfg.consumers[0].quota = bad  # type: ignore[assignment]
    refused(cfg, "consumers", "c1", "quota")


@pytest.mark.parametrize("good", [0, 1, 0.25, 1e12])
def test_quota_accepted(good: float) -> None:
    cfg = base_config()
    cfg.consumers[0].quota = good
    accepted(cfg)


def test_enabled_must_be_bool() -> None:
    cfg = base_config()
    cfg.consumers[0].enabled = 1  # type: ignore[assignment]
    refused(cfg, "consumers", "c1", "enabled")


@pytest.mark.parametrize("key", ["sk-aigw-" + "A" * 43, "abcdefgh", "x" * 256])
def test_plain_api_key_accepted(key: str) -> None:
    cfg = base_config()
    cfg.consumers[0].api_keys = [key]
    accepted(cfg)


@pytest.mark.parametrize(
    "key", ["", "short", "has space in it", "abcdefgh\n", "tab\tinside-key", "nl\ninside-key", "x" * 257]
)
def test_plain_api_key_refused(key: str) -> None:
    cfg = base_config()
    cfg.consumers[0].api_keys = [key]
    err = refused(cfg, "consumers", "c1", "api_keys")
    if len(key) > 5:
        assert key not in str(err)  # never echo a key


@pytest.mark.parametrize(
    "h",
    [
        "sha256:" + "0" * 63,
        "sha256:" + "G" * 64,
        "md5:" + "0" * 64,
        "0" * 64,
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 64 + "\n",
    ],
)
def test_api_key_hash_refused(h: str) -> None:
    cfg = base_config()
    cfg.consumers[0].api_key_hashes = [h]
    refused(cfg, "consumers", "c1", "api_key_hashes")


def test_api_key_hash_accepted() -> None:
    cfg = base_config()
    cfg.consumers[0].api_key_hashes = ["sha256:" + "0123456789abcdef" * 4]
    accepted(cfg)


def test_same_key_for_two_consumers_refused() -> None:
    cfg = base_config()
    key = "sk-aigw-" + "B" * 43
    cfg.consumers[0].api_keys = [key]
    cfg.consumers.append(ConsumerSpec("c2", api_keys=[key]))
    refused(cfg, "consumers", "c2", "api_keys", "already registered to consumer 'c1'")


def test_same_key_as_plain_and_hash_for_two_consumers_refused() -> None:
    from store.keys import hash_key

    cfg = base_config()
    key = "sk-aigw-" + "C" * 43
    cfg.consumers[0].api_key_hashes = ["sha256:" + hash_key(key)]
    cfg.consumers.append(ConsumerSpec("c2", api_keys=[key]))
    refused(cfg, "consumers", "c2", "api_keys", "already registered")


def test_same_key_twice_in_one_consumer_refused() -> None:
    cfg = base_config()
    cfg.consumers[0].api_keys = ["sk-aigw-" + "D" * 43] * 2
    refused(cfg, "consumers", "c1", "api_keys", "twice")


@pytest.mark.parametrize("fld", ["requests_per_minute", "tokens_per_minute"])
@pytest.mark.parametrize("bad", [-1, 1.5, "60", True])
def test_group_limits_refused(fld: str, bad: object) -> None:
    cfg = base_config()
    setattr(cfg.consumer_groups[0], fld, bad)
    refused(cfg, "consumer_groups", "g1", fld)


@pytest.mark.parametrize("fld", ["requests_per_minute", "tokens_per_minute"])
@pytest.mark.parametrize("good", [0, 1, 600, 10**9])
def test_group_limits_accepted(fld: str, good: int) -> None:
    cfg = base_config()
    setattr(cfg.consumer_groups[0], fld, good)
    accepted(cfg)


# ---------------------------------------------------------------- the error object


def test_error_names_table_entry_field_and_counts_the_rest() -> None:
    cfg = base_config()
    cfg.model_services[0].key_policy = "bogus"
    cfg.consumer_groups[0].requests_per_minute = -1
    cfg.model_keys[0].credential = ""
    found = problems(cfg)
    assert ("model_services", "s1", "key_policy") in found
    assert ("consumer_groups", "g1", "requests_per_minute") in found
    assert ("model_keys", "k1", "credential") in found
    with pytest.raises(StoreError) as info:
        from store.validation import validate_config

        validate_config(cfg)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(info.value.errors[0]))
    assert "(and 2 more problems)" in text
    assert info.value.for_field("key_policy")


def test_base_config_is_valid() -> None:
    accepted(base_config())


def test_model_key_secretless_import_needs_credential() -> None:
    cfg = base_config()
    cfg.model_keys.append(ModelKeySpec("k3", None))
    refused(cfg, "model_keys", "k3", "credential", "required")


def test_plain_key_already_stored_as_hash_is_kept() -> None:
    from store.keys import hash_key

    cfg = base_config()
    key = "sk-aigw-" + "F" * 43
    cfg.consumers[0].api_keys = [key]
    cfg.consumers[0].api_key_hashes = ["sha256:" + hash_key(key)]
    accepted(cfg)
    cfg.consumers[0].api_keys = []
    cfg.consumers[0].api_key_hashes = ["sha256:" + hash_key(key)] * 2
    refused(cfg, "consumers", "c1", "api_keys", "twice")


@pytest.mark.parametrize("value", [0, -1, 1_000_001, 2.5, "100"])
def test_max_connections_refused(value: object) -> None:
    cfg = base_config()
    cfg.gateway.max_connections = value  # type: ignore[assignment]
    refused(cfg, "gateway", "", "max_connections")


@pytest.mark.parametrize("value", [1, 10_000, 1_000_000])
def test_max_connections_accepted(value: int) -> None:
    cfg = base_config()
    cfg.gateway.max_connections = value
    accepted(cfg)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redis_url", "http://127.0.0.1:6379"),
        ("redis_url", "127.0.0.1:6379"),
        ("redis_url", "redis://"),
        ("redis_url", "redis://host 1:6379"),
        ("redis_failure", "ignore"),
        ("workers", 0),
        ("workers", 1025),
        ("workers", "many"),
        ("workers", True),
    ],
)
def test_scale_fields_refused(field: str, value: object) -> None:
    cfg = base_config()
    setattr(cfg.gateway, field, value)
    refused(cfg, "gateway", "", field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redis_url", ""),
        ("redis_url", "redis://127.0.0.1:6379/0"),
        ("redis_url", "rediss://:secret@redis.internal:6380"),
        ("redis_failure", "refuse"),
        ("workers", 4),
        ("workers", "auto"),
    ],
)
def test_scale_fields_accepted(field: str, value: object) -> None:
    cfg = base_config()
    setattr(cfg.gateway, field, value)
    accepted(cfg)
