"""OPC UA collector against real asyncua servers in this process, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import ua

from beffroi.collectors.opcua.collector import OpcUaCollector
from beffroi.collectors.opcua.config import OpcUaCollectorConfig
from beffroi.core.model import Quality, TagSpec, WriteStatus
from beffroi.core.site import AssetClassConfig, SignalConfig
from tests.conftest import free_port
from tests.servers import NS, OpcUaPlant, PasswordUsers, Received

# One event loop for the module, so that the shared plant (an asyncua server takes seconds to
# build its standard address space) serves every test that does not stop it.
pytestmark = pytest.mark.asyncio(loop_scope="module")

POWER = TagSpec("dijon/LC-0001/power_kw", "LC-0001", "dijon", "power_kw", "float", "kW")
DIM = TagSpec(
    "dijon/LC-0001/dimming_pct", "LC-0001", "dijon", "dimming_pct", "float", "%", True, 0, 100
)
MSG = TagSpec("dijon/IP-0001/message", "IP-0001", "dijon", "message", "str", "", True)
LEVEL = TagSpec("talant/RS-0001/level_pct", "RS-0001", "talant", "level_pct", "float", "%")
TEMP = TagSpec("talant/BT-0001/temperature_c", "BT-0001", "talant", "temperature_c", "float")
TAGS = [POWER, DIM, MSG]
BULK = 5000


def _config(url: str, **extra) -> OpcUaCollectorConfig:
    base = {
        "name": "plant",
        "url": url,
        "namespace": NS,
        "publishing_interval_ms": 50,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "timeout_s": 2.0,
    }
    return OpcUaCollectorConfig(**(base | extra))


@contextlib.asynccontextmanager
async def running(config: OpcUaCollectorConfig, tags=TAGS, *, connect: bool = True, **kwargs):
    """Run a collector until the block ends; wait for its subscription unless told not to."""
    sink = Received()
    collector = OpcUaCollector(config, tags, sink, **kwargs)
    async with contextlib.AsyncExitStack() as stack:
        await collector.start(stack)
        if connect:
            async with asyncio.timeout(20):
                await collector.wait_connected()
        yield collector, sink


async def _build_tree(plant: OpcUaPlant) -> None:
    """Add Objects/Plant/<commune>/<asset>/<signal> with numeric node ids, as a vendor would."""
    assert plant.server is not None
    idx = plant.idx
    root = await plant.server.nodes.objects.add_folder(idx, "Plant")
    dijon = await root.add_folder(idx, "dijon")
    cabinet = await dijon.add_object(idx, "LC-0001")
    await cabinet.add_variable(idx, "power_kw", 0.0)
    dim = await cabinet.add_variable(idx, "dimming_pct", 0.0)
    await dim.set_writable()
    await cabinet.add_variable(idx, "colour", "amber")  # not a signal of the class
    await (await dijon.add_object(idx, "XX-0001")).add_variable(idx, "power_kw", 0.0)
    gotham = await root.add_folder(idx, "gotham")  # not a commune of the metropolis
    await (await gotham.add_object(idx, "LC-0002")).add_variable(idx, "power_kw", 0.0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant():
    p = OpcUaPlant(free_port(), [*TAGS, LEVEL, TEMP], bulk=BULK, eu_ranges={LEVEL.name: (0, 200)})
    await p.start()
    await _build_tree(p)
    yield p
    await p.stop()


async def test_values_arrive_with_tag_timestamp_and_quality(plant) -> None:
    """A value changed on the server arrives with its source timestamp and Good quality."""
    async with running(_config(plant.url)) as (collector, sink):
        ts = datetime(2026, 5, 4, 21, 30, 0, 123000, tzinfo=UTC)
        await plant.set(POWER.name, 7.25, ts)
        got = await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 7.25)
        assert got.ts == ts
        assert got.quality is Quality.GOOD and got.status == 0
        assert got.server_ts is not None and got.server_ts > ts
        status = await sink.wait_for(lambda s: s.tag == collector.status_tag)
        assert status.value is True


async def test_bad_status_is_stored_as_bad_with_its_sub_code(plant) -> None:
    """A Bad status gives a Bad sample with the exact status code, never the previous value."""
    async with running(_config(plant.url)) as (_, sink):
        now = datetime.now(UTC)
        await plant.set(POWER.name, 3.0, now)
        await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 3.0)
        await plant.set(
            POWER.name, 3.0, now + timedelta(seconds=1), ua.StatusCodes.BadSensorFailure
        )
        bad = await sink.wait_for(lambda s: s.tag == POWER.name and s.quality is Quality.BAD)
        assert math.isnan(bad.value)
        assert bad.status == ua.StatusCodes.BadSensorFailure
        await plant.set(
            POWER.name, 4.0, now + timedelta(seconds=2), ua.StatusCodes.UncertainLastUsableValue
        )
        unc = await sink.wait_for(lambda s: s.tag == POWER.name and s.quality is Quality.UNCERTAIN)
        assert unc.value == 4.0 and unc.status == ua.StatusCodes.UncertainLastUsableValue


async def test_absolute_and_percent_deadbands_suppress_small_changes(plant) -> None:
    """Changes within the deadband (absolute, or percent of the node's EURange) never arrive."""
    rules = [
        {"match": "*/*/temperature_c", "deadband": 0.5, "deadband_type": "absolute"},
        {"match": "*/RS-*/*", "deadband": 5, "deadband_type": "percent", "queue_size": 5},
    ]
    await plant.set(TEMP.name, 20.0)
    await plant.set(LEVEL.name, 100.0)
    async with running(_config(plant.url, rules=rules), [TEMP, LEVEL]) as (_, sink):
        await sink.wait_for(lambda s: s.tag == TEMP.name and s.value == 20.0)
        await sink.wait_for(lambda s: s.tag == LEVEL.name and s.value == 100.0)
        await plant.set(TEMP.name, 20.3)  # within 0.5
        await plant.set(LEVEL.name, 108.0)  # within 5 % of 0..200 = 10
        await plant.set(TEMP.name, 21.5)
        await plant.set(LEVEL.name, 125.0)
        await sink.wait_for(lambda s: s.tag == TEMP.name and s.value == 21.5)
        await sink.wait_for(lambda s: s.tag == LEVEL.name and s.value == 125.0)
        assert [s.value for s in sink.of(TEMP.name)] == [20.0, 21.5]
        assert [s.value for s in sink.of(LEVEL.name)] == [100.0, 125.0]


async def test_poll_mode_reports_changes_only(plant) -> None:
    """Polling (servers without subscriptions) reports changes once, with the deadband applied."""
    rules = [{"match": "*/*/temperature_c", "deadband": 1.0, "deadband_type": "absolute"}]
    await plant.set(TEMP.name, 10.0)
    async with running(_config(plant.url, mode="poll", rules=rules), [TEMP, POWER]) as (_, sink):
        await sink.wait_for(lambda s: s.tag == TEMP.name and s.value == 10.0)
        await plant.set(TEMP.name, 10.5)
        await asyncio.sleep(0.3)  # several polls of an unchanged or barely changed value
        await plant.set(TEMP.name, 12.0, status=ua.StatusCodes.UncertainSensorNotAccurate)
        got = await sink.wait_for(lambda s: s.tag == TEMP.name and s.value == 12.0)
        assert got.quality is Quality.UNCERTAIN
        assert [s.value for s in sink.of(TEMP.name)] == [10.0, 12.0]


async def test_5000_nodes_are_monitored_in_chunks_the_server_accepts(plant) -> None:
    """Items are created in calls within the server's announced limit, or halved until accepted."""
    bulk = [TagSpec(plant.bulk_tag(i), f"B-{i:05d}", "bulk", "value", "float") for i in range(BULK)]
    last = bulk[-1].name
    await plant.limit(1000, announce=True)
    plant.create_sizes.clear()
    try:
        async with running(_config(plant.url), bulk) as (collector, sink):
            assert collector.monitored == BULK
            assert plant.create_sizes == [1000] * 5
            await plant.set(last, 99.5)
            await sink.wait_for(lambda s: s.tag == last and s.value == 99.5)
        # A server that announces no limit but refuses big calls: the collector halves.
        await plant.limit(1000, announce=False)
        plant.create_sizes.clear()
        async with running(_config(plant.url, chunk_size=5000), bulk) as (collector, sink):
            assert collector.monitored == BULK
            assert sum(plant.create_sizes) == BULK and max(plant.create_sizes) <= 1000
            await plant.set(last, 12.5)
            await sink.wait_for(lambda s: s.tag == last and s.value == 12.5)
    finally:
        await plant.limit(0, announce=True)


async def test_discovery_maps_browsed_nodes_to_tags_through_templates(plant) -> None:
    """Browsing Plant/<commune>/<asset>/<signal> yields template tags; the rest is skipped."""
    cabinet = AssetClassConfig(
        domain="lighting",
        label="Street-lighting cabinet",
        prefix="LC",
        share=1,
        signals=[
            SignalConfig(name="power_kw", unit="kW"),
            SignalConfig(name="dimming_pct", unit="%", writable=True, low=0, high=100),
        ],
    )
    config = _config(plant.url, discovery={"root": "Plant"})
    kwargs = {"asset_classes": {"streetlight_cabinet": cabinet}, "communes": ["dijon", "talant"]}
    async with running(config, [], **kwargs) as (collector, sink):
        assert set(collector.tags) == {POWER.name, DIM.name}
        assert collector.tags[DIM.name].writable and collector.tags[POWER.name].unit == "kW"
        power_node = collector._nodes[POWER.name]
        assert power_node.NodeIdType is not ua.NodeIdType.String  # not the tag-name ids
        await plant.set_node(power_node, 5.5)
        await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 5.5)
        result = await collector.write(DIM.name, 30)
        assert result.status is WriteStatus.CONFIRMED
        assert await plant.server.get_node(collector._nodes[DIM.name]).read_value() == 30.0


