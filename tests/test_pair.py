"""A redundant pair: two `beffroi run` processes sharing a real PostgreSQL (Debian's, a temporary
cluster), reading the same OPC UA plant, e-mailing through a real SMTP server (aiosmtpd). The
active one is killed with SIGKILL during an alarm flood; the standby takes over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from beffroi.alerts.journal import Journal
from beffroi.core.model import WriteStatus
from beffroi.core.register import build_register
from beffroi.core.scheduler import Scheduler
from beffroi.hmi.app import pair_badge
from beffroi.hmi.users import UserStore
from beffroi.pair.config import PairConfig
from beffroi.pair.lease import Lease
from beffroi.pair.node import LeaseLost, PairNode
from beffroi.state.config import PgPlace
from tests.conftest import ROOT, eventually, free_port
from tests.servers import NS, OpcUaPlant
from tests.sparkplug_site import HOST_ID
from tests.test_alarm_email import SmtpServer
from tests.test_hmi import logged_in_opener
from tests.test_sparkplug import Messages, _born, _config_file, _texts
from tests.test_state_postgres import _event

CABINET = "streetlight_cabinet"
TOKEN = "t" * 40
PASSWORD = "un mot de passe long"
RULE = "cabinet-fault"
NO_STANDBY = "system#pair_no_standby"


def _config(
    path: Path,
    plant: OpcUaPlant,
    smtp_port: int | None,
    *,
    assets: int = 120,
    lease_s: float = 3.0,
    renew_s: float = 0.5,
) -> Path:
    """Write the demo's config, on this plant, with its state in PostgreSQL and a pair."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('url = "opc.tcp://127.0.0.1:4840/beffroi/"', f'url = "{plant.url}"')
    text = text.replace('namespace = "urn:beffroi:simulator"\npublishing_interval_ms',
                        f'namespace = "{NS}"\npublishing_interval_ms')  # fmt: skip
    text = text.replace('files = ["data/inventaire-demo.csv"]', "files = []")
    start = text.index("[sparkplug]\n")
    text = text[:start] + text[text.index("# The simulated metropolis", start) :]
    text = re.sub(r"\[register\]\nassets = \d+", f"[register]\\nassets = {assets}", text)
    text = text.replace("[simulator]\nenabled = true", "[simulator]\nenabled = false")
    text = text.replace("[kpi]\nenabled = true", "[kpi]\nenabled = false")
    text = text.replace('[state]\nbackend = "duckdb"', '[state]\nbackend = "postgres"')
    text += f"""
[pair]
enabled = true
lease_s = {lease_s}
renew_s = {renew_s}
"""
    if smtp_port is not None:
        text += f"""
[alarms.email]
enabled = true
host = "127.0.0.1"
port = {smtp_port}
security = "none"
sender = "beffroi@dijon.example"
digest_window_s = 1
retry_min_s = 1
retry_max_s = 2
timeout_s = 5
"""
        # The demo's teams and routes, their addresses the test's: alarm e-mails and the
        # interventions' team e-mails go to this SMTP server.
        text = text.replace("@dijon-metropole.example", "@example.org")
    path.write_text(text)
    return path


