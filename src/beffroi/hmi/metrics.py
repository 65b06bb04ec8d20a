"""Prometheus /metrics for the city's IT monitoring: throughput, spool, collectors, alarms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class StatusCollector:
    """Turn the runtime's status() into metrics at each scrape, so nothing is kept twice."""

    def __init__(self, status: Callable[[], dict[str, Any]]):
        self.status = status

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families of one scrape."""
        st = self.status()
        yield CounterMetricFamily(
            "beffroi_samples_received",
            "Samples received from collectors.",
            value=st.get("samples_in", 0),
        )
        yield GaugeMetricFamily(
            "beffroi_live_tags", "Tags with a live value.", value=st.get("live_tags", 0)
        )
        hist = st.get("historian", {})
        yield CounterMetricFamily(
            "beffroi_historian_written", "Samples stored.", value=hist.get("written", 0)
        )
        yield CounterMetricFamily(
            "beffroi_historian_dropped",
            "Samples dropped (spool full).",
            value=hist.get("dropped", 0),
        )
        yield GaugeMetricFamily(
            "beffroi_historian_spooled",
            "Samples waiting in the spool.",
            value=hist.get("spooled", 0),
        )
        yield GaugeMetricFamily(
            "beffroi_historian_spool_bytes", "Spool size on disk.", value=hist.get("spool_bytes", 0)
        )
        yield GaugeMetricFamily(
            "beffroi_historian_up",
            "1 when the back end accepts writes.",
            value=1 if hist.get("backend_ok", True) else 0,
        )
        connected = GaugeMetricFamily(
            "beffroi_collector_connected",
            "1 when the collector is connected.",
            labels=["collector", "protocol"],
        )
        received = CounterMetricFamily(
            "beffroi_collector_samples",
            "Samples received per collector.",
            labels=["collector", "protocol"],
        )
        for c in st.get("collectors", []):
            labels = [c.get("name", "?"), c.get("protocol", "?")]
            connected.add_metric(labels, 1 if c.get("connected") else 0)
            received.add_metric(labels, c.get("samples_received", 0))
        yield connected
        yield received
        http = st.get("http")
        if isinstance(http, dict):
            yield GaugeMetricFamily(
                "beffroi_http_open", "Connections open to the HMI.", value=http.get("open", 0)
            )
            cut = CounterMetricFamily(
                "beffroi_http_cut",
                "Connections the HTTP front closed on a slow or abusive client.",
                labels=["reason"],
            )
            for reason in ("header_timeouts", "body_timeouts", "idle_timeouts",
                           "refused_per_address", "closed_for_room"):  # fmt: skip
                cut.add_metric([reason], http.get(reason, 0))
            yield cut
        pair = st.get("pair")
        if isinstance(pair, dict):
            yield from _pair_metrics(pair)
        alarms = st.get("alarms")
        if isinstance(alarms, dict):
            active = GaugeMetricFamily("beffroi_alarms", "Alarms by state.", labels=["state"])
            for state, n in alarms.get("states", {}).items():
                active.add_metric([str(state)], n)
            yield active


def _pair_metrics(pair: dict[str, Any]) -> Iterator[Metric]:
    """The redundant pair: this node's role, the lease, the standby, the live values' lag."""
    node = [str(pair.get("node"))]
    active = GaugeMetricFamily(
        "beffroi_pair_active", "1 on the node holding the lease.", labels=["node"]
    )
    active.add_metric(node, 1 if pair.get("role") == "active" else 0)
    yield active
    yield GaugeMetricFamily("beffroi_pair_epoch", "The lease's epoch.", value=pair.get("epoch", 0))
    if pair.get("role") == "active":
        yield GaugeMetricFamily(
            "beffroi_pair_standby",
            "1 when the active node sees a live standby (0: the pair is alone).",
            value=1 if pair.get("standby") else 0,
        )
    yield CounterMetricFamily(
        "beffroi_pair_promotions",
        "Times this node became the active one.",
        value=pair.get("promotions", 0),
    )
    lag = pair.get("live_lag_s")
    if lag is not None:
        yield GaugeMetricFamily(
            "beffroi_pair_live_lag_seconds",
            "How far this node's newest live value is behind the pair's newest.",
            value=lag,
        )


def register_metrics(server: Flask, status: Callable[[], dict[str, Any]]) -> None:
    """Serve /metrics in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))

    @server.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
