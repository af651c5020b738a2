"""The response cache through a real ``aigw serve``: hits without a vendor call, scopes,
stream replay, limits, records, invalidation, the admin clear, and what is never stored."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from gateway_config import CRED, new_key
from helpers import GatewayProcess, record_for, wait_for, wait_for_async
from mock_vendor import Behaviour, MockVendor

from store.db import Store, open_store
from tui.admin_client import AdminClient
from tui.cli import main as aigw_main

CONSUMERS = ("alice", "bob", "toky", "rpm-app", "rq-app")
#: The mock's default usage (prompt, completion) and the service's prices per 1M tokens.
PT, CT = 11, 7
PRICE_IN, PRICE_OUT = 2.0, 4.0


def api_toml(name: str, cache: str) -> str:
    return f'[[model_apis]]\nname = "{name}"\nbase_path = "/{name}"\nservices = ["main"]\n{cache}\n'


def cache_toml(vendor: MockVendor, keys: dict[str, str], *, ttl: int = 300) -> str:
    on = f"cache_ttl_s = {ttl}\n"
    parts = [
        f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n'
        f'[[model_services]]\nname = "main"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["k1"]\ndefault_model = "m"\nmodel_policy = "passthrough"\n'
        f"[model_services.prices.m]\ninput = {PRICE_IN}\noutput = {PRICE_OUT}\n\n",
        api_toml("cached", on),
        api_toml("shared", on + 'cache_scope = "api"\ncors_origins = ["*"]\n'),
        api_toml("lum", on + 'cache_key = "last_user_message"\n'),
        api_toml("plain", ""),
        api_toml("tok", on),
        api_toml("rpm", on),
        api_toml("rq", on),
    ]
    for c in CONSUMERS:
        quota = {
            "toky": 'quota = 40\nquota_unit = "tokens"\nquota_period = "day"\n',
            "rq-app": 'quota = 3\nquota_unit = "requests"\nquota_period = "day"\n',
        }.get(c, "")
        parts.append(f'[[consumers]]\nname = "{c}"\napi_keys = ["{keys[c]}"]\n{quota}\n')
    parts.append(
        '[[consumer_groups]]\nname = "all"\nconsumers = ["alice", "bob"]\n'
        'model_apis = ["cached", "shared", "lum", "plain"]\n\n'
        '[[consumer_groups]]\nname = "g-toky"\nconsumers = ["toky"]\nmodel_apis = ["tok"]\ntokens_per_minute = 30\n\n'
        '[[consumer_groups]]\nname = "g-rpm"\nconsumers = ["rpm-app"]\nmodel_apis = ["rpm"]\n'
        "requests_per_minute = 4\n\n"
        '[[consumer_groups]]\nname = "g-rq"\nconsumers = ["rq-app"]\nmodel_apis = ["rq"]\n'
    )
    return "".join(parts)


@dataclass
class Gw:
    proc: GatewayProcess
    db: Path
    tmp: Path
    keys: dict[str, str]
    vendor: MockVendor

    def client(self, api: str, consumer: str = "alice") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.proc.url}/{api}/v1", api_key=self.keys[consumer], max_retries=0, timeout=20
        )

    def post(self, api: str, body: dict[str, Any], consumer: str = "alice") -> httpx.Response:
        return httpx.post(
            f"{self.proc.url}/{api}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {self.keys[consumer]}"},
            timeout=20,
        )

    def stream_bytes(self, api: str, body: dict[str, Any], consumer: str = "alice") -> tuple[httpx.Response, bytes]:
        with httpx.stream(
            "POST",
            f"{self.proc.url}/{api}/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {self.keys[consumer]}"},
            timeout=20,
        ) as r:
            return r, r.read()

    def admin(self, path: str, token: str | None = None) -> httpx.Response:
        tok = self.proc.token if token is None else token
        return httpx.post(f"{self.proc.admin_url}{path}", headers={"Authorization": f"Bearer {tok}"}, timeout=10)

    def gateway_toml(self, **fields: int) -> str:
        """The ``[gateway]`` table naming this gateway's ports (where the console looks), and ``fields``."""
        p = self.proc
        lines = [f'listen = "127.0.0.1:{p.port}"', f'admin_listen = "127.0.0.1:{p.admin_port}"']
        return "[gateway]\n" + "\n".join([*lines, *(f"{k} = {v}" for k, v in fields.items())]) + "\n\n"

    def import_toml(self, text: str) -> None:
        cfg = self.tmp / f"change-{secrets.token_hex(4)}.toml"
        cfg.write_text(text)
        assert aigw_main(["--db", str(self.db), "import", str(cfg)]) == 0
        self.proc.reload()


