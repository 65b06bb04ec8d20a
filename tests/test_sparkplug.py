"""Edge and central roles over MQTT Sparkplug B, on Debian's Mosquitto and a real OPC UA plant.

Two edges (each the collectors of its commune, reading the plant over OPC UA) publish to a
central gateway through Mosquitto; the central stores in DuckDB, raises alarms and commands
setpoints down. Each role runs with its own data folder, as on its own machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import signal
import sys
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest

from beffroi.app.config import load_config
from beffroi.app.runtime import Runtime
from beffroi.control.model import SYSTEM
from beffroi.core.model import Quality, Sample, utcnow
from beffroi.core.register import build_register, tags_for
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.sparkplug import codec
from beffroi.sparkplug.codec import Kind, Topic
from beffroi.sparkplug.host import SparkplugHost
from tests.conftest import ROOT, eventually, free_port
from tests.servers import NS
from tests.sparkplug_site import CABINET, GROUP, HOST_ID, Site


def _host(runtime: Runtime) -> SparkplugHost:
    [host] = runtime.collectors
    assert isinstance(host, SparkplugHost)
    return host


async def _born(runtime: Runtime) -> None:
    assert runtime.edge is not None
    await eventually(lambda: runtime.edge is not None and runtime.edge.born, within=20)


def _stored(path: Path, tag: str) -> list:
    h = DuckDBHistorian(path, read_only=True)
    try:
        df = h.query([tag], utcnow() - timedelta(hours=1), utcnow() + timedelta(minutes=1))
    finally:
        h.close()
    return list(zip(df["value"], df["quality"], strict=True))


def _value(runtime: Runtime, tag: str):  # type: ignore[no-untyped-def]
    sample = runtime.live.get(tag)
    return None if sample is None else sample.value


async def test_three_edges_feed_the_central_site_once_with_commands_down(site) -> None:
    """Each edge publishes only its commune; every value toggled at the plant arrives at the
    central's live values and historian once, in order; a setpoint from central control goes
    down to the plant, confirmed by the edge's answer and audited at central."""
    a, b, c = site.communes
    lamp_a, lamp_b = site.cabinets(a)[0], site.cabinets(b)[0]
    fault_a = lamp_a.tag("fault")
    async with contextlib.AsyncExitStack() as stack:
        central = site.runtime("central")
        await central.start(stack)
        edges = [site.runtime("edge", f"edge-{x}") for x in "abc"]
        for edge in edges:
            await edge.start(stack)
        for edge in edges:
            await _born(edge)
        for edge, commune in zip(edges, (a, b, c), strict=True):
            assert edge.edge is not None
            assert {s.commune for s in edge.edge.specs.values()} == {commune}
        # Every tag of the three communes, each published by one edge only.
        published = [t for e in edges if e.edge for t in e.edge.specs]
        assert sorted(published) == sorted(
            t for t, spec in site.register.tags.items() if spec.commune in (a, b, c)
        )
        host = _host(central)
        for value in (True, False, True, False, True):
            await site.plant.set(fault_a, value)
            await eventually(lambda v=value: _value(central, fault_a) is v)
        await site.plant.set(lamp_b.tag("power_kw"), 7.25)
        await eventually(lambda: _value(central, lamp_b.tag("power_kw")) == 7.25)
        assert host.status()["nodes"]["edge-a"]["online"] is True
        # A rebirth asked by a host (NCMD Node Control/Rebirth) births edge-a again.
        births = edges[0].edge.births
        async with aiomqtt.Client("127.0.0.1", site.broker.port, identifier="operator") as c:
            rebirth = codec.command([(codec.REBIRTH, None, codec.BOOLEAN, True)], utcnow())
            await c.publish(str(Topic(GROUP, Kind.NCMD, "edge-a")), rebirth)
        await eventually(lambda: edges[0].edge is not None and edges[0].edge.births == births + 1)

        # A setpoint, as the lighting schedule or an operator sends it at central.
        assert central.control is not None
        dim = lamp_a.tag("dimming_pct")
        result = await central.control.setpoints.command(SYSTEM, dim, 40.0, "test: dim")
        assert result.ok, result
        assert await site.plant.read(dim) == 40.0
        refused = await host.write(lamp_a.tag("power_kw"), 3.0)  # not writable: refused at central
        assert not refused.ok and "not writable" in refused.detail
        audit = central.control.audit
        assert audit is not None
        operated = audit.frame(actions=["operate"])
        assert dim in set(operated.target)

    stored = _stored(site.folder / "central" / "beffroi.duckdb", fault_a)
    good = [v for v, q in stored if q == Quality.GOOD]
    assert good[-5:] == [True, False, True, False, True]
    # One row per value: a value delivered twice would stand twice in a row (booleans are
    # not compressed); at most the plant's first value comes before the five toggles.
    assert all(x != y for x, y in itertools.pairwise(good)) and len(good) <= 6
    edge_a_file = site.folder / "edge-a" / "beffroi.duckdb"
    assert not edge_a_file.exists()  # an edge keeps no history: it publishes


