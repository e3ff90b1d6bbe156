"""Test certificates from trustme, written to files as a broker and its clients want them."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certificates:
    ca: str  # the CA certificate (PEM), which clients and the broker trust
    server_cert: str  # for localhost and 127.0.0.1
    server_key: str
    client_cert: str  # CN=device-7, O=Acme Devices, OU=Sensors
    client_key: str
    expired_cert: str  # CN=old-device, expired yesterday
    expired_key: str
    stranger_cert: str  # CN=device-7 again, but from another CA
    stranger_key: str
    _ca: trustme.CA

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if with_certificate:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def renew_server(self, directory: Path) -> trustme.LeafCert:
        """Write a new server certificate over the old files (as a renewal does)."""
        renewed = self._ca.issue_cert("localhost", "127.0.0.1", organization_name="Renewed")
        renewed.cert_chain_pems[0].write_to_path(self.server_cert)
        renewed.private_key_pem.write_to_path(self.server_key)
        return renewed


def make_certificates(directory: Path) -> Certificates:
    ca = trustme.CA()
    files: dict[str, str] = {}

    def write(name: str, leaf: trustme.LeafCert) -> None:
        files[f"{name}_cert"] = str(directory / f"{name}.crt")
        files[f"{name}_key"] = str(directory / f"{name}.key")
        leaf.cert_chain_pems[0].write_to_path(files[f"{name}_cert"])
        leaf.private_key_pem.write_to_path(files[f"{name}_key"])

    write("server", ca.issue_cert("localhost", "127.0.0.1"))
    write("client", ca.issue_cert("device-7.example", common_name="device-7",
                                  organization_name="Acme Devices",
                                  organization_unit_name="Sensors"))
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    write("expired", ca.issue_cert("old.example", common_name="old-device",
                                   not_before=yesterday - datetime.timedelta(days=30),
                                   not_after=yesterday))
    write("stranger", trustme.CA().issue_cert("device-7.example", common_name="device-7"))
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return Certificates(ca=str(ca_path), _ca=ca, **files)