async def test_subscription_dropped_by_the_server_is_recreated(plant) -> None:
    """When the server drops the subscription (session timeout), it is noticed and re-created."""
    config = _config(plant.url, keepalive_s=0.2)
    async with running(config) as (collector, sink):
        subs = plant.server.iserver.subscription_service
        mine = [sid for sid, s in subs.subscriptions.items() if s.data.RevisedPublishingInterval]
        await subs.delete_subscriptions(mine)
        await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
        await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is True, within=20)
        await plant.set(POWER.name, 61.0)
        await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 61.0)


async def test_write_confirms_by_read_back_and_refuses_out_of_range(plant) -> None:
    """A setpoint write is confirmed by reading it back; invalid ones never reach the device."""
    async with running(_config(plant.url)) as (collector, _):
        ok = await collector.write(DIM.name, 40)
        assert ok.status is WriteStatus.CONFIRMED and ok.value == 40.0
        assert await plant.read(DIM.name) == 40.0
        msg = await collector.write(MSG.name, "Accident: déviation par la rue de Talant")
        assert msg.ok
        too_high = await collector.write(DIM.name, 140)
        assert too_high.status is WriteStatus.REFUSED and "above 100" in too_high.detail
        read_only = await collector.write(POWER.name, 1.0)
        assert read_only.status is WriteStatus.REFUSED
        assert await plant.read(DIM.name) == 40.0


