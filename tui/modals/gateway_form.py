"""Gateway settings: listen, public URL, admin address (``repo.save_gateway``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

from textual.widget import Widget
from textual.widgets import Input

from store import repo
from store.db import Store
from store.spec import Config, GatewaySpec
from store.validation import check_cache_max_mb, check_listen, check_url

from ..widgets.form_field import FormField
from .form import EntityForm, as_number


def _check_mb(value: str) -> str | None:
    try:
        mb = int(value.strip() or "0")
    except ValueError:
        return f"{value.strip()!r} is not a whole number of MiB"
    return check_cache_max_mb(mb)


class GatewayForm(EntityForm):
    """Edits the single gateway settings row; saved through the same validator as the rest."""

    TABLE = "gateway"
    NOUN = "gateway settings"
    LIVE_CHECKS: ClassVar = {
        "listen": check_listen,
        "admin_listen": check_listen,
        "public_url": lambda v: check_url(v, what="public_url"),
        "cache_max_mb": _check_mb,
    }

    def __init__(self, settings: GatewaySpec, store: Store) -> None:
        super().__init__(store, Config(gateway=settings), None)
        self.settings = settings

    def form_title(self) -> str:
        return "Gateway settings"

    def compose_fields(self) -> Iterable[Widget]:
        g = self.settings
        yield FormField(
            "Listen (HOST:PORT)",
            Input(g.listen, id="listen"),
            field="listen",
            hint="Where clients send requests, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
        )
        yield FormField(
            "Public URL",
            Input(g.public_url, placeholder=g.effective_public_url(), id="public-url"),
            field="public_url",
            hint="The address shown to users (like the cloud console's CLB address); empty = http://<listen>",
        )
        yield FormField(
            "Admin address (HOST:PORT)",
            Input(g.admin_listen, id="admin-listen"),
            field="admin_listen",
            hint="healthz, metrics, events, reload — keep it on loopback",
        )
        yield FormField(
            "Max client connections",
            Input(str(g.max_connections), id="max-connections"),
            field="max_connections",
            hint="Past it new client connections are closed at once (1–1,000,000)",
        )
        yield FormField(
            "Response cache memory (MiB)",
            Input(str(g.cache_max_mb), id="cache-max-mb"),
            field="cache_max_mb",
            hint="Cached answers kept at most, least recently used out first; 0 = none",
        )

    def build_spec(self) -> GatewaySpec:
        # Fields this form does not show (Redis, workers) keep their stored values.
        return dataclasses.replace(
            self.settings,
            listen=self.value("listen").strip(),
            public_url=self.value("public_url").strip(),
            admin_listen=self.value("admin_listen").strip(),
            max_connections=int(as_number(self.value("max_connections"), "max_connections", integer=True)),
            cache_max_mb=int(as_number(self.value("cache_max_mb"), "cache_max_mb", integer=True)),
        )

    def write(self, session: Any, spec: Any) -> Any:
        return repo.save_gateway(session, spec)