async def test_central_stopped_then_back_edges_spool_and_send_history_in_order(site) -> None:
    """While the central site is stopped, the edges spool; when it is back they are born
    again and send what they kept, in order, flagged historical: nothing lost."""
    a = site.communes[0]
    fault = site.cabinets(a)[0].tag("fault")
    async with contextlib.AsyncExitStack() as stack:
        edge = site.runtime("edge", "edge-a")
        async with contextlib.AsyncExitStack() as central_stack:
            central = site.runtime("central")
            await central.start(central_stack)
            await edge.start(stack)
            await _born(edge)
            await site.plant.set(fault, True)
            await eventually(lambda: _value(central, fault) is True)
        assert edge.edge is not None
        await eventually(lambda: edge.edge is not None and not edge.edge.host_online)
        values = [False, True, False, True, False, True]
        for v in values:  # collected while the central site is down: spooled
            await site.plant.set(fault, v)
            await asyncio.sleep(0.3)
        assert edge.buffer is not None
        await eventually(lambda: edge.buffer is not None and edge.buffer.spool.pending > 0)
        async with contextlib.AsyncExitStack() as central_stack:
            central = site.runtime("central")
            await central.start(central_stack)
            await eventually(lambda: edge.buffer is not None and not edge.buffer.spool, within=20)
            host = _host(central)
            await eventually(lambda: host.historical > 0)
            assert edge.edge.historical > 0
    stored = [v for v, q in _stored(site.folder / "central" / "beffroi.duckdb", fault)
              if q == Quality.GOOD]  # fmt: skip
    assert stored == [True, *values] or stored[-len(values) - 1 :] == [True, *values]


async def test_a_killed_edge_turns_its_tags_commloss_with_an_alarm(site, tmp_path) -> None:
    """`beffroi run --role edge` killed with SIGKILL: the broker sends its death, and the
    central site marks every tag of that edge CommLoss within the keep-alive."""
    a = site.communes[0]
    lamp = site.cabinets(a)[0]
    config = _config_file(site, tmp_path / "edge.toml")
    async with contextlib.AsyncExitStack() as stack:
        central = site.runtime("central")
        await central.start(stack)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "beffroi", "run", "-c", str(config), "--role", "edge",
            "--edge", "edge-a", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            host = _host(central)
            await eventually(lambda: host.status()["nodes"].get("edge-a", {}).get("online"),
                             within=30)  # fmt: skip
            await site.plant.set(lamp.tag("fault"), True)
            await eventually(lambda: _value(central, lamp.tag("fault")) is True)
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
            # keep-alive 2 s: the broker gives up on the edge after 3 s and sends its will.
            await eventually(
                lambda: (
                    central.live.get(lamp.tag("power_kw")) is not None
                    and central.live.get(lamp.tag("power_kw")).quality is Quality.COMM_LOSS
                ),
                within=10,
            )
            assert host.status()["nodes"]["edge-a"]["online"] is False
            # The traffic controller's CommLoss rule (10 s on-delay) raises its alarm.
            [tc] = [x for x in site.register.assets.values()
                    if x.commune == a and x.asset_class == "traffic_controller"]  # fmt: skip
            assert central.alarms is not None
            alarm_id = f"{a}/{tc.id}#controller-comm"
            await eventually(lambda: any(r["alarm_id"] == alarm_id and r["state"] == "unack_active"
                                         for r in central.alarms.alarms()), within=20)  # fmt: skip
        finally:
            if proc.returncode is None:
                proc.kill()
            _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert b"Traceback" not in err


