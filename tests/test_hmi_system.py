"""The system view for operators (page) and for IT monitoring (/metrics, no session)."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from beffroi.core.live import LiveValues
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.conftest import free_port
from tests.test_hmi import logged_in_opener


def test_metrics_follow_the_runtime_status(tmp_path, demo_config, small_register) -> None:
    """Scrapes read the status at scrape time: collectors, spool and throughput."""
    status = {
        "uptime_s": 3725.4,
        "previous_run": {"alive": "2026-03-29T00:59:50+00:00", "pid": 4242},
        "samples_in": 1234,
        "live_tags": 56,
        "historian": {
            "written": 1200,
            "spooled": 34,
            "spool_bytes": 4096,
            "dropped": 0,
            "backend_ok": False,
        },
        "alarms": {"alarms": 40, "samples": 9, "states": {"unack_active": 3, "ack_active": 1}},
        "collectors": [
            {"name": "simulator", "protocol": "opcua", "connected": True, "samples_received": 1234},
            {"name": "plc", "protocol": "modbus", "connected": False, "samples_received": 0},
        ],
    }
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb")
    users.add("sup", "correct horse battery", "supervisor", ["*"])
    app = create_app(demo_config, small_register, LiveValues(), hist, lambda: status, users=users)
    server = HmiServer(app, "127.0.0.1", free_port(), threads=2)
    server.start()
    try:

        def scrape() -> dict:
            with urllib.request.urlopen(server.url + "metrics", timeout=10) as resp:
                text = resp.read().decode()
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
            }

        m = scrape()
        assert m[("beffroi_samples_received_total", ())] == 1234
        assert m[("beffroi_historian_spooled", ())] == 34
        assert m[("beffroi_historian_up", ())] == 0
        sim = (("collector", "simulator"), ("protocol", "opcua"))
        plc = (("collector", "plc"), ("protocol", "modbus"))
        assert m[("beffroi_collector_connected", sim)] == 1
        assert m[("beffroi_collector_connected", plc)] == 0
        assert m[("beffroi_alarms", (("state", "unack_active"),))] == 3
        status["samples_in"] = 2000
        status["collectors"][1]["connected"] = True
        m = scrape()
        assert m[("beffroi_samples_received_total", ())] == 2000
        assert m[("beffroi_collector_connected", plc)] == 1

        opener = logged_in_opener(server.url, "sup", "correct horse battery")
        req = urllib.request.Request(
            server.url + "_dash-update-component",
            data=json.dumps(
                {
                    "output": "..system-gateway.children...system-collectors.children"
                    "...system-historian.children..",
                    "outputs": [
                        {"id": "system-gateway", "property": "children"},
                        {"id": "system-collectors", "property": "children"},
                        {"id": "system-historian", "property": "children"},
                    ],
                    "inputs": [{"id": "system-interval", "property": "n_intervals", "value": 1}],
                    "changedPropIds": ["system-interval.n_intervals"],
                    "state": [],
                }
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with opener.open(req, timeout=20) as resp:
            page = json.dumps(json.loads(resp.read()), ensure_ascii=False)
        assert "system-collector-plc" in page and "system-collector-simulator" in page
        assert "non — mise en tampon sur disque" in page and "34" in page
        # The previous run was killed: the operator sees when it was last alive (Paris time,
        # the night clocks went forward) and that its downtime is marked.
        assert "1:02:05" in page
        assert "terminée sans arrêt propre" in page
        assert "dernier signe de vie le 29/03/2026 01:59:50" in page
    finally:
        server.stop()
        users.close()
        hist.close()