class Pg:
    """Queries on the pair's database, as an auditor would run them."""

    def __init__(self, url: str):
        self.url = url

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as con:
            try:
                return con.execute(sql, params).fetchall()  # type: ignore[arg-type]
            except psycopg.errors.UndefinedTable:
                return []

    def holder(self) -> str | None:
        rows = self.rows("SELECT holder FROM pair.lease WHERE expires_at > now()")
        return rows[0][0] if rows else None

    def role(self, node: str) -> str | None:
        rows = self.rows(
            "SELECT role FROM pair.nodes WHERE node = %s AND now() - seen_at < interval '2 s'",
            (node,),
        )
        return rows[0][0] if rows else None


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def _command(hmi: str, body: dict) -> dict:
    req = urllib.request.Request(
        hmi + "api/v1/control/command", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


async def _node(config: Path, node: str, folder: Path, env: dict[str, str], port: int):
    args = [sys.executable, "-m", "beffroi", "run", "-c", str(config), "--node", node,
            "--data", str(folder / node), "--port", str(port)]  # fmt: skip
    log = (folder / f"{node}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=log, stderr=log)
    log.close()
    return proc


async def test_the_active_node_killed_during_an_alarm_flood(demo_config, tmp_path, pg_url) -> None:
    """SIGKILL to the active node while faults come in: the standby acts within 10 s; every
    transition is journaled once; every e-mail is delivered once and names every fault; the
    audit chain holds, with both nodes' records."""
    register = build_register(demo_config, assets=120)
    cabinets = [a for a in register.assets.values() if a.asset_class == CABINET]
    assert len(cabinets) >= 8
    plant = OpcUaPlant(free_port(), [t for a in register.assets.values() for t in a.tags])
    smtp = SmtpServer()
    smtp.start()
    await plant.start()
    config = _config(tmp_path / "pair.toml", plant, smtp.port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BEFFROI_STATE_URL": pg_url,
           "BEFFROI_PAIR_TOKEN": TOKEN, "BEFFROI_SESSION_SECRET": "s" * 32,
           "BEFFROI_FIELD_LINK_SECRET": "f" * 32}  # fmt: skip
    users = UserStore(PgPlace(pg_url, "users"))
    users.add("sylvie", PASSWORD, "supervisor", ["*"])
    users.close()
    port_a, port_b = free_port(), free_port()
    hmi_a, hmi_b = f"http://127.0.0.1:{port_a}/", f"http://127.0.0.1:{port_b}/"
    pg = Pg(pg_url)
    procs: list[asyncio.subprocess.Process] = []

    def journaled(event: str) -> set[str]:
        rows = pg.rows("SELECT alarm_id FROM journal.alarm_events WHERE event = %s", (event,))
        return {r[0] for r in rows}

    try:
        a = await _node(config, "a", tmp_path, env, port_a)
        procs.append(a)
        await eventually(lambda: pg.holder() == "a", within=60)
        b = await _node(config, "b", tmp_path, env, port_b)
        procs.append(b)
        await eventually(lambda: pg.role("b") == "standby", within=60)
        await eventually(
            lambda: all((r[0] or 0) > 0 for r in pg.rows("SELECT live_tags FROM pair.nodes")),
            within=30,
        )  # both nodes read the plant: the standby's live values are warm
        health = await asyncio.to_thread(_json, hmi_b + "healthz")
        assert health["pair"]["role"] == "standby" and health["pair"]["holder"] == "a"
        # A supervisor on the standby's HMI: the command goes through the active node, which
        # checks, sends and audits it; the equipment takes it.
        dimming = cabinets[0].tag("dimming_pct")
        order = {"user": "sylvie", "tag": dimming, "value": 37, "reason": "essai"}
        sent = await asyncio.to_thread(_command, hmi_b, order)
        if sent["status"] == WriteStatus.REFUSED and "wait" in sent["detail"]:
            # At night the lighting schedule has just dimmed this cabinet: one command per
            # asset every 2 s, so the supervisor sends it again, as the refusal says.
            await asyncio.sleep(2.5)
            sent = await asyncio.to_thread(_command, hmi_b, order)
        assert sent["status"] == WriteStatus.CONFIRMED and "active node" in sent["detail"], sent
        assert await plant.read(dimming) == 37
        # Logged in on the active node; the same browser session holds on the other one.
        session = await asyncio.to_thread(logged_in_opener, hmi_a, "sylvie", PASSWORD)
        # The flood: a cabinet in fault every 0.2 s; the active node is killed half-way.
        half = len(cabinets) // 2
        for i, cab in enumerate(cabinets):
            await plant.set(cab.tag("fault"), True)
            await asyncio.sleep(0.2)
            if i == half:
                at_kill = pg.rows("SELECT coalesce(max(seq), 0) FROM journal.alarm_events")[0][0]
                a.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await a.wait()
        await eventually(lambda: pg.holder() == "b", within=15)
        failover = time.monotonic() - killed
        assert failover < 10, f"the standby took {failover:.1f} s to take over"
        await eventually(lambda: pg.role("b") == "active", within=5)
        metrics = await asyncio.to_thread(_text, hmi_b + "metrics")
        assert 'beffroi_pair_active{node="b"} 1.0' in metrics
        # Alone now: the system alarm says the pair has no standby.
        alone = "SELECT count(*) FROM journal.alarm_events WHERE alarm_id = %s AND seq > %s"
        await eventually(lambda: pg.rows(alone, (NO_STANDBY, at_kill))[0][0] > 0, within=15)
        page = await asyncio.to_thread(session.open, hmi_b + "alarms", None, 10)
        assert not page.geturl().endswith("/login"), "the session did not hold on node b"
        ids = {f"{c.tag('fault')}#{RULE}" for c in cabinets}

        await eventually(lambda: journaled("activate") >= ids, within=20)
        for cab in cabinets:
            await plant.set(cab.tag("fault"), False)
        await eventually(lambda: journaled("clear") >= ids, within=20)

        def outbox_done() -> bool:
            rows = pg.rows("SELECT status, count(*) FROM journal.outbox GROUP BY status")
            return bool(rows) and dict(rows).get("pending", 0) == 0

        await asyncio.sleep(2.5)  # the digests of the returns close (digest_window_s = 1)
        await eventually(outbox_done, within=30)
        b.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(b.wait(), 60) == 0
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await plant.stop()
        smtp.stop()
    # Every transition once: each cabinet's fault activated once and cleared once.
    events = pg.rows(
        "SELECT alarm_id, event FROM journal.alarm_events WHERE rule = %s ORDER BY seq", (RULE,)
    )
    for alarm_id in ids:
        mine = [e for a_id, e in events if a_id == alarm_id and e in ("activate", "clear")]
        assert mine == ["activate", "clear"], (alarm_id, mine)
    seqs = [r[0] for r in pg.rows("SELECT seq FROM journal.alarm_events ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    # Every e-mail once; together they name every fault.
    outbox = pg.rows("SELECT message_id, status, alarm_ids FROM journal.outbox")
    assert outbox and {r[1] for r in outbox} == {"sent"}
    # The interventions the faults opened told their team too, each e-mail once.
    teams = pg.rows("SELECT message_id, status FROM interventions.mail_outbox")
    assert teams and {r[1] for r in teams} == {"sent"}
    received = Counter(m.message["Message-ID"].strip() for m in smtp.received)
    sent = Counter(r[0] for r in outbox) + Counter(r[0] for r in teams)
    assert received == sent, "an e-mail was lost or sent twice"
    named = {i for r in outbox for i in r[2].strip("|").split("|") if i}
    assert ids <= named
    # One audit chain, written by both nodes, which verifies.
    operated = pg.rows(
        # (at night the lighting schedule dims the same cabinet: its records and the refusal
        # of the supervisor's first try aside)
        "SELECT user_name, detail FROM audit.audit WHERE action = 'operate' AND target = %s "
        "AND user_name <> 'system' AND outcome <> 'refused'",
        (dimming,),
    )
    assert len(operated) == 1 and operated[0][0] == "sylvie" and '"via":"b"' in operated[0][1]
    # Each record names its node; no setpoint (the lighting schedule's) was sent by both.
    records = [
        (target, json.loads(detail))
        for target, detail in pg.rows(
            "SELECT target, detail FROM audit.audit WHERE action = 'operate' AND outcome = 'sent'"
        )
    ]
    senders: dict[tuple, set[str]] = {}
    for target, detail in records:
        senders.setdefault((target, detail["value"]), set()).add(detail["node"])
    assert senders and all(len(nodes) == 1 for nodes in senders.values()), senders
    nodes = {json.loads(r[0]).get("node") for r in pg.rows("SELECT detail FROM audit.audit")}
    assert {"a", "b"} <= nodes
    actives = pg.rows("SELECT target FROM audit.audit WHERE action = 'pair.active' ORDER BY seq")
    assert [r[0] for r in actives][:2] == ["a", "b"]
    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "beffroi", "audit", "verify", "-c", str(config),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    said = (await asyncio.wait_for(check.communicate(), 120))[0].decode()
    assert check.returncode == 0, said
    assert "OK" in said


class CuttableLink:
    """A TCP relay between a node and PostgreSQL whose cut drops every connection at once and
    refuses new ones, as a network partition between them does."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def heal(self) -> None:
        await self.start()


async def test_a_node_cut_from_postgres_stops_acting_before_the_other_acts(pg_url) -> None:
    """The active node's connection to PostgreSQL cut: it stops acting on its own clock, before
    the lease runs out; the standby acts only after; never both at once. Healed, the cut node
    stays standby."""
    port = int(pg_url.rsplit(":", 1)[1].split("/")[0])
    link = CuttableLink(port)
    await link.start()
    cfg = PairConfig(enabled=True, lease_s=2.0, renew_s=0.4)
    a_url = pg_url.replace(f":{port}/", f":{link.port}/")
    both: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        a = PairNode(cfg, "a", "http://a", await asyncio.to_thread(Lease, a_url, "a", 2.0))
        await a.start(stack)
        b = PairNode(cfg, "b", "http://b", await asyncio.to_thread(Lease, pg_url, "b", 2.0))
        await b.start(stack)
        assert a.acting() and not b.acting()
        await eventually(lambda: b.standby() is None and a.standby() == "b", within=5)

        async def watch() -> None:
            while True:
                if a.acting() and b.acting():
                    both.append(time.monotonic())
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        await link.cut()
        cut = time.monotonic()
        await eventually(lambda: not a.acting(), within=cfg.lease_s)
        stopped = time.monotonic() - cut
        await eventually(b.acting, within=10)
        took_over = time.monotonic() - cut
        watcher.cancel()
        assert both == [], "both nodes acted at once"
        assert stopped < took_over
        assert a.status()["role"] == "standby" and "unreachable" in a.last_error
        await link.heal()
        await eventually(lambda: a.holder == "b" and not a.last_error, within=10)
        assert not a.acting() and b.acting() and b.epoch == 2


async def test_edges_follow_the_pair_through_a_failover(site, tmp_path, pg_url) -> None:
    """Two `--role central` nodes of a pair and an edge over Mosquitto: the active node killed
    with SIGKILL while the edge publishes a new text every 0.1 s; the standby becomes the
    primary host (STATE online, over the dead node's will), the edge is born to it, and the
    standby has stored every text, in order, once."""
    a_ = site.communes[0]
    [panel] = [x for x in site.register.assets.values()
               if x.commune == a_ and x.asset_class == "info_panel"]  # fmt: skip
    tag = panel.tag("message")
    config = _config_file(site, tmp_path / "central.toml")
    text = config.read_text().replace(
        '[state]\nbackend = "duckdb"', '[state]\nbackend = "postgres"'
    )
    # Two nodes, one plant (the test's): no simulator of their own, each on the same port.
    text = text.replace("[simulator]\nenabled = true", "[simulator]\nenabled = false")
    config.write_text(text + "\n[pair]\nenabled = true\nlease_s = 3.0\nrenew_s = 0.5\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BEFFROI_STATE_URL": pg_url,
           "BEFFROI_PAIR_TOKEN": TOKEN, "BEFFROI_SESSION_SECRET": "s" * 32,
           "BEFFROI_FIELD_LINK_SECRET": "f" * 32}  # fmt: skip
    pg = Pg(pg_url)
    messages = Messages(site, tag)
    procs: list[asyncio.subprocess.Process] = []
    async with contextlib.AsyncExitStack() as stack:
        try:
            a = await _central(config, "a", tmp_path, env)
            procs.append(a)
            await eventually(lambda: pg.holder() == "a", within=60)
            b = await _central(config, "b", tmp_path, env)
            procs.append(b)
            await eventually(lambda: pg.role("b") == "standby", within=60)
            edge = site.runtime("edge", "edge-a")
            await edge.start(stack)
            await _born(edge)
            assert edge.edge is not None
            messages.start()
            await asyncio.sleep(3)
            first = len(messages.sent)  # b listened to every text from here on
            a.send_signal(signal.SIGKILL)
            await a.wait()
            killed = time.monotonic()
            await eventually(lambda: pg.holder() == "b", within=15)
            assert time.monotonic() - killed < 10
            await eventually(lambda: edge.edge is not None and edge.edge.host_online, within=20)
            await asyncio.sleep(3)  # the dead node's will has come (1.5 keep-alives of 2 s)
            await messages.stop()
            await eventually(lambda: edge.buffer is not None and not edge.buffer.spool, within=30)
            assert edge.edge.host_online and edge.edge.born
            retained = await _retained_state(site)
            assert retained["online"] is True, retained
            await asyncio.sleep(2)
            b.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(b.wait(), 60) == 0
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
    stored = _texts(tmp_path / "b" / "beffroi.duckdb", tag)
    expected = messages.sent[first:]
    assert [m for m in stored if m in expected] == expected


async def _central(config: Path, node: str, folder: Path, env: dict[str, str]):
    args = [sys.executable, "-m", "beffroi", "run", "-c", str(config), "--role", "central",
            "--node", node, "--data", str(folder / node), "--port", str(free_port())]  # fmt: skip
    log = (folder / f"{node}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=log, stderr=log)
    log.close()
    return proc


async def _retained_state(site) -> dict:  # type: ignore[no-untyped-def]
    """Read the retained STATE of the primary host, as an edge connecting now would."""
    async with aiomqtt.Client("127.0.0.1", site.broker.port) as client:
        await client.subscribe(f"spBv1.0/STATE/{HOST_ID}")
        async with asyncio.timeout(5):
            async for message in client.messages:
                return json.loads(bytes(message.payload))
    raise AssertionError("no retained STATE")


async def test_duty_jobs_run_only_on_the_acting_node() -> None:
    """The KPI jobs, lighting, e-mail retries… are duties: a standby's scheduler skips them, and
    runs them again once it acts; other jobs (the heartbeat) run on both."""
    acting = False
    scheduler = Scheduler()
    scheduler.acting = lambda: acting
    ran: dict[str, int] = {"duty": 0, "async duty": 0, "heartbeat": 0}

    def duty() -> None:
        ran["duty"] += 1

    async def async_duty() -> None:
        ran["async duty"] += 1

    def heartbeat() -> None:
        ran["heartbeat"] += 1

    async with contextlib.AsyncExitStack() as stack:
        await scheduler.start(stack)
        scheduler.every(0.1, duty, "kpi-like", duty=True)
        scheduler.every(0.1, async_duty, "lighting-like", duty=True)
        scheduler.every(0.1, heartbeat, "heartbeat-like")
        await eventually(lambda: ran["heartbeat"] >= 5, within=5)
        assert ran["duty"] == 0 and ran["async duty"] == 0
        acting = True
        await eventually(lambda: ran["duty"] >= 3 and ran["async duty"] >= 3, within=5)


async def test_a_node_without_the_lease_journals_nothing(pg_url) -> None:
    """Journal writes check the lease in their own transaction (a fencing token): once the
    node's lease is gone (here, given up), its write fails and nothing is stored."""
    cfg = PairConfig(enabled=True, lease_s=2.0, renew_s=0.4)
    journal = Journal(PgPlace(pg_url, "journal"))
    node = PairNode(cfg, "a", "", await asyncio.to_thread(Lease, pg_url, "a", 2.0))
    async with contextlib.AsyncExitStack() as stack:
        await node.start(stack)
        assert node.acting()
        journal.fence = node.fence
        journal.write([_event(1, "A1")])
    with pytest.raises(LeaseLost, match="no longer holds the lease"):
        journal.write([_event(2, "A1")])
    assert journal.count() == 1
    journal.close()


def test_every_page_says_which_node_acts() -> None:
    """The HMI's banner: a lone gateway shows nothing; a node of a pair shows its name and
    role, the active one's standby or NO STANDBY, a standby the active node with its link."""
    assert pair_badge(None) == ("", "shell-pair")
    peers = [{"node": "a", "url": "http://a:8050/"}, {"node": "b", "url": "http://b:8050/"}]
    active = {"node": "a", "role": "active", "holder": "a", "standby": "b", "peers": peers}
    assert pair_badge(active) == ("Nœud a · actif · secours b", "shell-pair")
    alone, css = pair_badge({**active, "standby": None})
    assert "SANS SECOURS" in alone and "shell-pair-alone" in css
    text, css = pair_badge({"node": "b", "role": "standby", "holder": "a", "peers": peers})
    assert "shell-pair-standby" in css and text[0] == "Nœud b · secours · actif : "
    assert text[1].href == "http://a:8050/" and text[1].children == "nœud a"