async def test_a_seq_gap_asks_for_a_rebirth_and_garbage_is_counted(site) -> None:
    """A node whose messages skip a seq number is asked to be born again (NCMD Rebirth); a
    payload that is not Sparkplug B is counted and skipped, and data goes on."""
    a = site.communes[0]
    lamp = site.cabinets(a)[0]
    tag = lamp.tag("power_kw")
    spec = site.register.tags[tag]
    async with contextlib.AsyncExitStack() as stack:
        central = site.runtime("central")
        await central.start(stack)
        host = _host(central)
        await asyncio.wait_for(host.wait_connected(), 10)
        async with aiomqtt.Client("127.0.0.1", site.broker.port, identifier="rogue") as node:
            await node.subscribe(f"spBv1.0/{GROUP}/NCMD/rogue")
            now = utcnow()
            births = [
                (Topic(GROUP, Kind.NBIRTH, "rogue"), codec.birth([], {}, 0, now, bd_seq=0)),
                (Topic(GROUP, Kind.DBIRTH, "rogue", a), codec.birth([(1, spec)], {}, 1, now)),
            ]
            for topic, payload in births:
                await node.publish(str(topic), payload, qos=1)
            sample = dataclasses.replace(central.live.get(tag) or _sample(tag), value=1.5, ts=now)
            ddata = str(Topic(GROUP, Kind.DDATA, "rogue", a))
            await node.publish(ddata, codec.data([(1, codec.DOUBLE, sample)], 2, now,
                                                 historical=False), qos=1)  # fmt: skip
            await eventually(lambda: _value(central, tag) == 1.5)
            await node.publish(ddata, b"\x00\xffnot protobuf at all", qos=1)
            await node.publish(
                ddata,
                codec.data(
                    [(1, codec.DOUBLE, dataclasses.replace(sample, value=2.5))],
                    7,
                    now,
                    historical=False,
                ),
                qos=1,
            )  # seq 7, 3 was due
            async with asyncio.timeout(10):
                async for message in node.messages:
                    payload = codec.decode(bytes(message.payload))
                    names = {m.name: m.boolean_value for m in payload.metrics}
                    assert names == {codec.REBIRTH: True}
                    break
            await eventually(lambda: _value(central, tag) == 2.5)
        assert host.malformed == 1
        assert host.status()["nodes"]["rogue"]["gaps"] == 1


async def test_a_command_to_a_node_being_born_waits_for_its_device_birth(site) -> None:
    """A setpoint sent between a node's NBIRTH and its DBIRTH (a rebirth under way) is not
    refused: it waits for the birth, goes down as a DCMD, and the node's answer confirms it."""
    a = site.communes[0]
    lamp = site.cabinets(a)[0]
    tag = lamp.tag("dimming_pct")
    spec = site.register.tags[tag]
    async with contextlib.AsyncExitStack() as stack:
        central = site.runtime("central")
        await central.start(stack)
        host = _host(central)
        await asyncio.wait_for(host.wait_connected(), 10)
        async with aiomqtt.Client("127.0.0.1", site.broker.port, identifier="slow") as node:
            await node.subscribe(f"spBv1.0/{GROUP}/DCMD/slow/+", qos=1)
            now = utcnow()
            nbirth = codec.birth([], {}, 0, now, bd_seq=0)
            await node.publish(str(Topic(GROUP, Kind.NBIRTH, "slow")), nbirth, qos=1)
            await eventually(lambda: "slow" in host.nodes and host.nodes["slow"].online)
            command = asyncio.ensure_future(host.write(tag, 40.0))
            await asyncio.sleep(0.5)
            assert not command.done()  # waiting for the birth, not refused
            dbirth = codec.birth([(1, spec)], {}, 1, now)
            await node.publish(str(Topic(GROUP, Kind.DBIRTH, "slow", a)), dbirth, qos=1)
            async with asyncio.timeout(10):
                async for message in node.messages:
                    [m] = codec.decode(bytes(message.payload)).metrics
                    assert (m.alias, m.double_value) == (1, 40.0)
                    break
            done = Sample(tag, utcnow(), 40.0)
            answer = codec.data([(1, codec.datatype(spec), done)], 2, utcnow(), historical=False)
            await node.publish(str(Topic(GROUP, Kind.DDATA, "slow", a)), answer, qos=1)
            result = await asyncio.wait_for(command, 10)
            assert result.ok, result
        # A tag no node serves, no birth under way: refused at once.
        host.nodes["slow"].born_at = -math.inf
        other = site.cabinets(site.communes[1])[0].tag("dimming_pct")
        refused = await asyncio.wait_for(host.write(other, 10.0), 2)
        assert refused.detail == "no edge online serves it"


def _sample(tag: str) -> Sample:
    return Sample(tag, utcnow(), 0.0)


