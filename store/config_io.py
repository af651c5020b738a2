"""Configuration as code: one TOML document ↔ :class:`~store.spec.Config` (``aigw import``/``export``).

Parsing checks types and unknown fields and names the table, entry and field of each
problem; the rules themselves are :mod:`store.validation`'s, applied by
:func:`store.repo.apply_config` on the merged result.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import tomli_w

from .errors import ErrorList, StoreError
from .spec import DEFAULT_MAX_TOKENS, TABLES, Config, GatewaySpec, ModelKeySpec, Price

TOP_LEVEL = ("gateway", *TABLES)
_SECRET_FIELDS = ("credential", "api_keys")


class ParsedConfig:
    """A parsed document: the config, and whether it had a ``[gateway]`` table."""

    def __init__(self, config: Config, has_gateway: bool) -> None:
        self.config = config
        self.has_gateway = has_gateway


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        inner = typing.get_args(tp)[0]
        plural = {str: "text values", bool: "true/false values", int: "whole numbers", float: "numbers"}
        return f"a list of {plural.get(inner, _type_name(inner))}"
    if origin is dict:
        return "a table"
    return {str: "text", bool: "true/false", int: "a whole number", float: "a number"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) — TOML already typed the value; check it is what the field takes."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, None
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, None
        out = []
        for item in value:
            ok, v = _coerce(item, inner)
            if not ok:
                return False, None
            out.append(v)
        return True, out
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    return False, None


def _build(cls: type, table: str, entry: str, data: dict[str, Any], err: ErrorList) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            err.add(table, entry, key, f"unknown field (known: {', '.join(known)})")
            continue
        tp = hints[key]
        if key == "prices":
            kwargs[key] = _prices(table, entry, value, err)
            continue
        ok, v = _coerce(value, tp)
        if not ok:
            # Never echo what may be a secret (a vendor key, a consumer key) into an error.
            shown = "" if key in _SECRET_FIELDS else f" {value!r:.40}"
            err.add(table, entry, key, f"must be {_type_name(tp)}, got {type(value).__name__}{shown}")
            continue
        kwargs[key] = v
    for name, f in known.items():
        if f.default is MISSING and f.default_factory is MISSING and name not in kwargs:
            err.add(table, entry, name, "is required")
            return None
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - all fields checked above
        err.add(table, entry, "", str(exc))
        return None


def _prices(table: str, entry: str, value: Any, err: ErrorList) -> dict[str, Price]:
    out: dict[str, Price] = {}
    if not isinstance(value, dict):
        err.add(table, entry, "prices", "must be a table of model = { input = …, output = … }")
        return out
    for model, p in value.items():
        if not isinstance(p, dict):
            err.add(table, entry, f"prices.{model}", "must be a table with input and output (per 1M tokens)")
            continue
        price = Price()
        for k, v in p.items():
            if k not in ("input", "output"):
                err.add(table, entry, f"prices.{model}.{k}", "unknown field (known: input, output)")
            elif isinstance(v, bool) or not isinstance(v, int | float):
                err.add(table, entry, f"prices.{model}.{k}", f"must be a number, got {v!r:.40}")
            else:
                setattr(price, k, float(v))
        out[model] = price
    return out


def parse(text: str, *, source: str = "config") -> ParsedConfig:
    """TOML text → config. Raises :class:`StoreError` (syntax: one line with line/column)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StoreError(f"{source}: invalid TOML: {exc}") from None
    err = ErrorList()
    cfg = Config()
    for key in doc:
        if key not in TOP_LEVEL:
            err.add(key, "", "", f"unknown table (known: {', '.join(TOP_LEVEL)})")
    gw = doc.get("gateway")
    if gw is not None:
        if not isinstance(gw, dict):
            err.add("gateway", "", "", "must be a table: [gateway]")
        else:
            built = _build(GatewaySpec, "gateway", "", gw, err)
            if built is not None:
                cfg.gateway = built
    for table, cls in TABLES.items():
        raw = doc.get(table, [])
        if not isinstance(raw, list):
            err.add(table, "", "", f"must be an array of tables: [[{table}]]")
            continue
        out = getattr(cfg, table)
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                err.add(table, f"#{i + 1}", "", f"must be a table: [[{table}]]")
                continue
            name = item.get("name")
            entry = name if isinstance(name, str) and name else f"#{i + 1}"
            built = _build(cls, table, entry, item, err)
            if built is not None:
                out.append(built)
    err.raise_if_any()
    return ParsedConfig(cfg, gw is not None)