@pytest.fixture(scope="module")
def gw(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("cache")
    db = tmp / "data" / "aigw.db"
    keys = {c: new_key(c) for c in CONSUMERS}
    gw = Gw(GatewayProcess(db), db, tmp, keys, vendor)  # on the ports the store names: the console's
    cfg = tmp / "cache.toml"
    cfg.write_text(gw.gateway_toml() + cache_toml(vendor, keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    proc = gw.proc.start()
    try:
        yield gw
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def records(gw: Gw) -> Iterator[Store]:
    st = open_store(str(gw.db))
    yield st
    st.dispose()


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


def msgs(text: str | None = None) -> list[dict[str, str]]:
    """A conversation no other test asks (the cache outlives a test)."""
    return [{"role": "user", "content": text or f"question {secrets.token_hex(6)}"}]


def test_miss_then_hit_with_one_vendor_call(gw: Gw, records: Store) -> None:
    client = gw.client("cached")
    m = msgs()
    first = client.chat.completions.with_raw_response.create(model="m", messages=m)  # type: ignore[arg-type]
    second = client.chat.completions.with_raw_response.create(model="m", messages=m)  # type: ignore[arg-type]
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(gw.vendor.requests) == 1

    miss = record_for(records, first.headers["x-request-id"])
    hit = record_for(records, second.headers["x-request-id"])
    assert miss["cache"] == "miss" and miss["service"] == "main" and miss["cost"] > 0
    assert hit["cache"] == "hit" and hit["status"] == 200 and hit["service"] == ""
    assert (hit["prompt_tokens"], hit["completion_tokens"]) == (PT, CT)
    assert hit["cost"] == 0
    assert hit["cost_saved"] == pytest.approx((PT * PRICE_IN + CT * PRICE_OUT) / 1_000_000)
    assert hit["model"] == "m"


def test_stream_flag_is_part_of_the_key(gw: Gw) -> None:
    m = msgs()
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "MISS"
    r, _ = gw.stream_bytes("cached", {"model": "m", "messages": m})
    assert r.headers["x-cache"] == "MISS"
    assert len(gw.vendor.requests) == 2


def test_consumer_scope_keeps_answers_apart_and_api_scope_shares_them(gw: Gw) -> None:
    m = msgs()
    assert gw.post("cached", {"model": "m", "messages": m}, "alice").headers["x-cache"] == "MISS"
    assert gw.post("cached", {"model": "m", "messages": m}, "bob").headers["x-cache"] == "MISS"
    assert gw.post("cached", {"model": "m", "messages": m}, "bob").headers["x-cache"] == "HIT"
    assert len(gw.vendor.requests) == 2

    gw.vendor.reset()
    assert gw.post("shared", {"model": "m", "messages": m}, "alice").headers["x-cache"] == "MISS"
    assert gw.post("shared", {"model": "m", "messages": m}, "bob").headers["x-cache"] == "HIT"
    assert len(gw.vendor.requests) == 1


def test_a_stream_is_replayed_event_by_event(gw: Gw, records: Store) -> None:
    gw.vendor.behave(chunks=4)
    body = {"model": "m", "messages": msgs(), "stream_options": {"include_usage": True}}
    first, sent = gw.stream_bytes("cached", body)
    second, replayed = gw.stream_bytes("cached", body)
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert replayed == sent
    events = [e for e in replayed.split(b"\n\n") if e]
    assert len(events) == 4 + 1 + 1 + 1  # content, the finish, usage, [DONE]
    assert len(gw.vendor.requests) == 1

    # The official SDK reads the replay as any stream.
    stream = gw.client("cached").chat.completions.create(
        model="m",
        messages=body["messages"],  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert len(gw.vendor.requests) == 1
    hit = record_for(records, second.headers["x-request-id"])
    assert hit["cache"] == "hit" and hit["stream"] is True and hit["total_tokens"] == PT + CT and hit["cost"] == 0


def test_hits_charge_no_tokens_to_limits_or_quotas(gw: Gw) -> None:
    """tokens_per_minute 30 and a 40-token quota: one answer uses 18, so a second charged
    answer would pass one limit and a third both; hits leave them as the first left them."""
    m = msgs()
    for i in range(5):
        r = gw.post("tok", {"model": "m", "messages": m}, "toky")
        assert r.status_code == 200, r.text
        assert r.headers["x-cache"] == ("MISS" if i == 0 else "HIT")
    assert len(gw.vendor.requests) == 1

    def settled() -> dict[str, Any] | None:
        u: dict[str, Any] = httpx.get(
            f"{gw.proc.admin_url}/limits", headers={"Authorization": f"Bearer {gw.proc.token}"}, timeout=10
        ).json()["consumers"]["toky"]
        return u if u["quota"]["reserved"] == 0 else None

    use = wait_for(settled, 5, what="reservations released")
    assert use["quota"]["used"] == PT + CT
    assert use["apis"]["tok"]["tokens_per_minute"]["used"] == PT + CT


def test_hits_count_as_requests_per_minute(gw: Gw) -> None:
    m = msgs()
    codes = [gw.post("rpm", {"model": "m", "messages": m}, "rpm-app").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    assert len(gw.vendor.requests) == 1


def test_hits_count_for_a_requests_quota(gw: Gw) -> None:
    m = msgs()
    rs = [gw.post("rq", {"model": "m", "messages": m}, "rq-app") for _ in range(4)]
    assert [r.status_code for r in rs] == [200, 200, 200, 429]
    assert rs[3].json()["error"]["code"] == "insufficient_quota"
    assert len(gw.vendor.requests) == 1


def test_every_answer_of_a_cache_enabled_api_says_miss_errors_too(gw: Gw) -> None:
    r = httpx.post(
        f"{gw.proc.url}/cached/v1/chat/completions",
        json={"model": "m", "messages": msgs()},
        headers={"Authorization": "Bearer sk-aigw-not-a-key"},
        timeout=10,
    )
    assert r.status_code == 401 and r.headers["x-cache"] == "MISS"


def test_no_cache_and_no_header_where_none_is_configured(gw: Gw, records: Store) -> None:
    m = msgs()
    rs = [gw.post("plain", {"model": "m", "messages": m}) for _ in range(2)]
    assert all(r.status_code == 200 and "x-cache" not in r.headers for r in rs)
    assert len(gw.vendor.requests) == 2
    assert record_for(records, rs[1].headers["x-request-id"])["cache"] == ""


def test_a_browser_page_may_read_the_cache_header(gw: Gw) -> None:
    r = httpx.post(
        f"{gw.proc.url}/shared/v1/chat/completions",
        json={"model": "m", "messages": msgs()},
        headers={"Authorization": f"Bearer {gw.keys['alice']}", "Origin": "https://app.example"},
        timeout=10,
    )
    assert r.headers["x-cache"] == "MISS" and r.headers["access-control-allow-origin"] == "*"
    assert "x-cache" in {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}


def test_a_vendor_x_cache_header_is_not_passed_on(gw: Gw) -> None:
    gw.vendor.behave(headers={"X-Cache": "HIT from vendor-cdn"})
    r = gw.post("plain", {"model": "m", "messages": msgs()})
    assert "x-cache" not in r.headers
    r = gw.post("cached", {"model": "m", "messages": msgs()})
    assert r.headers.get_list("x-cache") == ["MISS"]


def test_a_vendor_error_is_not_stored(gw: Gw) -> None:
    m = msgs()
    gw.vendor.queue(Behaviour(status=500))
    r = gw.post("cached", {"model": "m", "messages": m})
    assert r.status_code == 500 and r.headers["x-cache"] == "MISS"
    r = gw.post("cached", {"model": "m", "messages": m})
    assert r.status_code == 200 and r.headers["x-cache"] == "MISS"
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "HIT"
    assert len(gw.vendor.requests) == 2


def test_a_stream_cut_midway_is_not_stored(gw: Gw) -> None:
    body = {"model": "m", "messages": msgs()}
    gw.vendor.queue(Behaviour(chunks=4, break_after=2))
    r, data = gw.stream_bytes("cached", body)
    assert r.headers["x-cache"] == "MISS" and b"event: error" in data
    r, data = gw.stream_bytes("cached", body)
    assert r.headers["x-cache"] == "MISS" and data.endswith(b"data: [DONE]\n\n")
    r, _ = gw.stream_bytes("cached", body)
    assert r.headers["x-cache"] == "HIT"
    assert len(gw.vendor.requests) == 2


def test_last_user_message_keying(gw: Gw) -> None:
    q = f"what is {secrets.token_hex(4)}?"
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": q}]
    again = [
        {"role": "system", "content": "be thorough"},
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": q},
    ]
    assert gw.post("lum", {"model": "m", "messages": first}).headers["x-cache"] == "MISS"
    assert gw.post("lum", {"model": "m", "messages": again, "temperature": 0.1}).headers["x-cache"] == "HIT"
    other = [*first[:1], {"role": "user", "content": q + " really"}]
    assert gw.post("lum", {"model": "m", "messages": other}).headers["x-cache"] == "MISS"
    # The full key (the default) sees the difference the other one ignores.
    assert gw.post("cached", {"model": "m", "messages": first}).headers["x-cache"] == "MISS"
    assert gw.post("cached", {"model": "m", "messages": again}).headers["x-cache"] == "MISS"
    assert len(gw.vendor.requests) == 4


def test_a_changed_api_loses_its_entries_others_keep_theirs(gw: Gw) -> None:
    m, s = msgs(), msgs()
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "MISS"
    assert gw.post("shared", {"model": "m", "messages": s}).headers["x-cache"] == "MISS"
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "HIT"
    gw.import_toml(api_toml("cached", "cache_ttl_s = 600\n"))
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "MISS"
    assert gw.post("shared", {"model": "m", "messages": s}).headers["x-cache"] == "HIT"
    assert len(gw.vendor.requests) == 3


def test_admin_clears_the_cache(gw: Gw) -> None:
    m, s = msgs(), msgs()
    gw.post("cached", {"model": "m", "messages": m})
    gw.post("shared", {"model": "m", "messages": s})
    assert gw.admin("/cache/clear", token="wrong").status_code == 401
    missing = gw.admin("/cache/clear?api=nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
    r = gw.admin("/cache/clear?api=cached")
    assert r.status_code == 200 and r.json()["cleared"] >= 1
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "MISS"
    assert gw.post("shared", {"model": "m", "messages": s}).headers["x-cache"] == "HIT"
    r = gw.admin("/cache/clear")
    assert r.status_code == 200 and r.json()["cleared"] >= 2
    assert gw.admin("/cache/clear").json() == {"cleared": 0}
    assert gw.post("shared", {"model": "m", "messages": s}).headers["x-cache"] == "MISS"


async def test_the_console_clears_an_apis_cache(gw: Gw, records: Store) -> None:
    admin = AdminClient(f"127.0.0.1:{gw.proc.admin_port}", gw.db.parent)
    m, s = msgs(), msgs()
    try:
        assert admin.clear_cache() is not None  # what earlier tests left
        gw.post("cached", {"model": "m", "messages": m})
        gw.post("shared", {"model": "m", "messages": s})
        assert admin.clear_cache("nope") is None
        assert admin.clear_cache("shared") == 1
    finally:
        admin.close()

    # The console (Textual and all) is imported here, not at the top: collecting this file
    # for the quick tier, which runs none of it, then costs no Textual import.
    from tui.app import AigwApp
    from tui.gateway_process import GatewayController
    from tui.screens.model_apis import ModelApisScreen

    app = AigwApp(records, start_section="model-apis", gateway=GatewayController(records), poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:

        def ready() -> bool:
            return isinstance(app.screen, ModelApisScreen) and app.screen.config is not None

        await wait_for_async(ready, 15, what="the Model APIs screen")
        screen = app.screen
        assert isinstance(screen, ModelApisScreen)
        screen.refill("cached")
        await pilot.press("x")

        def notice() -> str | None:
            return next((n.message for n in app._notifications if "cached answer" in n.message), None)

        assert await wait_for_async(notice, 15, what="the notice") == "cached: 1 cached answer dropped"
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "MISS"
    assert len(gw.vendor.requests) == 3


def test_metrics_count_hits_misses_and_bytes(gw: Gw) -> None:
    m = msgs()
    gw.post("shared", {"model": "m", "messages": m})
    gw.post("shared", {"model": "m", "messages": m})

    def metrics() -> dict[str, float]:
        text = httpx.get(f"{gw.proc.admin_url}/metrics", timeout=10).text
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aigw_cache")
        }

    got = wait_for(lambda: (x := metrics()).get('aigw_cache_hits_total{api="shared"}') and x, 10, what="hit counted")
    assert got['aigw_cache_misses_total{api="shared"}'] >= 1
    assert got["aigw_cache_entries"] >= 1 and got["aigw_cache_bytes"] > 0
    assert got["aigw_cache_max_bytes"] == 64 * 1024 * 1024
    assert "aigw_cache_evictions_total" in got
    assert not any("plain" in k for k in got)


def test_logs_json_show_the_cache_field(gw: Gw, records: Store, capsys: pytest.CaptureFixture[str]) -> None:
    m = msgs()
    gw.post("cached", {"model": "m", "messages": m})
    rid = gw.post("cached", {"model": "m", "messages": m}).headers["x-request-id"]
    record_for(records, rid)
    capsys.readouterr()
    assert aigw_main(["--db", str(gw.db), "logs", "--json", "-n", "50"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = next(r for r in rows if r["request_id"] == rid)
    assert mine["cache"] == "hit" and mine["cost"] == 0 and mine["cost_saved"] > 0


def test_no_cache_memory_means_every_answer_is_a_miss(gw: Gw) -> None:
    m = msgs()
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "MISS"
    gw.import_toml(gw.gateway_toml(cache_max_mb=0))
    try:
        rs = [gw.post("cached", {"model": "m", "messages": m}) for _ in range(2)]
        assert [r.headers["x-cache"] for r in rs] == ["MISS", "MISS"]  # a new size: an empty cache
        assert len(gw.vendor.requests) == 3
    finally:
        gw.import_toml(gw.gateway_toml(cache_max_mb=64))
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "MISS"
    assert gw.post("cached", {"model": "m", "messages": m}).headers["x-cache"] == "HIT"
