"""Prometheus counters kept in plain dicts and rendered by hand in the text format.

Updated from the record of each finished request (one dict update per series), so
the hot path pays a few additions and no client library.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from store.usage import RECORD_FIELDS

from .circuit import STATES
from .response_cache import CacheStats

_API, _CONSUMER, _STATUS, _PROMPT, _COMPLETION, _LATENCY, _CACHE = (
    RECORD_FIELDS.index(k)
    for k in ("api", "consumer", "status", "prompt_tokens", "completion_tokens", "latency_ms", "cache")
)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Upper bounds of ``aigw_overhead_seconds``'s buckets in nanoseconds, 50 µs to 100 ms: the
#: gateway's own time per request is counted in integer nanoseconds and placed without floats.
OVERHEAD_BUCKETS_NS = (
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
)
#: Who answered, as ``aigw_overhead_seconds`` tells requests apart: a vendor was called, the
#: response cache answered, or the gateway answered alone (a refusal, an error, a model list).
OVERHEAD_OUTCOMES = ("vendor", "cache", "gateway")


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.hist: dict[str, list[int]] = {}
        self.hist_sum: dict[str, float] = {}
        self.records_dropped = 0
        self.record_write_errors = 0
        #: Records waiting to be written (set by the recorder).
        self.records_pending = 0
        self.requests_total = 0
        #: Requests refused before any consumer was known (no key, no route, bad HTTP), by status.
        self.refused: dict[int, int] = {}
        #: Client connections open now, and closed at once because the cap was reached.
        self.connections_open = 0
        self.connections_refused = 0
        #: Answers of cache-enabled APIs served from the cache, and not, by API.
        self.cache_hits: dict[str, int] = {}
        self.cache_misses: dict[str, int] = {}
        #: 1 while the limits are counted with the other processes sharing them (Redis answering).
        self.limits_shared = 0
        #: ``aigw_overhead_seconds`` by (stream, outcome): a count per bucket, then the +Inf
        #: bucket, then the sum in nanoseconds. Every series exists from the start, so a
        #: scrape before any traffic already shows them at 0.
        self.overhead: dict[tuple[bool, str], list[int]] = {
            (stream, outcome): [0] * (len(OVERHEAD_BUCKETS_NS) + 2)
            for stream in (False, True)
            for outcome in OVERHEAD_OUTCOMES
        }

    def observe(self, row: tuple[Any, ...]) -> None:
        """Count one finished request from its record row (``RECORD_FIELDS`` order)."""
        api, consumer = row[_API], row[_CONSUMER]
        key = (api, consumer, row[_STATUS])
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.requests_total += 1
        cache = row[_CACHE]
        if cache:
            counts = self.cache_hits if cache == "hit" else self.cache_misses
            counts[api] = counts.get(api, 0) + 1
            if cache == "hit":  # its tokens were used once, by the answer it repeats
                self._latency(api, row[_LATENCY])
                return
        n = row[_PROMPT]
        if n:
            tk = (api, consumer, "prompt")
            self.tokens[tk] = self.tokens.get(tk, 0) + n
        n = row[_COMPLETION]
        if n:
            tk = (api, consumer, "completion")
            self.tokens[tk] = self.tokens.get(tk, 0) + n
        self._latency(api, row[_LATENCY])

    def _latency(self, api: str, ms: float) -> None:
        seconds = ms / 1000.0
        counts = self.hist.get(api)
        if counts is None:
            counts = self.hist[api] = [0] * (len(BUCKETS) + 1)
            self.hist_sum[api] = 0.0
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.hist_sum[api] += seconds

    def observe_overhead(self, stream: bool, outcome: str, ns: int) -> None:
        """Count one request's own time in the gateway (``ns``: wall time less its waits)."""
        counts = self.overhead[(stream, outcome)]
        counts[bisect.bisect_left(OVERHEAD_BUCKETS_NS, ns)] += 1
        counts[-1] += ns

    def upstream_error(self, service: str, reason: str) -> None:
        key = (service, reason)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def render(self, *, revision: int, in_flight: int, cache: CacheStats | None = None) -> str:
        out: list[str] = [
            "# HELP aigw_requests_total Requests handled, by API, consumer and status.",
            "# TYPE aigw_requests_total counter",
        ]
        for (api, consumer, status), n in sorted(self.requests.items()):
            out.append(f'aigw_requests_total{{api="{_esc(api)}",consumer="{_esc(consumer)}",status="{status}"}} {n}')
        out += [
            "# HELP aigw_request_duration_seconds Request latency as the client saw it.",
            "# TYPE aigw_request_duration_seconds histogram",
        ]
        for api, counts in sorted(self.hist.items()):
            lbl = f'api="{_esc(api)}"'
            _histogram(
                out, "aigw_request_duration_seconds", lbl, BUCKETS, counts, counts[-1], f"{self.hist_sum[api]:.6f}"
            )
        out += [
            "# HELP aigw_overhead_seconds Time per request spent in the gateway itself: its wall time "
            "less the waits on the vendor, the client and a key slot.",
            "# TYPE aigw_overhead_seconds histogram",
        ]
        for (stream, outcome), counts in self.overhead.items():
            lbl = f'outcome="{outcome}",stream="{"true" if stream else "false"}"'
            bounds = [le / 1e9 for le in OVERHEAD_BUCKETS_NS]
            _histogram(out, "aigw_overhead_seconds", lbl, bounds, counts, counts[-2], f"{counts[-1] / 1e9:.9f}")
        out += ["# HELP aigw_tokens_total Tokens used, by API, consumer and type.", "# TYPE aigw_tokens_total counter"]
        for (api, consumer, typ), n in sorted(self.tokens.items()):
            out.append(f'aigw_tokens_total{{api="{_esc(api)}",consumer="{_esc(consumer)}",type="{typ}"}} {n}')
        out += [
            "# HELP aigw_upstream_errors_total Failed vendor calls, by service and reason.",
            "# TYPE aigw_upstream_errors_total counter",
        ]
        for (svc, reason), n in sorted(self.upstream_errors.items()):
            out.append(f'aigw_upstream_errors_total{{service="{_esc(svc)}",reason="{_esc(reason)}"}} {n}')
        out += [
            "# HELP aigw_config_revision The configuration revision being served.",
            "# TYPE aigw_config_revision gauge",
            f"aigw_config_revision {revision}",
            "# HELP aigw_in_flight_requests Requests being handled now.",
            "# TYPE aigw_in_flight_requests gauge",
            f"aigw_in_flight_requests {in_flight}",
            "# HELP aigw_records_dropped_total Records not stored because the queue was full.",
            "# TYPE aigw_records_dropped_total counter",
            f"aigw_records_dropped_total {self.records_dropped}",
            "# HELP aigw_record_write_errors_total Failed batch writes of records (retried).",
            "# TYPE aigw_record_write_errors_total counter",
            f"aigw_record_write_errors_total {self.record_write_errors}",
            "# HELP aigw_records_pending Records waiting to be written to the store.",
            "# TYPE aigw_records_pending gauge",
            f"aigw_records_pending {self.records_pending}",
            "# HELP aigw_refused_total Requests refused before a consumer was known, by status (sampled into records).",
            "# TYPE aigw_refused_total counter",
            *(f'aigw_refused_total{{status="{status}"}} {n}' for status, n in sorted(self.refused.items())),
            "# HELP aigw_connections Client connections open.",
            "# TYPE aigw_connections gauge",
            f"aigw_connections {self.connections_open}",
            "# HELP aigw_connections_refused_total Client connections closed at once: max_connections reached.",
            "# TYPE aigw_connections_refused_total counter",
            f"aigw_connections_refused_total {self.connections_refused}",
            "# HELP aigw_cache_hits_total Answers served from the response cache, by API.",
            "# TYPE aigw_cache_hits_total counter",
            *(f'aigw_cache_hits_total{{api="{_esc(a)}"}} {n}' for a, n in sorted(self.cache_hits.items())),
            "# HELP aigw_cache_misses_total Answers of cache-enabled APIs not served from the cache, by API.",
            "# TYPE aigw_cache_misses_total counter",
            *(f'aigw_cache_misses_total{{api="{_esc(a)}"}} {n}' for a, n in sorted(self.cache_misses.items())),
            "# HELP aigw_cache_bytes Bytes the response cache holds (as its budget counts them; "
            "with Redis: bytes this process stored there).",
            "# TYPE aigw_cache_bytes gauge",
            f"aigw_cache_bytes {cache.bytes if cache else 0}",
            "# HELP aigw_cache_max_bytes The in-memory response cache's budget ([gateway] cache_max_mb; 0 with Redis).",
            "# TYPE aigw_cache_max_bytes gauge",
            f"aigw_cache_max_bytes {cache.max_bytes if cache else 0}",
            "# HELP aigw_cache_entries Answers the response cache holds (with Redis: answers this process stored).",
            "# TYPE aigw_cache_entries gauge",
            f"aigw_cache_entries {cache.entries if cache else 0}",
            "# HELP aigw_cache_evictions_total Live entries pushed out of the response cache to make room.",
            "# TYPE aigw_cache_evictions_total counter",
            f"aigw_cache_evictions_total {cache.evictions if cache else 0}",
            "# HELP aigw_cache_errors_total Cache lookups and stores that failed (Redis unreachable or too slow).",
            "# TYPE aigw_cache_errors_total counter",
            f"aigw_cache_errors_total {cache.errors if cache else 0}",
            "# HELP aigw_limits_shared 1 while limits are counted with every process sharing them, 0 when alone.",
            "# TYPE aigw_limits_shared gauge",
            f"aigw_limits_shared {self.limits_shared}",
        ]
        return "\n".join(out) + "\n"


