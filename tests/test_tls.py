"""TLS to the relay: what must connect does, and each way it can be wrong is refused with
words an operator can act on, in ``distillsync check`` and in the daemon's log.

Certificates are made in the test with the openssl command line (tests/tls_support.py);
the relay is one real Mosquitto with a TLS listener per case. Most cases run ``check``'s
relay step in this process (a ``distillsync`` process spends seconds importing); one
runs the command itself, and one the daemon.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Required, TypedDict

import pytest

from agent.check import check_relay
from agent.config import load_config, parse_config
from agent.errors import ConfigError
from demo.localbroker import free_port
from tests.support import (
    AgentProcess,
    agent_toml,
    product_source,
    run_cli,
    wait_until,
    write_secret,
)
from tests.tls_support import HAVE_OPENSSL, ConfiguredBroker, make_ca, make_cert

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command")

PASSWORD = "correct-horse-battery-staple"


@dataclass
class Relay:
    pki: Path
    ports: dict[str, int]


def listeners(pki: Path, ports: dict[str, int]) -> str:
    """One TLS listener per case, each with its own rules (per_listener_settings)."""
    tls = f"cafile {pki}/ca.pem\ntls_version tlsv1.2\n"
    return (
        "per_listener_settings true\n"
        f"listener {ports['plain']} 127.0.0.1\nallow_anonymous true\n"
        # the relay wants a client certificate signed by our CA
        f"listener {ports['mtls']} 127.0.0.1\n{tls}certfile {pki}/server.pem\n"
        f"keyfile {pki}/server.key\nrequire_certificate true\nallow_anonymous true\n"
        # its certificate ran out in 2020
        f"listener {ports['expired']} 127.0.0.1\n{tls}certfile {pki}/expired.pem\n"
        f"keyfile {pki}/expired.key\nallow_anonymous true\n"
        # its certificate names localhost only: 127.0.0.1 is another name
        f"listener {ports['named']} 127.0.0.1\n{tls}certfile {pki}/named.pem\n"
        f"keyfile {pki}/named.key\nallow_anonymous true\n"
        # username and password over TLS
        f"listener {ports['login']} 127.0.0.1\n{tls}certfile {pki}/server.pem\n"
        f"keyfile {pki}/server.key\nallow_anonymous false\npassword_file {pki}/passwd\n"
    )


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    pki = tmp_path_factory.mktemp("pki")
    make_ca(pki, "ca")
    make_ca(pki, "other-ca")
    make_cert(pki, "ca", "server", "localhost")
    make_cert(pki, "ca", "expired", "localhost", expired=True)
    make_cert(pki, "ca", "named", "localhost", ip=None)
    make_cert(pki, "ca", "client", "acme.erp-1", ip=None)
    make_cert(pki, "other-ca", "rogue", "acme.erp-1", ip=None)
    (pki / "passwd").touch()
    subprocess.run(
        ["mosquitto_passwd", "-b", str(pki / "passwd"), "acme.erp-1", PASSWORD],
        check=True,
        capture_output=True,
        timeout=30,
    )
    ports = {name: free_port() for name in ("plain", "mtls", "expired", "named", "login")}
    broker = ConfiguredBroker(
        tmp_path_factory.mktemp("relay"), ports["plain"], listeners(pki, ports)
    )
    broker.start()
    yield Relay(pki, ports)
    broker.stop()


def agent_config(tmp_path: Path, relay: tuple[str, str]) -> Path:
    """An agent for ``relay``, ``(url, the other [relay] lines)``."""
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state", relay[0], product_source(tmp_path / "erp.db", "A"), extra=relay[1]
        )
    )
    return config


def relay_lines(
    relay: Relay,
    listener: str,
    *,
    host: str = "localhost",
    ca: str | None = "ca",
    client: str | None = None,
    password: str | None = None,
    secrets: Path | None = None,
) -> tuple[str, str]:
    """The relay's url and ``[relay]`` lines for ``listener``: ``ca`` verifies it (None: the
    system trust store), ``client`` names a certificate to present, ``password`` goes in a
    file."""
    pki = relay.pki
    lines = []
    if ca is not None:
        lines.append(f'ca_file = "{pki}/{ca}.pem"')
    if client is not None:
        lines += [f'cert_file = "{pki}/{client}.pem"', f'key_file = "{pki}/{client}.key"']
    if password is not None:
        assert secrets is not None
        secret = write_secret(secrets / "relay-password", password)
        lines += ['username = "acme.erp-1"', f'password_file = "{secret}"']
    return f"mqtts://{host}:{relay.ports[listener]}", "\n".join(lines)


class Setup(TypedDict, total=False):
    """How the agent is set up: ``relay_lines``'s keyword arguments but ``secrets``."""

    listener: Required[str]
    host: str
    ca: str | None
    client: str | None
    password: str | None