async def test_write_to_a_read_only_node_reports_device_rejection(plant) -> None:
    """When the device refuses the write, the result says rejected with its status."""
    node = plant.server.get_node(ua.NodeId(DIM.name, plant.idx))
    await node.set_writable(False)
    try:
        async with running(_config(plant.url)) as (collector, _):
            result = await collector.write(DIM.name, 10)
            assert result.status is WriteStatus.REJECTED
            assert "BadUserAccessDenied" in result.detail or "Bad" in result.detail
    finally:
        await node.set_writable(True)


async def test_server_restart_gives_commloss_then_recovers() -> None:
    """Stopping the server marks every tag CommLoss once; after restart every item is back."""
    own = OpcUaPlant(free_port(), TAGS)
    await own.start()
    try:
        async with running(_config(own.url)) as (collector, sink):
            await own.stop()
            await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
            lost = [s for s in sink.samples if s.quality is Quality.COMM_LOSS]
            assert {s.tag for s in lost} == {t.name for t in TAGS}
            assert not collector.connected
            await asyncio.sleep(1.5)  # several failed reconnect attempts: no CommLoss flood
            assert len([s for s in sink.samples if s.quality is Quality.COMM_LOSS]) == len(TAGS)
            await own.start()
            async with asyncio.timeout(20):
                await collector.wait_connected()
            assert collector.monitored == len(TAGS)
            after = datetime.now(UTC)
            for i, tag in enumerate((POWER, DIM)):
                await own.set(tag.name, 42.0 + i, after)
            for i, tag in enumerate((POWER, DIM)):
                got = await sink.wait_for(
                    lambda s, t=tag, v=42.0 + i: s.tag == t.name and s.value == v
                )
                assert got.quality is Quality.GOOD and got.ts == after
            assert collector.reconnects >= 1
    finally:
        await own.stop()


