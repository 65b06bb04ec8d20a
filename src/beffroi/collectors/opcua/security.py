"""OPC UA security: the client certificate, trusted and rejected server certificates."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from beffroi.core.errors import BeffroiError

log = logging.getLogger(__name__)

_MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_POLICIES = {"Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256}


class UntrustedServerCertificate(BeffroiError):
    """The server presented a certificate that is not in the trusted folder."""


def _der(path: Path) -> bytes | None:
    """Return a certificate file's DER bytes (from .der or .pem), None if it is not one."""
    try:
        data = path.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        x509.load_der_x509_certificate(data)
        return data
    except (OSError, ValueError):
        return None


def _application_uri(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _label(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    text = str(names[0].value) if names else (_application_uri(cert) or "server")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "server"


class Pki:
    """The collector's certificate folders: own/ (its key pair), trusted/ and rejected/."""

    def __init__(self, root: Path, name: str):
        self.root = root
        self.name = name
        self.own_cert = root / "own" / f"{name}.der"
        self.own_key = root / "own" / "private" / f"{name}.pem"
        self.trusted = root / "trusted"
        self.rejected = root / "rejected"

    async def ensure_own(self, client: Client) -> None:
        """Create the client's key pair and self-signed certificate on first use."""
        for folder in (self.trusted, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)
        existed = self.own_key.exists()
        await client.setup_self_signed_certificate(self.own_key, self.own_cert)
        if not existed:
            self.own_key.chmod(0o600)  # the private key is for this process's user only
            log.info("%s: created client certificate %s", self.name, self.own_cert)

    def _trusted_certs(self) -> dict[bytes, Path]:
        out: dict[bytes, Path] = {}
        for path in sorted(self.trusted.glob("*")):
            der = _der(path) if path.is_file() else None
            if der is not None:
                out[der] = path
        return out

    def check_server(self, der: bytes, url: str, trust_on_first_use: bool) -> None:
        """Accept a server certificate that is trusted; otherwise refuse and say what to do."""
        trusted = self._trusted_certs()
        if der in trusted:
            return
        cert = x509.load_der_x509_certificate(der)
        thumb = hashlib.sha1(der).hexdigest()  # the usual OPC UA thumbprint
        filename = f"{_label(cert)}-{thumb[:16]}.der"
        uri = _application_uri(cert)
        same_server = [
            p
            for d, p in trusted.items()
            if uri and _application_uri(x509.load_der_x509_certificate(d)) == uri
        ]
        if trust_on_first_use and not same_server:
            (self.trusted / filename).write_bytes(der)
            log.warning(
                "%s: trusted the certificate of %s on first use (%s, SHA-1 %s), saved as %s",
                self.name,
                url,
                uri,
                thumb,
                self.trusted / filename,
            )
            return
        target = self.rejected / filename
        target.write_bytes(der)
        if same_server:
            why = (
                f"its certificate changed (application URI {uri}, SHA-1 {thumb}; the trusted one "
                f"is {same_server[0]}): if the server was given a new certificate on purpose, "
                f"move {target} to {self.trusted}/ and delete {same_server[0]}"
            )
        else:
            why = (
                f"its certificate is not trusted (application URI {uri}, SHA-1 {thumb}): "
                f"to trust it, move {target} to {self.trusted}/"
            )
        raise UntrustedServerCertificate(f"refusing to connect to {url}: {why}")


async def secure(
    client: Client, pki: Pki, policy: str, mode: str, url: str, trust_on_first_use: bool
) -> None:
    """Set up a signed (and encrypted) channel, after checking the server's certificate."""
    policy_cls = _POLICIES[policy]
    await pki.ensure_own(client)
    endpoints = await client.connect_and_get_server_endpoints()
    try:
        endpoint = Client.find_endpoint(endpoints, _MODES[mode], policy_cls.URI)
    except ValueError:
        offered = sorted(
            {f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints}
        )
        raise ua.UaError(
            f"{url} offers no {policy}/{mode} endpoint (it offers {', '.join(offered)})"
        ) from None
    der = endpoint.ServerCertificate
    if not der:
        raise ua.UaError(f"{url} sent no certificate for its {policy}/{mode} endpoint")
    # A chain may follow the server's own certificate; the first one is the server's.
    der = x509.load_der_x509_certificate(der[: _first_length(der)]).public_bytes(Encoding.DER)
    pki.check_server(der, url, trust_on_first_use)
    await client.set_security(
        policy_cls,
        certificate=str(pki.own_cert),
        private_key=str(pki.own_key),
        server_certificate=der,
        mode=_MODES[mode],
    )


def _first_length(der: bytes) -> int:
    """Return the length of the first DER structure in a byte string (a certificate chain)."""
    if len(der) < 2:
        return len(der)
    first = der[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    return 2 + n + int.from_bytes(der[2 : 2 + n], "big")
