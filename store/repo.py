"""Reading and changing the configuration — the only writer of configuration rows.

Every change follows one path: load the whole :class:`Config`, apply the change to it,
run :func:`~store.validation.validate_config`, write the rows, bump the revision, and
commit — one transaction. The console, ``aigw import`` and tests all call this, so a
rule can never hold in one place and not another.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, delete, select

from . import models as m
from .errors import FieldError, NotFoundError, ReferencedError, StoreError
from .keys import display_prefix, generate_key, hash_display, hash_key
from .spec import (
    TABLES,
    Config,
    ConsumerGroupSpec,
    ConsumerSpec,
    GatewaySpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
    Price,
)
from .validation import referrers, validate_config

ROW_CLASS: dict[str, type[Any]] = {
    "model_keys": m.ModelKey,
    "model_services": m.ModelService,
    "model_apis": m.ModelApi,
    "consumers": m.Consumer,
    "consumer_groups": m.ConsumerGroup,
}

#: Singular labels for messages ("model key 'x' does not exist").
LABEL = {
    "model_keys": "model key",
    "model_services": "model service",
    "model_apis": "model API",
    "consumers": "consumer",
    "consumer_groups": "consumer group",
}

Spec = ModelKeySpec | ModelServiceSpec | ModelApiSpec | ConsumerSpec | ConsumerGroupSpec


# ---------------------------------------------------------------- revision and meta


def get_revision(session: Session) -> int:
    row = session.get(m.Meta, "revision")
    return int(row.value) if row else 0


def bump_revision(session: Session) -> None:
    """Inside the caller's transaction, so the gateway never sees a half-applied change."""
    session.execute(text("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'revision'"))


def get_meta(session: Session, key: str, default: str = "") -> str:
    row = session.get(m.Meta, key)
    return row.value if row else default


def set_meta(session: Session, key: str, value: str) -> None:
    """Console state (not configuration): does not bump the revision."""
    row = session.get(m.Meta, key)
    if row is None:
        session.add(m.Meta(key=key, value=value))
    else:
        row.value = value
        session.add(row)
    session.commit()


# ---------------------------------------------------------------- reading


