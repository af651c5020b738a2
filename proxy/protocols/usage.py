"""Token usage in one shape whatever the protocol, so records, limits, quotas and costs
are fed the same numbers from every API and every translation.

``input_tokens`` counts the whole prompt, cached parts included, as OpenAI reports it;
Anthropic reports the uncached rest only and the cache reads and writes beside it, so
the conversions add or subtract those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    #: Prompt tokens read from the vendor's cache (part of ``input_tokens``).
    cached_tokens: int = 0
    #: Prompt tokens written to the vendor's cache (Anthropic; part of ``input_tokens``).
    cache_creation_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def from_openai(cls, u: Any) -> Usage | None:
        """From chat completions' ``usage`` (``prompt_tokens``…); ``None`` without one."""
        if not isinstance(u, Mapping):
            return None
        details = u.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
        return cls(_int(u.get("prompt_tokens")), _int(u.get("completion_tokens")), cached)

    @classmethod
    def from_responses(cls, u: Any) -> Usage | None:
        """From the Responses API's ``usage`` (``input_tokens``, cached ones inside)."""
        if not isinstance(u, Mapping):
            return None
        details = u.get("input_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
        return cls(_int(u.get("input_tokens")), _int(u.get("output_tokens")), cached)

    @classmethod
    def from_anthropic(cls, u: Any) -> Usage | None:
        """From Anthropic's ``usage``, whose ``input_tokens`` leaves the cache out."""
        if not isinstance(u, Mapping):
            return None
        read = _int(u.get("cache_read_input_tokens"))
        write = _int(u.get("cache_creation_input_tokens"))
        return cls(_int(u.get("input_tokens")) + read + write, _int(u.get("output_tokens")), read, write)

    def merged(self, later: Usage) -> Usage:
        """This usage updated by a later report of the same answer: Anthropic streams
        give the prompt at the start and the output at the end; a later non-zero
        number replaces an earlier one (reports are cumulative, never summed)."""
        return Usage(
            later.input_tokens or self.input_tokens,
            later.output_tokens or self.output_tokens,
            later.cached_tokens or self.cached_tokens,
            later.cache_creation_tokens or self.cache_creation_tokens,
        )

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def to_responses(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.total_tokens,
        }

    def to_anthropic(self) -> dict[str, Any]:
        return {
            "input_tokens": max(0, self.input_tokens - self.cached_tokens - self.cache_creation_tokens),
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cached_tokens,
            "cache_creation_input_tokens": self.cache_creation_tokens,
        }