CONNECTS: dict[str, Setup] = {
    "mutual TLS: our CA, our client certificate": dict(listener="mtls", client="client"),
    "the certificate's own name": dict(listener="named", host="localhost"),
    "username and password over TLS": dict(listener="login", password=PASSWORD),
}


async def check_the_relay(tmp_path: Path, lines: tuple[str, str]) -> tuple[str, list[str]]:
    """What ``distillsync check`` says of the relay: its ok line, and its problems."""
    said: list[str] = []
    problems = await check_relay(load_config(agent_config(tmp_path, lines)), said.append)
    return "\n".join(said), problems


@pytest.mark.parametrize("case", list(CONNECTS))
async def test_the_right_certificates_and_login_connect(
    relay: Relay, tmp_path: Path, case: str
) -> None:
    lines = relay_lines(relay, secrets=tmp_path, **CONNECTS[case])
    said, problems = await check_the_relay(tmp_path, lines)
    assert problems == []
    assert said.startswith("ok   relay mqtts://")


# (how the agent is set up, what the operator must read)
REFUSED: dict[str, tuple[Setup, str]] = {
    "a CA that did not sign the relay's certificate": (
        dict(listener="mtls", ca="other-ca", client="client"),
        "the relay's TLS certificate is not signed by a CA we trust; set relay.ca_file",
    ),
    "the system trust store, for a private CA": (
        dict(listener="mtls", ca=None, client="client"),
        "the relay's TLS certificate is not signed by a CA we trust; set relay.ca_file",
    ),
    "an expired server certificate": (
        dict(listener="expired"),
        "the relay's TLS certificate has expired",
    ),
    "a host name the certificate does not list": (
        dict(listener="named", host="127.0.0.1"),
        "the relay's TLS certificate is not issued for 127.0.0.1",
    ),
    "no client certificate where one is required": (
        dict(listener="mtls"),
        "the relay closed the connection while we logged in (a TLS relay does that when it "
        "requires a client certificate and gets none it trusts: see relay.cert_file",
    ),
    "a client certificate from a CA the relay does not trust": (
        dict(listener="mtls", client="rogue"),
        "the relay closed the connection while we logged in",
    ),
    "a wrong password": (
        dict(listener="login", password="not-the-password"),
        "the relay refused the login: check relay.username and the password",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_each_tls_mistake_is_refused_in_words(
    relay: Relay, tmp_path: Path, case: str
) -> None:
    setup, words = REFUSED[case]
    lines = relay_lines(relay, secrets=tmp_path, **setup)
    said, problems = await check_the_relay(tmp_path, lines)
    host = setup.get("host", "localhost")
    port = relay.ports[setup["listener"]]
    assert len(problems) == 1 and said == ""
    assert problems[0].startswith(f"relay.url: cannot connect to {host}:{port}: {words}"), problems[
        0
    ]


def test_check_exits_78_and_never_shows_the_password(relay: Relay, tmp_path: Path) -> None:
    wrong = "not-the-password-0451"
    config = agent_config(tmp_path, relay_lines(relay, "login", password=wrong, secrets=tmp_path))
    result = run_cli(config, "check")
    assert result.returncode == 78
    assert "relay.url: cannot connect to localhost:" in result.stderr
    assert "the relay refused the login" in result.stderr
    assert wrong not in result.stdout + result.stderr


def test_the_daemon_says_why_and_keeps_trying(relay: Relay, tmp_path: Path) -> None:
    """The same words in the running agent's log, once per attempt; it stays up and
    reconnects on its own once the certificate is fixed (here: never)."""
    config = agent_config(tmp_path, relay_lines(relay, "mtls"))
    with AgentProcess(config, tmp_path / "agent.log") as agent:
        wait_until(lambda: "(attempt 2)" in agent.output(), 30, "a second attempt")
        assert agent.terminate() == 0
    log = agent.output()
    assert (
        f"relay unreachable (attempt 1): cannot connect to localhost:"
        f"{relay.ports['mtls']}: the relay closed the connection while we logged in"
    ) in log
    assert "Traceback" not in log


def test_plain_mqtt_leaves_loopback_only_with_allow_insecure() -> None:
    raw: dict[str, Any] = {
        "agent": {"id": "erp-1", "tenant": "acme"},
        "relay": {"url": "mqtt://relay.example.com:1883"},
        "sources": [
            {
                "name": "erp",
                "url": "sqlite+aiosqlite:///erp.db",
                "entities": [
                    {
                        "entity": "product",
                        "query": "SELECT 1 AS sku",
                        "key": ["sku"],
                        "mode": "snapshot",
                    }
                ],
            }
        ],
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(raw)
    assert refused.value.problems == [
        "relay.url: mqtt:// sends data unencrypted to relay.example.com; use mqtts:// or set "
        "relay.allow_insecure = true"
    ]
    raw["relay"]["allow_insecure"] = True
    assert parse_config(raw).relay.allow_insecure
