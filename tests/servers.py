"""Real servers for the collector tests, on free loopback ports: asyncua, pymodbus, Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

from beffroi.core.model import Sample, TagSpec
from beffroi.simulator.server import variable_item


def require_binary(path: str, package: str) -> str:
    """Return the path of a server binary; skip without it, but fail in CI (CI=true)."""
    if os.access(path, os.X_OK):
        return path
    reason = f"{path} is missing: apt-get install {package} (scripts/system-deps.sh does it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class Received:
    """The sink of a collector under test: records every batch it pushes."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.event = asyncio.Event()

    def __call__(self, batch) -> None:
        self.samples.extend(batch)
        self.event.set()

    def of(self, tag: str) -> list[Sample]:
        """Return the samples received for one tag, in arrival order."""
        return [s for s in self.samples if s.tag == tag]

    async def wait_for(self, predicate, within: float = 15.0) -> Sample:
        """Wait until a received sample satisfies the predicate, and return it."""
        async with asyncio.timeout(within):
            while True:
                for s in self.samples:
                    if predicate(s):
                        return s
                self.event.clear()
                await self.event.wait()


# --- OPC UA -------------------------------------------------------------------------------

NS = "urn:beffroi:test"


class PasswordUsers:
    """A user manager that lets in one user name with its password, and nobody else."""

    def __init__(self, username: str, password: str):
        self.username, self.password = username, password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        """Return the user when the credentials match, None (refused) otherwise."""
        if username == self.username and password == self.password:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaPlant:
    """A real asyncua server holding test tags (string node ids = tag names); restartable."""

    def __init__(
        self,
        port: int,
        tags: Sequence[TagSpec],
        *,
        bulk: int = 0,
        eu_ranges: dict[str, tuple[float, float]] | None = None,
        pki: Path | None = None,
        users: PasswordUsers | None = None,
    ):
        self.url = f"opc.tcp://127.0.0.1:{port}/test/"
        self.tags = list(tags)
        self.bulk = bulk
        self.eu_ranges = eu_ranges or {}
        self.pki = pki
        self.users = users
        self.server: Server | None = None
        self.idx = 0
        self.create_sizes: list[int] = []  # CreateMonitoredItems calls the server accepted
        self.enforced_limit = 0
        self.cert_file: Path | None = None

    @staticmethod
    def bulk_tag(i: int) -> str:
        """Return the name of the i-th bulk node."""
        return f"bulk/B-{i:05d}/value"

    async def start(self) -> None:
        """Build the address space and listen."""
        server = Server(user_manager=self.users) if self.users else Server()
        await server.init()
        server.set_endpoint(self.url)
        if self.pki is not None:
            await self._secure(server)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.idx = await server.register_namespace(NS)
        objects = server.nodes.objects
        initial = {"float": 0.0, "str": "", "bool": False}
        for spec in self.tags:
            var = await objects.add_variable(
                ua.NodeId(spec.name, self.idx), spec.signal, initial[spec.kind]
            )
            if spec.writable:
                await var.set_writable()
            if spec.name in self.eu_ranges:
                low, high = self.eu_ranges[spec.name]
                await var.add_property(
                    ua.NodeId(f"{spec.name}#EURange", self.idx),
                    ua.QualifiedName("EURange", 0),
                    ua.Range(Low=low, High=high),
                )
        if self.bulk:
            # 100 nodes per folder: AddNodes checks every sibling, quadratic in a big folder.
            items = []
            for i in range(self.bulk):
                if i % 100 == 0:
                    folder = await objects.add_folder(ua.NodeId(f"bulk/{i}", self.idx), f"f{i}")
                nid = ua.NodeId(self.bulk_tag(i), self.idx)
                items.append(variable_item(nid, f"b{i}", folder.nodeid, "float", 0.0, False))
            for r in server.iserver.node_mgt_service.add_nodes(items):
                r.StatusCode.check()
        self._wrap_create(server)
        await server.start()
        self.server = server
        if self.enforced_limit:
            await self.limit(self.enforced_limit, announce=True)

    async def _secure(self, server: Server) -> None:
        assert self.pki is not None
        uri = "urn:beffroi:test:plant"
        await server.set_application_uri(uri)
        key, cert = self.pki / "server-key.pem", self.pki / "server-cert.der"
        await cert_gen.setup_self_signed_certificate(
            key,
            cert,
            uri,
            socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": "Beffroi test plant"},
        )
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        self.cert_file = cert
        server.set_security_policy(
            [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        )
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])

    def _wrap_create(self, server: Server) -> None:
        """Record CreateMonitoredItems sizes; refuse calls above the limit, as strict servers do."""
        service = server.iserver.subscription_service
        original = service.create_monitored_items

        async def create(params: ua.CreateMonitoredItemsParameters):
            n = len(params.ItemsToCreate)
            if self.enforced_limit and n > self.enforced_limit:
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)
            self.create_sizes.append(n)
            return await original(params)

        service.create_monitored_items = create

    async def limit(self, per_call: int, *, announce: bool) -> None:
        """Enforce a MaxMonitoredItemsPerCall, announced in OperationLimits or not (0)."""
        assert self.server is not None
        self.enforced_limit = per_call
        node = self.server.get_node(
            ua.NodeId(
                ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
            )
        )
        await node.write_value(ua.Variant(per_call if announce else 0, ua.VariantType.UInt32))

    async def stop(self) -> None:
        """Stop listening, dropping the clients' connections."""
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def set(self, tag: str, value, ts: datetime | None = None, status=ua.StatusCodes.Good):
        """Change a value at its source, with a source timestamp and status code."""
        await self.set_node(ua.NodeId(tag, self.idx), value, ts, status)

    async def set_node(self, nodeid: ua.NodeId, value, ts=None, status=ua.StatusCodes.Good):
        """Change the value of any node of the plant."""
        assert self.server is not None
        dv = ua.DataValue(
            ua.Variant(value),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=ts or datetime.now(UTC),
            ServerTimestamp=datetime.now(UTC),
        )
        await self.server.write_attribute_value(nodeid, dv)

    async def read(self, tag: str):
        """Return the value a tag's node holds."""
        assert self.server is not None
        return await self.server.get_node(ua.NodeId(tag, self.idx)).read_value()


