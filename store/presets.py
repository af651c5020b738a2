"""Vendor presets: the address an SDK takes as ``base_url`` and the models offered, per protocol.

The console fills a new service's address and its default-model picker from here; the
store fills an empty ``address`` from here too, so a preset is one source of truth. A
vendor that also speaks Anthropic Messages has a second address (and models) for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VendorPreset:
    name: str
    label: str
    address: str
    models: tuple[str, ...]
    #: The protocol a new service of this vendor speaks unless told otherwise.
    protocol: str = "openai"
    #: The vendor's Anthropic Messages base (ending in ``/v1``), "" when it has none.
    anthropic_address: str = ""
    anthropic_models: tuple[str, ...] = ()

    def address_for(self, protocol: str) -> str:
        """The base URL for ``protocol`` ("" when the vendor does not speak it)."""
        return self.anthropic_address if protocol == "anthropic" else self.address

    def models_for(self, protocol: str) -> tuple[str, ...]:
        return (self.anthropic_models or self.models) if protocol == "anthropic" else self.models


PRESETS: dict[str, VendorPreset] = {
    p.name: p
    for p in (
        VendorPreset(
            "hunyuan",
            "Tencent Hunyuan",
            "https://api.hunyuan.cloud.tencent.com/v1",
            (
                "hunyuan-2.0-instruct-20251111",
                "hunyuan-2.0-thinking-20251109",
                "hunyuan-turbos-latest",
                "hunyuan-t1-latest",
                "hunyuan-lite",
                "hunyuan-standard",
                "hunyuan-large",
                "hunyuan-embedding",
            ),
            anthropic_address="https://api.hunyuan.cloud.tencent.com/anthropic/v1",
            anthropic_models=("hunyuan-2.0-thinking-20251109", "hunyuan-2.0-instruct-20251111"),
        ),
        VendorPreset(
            "lkeap",
            "Tencent LKEAP (DeepSeek)",
            "https://api.lkeap.cloud.tencent.com/v1",
            ("deepseek-v3.1", "deepseek-r1", "deepseek-v3"),
        ),
        VendorPreset(
            "openai",
            "OpenAI",
            "https://api.openai.com/v1",
            ("gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"),
        ),
        VendorPreset(
            "anthropic",
            "Anthropic",
            # The Messages API; the same base serves Anthropic's OpenAI-compatible chat.
            "https://api.anthropic.com/v1",
            ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5", "claude-opus-4-1"),
            protocol="anthropic",
            anthropic_address="https://api.anthropic.com/v1",
        ),
        VendorPreset("deepseek", "DeepSeek", "https://api.deepseek.com/v1", ("deepseek-chat", "deepseek-reasoner")),
        VendorPreset(
            "qwen",
            "Alibaba Qwen",
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
            ("qwen-max", "qwen-plus", "qwen-turbo", "text-embedding-v3"),
        ),
        VendorPreset(
            "moonshot",
            "Moonshot",
            "https://api.moonshot.cn/v1",
            ("kimi-k2-0905-preview", "moonshot-v1-8k", "moonshot-v1-32k"),
        ),
        VendorPreset(
            "zhipu",
            "Zhipu GLM",
            "https://open.bigmodel.cn/api/paas/v4",
            ("glm-4.6", "glm-4.5", "glm-4-flash", "embedding-3"),
        ),
        VendorPreset(
            "qianfan",
            "Baidu Qianfan",
            "https://qianfan.baidubce.com/v2",
            ("ernie-4.5-turbo-128k", "ernie-x1-turbo-32k", "ernie-speed-128k"),
        ),
        VendorPreset("ollama", "Ollama", "http://127.0.0.1:11434/v1", ("llama3.2", "qwen2.5")),
        VendorPreset("vllm", "vLLM", "http://127.0.0.1:8000/v1", ()),
        VendorPreset("custom", "Custom (OpenAI-compatible)", "", ()),
    )
}

VENDORS: tuple[str, ...] = tuple(PRESETS)


def preset(vendor: str) -> VendorPreset | None:
    return PRESETS.get(vendor)
