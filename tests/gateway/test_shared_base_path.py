"""One base path for chat and embeddings, the models routes, HEAD: through a real ``aigw serve``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from gateway_config import CRED, new_key
from helpers import GatewayProcess
from mock_vendor import MockVendor

from tui.cli import main as aigw_main

CONSUMERS = ("both", "chatter", "stranger")
ORIGIN = "https://app.example.com"


def shared_toml(vendor: MockVendor, keys: dict[str, str]) -> str:
    def svc(name: str, default: str, models: str = "") -> str:
        return (
            f'[[model_services]]\nname = "{name}"\nvendor = "custom"\naddress = "{vendor.url}"\n'
            f'keys = ["k1"]\nmodel_policy = "passthrough"\ndefault_model = "{default}"\n{models}\n'
        )

    def api(name: str, base: str, services: str, scenario: str = "text-generation", extra: str = "") -> str:
        return (
            f'[[model_apis]]\nname = "{name}"\nscenario = "{scenario}"\nbase_path = "{base}"\n'
            f"services = [{services}]\n{extra}\n"
        )

    return "".join(
        [
            f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n',
            svc("chat-svc", "chat-1", 'models = ["chat-1", "chat-fam-*"]\n'),
            svc("emb-svc", "emb-1", 'models = ["emb-1"]\n'),
            svc("any-svc", "any-1"),  # empty models: forwards any model the client names
            api("chat", "/one", '"chat-svc"'),
            api("emb", "/one", '"emb-svc"', "embeddings"),
            api("open", "/open", '"any-svc"'),
            api("web", "/web", '"chat-svc"', extra=f'cors_origins = ["{ORIGIN}"]\n'),
            api("pub", "/pub", '"chat-svc"', extra='cors_origins = ["*"]\n'),
            *(f'[[consumers]]\nname = "{c}"\napi_keys = ["{k}"]\n\n' for c, k in keys.items()),
            '[[consumer_groups]]\nname = "all"\nconsumers = ["both"]\n'
            'model_apis = ["chat", "emb", "open", "web", "pub"]\nrequests_per_minute = 3\n\n',
            '[[consumer_groups]]\nname = "chat-only"\nconsumers = ["chatter"]\nmodel_apis = ["chat"]\n\n',
            '[[consumer_groups]]\nname = "elsewhere"\nconsumers = ["stranger"]\nmodel_apis = ["open"]\n\n',
        ]
    )


@dataclass
class Shared:
    proc: GatewayProcess
    keys: dict[str, str]

    def client(self, consumer: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.proc.url}/one/v1", api_key=self.keys[consumer], max_retries=0, timeout=30)

    def get(self, path: str, consumer: str = "both", method: str = "GET") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[consumer]}"}
        return httpx.request(method, self.proc.url + path, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def shared(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp: Path = tmp_path_factory.mktemp("shared")
    db = tmp / "data" / "aigw.db"
    keys = {c: new_key(c) for c in CONSUMERS}
    cfg = tmp / "shared.toml"
    cfg.write_text(shared_toml(vendor, keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0  # chat and embeddings on /one
    proc = GatewayProcess(db).start()
    try:
        yield Shared(proc, keys)
    finally:
        proc.stop()


def test_one_sdk_client_calls_chat_and_embeddings_on_one_base_path(shared: Shared, vendor: MockVendor) -> None:
    vendor.reset()
    client = shared.client("both")
    chat = client.chat.completions.create(model="chat-1", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content
    emb = client.embeddings.create(model="emb-1", input="hello")
    assert emb.data and emb.data[0].embedding
    assert [r.path.rsplit("/", 1)[-1] for r in vendor.requests] == ["completions", "embeddings"]


def test_models_list_of_a_shared_base_path_is_the_union(shared: Shared) -> None:
    ids = [m.id for m in shared.client("both").models.list()]
    assert ids == ["chat-1", "emb-1"]
    assert shared.client("both").models.retrieve("emb-1").owned_by == "emb-svc"


def test_a_consumer_granted_one_api_of_the_path_sees_only_its_models(shared: Shared) -> None:
    client = shared.client("chatter")
    assert [m.id for m in client.models.list()] == ["chat-1"]
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("emb-1")
    assert exc.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.PermissionDeniedError):  # its groups do not grant embeddings
        client.embeddings.create(model="emb-1", input="hello")


def test_a_consumer_granted_no_api_of_the_path_is_refused_the_models_list(shared: Shared) -> None:
    r = shared.get("/one/v1/models", "stranger")
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_authorized"
    assert "'chat', 'emb'" in r.json()["error"]["message"]


def test_model_ids_exist_only_when_offered(shared: Shared) -> None:
    # A service with empty models forwards any model, but an unknown id is not "there".
    missing = shared.get("/open/v1/models/no-such-model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert shared.get("/open/v1/models/any-1").json()["owned_by"] == "any-svc"
    fam = shared.get("/one/v1/models/chat-fam-7")  # matches a glob a service lists
    assert fam.status_code == 200 and fam.json() == {
        "id": "chat-fam-7",
        "object": "model",
        "created": 0,
        "owned_by": "chat-svc",
    }


@pytest.mark.parametrize("path", ["/one/v1/models", "/one/v1/models/chat-1"])
def test_head_on_the_models_routes_answers_like_get_without_a_body(shared: Shared, path: str) -> None:
    got = shared.get(path)
    head = shared.get(path, method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == "application/json"
    refused = shared.get("/one/v1/chat/completions", method="HEAD")
    assert refused.status_code == 405


def _preflight(shared: Shared, path: str, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }
    return httpx.options(shared.proc.url + path, headers=headers, timeout=10)


def _chat(shared: Shared, base: str, origin: str, key: str | None = None) -> httpx.Response:
    headers = {"Origin": origin}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": "chat-1", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{shared.proc.url}{base}/v1/chat/completions", json=body, headers=headers, timeout=10)


def test_preflight_from_an_allowed_origin_is_answered_without_a_key(shared: Shared) -> None:
    r = _preflight(shared, "/web/v1/chat/completions", ORIGIN)
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-methods"] == "POST"
    assert r.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    assert int(r.headers["access-control-max-age"]) > 0
    assert "Origin" in r.headers["vary"]
    star = _preflight(shared, "/pub/v1/chat/completions", "https://anyone.example")
    assert star.status_code == 204 and star.headers["access-control-allow-origin"] == "*"


def test_preflight_from_another_origin_or_to_an_api_without_cors_is_refused(shared: Shared) -> None:
    other = _preflight(shared, "/web/v1/chat/completions", "https://evil.example")
    assert other.status_code == 403 and other.json()["error"]["code"] == "cors_origin_not_allowed"
    assert "access-control-allow-origin" not in other.headers
    assert "cors_origins" in other.json()["error"]["message"]
    closed = _preflight(shared, "/one/v1/chat/completions", ORIGIN)  # no cors_origins: no CORS
    assert closed.status_code == 403 and "access-control-allow-origin" not in closed.headers
    plain = httpx.options(shared.proc.url + "/web/v1/chat/completions", timeout=10)  # not a preflight
    assert plain.status_code == 405


def test_answers_to_an_allowed_origin_carry_cors_headers_errors_included(shared: Shared) -> None:
    ok = _chat(shared, "/web", ORIGIN, shared.keys["both"])
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip() for h in ok.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "x-ratelimit-remaining-requests", "retry-after"} <= exposed
    assert "Origin" in ok.headers["vary"]
    no_key = _chat(shared, "/web", ORIGIN)
    assert no_key.status_code == 401 and no_key.headers["access-control-allow-origin"] == ORIGIN
    statuses = [_chat(shared, "/pub", "https://anyone.example", shared.keys["both"]) for _ in range(4)]
    limited = statuses[-1]  # 3 requests a minute on each API
    assert limited.status_code == 429 and limited.headers["access-control-allow-origin"] == "*"
    assert "retry-after" in limited.headers
    other = _chat(shared, "/web", "https://evil.example", shared.keys["both"])
    assert "access-control-allow-origin" not in other.headers
    models = shared.get("/web/v1/models")
    assert "access-control-allow-origin" not in models.headers  # no Origin sent: no CORS answer
    closed = _chat(shared, "/one", ORIGIN, shared.keys["both"])
    assert closed.status_code == 200 and "access-control-allow-origin" not in closed.headers