def _config_file(site: Site, path: Path) -> Path:
    """Write the site's config as a TOML file a `beffroi run` process reads."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('url = "opc.tcp://127.0.0.1:4840/beffroi/"', f'url = "{site.plant.url}"')
    text = text.replace('namespace = "urn:beffroi:simulator"\npublishing_interval_ms',
                        f'namespace = "{NS}"\npublishing_interval_ms')  # fmt: skip
    text = text.replace('path = "var/beffroi.duckdb"',
                        f'path = "{path.parent / "edge-data" / "beffroi.duckdb"}"')  # fmt: skip
    text = text.replace('files = ["data/inventaire-demo.csv"]', "files = []")
    start = text.index("[sparkplug]\n")  # the demo's two edges: this test's instead
    text = text[:start] + text[text.index("# The simulated metropolis", start) :]
    text = re.sub(r"\[register\]\nassets = \d+", "[register]\\nassets = 80", text)
    text = text.replace(
        '[hmi]\nhost = "127.0.0.1"\nport = 8050', f'[hmi]\nhost = "127.0.0.1"\nport = {free_port()}'
    )
    text += (
        f'\n[sparkplug]\nhost = "127.0.0.1"\nport = {site.broker.port}\ngroup = "{GROUP}"\n'
        f'name = "{HOST_ID}"\nkeepalive_s = 2\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n'
        f'edges = [{{ name = "edge-a", communes = ["{site.communes[0]}"] }}]\n'
    )
    path.write_text(text)
    cfg = load_config(path)  # the file is valid, and the same register as the tests'
    assert sorted(build_register(cfg).assets) == sorted(site.register.assets)
    return path


# --- a peer Beffroi did not write: pysparkplug, in its own virtualenv ---------------------

PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PEER = ROOT / "tests" / "peers" / "sparkplug_peer.py"


async def _peer(*args: str) -> asyncio.subprocess.Process:
    if not PEER_PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PEER_PYTHON} missing: `make test` installs pysparkplug there")
        pytest.skip("pysparkplug's virtualenv (.venv-peer) is not installed: run `make test`")
    return await asyncio.create_subprocess_exec(
        str(PEER_PYTHON), str(PEER), *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _line(proc: asyncio.subprocess.Process, want, within: float = 20.0) -> dict:  # type: ignore[no-untyped-def]
    """Return the first JSON line the peer prints that `want` accepts."""
    assert proc.stdout is not None
    async with asyncio.timeout(within):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"the peer ended: {err.decode()[-2000:]}")
            line = json.loads(raw)
            if want(line):
                return line


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def test_a_pysparkplug_edge_node_feeds_the_central_site_and_takes_its_commands(site) -> None:
    """Another implementation's edge node (names, no aliases, no answer property) is ingested
    by Beffroi's primary host; a setpoint from Beffroi is applied by it and confirmed by the
    value it reports."""
    a = site.communes[0]
    lamp = site.cabinets(a)[0]
    power, dim = lamp.tag("power_kw"), lamp.tag("dimming_pct")
    async with contextlib.AsyncExitStack() as stack:
        central = site.runtime("central")
        await central.start(stack)
        host = _host(central)
        await asyncio.wait_for(host.wait_connected(), 10)
        proc = await _peer("edge", "127.0.0.1", str(site.broker.port), GROUP, "vendor-node", a,
                           dim, "25")  # fmt: skip
        try:
            await _line(proc, lambda m: m.get("event") == "born")
            await eventually(lambda: _value(central, dim) == 25.0)
            assert proc.stdin is not None
            proc.stdin.write(b"35\n")
            await proc.stdin.drain()
            await eventually(lambda: _value(central, dim) == 35.0)
            result = await host.write(dim, 60.0)
            assert result.ok, result
            got = await _line(proc, lambda m: m.get("event") == "dcmd")
            assert (got["name"], got["value"]) == (dim, 60.0)
            assert _value(central, dim) == 60.0
            assert central.live.get(power) is None  # the peer serves one metric only
        finally:
            await _end(proc)


async def test_a_pysparkplug_host_reads_a_beffroi_edge(site) -> None:
    """Another implementation's primary host: a Beffroi edge waits for its STATE, is born to
    it, and its data (by alias) decode there to the tag names and values the plant has."""
    a = site.communes[0]
    lamp = site.cabinets(a)[0]
    power = lamp.tag("power_kw")
    await site.plant.set(power, 4.5)
    peer_cfg = site.cfg.model_copy(update={"sparkplug": site.cfg.sparkplug.model_copy(
        update={"name": "vendor-host"})})  # fmt: skip
    peer_cfg._source = site.cfg.source
    proc = await _peer("host", "127.0.0.1", str(site.broker.port), GROUP, "vendor-host")
    try:
        await _line(proc, lambda m: m.get("event") == "online")
        async with contextlib.AsyncExitStack() as stack:
            site.cfg = peer_cfg
            edge = site.runtime("edge", "edge-a")
            await edge.start(stack)
            birth = await _line(proc, lambda m: m.get("type") == "DBIRTH")
            assert birth["node"] == "edge-a" and birth["device"] == a
            names = {m["name"]: m["value"] for m in birth["metrics"]}
            assert set(names) == {t.name for t in site.register.tags.values() if t.commune == a}
            await site.plant.set(power, 6.75)
            # Decoded there through the birth's aliases: the name and value the plant has.
            data = await _line(proc, lambda m: m.get("type") == "DDATA" and any(
                (x["name"], x["value"]) == (power, 6.75) for x in m["metrics"]))  # fmt: skip
            assert all(not x["historical"] for x in data["metrics"])
    finally:
        await _end(proc)


async def _start(args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.DEVNULL)


class Messages:
    """Distinct texts written one after another on a panel of the plant, as fast as it takes."""

    def __init__(self, site: Site, tag: str):
        self.site, self.tag = site, tag
        self.sent: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            text = f"message {len(self.sent) + 1}"
            await self.site.plant.set(self.tag, text)
            self.sent.append(text)
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _texts(path: Path, tag: str) -> list[str]:
    return [v for v, q in _stored(path, tag) if q == Quality.GOOD and str(v).startswith("message")]


async def test_the_central_site_killed_under_load_loses_only_its_unwritten_second(
    site, tmp_path
) -> None:
    """`beffroi run --role central` killed with SIGKILL while an edge publishes a new text
    every 0.1 s, then started again: every text is stored once, in order (what waited in its
    MQTT session is read with the births it recorded; the rest comes from the edge's spool),
    but for what the killed process held for its next write."""
    a = site.communes[0]
    [panel] = [x for x in site.register.assets.values()
               if x.commune == a and x.asset_class == "info_panel"]  # fmt: skip
    tag = panel.tag("message")
    config = _config_file(site, tmp_path / "central.toml")
    data = tmp_path / "central-data"
    args = [sys.executable, "-m", "beffroi", "run", "-c", str(config), "--role", "central",
            "--data", str(data)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    messages = Messages(site, tag)
    async with contextlib.AsyncExitStack() as stack:
        central = await _start(args, env)
        edge = site.runtime("edge", "edge-a")
        await edge.start(stack)
        await _born(edge)
        messages.start()
        await asyncio.sleep(3)
        central.send_signal(signal.SIGKILL)
        killed_at = len(messages.sent)
        await central.wait()
        await asyncio.sleep(5)  # the broker's will comes after 3 s; the edge spools then
        assert edge.edge is not None and not edge.edge.host_online
        central = await _start(args, env)
        await eventually(lambda: edge.edge is not None and edge.edge.born, within=30)
        await asyncio.sleep(2)
        await messages.stop()
        assert edge.buffer is not None
        await eventually(lambda: edge.buffer is not None and not edge.buffer.spool, within=30)
        await asyncio.sleep(2)
        central.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(central.wait(), 60) == 0
    stored = _texts(data / "beffroi.duckdb", tag)
    assert len(messages.sent) > 60
    # Nothing twice, in order; what went missing is only what the killed process had taken
    # from the broker (acknowledged) and held for its next write: `[historian]
    # flush_interval_s`, 1 s here, what a crash of any gateway may lose.
    missing = [m for m in messages.sent if m not in stored]
    assert stored == [m for m in messages.sent if m not in missing]
    window = int(1.5 / 0.1)  # the flush interval and the kill's own delay, in messages
    assert all(killed_at - window <= int(m.split()[1]) <= killed_at for m in missing), missing


async def test_a_broker_restart_under_load_loses_nothing(site) -> None:
    """Mosquitto stopped for two seconds while an edge publishes a new text every 0.1 s:
    edges and central reconnect, the edge is born again, and every text is stored once."""
    a = site.communes[0]
    [panel] = [x for x in site.register.assets.values()
               if x.commune == a and x.asset_class == "info_panel"]  # fmt: skip
    tag = panel.tag("message")
    quiet = site.cabinets(a)[0].tag("power_kw")  # a value that does not change meanwhile
    messages = Messages(site, tag)
    async with contextlib.AsyncExitStack() as stack:
        central = site.runtime("central")
        await central.start(stack)
        edge = site.runtime("edge", "edge-a")
        await edge.start(stack)
        await _born(edge)
        await site.plant.set(quiet, 3.5)
        await eventually(lambda: _value(central, quiet) == 3.5)
        messages.start()
        await asyncio.sleep(2)
        await asyncio.to_thread(site.broker.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(site.broker.start)
        await eventually(lambda: edge.edge is not None and edge.edge.born, within=30)
        await asyncio.sleep(2)
        await messages.stop()
        assert edge.buffer is not None
        await eventually(lambda: edge.buffer is not None and not edge.buffer.spool, within=30)
        await eventually(lambda: _value(central, tag) == messages.sent[-1], within=15)
        # The edge's death made it CommLoss; its birth says it again with its old source time.
        back = central.live.get(quiet)
        assert back is not None and (back.value, back.quality) == (3.5, Quality.GOOD)
    stored = _texts(site.folder / "central" / "beffroi.duckdb", tag)
    assert len(messages.sent) > 40
    assert stored == messages.sent


async def test_the_central_site_stores_on_victoria_metrics(site, victoria_metrics) -> None:
    """The storage central sites share: an edge's values reach VictoriaMetrics through the
    central's InfluxDB back end (line protocol, v2 API)."""
    a = site.communes[0]
    lamp = site.cabinets(a)[0]
    power = lamp.tag("power_kw")
    cfg = site.role_config("central")
    influx = cfg.historian.influx.model_copy(
        update={"url": victoria_metrics.url, "api": "v2", "bucket": "beffroi"}
    )
    historian = cfg.historian.model_copy(update={"backend": "influx", "influx": influx})
    central_cfg = cfg.model_copy(update={"historian": historian})
    central_cfg._source = cfg.source
    async with contextlib.AsyncExitStack() as stack:
        central = Runtime(central_cfg, site.register, simulator=False, hmi=False, role="central")
        await central.start(stack)
        edge = site.runtime("edge", "edge-a")
        await edge.start(stack)
        await _born(edge)
        for value in (8.5, 2.25, 9.75):
            await site.plant.set(power, value)
            await eventually(lambda v=value: _value(central, power) == v)
    victoria_metrics.force_flush()
    series = victoria_metrics.export(
        f'{{__name__="streetlight_cabinet_power_kw",asset="{lamp.id}"}}'
    )
    assert [s["metric"]["commune"] for s in series] == [a]
    assert {8.5, 2.25, 9.75} <= set(series[0]["values"])


async def test_assets_only_an_edge_knows_join_the_central_inventory_with_their_alarms(
    site,
) -> None:
    """A birth naming an asset the central's register does not have (found by the edge's own
    discovery, or another vendor's node) adds it "to be placed" at central, its alarms bound
    before the birth's values: a fault already on is an alarm."""
    a = site.communes[0]
    cls = site.cfg.asset_classes[CABINET]
    specs = tags_for("LC-7777", a, cls)
    fault = next(t for t in specs if t.signal == "fault")
    async with contextlib.AsyncExitStack() as stack:
        central = site.runtime("central")
        await central.start(stack)
        host = _host(central)
        await asyncio.wait_for(host.wait_connected(), 10)
        now = utcnow()
        latest = {fault.name: Sample(fault.name, now, True)}
        async with aiomqtt.Client("127.0.0.1", site.broker.port, identifier="far-edge") as node:
            for topic, payload in (
                (Topic(GROUP, Kind.NBIRTH, "far"), codec.birth([], {}, 0, now, bd_seq=0)),
                (Topic(GROUP, Kind.DBIRTH, "far", a),
                 codec.birth(list(enumerate(specs, 1)), latest, 1, now)),
            ):  # fmt: skip
                await node.publish(str(topic), payload, qos=1)
            await eventually(lambda: "LC-7777" in site.register.assets)
            await eventually(lambda: _value(central, fault.name) is True)
        found = site.register.assets["LC-7777"]
        assert (found.state, found.source, found.commune) == ("to_place", "discovery", a)
        assert central.alarms is not None
        alarm = next(
            r for r in central.alarms.alarms() if r["alarm_id"] == f"{fault.name}#cabinet-fault"
        )
        assert alarm["state"] == "unack_active"