# --- security -----------------------------------------------------------------------------

USER, PASSWORD = "exploitation", "Beffroi-2026!"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure_plant(tmp_path_factory):
    p = OpcUaPlant(
        free_port(),
        TAGS,
        pki=tmp_path_factory.mktemp("server-pki"),
        users=PasswordUsers(USER, PASSWORD),
    )
    await p.start()
    yield p
    await p.stop()


def _secure_config(plant: OpcUaPlant, pki: Path, mode: str, **extra) -> OpcUaCollectorConfig:
    return _config(
        plant.url,
        security_policy="Basic256Sha256",
        security_mode=mode,
        pki_dir=str(pki),
        username_env="TEST_OPCUA_USER",
        password_env="TEST_OPCUA_PASSWORD",
        **extra,
    )


async def test_untrusted_server_certificate_is_refused_until_an_operator_trusts_it(
    secure_plant, tmp_path, monkeypatch
) -> None:
    """An unknown server certificate is refused with which file to move where; then it works."""
    monkeypatch.setenv("TEST_OPCUA_USER", USER)
    monkeypatch.delenv("TEST_OPCUA_PASSWORD", raising=False)
    config = _secure_config(secure_plant, tmp_path / "pki", "Sign")
    async with running(config, connect=False) as (collector, sink):
        await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
        assert "TEST_OPCUA_PASSWORD is not set" in collector.last_error
        monkeypatch.setenv("TEST_OPCUA_PASSWORD", PASSWORD)
        rejected = tmp_path / "pki" / "rejected"
        async with asyncio.timeout(10):
            while not list(rejected.glob("*.der")):  # noqa: ASYNC110  (a folder has no event)
                await asyncio.sleep(0.1)
        [cert] = rejected.glob("*.der")
        assert cert.read_bytes() == secure_plant.cert_file.read_bytes()
        trusted = tmp_path / "pki" / "trusted"
        assert f"move {cert} to {trusted}/" in collector.last_error
        assert (tmp_path / "pki" / "own" / "plant.der").exists()  # generated on first run
        assert not collector.connected
        cert.rename(trusted / cert.name)  # what the message tells the operator to do
        async with asyncio.timeout(20):
            await collector.wait_connected()
        await secure_plant.set(POWER.name, 17.0)
        await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 17.0)


async def test_trust_on_first_use_with_an_encrypted_session(
    secure_plant, tmp_path, monkeypatch
) -> None:
    """With trust on first use, the first certificate is kept and the session is encrypted."""
    monkeypatch.setenv("TEST_OPCUA_USER", USER)
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", PASSWORD)
    config = _secure_config(secure_plant, tmp_path, "SignAndEncrypt", trust_on_first_use=True)
    async with running(config) as (collector, sink):
        [kept] = (tmp_path / "trusted").glob("*.der")
        assert kept.read_bytes() == secure_plant.cert_file.read_bytes()
        policy = collector._client.security_policy
        assert policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
        await secure_plant.set(POWER.name, 18.5)
        await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 18.5)
        assert (await collector.write(DIM.name, 55)).status is WriteStatus.CONFIRMED


