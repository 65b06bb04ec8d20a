"""Hostile and broken Sparkplug traffic at the central's primary host: counted, never fatal.

The host's message handler is fed directly (no broker): random topics and bytes, and valid
protobuf payloads that lie (unknown aliases, datatypes that do not match, births without
names or bdSeq, values of every type, NaN, out-of-range integers). Whatever comes, it raises
nothing, stores no value for a tag it does not know, and counts what it skipped.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beffroi.core.model import Quality, Sample, TagSpec
from beffroi.sparkplug import codec
from beffroi.sparkplug import sparkplug_b_pb2 as pb
from beffroi.sparkplug.codec import Kind, Topic
from beffroi.sparkplug.config import SparkplugConfig
from beffroi.sparkplug.host import SparkplugHost

GROUP = "g"
POWER = TagSpec("dijon/LC-0001/power_kw", "LC-0001", "dijon", "power_kw", "float", "kW",
                False, 0, 50)  # fmt: skip
LIT = TagSpec("dijon/LC-0001/lit", "LC-0001", "dijon", "lit", "bool", "", True)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Sink:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def __call__(self, batch) -> None:  # type: ignore[no-untyped-def]
        self.samples.extend(batch)


def _host() -> tuple[SparkplugHost, Sink]:
    sink = Sink()
    cfg = SparkplugConfig.model_validate({"group": GROUP, "max_payload_bytes": 65536})
    return SparkplugHost(cfg, [POWER, LIT], sink), sink


def _born(host: SparkplugHost) -> None:
    host._on_message(str(Topic(GROUP, Kind.NBIRTH, "n")), codec.birth([], {}, 0, T0, bd_seq=3))
    host._on_message(str(Topic(GROUP, Kind.DBIRTH, "n", "dijon")),
                     codec.birth([(1, POWER), (2, LIT)], {}, 1, T0))  # fmt: skip


topics = st.one_of(
    st.text(max_size=60),
    st.builds(lambda k, n, d: f"spBv1.0/{GROUP}/{k}/{n}" + (f"/{d}" if d else ""),
              st.sampled_from([k.value for k in Kind] + ["XDATA", ""]),
              st.sampled_from(["n", "other", ""]), st.sampled_from(["dijon", "", None])),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, raw=st.binary(max_size=300))
def test_random_bytes_on_any_topic_are_skipped_and_counted(topic: str, raw: bytes) -> None:
    """Garbage never raises; whatever values it yields are only of known tags."""
    host, sink = _host()
    _born(host)
    host._on_message(topic, raw)
    known = {POWER.name, LIT.name, host.malformed_tag}
    assert all(s.tag in known for s in sink.samples)


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2**64 - 1),
    st.booleans(), st.text(max_size=20), st.none(),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alias=st.integers(0, 2**64 - 1),
    name=st.one_of(st.none(), st.sampled_from([POWER.name, LIT.name, "dijon/X-1/y", ""])),
    datatype=st.integers(0, 40),
    value=values,
    seq=st.integers(0, 2**64 - 1),
    historical=st.booleans(),
)
def test_lying_data_messages_never_raise(alias, name, datatype, value, seq, historical) -> None:  # type: ignore[no-untyped-def]
    """Valid protobuf, wrong content: unknown aliases and names are skipped (malformed or
    unmapped), values of another type are read or refused, never an exception."""
    host, sink = _host()
    _born(host)
    payload = pb.Payload(timestamp=1, seq=seq)
    m = payload.metrics.add(alias=alias, datatype=datatype, is_historical=historical)
    if name is not None:
        m.name = name
    if isinstance(value, bool):
        m.boolean_value = value
    elif isinstance(value, float):
        m.double_value = value
    elif isinstance(value, int):
        m.long_value = value
    elif isinstance(value, str):
        m.string_value = value
    else:
        m.is_null = True
    host._on_message(str(Topic(GROUP, Kind.DDATA, "n", "dijon")), payload.SerializeToString())
    for s in sink.samples:
        assert s.tag in (POWER.name, LIT.name, host.malformed_tag)
        if s.quality is Quality.GOOD and s.tag == POWER.name:
            assert isinstance(s.value, float)


def test_births_without_bdseq_names_or_types_are_refused_and_data_waits_for_a_birth() -> None:
    """An NBIRTH without bdSeq, a DBIRTH metric without name or datatype: malformed; data
    from a node never born asks for a rebirth and stores nothing."""
    host, sink = _host()
    bad = pb.Payload(timestamp=1, seq=0)
    host._on_message(str(Topic(GROUP, Kind.NBIRTH, "n")), bad.SerializeToString())
    assert host.malformed == 1
    ddata = codec.data([(1, codec.DOUBLE, Sample(POWER.name, T0, 3.0))], 1, T0, historical=False)
    host._on_message(str(Topic(GROUP, Kind.DDATA, "n", "dijon")), ddata)
    assert host.nodes["n"].rebirths == 1  # (no broker here: the request is only counted)
    assert [s for s in sink.samples if s.tag == POWER.name] == []
    host._on_message(str(Topic(GROUP, Kind.NBIRTH, "n")), codec.birth([], {}, 0, T0, bd_seq=1))
    nameless = pb.Payload(timestamp=1, seq=1)
    nameless.metrics.add(alias=1)
    host._on_message(str(Topic(GROUP, Kind.DBIRTH, "n", "dijon")), nameless.SerializeToString())
    assert host.malformed == 2


def test_a_value_that_is_not_finite_is_stored_as_bad_not_as_a_number() -> None:
    """NaN with a bad quality is kept as a bad value; a NaN claiming to be good passes as
    the float it is (the historian stores NaN as no value)."""
    host, sink = _host()
    _born(host)
    bad = Sample(POWER.name, T0, math.nan, Quality.COMM_LOSS)
    host._on_message(str(Topic(GROUP, Kind.DDATA, "n", "dijon")),
                     codec.data([(1, codec.DOUBLE, bad)], 2, T0, historical=False))  # fmt: skip
    [got] = [s for s in sink.samples if s.tag == POWER.name]
    assert got.quality is Quality.COMM_LOSS and math.isnan(float(got.value))
