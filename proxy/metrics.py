"""Prometheus counters kept in plain dicts and rendered by hand in the text format.

Updated from the record of each finished request (one dict update per series), so
the hot path pays a few additions and no client library.
"""

from __future__ import annotations

import bisect
from typing import Any

from store.usage import RECORD_FIELDS

_API, _CONSUMER, _STATUS, _PROMPT, _COMPLETION, _LATENCY = (
    RECORD_FIELDS.index(k) for k in ("api", "consumer", "status", "prompt_tokens", "completion_tokens", "latency_ms")
)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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
        #: 1 while the limits are counted with the other processes sharing them (Redis answering).
        self.limits_shared = 0

    def observe(self, row: tuple[Any, ...]) -> None:
        """Count one finished request from its record row (``RECORD_FIELDS`` order)."""
        api, consumer = row[_API], row[_CONSUMER]
        key = (api, consumer, row[_STATUS])
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.requests_total += 1
        n = row[_PROMPT]
        if n:
            tk = (api, consumer, "prompt")
            self.tokens[tk] = self.tokens.get(tk, 0) + n
        n = row[_COMPLETION]
        if n:
            tk = (api, consumer, "completion")
            self.tokens[tk] = self.tokens.get(tk, 0) + n
        seconds = row[_LATENCY] / 1000.0
        counts = self.hist.get(api)
        if counts is None:
            counts = self.hist[api] = [0] * (len(BUCKETS) + 1)
            self.hist_sum[api] = 0.0
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.hist_sum[api] += seconds

    def upstream_error(self, service: str, reason: str) -> None:
        key = (service, reason)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def render(self, *, revision: int, in_flight: int) -> str:
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
            acc = 0
            for le, c in zip(BUCKETS, counts, strict=False):
                acc += c
                out.append(f'aigw_request_duration_seconds_bucket{{{lbl},le="{le:g}"}} {acc}')
            acc += counts[-1]
            out.append(f'aigw_request_duration_seconds_bucket{{{lbl},le="+Inf"}} {acc}')
            out.append(f"aigw_request_duration_seconds_sum{{{lbl}}} {self.hist_sum[api]:.6f}")
            out.append(f"aigw_request_duration_seconds_count{{{lbl}}} {acc}")
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
            "# HELP aigw_limits_shared 1 while limits are counted with every process sharing them, 0 when alone.",
            "# TYPE aigw_limits_shared gauge",
            f"aigw_limits_shared {self.limits_shared}",
        ]
        return "\n".join(out) + "\n"