def load_config(session: Session) -> Config:
    """The whole configuration, entities sorted by name, references by name."""
    cfg = Config()
    gw = session.get(m.GatewaySettings, 1) or m.GatewaySettings()
    cfg.gateway = GatewaySpec(
        listen=gw.listen,
        public_url=gw.public_url,
        admin_listen=gw.admin_listen,
        max_connections=gw.max_connections,
        cache_max_mb=gw.cache_max_mb,
    )
    cfg.gateway.redis_url, cfg.gateway.redis_failure = gw.redis_url, gw.redis_failure
    cfg.gateway.workers = gw.workers or "auto"

    for k in session.exec(select(m.ModelKey).order_by(m.ModelKey.name)).all():
        cfg.model_keys.append(
            ModelKeySpec(
                name=k.name, credential=k.credential, description=k.description, max_concurrency=k.max_concurrency
            )
        )

    key_names = {k.id: k.name for k in session.exec(select(m.ModelKey)).all()}
    svc_keys: dict[int, list[str]] = {}
    for link in session.exec(select(m.ServiceKey).order_by(col(m.ServiceKey.position))).all():
        svc_keys.setdefault(link.service_id, []).append(key_names[link.key_id])
    for s in session.exec(select(m.ModelService).order_by(m.ModelService.name)).all():
        assert s.id is not None
        cfg.model_services.append(
            ModelServiceSpec(
                name=s.name,
                vendor=s.vendor,
                protocol=s.protocol,
                address=s.address,
                keys=svc_keys.get(s.id, []),
                key_policy=s.key_policy,
                model_policy=s.model_policy,
                default_model=s.default_model,
                models=list(s.models or []),
                unlisted_model=s.unlisted_model,
                timeout_s=s.timeout_s,
                proxy=s.proxy,
                ca_file=s.ca_file,
                queue_timeout_s=s.queue_timeout_s,
                circuit_failures=s.circuit_failures,
                circuit_cooldown_s=s.circuit_cooldown_s,
                probe_interval_s=s.probe_interval_s,
                first_byte_timeout_s=s.first_byte_timeout_s,
                default_max_tokens=s.default_max_tokens,
                responses=s.responses,
                prices={
                    k: Price(float(v.get("input", 0)), float(v.get("output", 0))) for k, v in (s.prices or {}).items()
                },
                description=s.description,
            )
        )

    svc_names = {s.id: s.name for s in session.exec(select(m.ModelService)).all()}
    primaries: dict[int, list[tuple[str, int | None]]] = {}
    fallbacks: dict[int, list[str]] = {}
    for api_link in session.exec(select(m.ApiService).order_by(col(m.ApiService.position))).all():
        if api_link.role == "primary":
            primaries.setdefault(api_link.api_id, []).append((svc_names[api_link.service_id], api_link.weight))
        else:
            fallbacks.setdefault(api_link.api_id, []).append(svc_names[api_link.service_id])
    for a in session.exec(select(m.ModelApi).order_by(m.ModelApi.name)).all():
        assert a.id is not None
        prim = primaries.get(a.id, [])
        weights = [w for _, w in prim if w is not None]
        cfg.model_apis.append(
            ModelApiSpec(
                name=a.name,
                scenario=a.scenario,
                protocol=a.protocol,
                routes=list(a.routes or []),
                base_path=a.base_path,
                path_simplification=a.path_simplification,
                service_type=a.service_type,
                services=[n for n, _ in prim],
                routing=a.routing,
                weights=weights if len(weights) == len(prim) and weights else [],
                fallback_services=fallbacks.get(a.id, []),
                description=a.description,
                cors_origins=list(a.cors_origins or []),
                cache_ttl_s=a.cache_ttl_s,
                cache_key=a.cache_key,
                cache_scope=a.cache_scope,
            )
        )

    hashes: dict[int, list[str]] = {}
    for ck in session.exec(select(m.ConsumerKey).order_by(m.ConsumerKey.key_hash)).all():
        hashes.setdefault(ck.consumer_id, []).append("sha256:" + ck.key_hash)
    for c in session.exec(select(m.Consumer).order_by(m.Consumer.name)).all():
        assert c.id is not None
        cfg.consumers.append(
            ConsumerSpec(
                name=c.name,
                enabled=c.enabled,
                api_key_hashes=hashes.get(c.id, []),
                quota=c.quota,
                quota_unit=c.quota_unit,
                quota_period=c.quota_period,
                description=c.description,
            )
        )

    consumer_names = {c.id: c.name for c in session.exec(select(m.Consumer)).all()}
    api_names = {a.id: a.name for a in session.exec(select(m.ModelApi)).all()}
    members: dict[int, list[str]] = {}
    for gm in session.exec(select(m.GroupMember).order_by(col(m.GroupMember.position))).all():
        members.setdefault(gm.group_id, []).append(consumer_names[gm.consumer_id])
    grants: dict[int, list[str]] = {}
    for gg in session.exec(select(m.GroupGrant).order_by(col(m.GroupGrant.position))).all():
        grants.setdefault(gg.group_id, []).append(api_names[gg.api_id])
    for g in session.exec(select(m.ConsumerGroup).order_by(m.ConsumerGroup.name)).all():
        assert g.id is not None
        cfg.consumer_groups.append(
            ConsumerGroupSpec(
                name=g.name,
                consumers=members.get(g.id, []),
                model_apis=grants.get(g.id, []),
                requests_per_minute=g.requests_per_minute,
                tokens_per_minute=g.tokens_per_minute,
                description=g.description,
            )
        )
    return cfg


def entities(cfg: Config, table: str) -> list[Any]:
    return getattr(cfg, table)  # type: ignore[no-any-return]


def find(cfg: Config, table: str, name: str) -> Any | None:
    return next((x for x in entities(cfg, table) if x.name == name), None)


def get(session: Session, table: str, name: str) -> Any:
    """One entity as a spec; :class:`NotFoundError` when absent."""
    found = find(load_config(session), table, name)
    if found is None:
        raise NotFoundError(FieldError(table, name, "", f"{LABEL[table]} {name!r} does not exist"))
    return found