async def test_fast_publish_decoder_agrees_with_asyncua() -> None:
    """The collector's publish decoder reads what asyncua's reads, for every kind of value."""
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    from beffroi.collectors.opcua.decoder import FastDataChange, decode_publish_response

    t1 = datetime(2026, 5, 4, 21, 30, 0, 123456, tzinfo=UTC)
    t2 = t1 + timedelta(seconds=1)
    values = [
        ua.DataValue(
            ua.Variant(7.25, ua.VariantType.Double), SourceTimestamp=t1, ServerTimestamp=t2
        ),
        ua.DataValue(ua.Variant(-3, ua.VariantType.Int32), SourceTimestamp=t1),
        ua.DataValue(ua.Variant(True, ua.VariantType.Boolean), ServerTimestamp=t2),
        ua.DataValue(ua.Variant("déviation", ua.VariantType.String), SourceTimestamp=t2),
        ua.DataValue(ua.Variant(None, ua.VariantType.String)),
        ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)),
        ua.DataValue(ua.Variant([1.0, 2.0], ua.VariantType.Double), SourceTimestamp=t1),
        ua.DataValue(ua.Variant(1.5, ua.VariantType.Float), SourceTimestamp=t1, ServerTimestamp=t2),
    ]
    items = [
        ua.MonitoredItemNotification(ClientHandle=i + 1, Value=v) for i, v in enumerate(values)
    ]
    status = ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout))
    message = ua.NotificationMessage(
        SequenceNumber=9,
        PublishTime=t2,
        NotificationData=[ua.DataChangeNotification(MonitoredItems=items), status],
    )
    response = ua.PublishResponse(
        Parameters=ua.PublishResult(
            SubscriptionId=3, AvailableSequenceNumbers=[8, 9], NotificationMessage=message
        )
    )
    binary = struct_to_binary(response)
    reference = struct_from_binary(ua.PublishResponse, Buffer(binary))
    fast = decode_publish_response(Buffer(binary))
    assert fast.Parameters.SubscriptionId == 3
    assert fast.Parameters.AvailableSequenceNumbers == [8, 9]
    assert fast.Parameters.NotificationMessage.SequenceNumber == 9
    [data, other] = fast.Parameters.NotificationMessage.NotificationData
    assert isinstance(data, FastDataChange)
    assert other == reference.Parameters.NotificationMessage.NotificationData[1]
    expected = [
        (
            item.ClientHandle,
            item.Value.Value.Value if item.Value.Value is not None else None,
            item.Value.StatusCode.value,
            item.Value.SourceTimestamp,
            item.Value.ServerTimestamp,
        )
        for item in reference.Parameters.NotificationMessage.NotificationData[0].MonitoredItems
    ]
    assert data.items == expected


async def test_fast_decoder_reads_picoseconds_in_the_specification_order() -> None:
    """Part 6 puts SourcePicoseconds before ServerTimestamp (asyncua 2.1 writes them after)."""
    import struct

    from beffroi.collectors.opcua.decoder import decode_items

    t1 = datetime(2026, 5, 4, 21, 30, 0, 123456, tzinfo=UTC)
    t2 = t1 + timedelta(seconds=1)
    body = struct.pack("<iIB", 1, 42, 0x01 | 0x04 | 0x08 | 0x10 | 0x20)
    body += struct.pack("<Bd", 11, 2.5)  # Variant: Double
    body += struct.pack("<qHqH", ua.datetime_to_win_epoch(t1), 5, ua.datetime_to_win_epoch(t2), 7)
    items, end = decode_items(body, 0)
    assert items == [(42, 2.5, 0, t1, t2)] and end == len(body)