def render_resilience(services: dict[str, dict[str, Any]], keys: dict[str, dict[str, Any]]) -> str:
    """Circuit states per service and slots per model key (read from the runtime state when scraped)."""
    out = [
        "# HELP aigw_service_state A model service's circuit state (1 for the current one).",
        "# TYPE aigw_service_state gauge",
    ]
    for name, health in services.items():
        for state in STATES:
            out.append(f'aigw_service_state{{service="{_esc(name)}",state="{state}"}} {int(health["state"] == state)}')
    series = (
        ("aigw_key_in_flight", "gauge", "Requests in flight with a model key.", "in_flight"),
        ("aigw_key_queue_depth", "gauge", "Requests waiting for a slot a model key could give.", "queued"),
        (
            "aigw_key_queue_wait_seconds_total",
            "counter",
            "Seconds requests waited before they got a slot of a model key.",
            "queue_wait_s",
        ),
        (
            "aigw_key_queue_timeouts_total",
            "counter",
            "Requests that waited for a slot of a model key past queue_timeout_s.",
            "queue_timeouts",
        ),
    )
    for metric, kind, text, field in series:
        out += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        out += [f'{metric}{{key="{_esc(name)}"}} {load[field]:g}' for name, load in keys.items()]
    return "\n".join(out) + "\n"


def _histogram(
    out: list[str], name: str, lbl: str, bounds: Sequence[float], counts: Sequence[int], overflow: int, total: str
) -> None:
    """One labelled series of a Prometheus histogram: ``counts`` per bucket (one per bound,
    extra trailing entries ignored), ``overflow`` above the last bound, ``total`` the sum."""
    acc = 0
    for le, c in zip(bounds, counts, strict=False):
        acc += c
        out.append(f'{name}_bucket{{{lbl},le="{le:g}"}} {acc}')
    acc += overflow
    out.append(f'{name}_bucket{{{lbl},le="+Inf"}} {acc}')
    out.append(f"{name}_sum{{{lbl}}} {total}")
    out.append(f"{name}_count{{{lbl}}} {acc}")