def list_consumer_keys(session: Session, consumer: str) -> list[m.ConsumerKey]:
    row = _row(session, "consumers", consumer)
    q = select(m.ConsumerKey).where(m.ConsumerKey.consumer_id == row.id).order_by(col(m.ConsumerKey.created_at))
    return list(session.exec(q).all())


def all_consumer_keys(session: Session) -> list[tuple[str, str]]:
    """``(key_hash_hex, consumer_name)`` for every key — what the gateway authenticates against."""
    q = select(m.ConsumerKey.key_hash, m.Consumer.name).join(
        m.Consumer, col(m.ConsumerKey.consumer_id) == m.Consumer.id
    )
    return [(h, n) for h, n in session.exec(q).all()]


# ---------------------------------------------------------------- writing rows


def _row(session: Session, table: str, name: str) -> Any:
    cls = ROW_CLASS[table]
    row = session.exec(select(cls).where(cls.name == name)).first()
    if row is None:
        raise NotFoundError(FieldError(table, name, "", f"{LABEL[table]} {name!r} does not exist"))
    return row


def _ids(session: Session, table: str, names: list[str]) -> list[int]:
    cls = ROW_CLASS[table]
    rows = {r.name: r.id for r in session.exec(select(cls).where(col(cls.name).in_(names))).all()}
    return [rows[n] for n in names]


def _write(session: Session, table: str, spec: Any, original: str | None) -> None:
    """Upsert the row for ``spec`` (found by ``original`` or its own name) and its links."""
    cls = ROW_CLASS[table]
    row = session.exec(select(cls).where(cls.name == (original or spec.name))).first()
    if row is None:
        row = cls(
            name=spec.name,
            **({"credential": ""} if table == "model_keys" else {}),
            **({"vendor": "", "address": ""} if table == "model_services" else {}),
            **({"base_path": spec.base_path} if table == "model_apis" else {}),
        )
    row.name = spec.name
    row.description = spec.description
    row.updated_at = m.utcnow()
    if table == "model_keys":
        if spec.credential is not None:
            row.credential = spec.credential
        row.max_concurrency = int(spec.max_concurrency)
    elif table == "model_services":
        for f in ("vendor", "protocol", "address", "key_policy", "model_policy", "default_model", "unlisted_model"):
            setattr(row, f, getattr(spec, f))
        for f in ("proxy", "ca_file", "responses"):
            setattr(row, f, getattr(spec, f))
        row.default_max_tokens = int(spec.default_max_tokens)
        row.timeout_s = float(spec.timeout_s)
        for f in ("queue_timeout_s", "circuit_cooldown_s", "probe_interval_s", "first_byte_timeout_s"):
            setattr(row, f, float(getattr(spec, f)))
        row.circuit_failures = int(spec.circuit_failures)
        row.models = list(spec.models)
        row.prices = {k: {"input": p.input, "output": p.output} for k, p in spec.prices.items()}
    elif table == "model_apis":
        for f in ("scenario", "protocol", "base_path", "path_simplification", "service_type", "routing"):
            setattr(row, f, getattr(spec, f))
        for f in ("cache_ttl_s", "cache_key", "cache_scope"):
            setattr(row, f, getattr(spec, f))
        row.routes = list(spec.routes)
        row.cors_origins = list(spec.cors_origins)
    elif table == "consumers":
        for f in ("enabled", "quota_unit", "quota_period"):
            setattr(row, f, getattr(spec, f))
        row.quota = float(spec.quota)
    elif table == "consumer_groups":
        row.requests_per_minute = int(spec.requests_per_minute)
        row.tokens_per_minute = int(spec.tokens_per_minute)
    session.add(row)
    session.flush()
    rid = row.id

    if table == "model_services":
        session.exec(delete(m.ServiceKey).where(col(m.ServiceKey.service_id) == rid))
        for pos, kid in enumerate(_ids(session, "model_keys", spec.keys)):
            session.add(m.ServiceKey(service_id=rid, key_id=kid, position=pos))
    elif table == "model_apis":
        session.exec(delete(m.ApiService).where(col(m.ApiService.api_id) == rid))
        weights = spec.weights if spec.weights else [None] * len(spec.services)
        for pos, (sid, w) in enumerate(zip(_ids(session, "model_services", spec.services), weights, strict=True)):
            session.add(m.ApiService(api_id=rid, service_id=sid, role="primary", position=pos, weight=w))
        for pos, sid in enumerate(_ids(session, "model_services", spec.fallback_services)):
            session.add(m.ApiService(api_id=rid, service_id=sid, role="fallback", position=pos))
    elif table == "consumers":
        wanted = list(spec.api_key_hashes or [])
        plain = {hash_key(k): k for k in spec.api_keys}
        if spec.api_key_hashes is not None or plain:
            wanted_hex = {h.removeprefix("sha256:") for h in wanted} | set(plain)
            have = {
                ck.key_hash: ck
                for ck in session.exec(select(m.ConsumerKey).where(m.ConsumerKey.consumer_id == rid)).all()
            }
            for h, ck in have.items():
                if h not in wanted_hex:
                    session.delete(ck)
            for h in sorted(wanted_hex - set(have)):
                prefix = display_prefix(plain[h]) if h in plain else hash_display(h)
                session.add(m.ConsumerKey(consumer_id=rid, key_hash=h, prefix=prefix))
    elif table == "consumer_groups":
        session.exec(delete(m.GroupMember).where(col(m.GroupMember.group_id) == rid))
        session.exec(delete(m.GroupGrant).where(col(m.GroupGrant.group_id) == rid))
        for pos, cid in enumerate(_ids(session, "consumers", spec.consumers)):
            session.add(m.GroupMember(group_id=rid, consumer_id=cid, position=pos))
        for pos, aid in enumerate(_ids(session, "model_apis", spec.model_apis)):
            session.add(m.GroupGrant(group_id=rid, api_id=aid, position=pos))
    session.flush()


