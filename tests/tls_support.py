"""TLS and broker helpers for tests: certificates made with the openssl command line (no
Python crypto library is needed), a CA and certificates it signs for a name, valid now
or long ago; and a Mosquitto that runs a config of the test's own.

EC P-256 keys keep each certificate well under a tenth of a second to make. openssl
writes private keys mode 0600, as the agent requires of a ``key_file``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from demo.localbroker import LocalBroker

HAVE_OPENSSL = shutil.which("openssl") is not None
_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

# ``openssl x509`` 3.0 cannot backdate a certificate (-not_before came in 3.4), so expired
# ones are signed with ``openssl ca``, which takes -startdate/-enddate.
_CA_CONF = """[ca]
default_ca = this
[this]
database = {folder}/{ca}.index
new_certs_dir = {folder}
serial = {folder}/{ca}.serial
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
[anything]
commonName = supplied
"""


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> Path:
    """``{name}.pem`` and ``{name}.key``: a self-signed CA; returns the certificate."""
    openssl(
        "req",
        "-x509",
        *_KEY,
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        cwd=folder,
    )
    return folder / f"{name}.pem"


def make_cert(
    folder: Path,
    ca: str,
    name: str,
    cn: str,
    *,
    dns: str | None = None,
    ip: str | None = "127.0.0.1",
    expired: bool = False,
) -> Path:
    """``{name}.pem`` and ``{name}.key`` signed by CA ``ca``, for subject ``CN={cn}`` with
    subjectAltName ``DNS:{dns}`` (``cn`` unless given) and ``IP:{ip}``; returns the
    certificate. ``expired`` makes one that was valid for a day in 2020."""
    names = [f"DNS:{dns or cn}", *([f"IP:{ip}"] if ip else [])]
    (folder / f"{name}.ext").write_text(f"subjectAltName={','.join(names)}\n")
    openssl(
        "req",
        "-new",
        *_KEY,
        "-subj",
        f"/CN={cn}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=folder,
    )
    if expired:
        _sign_backdated(folder, ca, name)
    else:
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.pem",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=folder,
        )
    return folder / f"{name}.pem"


def _sign_backdated(folder: Path, ca: str, name: str) -> None:
    (folder / f"{ca}.index").touch()
    serial = folder / f"{ca}.serial"
    if not serial.exists():
        serial.write_text("1000\n")
    conf = folder / f"{ca}.cnf"
    conf.write_text(_CA_CONF.format(folder=folder, ca=ca))
    openssl(
        "ca",
        "-batch",
        "-config",
        str(conf),
        "-cert",
        f"{ca}.pem",
        "-keyfile",
        f"{ca}.key",
        "-in",
        f"{name}.csr",
        "-out",
        f"{name}.pem",
        "-extfile",
        f"{name}.ext",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-notext",
        cwd=folder,
    )


class ConfiguredBroker(LocalBroker):
    """Mosquitto with a whole config of the test's own (TLS listeners, ACLs, password
    files), where :class:`LocalBroker` adds to its anonymous loopback listener. ``port``
    is the listener ``start()`` waits for; ``text`` must define it. Runs as root (see
    ``user root``: Mosquitto started as root drops to its own user, which cannot read
    pytest's temporary directory)."""

    def __init__(self, workdir: Path, port: int, text: str) -> None:
        super().__init__(workdir)
        self.port = port
        self.text = text

    def config_text(self) -> str:
        return f"user root\n{self.text}\n"
