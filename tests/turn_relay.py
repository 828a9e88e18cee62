"""A real coturn for tests: started from the config `mediasrv turn-config` renders, stopped after.

`Coturn(settings, listen=addr, workdir=...)` writes a test CA and a server certificate for `listen`
(an IP SAN; the CA is `ca_pem`, for `trust_ca` or an SSLContext), renders the coturn config from the
settings (the media addresses are the only allowed peers) and runs `turnserver -c` in the
foreground. Needs Debian's coturn (scripts/bootstrap.sh with MEDIASRV_BOOTSTRAP_TEST=1) and root for
port 443 (tests run as root in `unshare -n`).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mediasrv.config import Settings
from mediasrv.media.coturn_config import CoturnOptions, render

TURNSERVER = "/usr/bin/turnserver"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificates(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for `ip` signed by it. Returns (ca, cert, key) PEM paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("mediasrv test CA")).issuer_name(_name("mediasrv test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(ip)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "turn-cert.pem", directory / "turn-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


class Coturn:
    def __init__(self, settings: Settings, *, listen: str, workdir: Path, port: int = 3478,
                 tls_port: int = 443, relay: str | None = None) -> None:
        if not Path(TURNSERVER).exists():
            pytest.fail("coturn not installed: run scripts/bootstrap.sh with MEDIASRV_BOOTSTRAP_TEST=1")
        workdir.mkdir(parents=True, exist_ok=True)
        self.listen, self.port, self.tls_port, self.workdir = listen, port, tls_port, workdir
        self.ca_pem, cert, key = make_certificates(workdir, listen)
        settings.turn_tls_cert, settings.turn_tls_key = str(cert), str(key)
        self.config = render(settings, CoturnOptions(
            port=port, tls_port=tls_port, listening_ips=[listen], relay_ips=[relay or listen],
            log_file=str(workdir / "turn.log"), pid_file=str(workdir / "turn.pid")))
        self.config_path = workdir / "turnserver.conf"
        self.config_path.write_text(self.config)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Coturn:
        # coturn drops privileges to nobody/turnserver only when told; it runs as the test's user here.
        self.proc = subprocess.Popen([TURNSERVER, "-c", str(self.config_path), "--no-stdout-log"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            for port in (self.port, self.tls_port):
                try:
                    socket.create_connection((self.listen, port), timeout=0.2).close()
                except OSError:
                    break
            else:
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        text = ""
        for p in sorted(self.workdir.glob("turn*.log")):
            text += p.read_text(errors="replace")
        return text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def have_coturn() -> bool:
    return shutil.which("turnserver") is not None or Path(TURNSERVER).exists()
