"""Tool-call arguments: OpenAI carries them as a JSON string, Anthropic as an object."""

from __future__ import annotations

import uuid
from typing import Any

import orjson


def parse(arguments: Any) -> dict[str, Any]:
    """The object a JSON-string ``arguments`` holds. Models do emit broken JSON (cut off
    by ``max_tokens``, or plain wrong); it is kept, not lost, as ``{"_raw": text}``, so
    the client sees what the model said and an Anthropic vendor still gets an object."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def dump(value: Any) -> str:
    """The JSON string of an Anthropic ``input`` (a ``{"_raw": …}`` gives back its text)."""
    if isinstance(value, dict) and set(value) == {"_raw"} and isinstance(value["_raw"], str):
        return value["_raw"]
    return orjson.dumps(value if value is not None else {}).decode()


def new_id(prefix: str) -> str:
    """An id in the shape the client's protocol uses (``msg_…``, ``toolu_…``, ``resp_…``)."""
    return f"{prefix}{uuid.uuid4().hex}"