def read_file(path: str | Path) -> ParsedConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not TOML
    except FileNotFoundError:
        raise StoreError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise StoreError(f"{p}: is a directory, not a TOML file") from None
    except UnicodeDecodeError:
        raise StoreError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise StoreError(f"{p}: {exc.strerror or exc}") from None
    return parse(text, source=str(p))


# ---------------------------------------------------------------- export

#: Fields written only when they differ from empty (keeps documents short and stable).
_OMIT_WHEN_EMPTY = {
    "description",
    "models",
    "prices",
    "weights",
    "fallback_services",
    "public_url",
    "api_keys",
    "cors_origins",
    "redis_url",
}
#: A model service's outbound settings: empty means the environment's proxy and the system's CAs.
_OMIT_WHEN_EMPTY |= {"proxy", "ca_file"}
#: A model API's cache settings, each written only when it is not its default (no cache).
_OMIT_WHEN_DEFAULT: dict[str, Any] = {"cache_ttl_s": 0, "cache_key": "full", "cache_scope": "consumer"}


def is_secret(credential: str | None) -> bool:
    return bool(credential) and not str(credential).startswith("env:")


def to_document(cfg: Config, *, include_secrets: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"gateway": _entry(cfg.gateway)}
    for table in TABLES:
        items = []
        for spec in getattr(cfg, table):
            d = _entry(spec)
            if isinstance(spec, ModelKeySpec) and is_secret(spec.credential) and not include_secrets:
                d.pop("credential", None)
            if table == "consumers":
                d["api_key_hashes"] = sorted(spec.api_key_hashes or [])
            if table == "model_apis" and spec.service_type != "multi":
                d.pop("routing", None)
            if table == "model_services" and d.get("default_max_tokens") == DEFAULT_MAX_TOKENS:
                d.pop("default_max_tokens")  # the default; ``responses`` is omitted while unset
            items.append(d)
        doc[table] = items
    return doc


def _entry(spec: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for f in fields(spec):
        v = getattr(spec, f.name)
        if v is None or (f.name in _OMIT_WHEN_EMPTY and v in ("", [], {})):
            continue
        if f.name in _OMIT_WHEN_DEFAULT and v == _OMIT_WHEN_DEFAULT[f.name]:
            continue
        if f.name == "prices":
            v = {k: {"input": p.input, "output": p.output} for k, p in sorted(v.items())}
        d[f.name] = v
    return d


def _value(v: Any) -> str:
    """One TOML value; short lists stay on one line (tomli-w alone would split every list)."""
    if isinstance(v, list):
        items = [_value(x) for x in v]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= 88:
            return one_line
        return "[\n" + "".join(f"    {x},\n" for x in items) + "]"
    return tomli_w.dumps({"v": v}).removeprefix("v = ").rstrip("\n")


def _key(k: str) -> str:
    return tomli_w.dumps({k: 0}).rsplit(" = ", 1)[0]


def dumps(cfg: Config, *, include_secrets: bool = False) -> str:
    """The whole configuration as TOML: ``[gateway]`` then one ``[[table]]`` per entity."""
    doc = to_document(cfg, include_secrets=include_secrets)
    lines = ["# aigw configuration — `aigw import` applies it, `aigw export` writes it."]
    if not include_secrets and any(is_secret(k.credential) for k in cfg.model_keys):
        lines.append("# Literal model key credentials are omitted (use --include-secrets, or env:VAR);")
        lines.append("# importing over an existing key keeps its stored credential.")
    lines += ["", "[gateway]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in doc["gateway"].items()]
    for table in TABLES:
        for entry in doc[table]:
            lines += ["", f"[[{table}]]"]
            prices = entry.pop("prices", {})
            lines += [f"{_key(k)} = {_value(v)}" for k, v in entry.items()]
            for model, p in prices.items():
                lines.append(f"[{table}.prices.{_key(model)}]")
                lines += [f"{k} = {_value(v)}" for k, v in p.items()]
    return "\n".join(lines) + "\n"