# --- Mosquitto ----------------------------------------------------------------------------

MOSQUITTO = "/usr/sbin/mosquitto"


def wait_port(port: int, within: float = 10.0) -> None:
    """Block until something accepts TCP connections on a loopback port."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {within} s")
        time.sleep(0.05)


class Mosquitto:
    """Debian's Mosquitto broker started on a free port with a temporary config; restartable."""

    def __init__(self, folder: Path, port: int):
        self.binary = require_binary(MOSQUITTO, "mosquitto")
        self.folder = folder
        self.port = port
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            # Run as root, Mosquitto drops to user `mosquitto`, who cannot write in our folder.
            f"user {getpass.getuser()}\n"
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            f"log_dest file {self.log}\n"
            "max_queued_messages 10000\n"
        )

    def start(self) -> None:
        """Start the broker and wait until it listens."""
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"mosquitto did not start: {log[-2000:]}") from None

    def stop(self) -> None:
        """Stop the broker (it saves its persistent sessions on the way out)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


# --- Modbus -------------------------------------------------------------------------------

_FC = {"coil": (1, 5), "discrete": (2, 2), "holding": (3, 16), "input": (4, 4)}


class ModbusDevice:
    """A pymodbus TCP server in this process: devices with 4 tables of 200 addresses each."""

    def __init__(self, port: int, unit_ids: Sequence[int] = (1,), size: int = 200):
        self.port = port
        self.unit_ids = list(unit_ids)
        self.size = size
        self.server = None
        self.muted: set[int] = set()  # units that stop answering, the TCP link staying up
        self.clamp: dict[int, int] = {}  # holding address → highest raw value the device keeps
        self.requests = 0

    async def start(self) -> None:
        """Listen on the port (a new datastore each time, as a power-cycled device)."""
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        def blocks():
            bits = [SimData(0, count=self.size, values=False, datatype=DataType.BITS)]
            words = [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)]
            return (bits, list(bits), words, list(words))

        def action_of(unit: int):
            async def action(fc, start, address, count, registers, set_values):
                self.requests += 1
                if unit in self.muted:
                    await asyncio.sleep(3600)  # the client times out first
                if set_values and fc in (6, 16):
                    for i in range(len(set_values)):
                        top = self.clamp.get(address + i)
                        if top is not None and set_values[i] > top:
                            set_values[i] = top  # the device keeps its own maximum
                return None

            return action

        devices = [SimDevice(u, simdata=blocks(), action=action_of(u)) for u in self.unit_ids]
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        """Stop listening and drop the connections."""
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    async def set(self, table: str, address: int, values: list, unit: int = 1) -> None:
        """Change registers or bits at the device, as its own logic would."""
        assert self.server is not None
        err = await self.server.context.async_setValues(unit, _FC[table][1], address, values)
        assert err is None, err

    async def get(self, table: str, address: int, count: int = 1, unit: int = 1) -> list:
        """Return registers or bits as the device holds them."""
        assert self.server is not None
        return list(await self.server.context.async_getValues(unit, _FC[table][0], address, count))


# --- a whole gateway ----------------------------------------------------------------------


def gateway_config(cfg, folder: Path, **collectors):
    """Return the demo config with only the given collector tables and the historian in a folder."""
    from beffroi.app.config import CollectorsConfig

    historian = cfg.historian.model_copy(
        update={"path": str(folder / "beffroi.duckdb"), "spool_dir": str(folder / "spool")}
    )
    out = cfg.model_copy(
        update={
            "collectors": CollectorsConfig.model_validate(collectors),
            "historian": historian,
        }
    )
    out._source = cfg.source
    return out
