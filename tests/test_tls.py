"""TLS to the relay is wired through: CA, hostname check and client certificates.

Certificates are made in the test with the openssl command line; the broker is a real
Mosquitto TLS listener on loopback. (The production issue adds the full refusal matrix.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.localbroker import LocalBroker, free_port
from tests.support import REPO

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder)


def make_cert(folder: Path, ca: str, name: str, host: str) -> None:
    (folder / f"{name}.ext").write_text(f"subjectAltName=DNS:{host},IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=folder)


@pytest.fixture
def tls_port(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto TLS listener that requires a client certificate; yields its port."""
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki, "ca")
    make_ca(pki, "other-ca")
    make_cert(pki, "ca", "server", "localhost")
    make_cert(pki, "ca", "client", "erp-1")
    port = free_port()
    broker = LocalBroker(tmp_path / "broker", extra=(
        f"listener {port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
        f"keyfile {pki}/server.key\nrequire_certificate true\n"
        # Mosquitto started as root drops to its own user, which cannot read our tmp dir.
        "user root\n"))
    broker.start()
    yield port
    broker.stop()


def check(tmp_path: Path, relay: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "erp.db").touch()
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
id = "erp-1"
tenant = "acme"
state_dir = "{tmp_path}/state"
[relay]
{relay}
[[sources]]
name = "erp"
url = "sqlite+aiosqlite:///{tmp_path}/erp.db"
  [[sources.entities]]
  entity = "product"
  query = "SELECT 'A' AS sku"
  key = ["sku"]
  mode = "snapshot"
""")
    return subprocess.run([sys.executable, "-m", "agent.cli", "check", "-c", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_mtls_with_the_right_ca_and_client_certificate_connects(tls_port: int,
                                                                 tmp_path: Path) -> None:
    pki, port = tmp_path / "pki", tls_port
    result = check(tmp_path, f'url = "mqtts://localhost:{port}"\nca_file = "{pki}/ca.pem"\n'
                             f'cert_file = "{pki}/client.pem"\nkey_file = "{pki}/client.key"')
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok   relay mqtts://localhost:{port}: connected" in result.stdout


def test_a_server_signed_by_another_ca_is_refused(tls_port: int, tmp_path: Path) -> None:
    pki, port = tmp_path / "pki", tls_port
    result = check(tmp_path, f'url = "mqtts://localhost:{port}"\n'
                             f'ca_file = "{pki}/other-ca.pem"\n'
                             f'cert_file = "{pki}/client.pem"\nkey_file = "{pki}/client.key"')
    assert result.returncode == 78
    assert "relay.url: cannot connect" in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