def _delete_row(session: Session, table: str, name: str) -> None:
    session.delete(_row(session, table, name))
    session.flush()


def _rename_refs(cfg: Config, table: str, old: str, new: str) -> None:
    def swap(items: list[str]) -> list[str]:
        return [new if x == old else x for x in items]

    if table == "model_keys":
        for s in cfg.model_services:
            s.keys = swap(s.keys)
    elif table == "model_services":
        for a in cfg.model_apis:
            a.services, a.fallback_services = swap(a.services), swap(a.fallback_services)
    elif table == "model_apis":
        for g in cfg.consumer_groups:
            g.model_apis = swap(g.model_apis)
    elif table == "consumers":
        for g in cfg.consumer_groups:
            g.consumers = swap(g.consumers)


def _transaction(session: Session, work: Callable[[], None]) -> None:
    try:
        work()
        bump_revision(session)
        session.commit()
    except BaseException:
        session.rollback()
        raise


# ---------------------------------------------------------------- public changes


def save(session: Session, table: str, spec: Spec, *, original: str | None = None) -> Spec:
    """Create ``spec`` (``original=None``) or update the entity called ``original``.

    Returns the normalised spec as stored. Renames keep every reference.
    """
    cfg = load_config(session)
    items = entities(cfg, table)
    spec = copy.deepcopy(spec)
    if original is None:
        if find(cfg, table, spec.name) is not None:
            raise StoreError(
                FieldError(table, spec.name, "name", f"a {LABEL[table]} named {spec.name!r} already exists")
            )
        items.append(spec)
    else:
        current = find(cfg, table, original)
        if current is None:
            raise NotFoundError(FieldError(table, original, "", f"{LABEL[table]} {original!r} does not exist"))
        if spec.name != original:
            if find(cfg, table, spec.name) is not None:
                raise StoreError(
                    FieldError(table, spec.name, "name", f"a {LABEL[table]} named {spec.name!r} already exists")
                )
            _rename_refs(cfg, table, original, spec.name)
        if table == "model_keys" and spec.credential is None:  # type: ignore[union-attr]
            spec.credential = current.credential  # type: ignore[union-attr]
        # No api_key_hashes = keep the stored keys; plain api_keys are registered beside them.
        if table == "consumers" and spec.api_key_hashes is None:  # type: ignore[union-attr]
            spec.api_key_hashes = current.api_key_hashes  # type: ignore[union-attr]
        items[items.index(current)] = spec
    # The entry being saved is checked last, so a clash (a request path, an API key) is
    # reported on it, naming the entry that already holds the thing.
    items.remove(spec)
    items.append(spec)
    validate_config(cfg)
    _transaction(session, lambda: _write(session, table, spec, original))
    return spec


