"""A refused TLS handshake leaves no socket open, in the relay kit as in the agent.

paho wraps its TCP socket in the context's ``sslsocket_class`` and, when the handshake
fails, drops it without closing it: the traceback's frames keep it until the garbage
collector runs, one more open socket per reconnect attempt. With the collector off, this
counts the process's TCP connections to the relay after a few refused connects.
"""

from __future__ import annotations

import gc
import re
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agent import publisher
from demo.localbroker import free_port
from relay import subscriber
from relay.subscriber import Session, SessionSettings
from tests.support import REPO
from tests.tls_support import HAVE_OPENSSL, ConfiguredBroker, make_ca, make_cert

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command")

ATTEMPTS = 5


class Relay:
    def __init__(self, pki: Path, port: int) -> None:
        self.pki, self.port = pki, port


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A TLS listener that wants a client certificate signed by its CA, beside the plain
    one the broker starts on; and a CA that did not sign the relay's certificate."""
    pki = tmp_path_factory.mktemp("pki")
    make_ca(pki, "ca")
    make_ca(pki, "other-ca")
    make_cert(pki, "ca", "server", "localhost")
    plain, mtls = free_port(), free_port()
    broker = ConfiguredBroker(
        tmp_path_factory.mktemp("relay"),
        plain,
        (
            "per_listener_settings true\n"
            f"listener {plain} 127.0.0.1\nallow_anonymous true\n"
            f"listener {mtls} 127.0.0.1\ncafile {pki}/ca.pem\ntls_version tlsv1.2\n"
            f"certfile {pki}/server.pem\nkeyfile {pki}/server.key\n"
            "require_certificate true\nallow_anonymous true\n"
        ),
    )
    broker.start()
    yield Relay(pki, mtls)
    broker.stop()


def open_connections(port: int) -> list[object]:
    return [c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port]


TlsContext = Callable[[Path | None, Path | None, Path | None], ssl.SSLContext]
REFUSALS = {
    # We refuse the relay: its certificate is not signed by the CA we trust.
    "relay certificate untrusted": ("other-ca", None),
    # The relay refuses us: no client certificate. TLS 1.3 would finish the handshake
    # before the relay says so; in TLS 1.2 its alert fails the handshake itself.
    "no client certificate": ("ca", ssl.TLSVersion.TLSv1_2),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize(
    "make_context", [subscriber.tls_context, publisher.tls_context], ids=["relay kit", "agent"]
)
async def test_refused_handshakes_leave_no_socket_open(
    relay: Relay, make_context: TlsContext, refusal: str
) -> None:
    ca, newest_tls = REFUSALS[refusal]
    context = make_context(relay.pki / f"{ca}.pem", None, None)
    if newest_tls is not None:
        context.maximum_version = newest_tls
    settings = SessionSettings(
        url=f"mqtts://localhost:{relay.port}", client_id="no-cert", topics=["t/#"], tls=context
    )
    gc.disable()  # what the collector would find later is what this looks for
    try:
        for _ in range(ATTEMPTS):
            with pytest.raises(OSError, match="relay unreachable"):
                async with Session(settings):
                    pass
        left_open = open_connections(relay.port)
    finally:
        gc.enable()
        gc.collect()
    assert left_open == [], f"{len(left_open)} of {ATTEMPTS} refused sockets left open"


def test_what_agent_and_relay_share_imports_neither() -> None:
    """``common`` is where both may import from: it must stand below both, and own no
    outside dependency (those have their one owner each, test_layering)."""
    pattern = re.compile(r"^\s*(?:import|from)\s+(\w+)", re.MULTILINE)
    allowed = set(sys.stdlib_module_names) | {"__future__", "common"}
    for path in (REPO / "common").rglob("*.py"):
        imported = set(pattern.findall(path.read_text()))
        assert imported <= allowed, (path, imported - allowed)
    code = (
        "import sys, common.tls; print(sorted(m for m in sys.modules if m.split('.')[0] "
        "in ('agent', 'relay', 'aiomqtt', 'paho')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stderr