def delete_entity(session: Session, table: str, name: str) -> None:
    """Delete, or refuse naming every entity that still references it."""
    cfg = load_config(session)
    if find(cfg, table, name) is None:
        raise NotFoundError(FieldError(table, name, "", f"{LABEL[table]} {name!r} does not exist"))
    users = referrers(cfg, table, name)
    if users:
        raise ReferencedError(
            FieldError(
                table,
                name,
                "",
                f"cannot delete {LABEL[table]} {name!r}: it is used by {', '.join(users)}",
            )
        )
    _transaction(session, lambda: _delete_row(session, table, name))


def _gateway_scale(row: m.GatewaySettings, gw: GatewaySpec) -> None:
    """The fields of running more than one process (validated: ``workers`` is a number or "auto")."""
    row.redis_url, row.redis_failure = gw.redis_url, gw.redis_failure
    row.workers = 0 if gw.workers == "auto" else int(gw.workers)


def save_gateway(session: Session, gw: GatewaySpec) -> GatewaySpec:
    cfg = load_config(session)
    cfg.gateway = copy.deepcopy(gw)
    validate_config(cfg)

    def work() -> None:
        row = session.get(m.GatewaySettings, 1) or m.GatewaySettings(id=1)
        row.listen, row.public_url, row.admin_listen = (
            cfg.gateway.listen,
            cfg.gateway.public_url,
            cfg.gateway.admin_listen,
        )
        row.max_connections = cfg.gateway.max_connections
        row.cache_max_mb = cfg.gateway.cache_max_mb
        _gateway_scale(row, cfg.gateway)
        row.updated_at = m.utcnow()
        session.add(row)

    _transaction(session, work)
    return cfg.gateway


def create_consumer_key(session: Session, consumer: str) -> str:
    """Generate a key for ``consumer``; the plain key is returned once and never stored."""
    row = _row(session, "consumers", consumer)
    key = generate_key()

    def work() -> None:
        session.add(m.ConsumerKey(consumer_id=row.id, key_hash=hash_key(key), prefix=display_prefix(key)))
        row.updated_at = m.utcnow()
        session.add(row)

    _transaction(session, work)
    return key


def revoke_consumer_key(session: Session, consumer: str, key_id: int) -> None:
    row = _row(session, "consumers", consumer)
    ck = session.get(m.ConsumerKey, key_id)
    if ck is None or ck.consumer_id != row.id:
        raise NotFoundError(FieldError("consumers", consumer, "api_keys", f"key #{key_id} does not exist"))
    _transaction(session, lambda: session.delete(ck))


def consumer_for_key(session: Session, key: str) -> str | None:
    """The consumer a plain key belongs to (console "Try it" and tests; the gateway uses its snapshot)."""
    q = (
        select(m.Consumer.name)
        .join(m.ConsumerKey, col(m.ConsumerKey.consumer_id) == m.Consumer.id)
        .where(m.ConsumerKey.key_hash == hash_key(key))
    )
    return session.exec(q).first()


# ---------------------------------------------------------------- whole-config apply (import)


def spec_fields(spec: Any) -> dict[str, Any]:
    return {f.name: copy.deepcopy(getattr(spec, f.name)) for f in fields(spec)}


def apply_config(
    session: Session, incoming: Config, *, has_gateway: bool, prune: bool, dry_run: bool
) -> dict[str, dict[str, list[str]]]:
    """Merge ``incoming`` into the store; all or nothing. Returns the plan.

    The plan maps ``table`` → ``{"create": [...], "change": [...], "delete": [...]}``.
    Entities absent from ``incoming`` are kept unless ``prune``.
    """
    current = load_config(session)
    merged = copy.deepcopy(current)
    if has_gateway:
        merged.gateway = copy.deepcopy(incoming.gateway)
    plan: dict[str, dict[str, list[str]]] = {}
    writes: list[tuple[str, Any, str | None]] = []
    deletes: list[tuple[str, str]] = []
    for table in TABLES:
        now = {x.name: x for x in entities(current, table)}
        new_items = entities(incoming, table)
        p: dict[str, list[str]] = {"create": [], "change": [], "delete": []}
        out: list[Any] = []
        for spec in new_items:
            spec = copy.deepcopy(spec)
            old = now.get(spec.name)
            if old is None:
                if table == "model_keys" and spec.credential is None:
                    pass  # validation reports the missing credential
                p["create"].append(spec.name)
            else:
                if table == "model_keys" and spec.credential is None:
                    spec.credential = old.credential
                # No api_key_hashes = keep the stored keys (a console-made key survives
                # re-importing the file it came from); plain api_keys are registered beside them.
                if table == "consumers" and spec.api_key_hashes is None:
                    spec.api_key_hashes = old.api_key_hashes
            out.append(spec)
        incoming_names = {x.name for x in new_items}
        kept = [x for n, x in now.items() if n not in incoming_names]
        if prune:
            p["delete"] = sorted(x.name for x in kept)
            deletes.extend((table, x.name) for x in kept)
            kept = []
        setattr(merged, table, sorted([*kept, *out], key=lambda x: x.name))
        plan[table] = p
    validate_config(merged)  # normalises `out` specs in place too (same objects)
    for table in TABLES:
        now = {x.name: x for x in entities(current, table)}
        names = {x.name for x in entities(incoming, table)}
        for spec in entities(merged, table):
            if spec.name not in names:
                continue
            old = now.get(spec.name)
            if old is None:
                writes.append((table, spec, None))
            elif _differs(table, old, spec):
                plan[table]["change"].append(spec.name)
                writes.append((table, spec, spec.name))
    gw_changed = has_gateway and spec_fields(current.gateway) != spec_fields(merged.gateway)
    plan["gateway"] = {"create": [], "change": ["gateway"] if gw_changed else [], "delete": []}
    if dry_run:
        return plan

    def work() -> None:
        if gw_changed:
            row = session.get(m.GatewaySettings, 1) or m.GatewaySettings(id=1)
            row.listen, row.public_url, row.admin_listen = (
                merged.gateway.listen,
                merged.gateway.public_url,
                merged.gateway.admin_listen,
            )
            row.max_connections = merged.gateway.max_connections
            row.cache_max_mb = merged.gateway.cache_max_mb
            _gateway_scale(row, merged.gateway)
            session.add(row)
        _release_unique(session, writes, deletes)
        for table, spec, original in writes:
            _write(session, table, spec, original)
        for table, name in reversed(deletes):
            _delete_row(session, table, name)

    if writes or deletes or gw_changed:
        _transaction(session, work)
    return plan


def _release_unique(
    session: Session, writes: list[tuple[str, Any, str | None]], deletes: list[tuple[str, str]]
) -> None:
    """Free the consumer key digests that changed or pruned rows hold.

    The merged config is valid as a whole, but rows are written one at a time: a key
    moving between consumers would otherwise hit the UNIQUE constraint half-way through.
    """
    keep: dict[int, set[str]] = {}
    for table, name in deletes:
        if table == "consumers":
            keep[_row(session, "consumers", name).id] = set()
    for table, spec, orig in writes:
        if table == "consumers" and orig is not None and (spec.api_key_hashes is not None or spec.api_keys):
            wanted = {h.removeprefix("sha256:") for h in spec.api_key_hashes or []}
            keep[_row(session, "consumers", orig).id] = wanted | {hash_key(k) for k in spec.api_keys}
    if keep:
        for ck in session.exec(select(m.ConsumerKey).where(col(m.ConsumerKey.consumer_id).in_(keep))).all():
            if ck.key_hash not in keep[ck.consumer_id]:
                session.delete(ck)
    session.flush()


def _differs(table: str, old: Any, new: Any) -> bool:
    a, b = spec_fields(old), spec_fields(new)
    if table == "consumers":
        a_keys = set(a.pop("api_key_hashes") or [])
        b_keys = set(b.pop("api_key_hashes") or []) | {"sha256:" + hash_key(k) for k in b.pop("api_keys")}
        a.pop("api_keys")
        if a_keys != b_keys:
            return True
    return a != b
