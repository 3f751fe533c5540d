"""The relay-side examples hold: config/mosquitto/mosquitto.conf and its acl, run as they
ship (only ports and paths moved into the test's directory), confine each agent to its own
topics, whether it logs in with a password or a client certificate.

Clients are raw paho clients (to see each PUBACK's reason code) and real agents.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.apiclient import ApiClient
from demo.localbroker import free_port
from tests.support import (
    REPO,
    AgentProcess,
    agent_toml,
    product_source,
    wait_until,
    write_secret,
)
from tests.test_inbox import V1, order
from tests.tls_support import HAVE_OPENSSL, ConfiguredBroker, make_ca, make_cert

pytestmark = pytest.mark.skipif(
    not HAVE_OPENSSL or shutil.which("mosquitto_passwd") is None,
    reason="needs openssl and mosquitto_passwd",
)

EXAMPLES = REPO / "config" / "mosquitto"
A, B = "acme.erp-madrid-1", "acme.erp-barcelona-1"  # two agents of one tenant, in the acl
CONSUMER, GLOBEX, INTAKE = "consumer.acme-shops", "globex.erp-1", "intake.main"
USERS = (A, B, CONSUMER, GLOBEX, INTAKE)
NOT_AUTHORIZED = 0x87


@dataclass
class Relay:
    folder: Path
    password_port: int
    certificate_port: int

    def ca(self) -> Path:
        return self.folder / "relay-ca.pem"


def password_of(user: str) -> str:
    return f"pw-of-{user}"


def example_conf(folder: Path, password_port: int, certificate_port: int) -> str:
    """mosquitto.conf with its ports and paths moved under ``folder``; every one of them
    must still be in the example, so the test follows it."""
    text = (EXAMPLES / "mosquitto.conf").read_text()
    moves = {
        "listener 8883\n": f"listener {password_port} 127.0.0.1\n",
        "listener 8884\n": f"listener {certificate_port} 127.0.0.1\n",
        "/etc/mosquitto/": f"{folder}/etc/",
        "/var/lib/mosquitto/": f"{folder}/lib/",
        "/var/log/mosquitto/": f"{folder}/log/",
        "/run/mosquitto/": f"{folder}/run/",
    }
    for old, new in moves.items():
        assert old in text, f"config/mosquitto/mosquitto.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


def lay_out(folder: Path) -> None:
    """What mosquitto.conf expects under /etc/mosquitto, /var/lib, /var/log and /run."""
    certs = folder / "etc" / "certs"
    certs.mkdir(parents=True)
    for sub in ("lib", "log", "run"):
        (folder / sub).mkdir()
    make_ca(folder, "relay-ca")
    make_cert(folder, "relay-ca", "relay", "localhost")
    make_ca(folder, "agents-ca")
    for user in (A, B):
        make_cert(folder, "agents-ca", user, user, ip=None)
    for name in ("relay.pem", "relay.key", "agents-ca.pem"):
        shutil.copy(folder / name, certs / name)
    shutil.copy(EXAMPLES / "acl", folder / "etc" / "distillsync.acl")
    passwd = folder / "etc" / "distillsync.passwd"
    write_secret(passwd, "")
    for user in USERS:
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwd), user, password_of(user)],
            check=True,
            capture_output=True,
            timeout=30,
        )


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    folder = tmp_path_factory.mktemp("relay")
    lay_out(folder)
    ports = free_port(), free_port()
    broker = ConfiguredBroker(folder, ports[0], example_conf(folder, *ports))
    broker.start()
    yield Relay(folder, *ports)
    broker.stop()


@dataclass
class Client:
    """A paho MQTT 5 client over TLS that remembers every answer the broker gave it."""

    relay: Relay
    user: str
    certificate: bool = False
    """Log in with the user's client certificate (CN = user) instead of a password."""
    acks: dict[int, int] = field(default_factory=dict)
    received: list[tuple[str, bytes | bytearray]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            protocol=paho.MQTTv5,
            client_id=f"test-{self.user}-{id(self)}",
        )
        cert = (
            (
                str(self.relay.folder / f"{self.user}.pem"),
                str(self.relay.folder / f"{self.user}.key"),
            )
            if self.certificate
            else (None, None)
        )
        self.paho.tls_set(ca_certs=str(self.relay.ca()), certfile=cert[0], keyfile=cert[1])
        if not self.certificate:
            self.paho.username_pw_set(self.user, password_of(self.user))
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message
        self.connected = threading.Event()
        self.paho.on_connect = lambda *_: self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, code: ReasonCode, _p: Any) -> None:
        with self.lock:
            self.acks[mid] = code.value

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        with self.lock:
            self.acks[mid] = codes[0].value

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.received.append((message.topic, message.payload))

    def __enter__(self) -> Client:
        port = self.relay.certificate_port if self.certificate else self.relay.password_port
        self.paho.connect("localhost", port)
        self.paho.loop_start()
        assert self.connected.wait(10), f"{self.user} could not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def answer(self, mid: int) -> int:
        wait_until(lambda: mid in self.acks, 10, f"the broker's answer to {self.user}")
        return self.acks[mid]

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        return self.answer(self.paho.publish(topic, payload, qos=1).mid)

    def subscribe(self, topic: str) -> int:
        result, mid = self.paho.subscribe(topic, qos=1)
        assert mid is not None, f"{self.user} could not send SUBSCRIBE: {result}"
        return self.answer(mid)

    def topics(self) -> list[str]:
        with self.lock:
            return [topic for topic, _ in self.received]


def base(user: str) -> str:
    tenant, agent = user.split(".")
    return f"distillsync/{tenant}/{agent}"


@pytest.mark.parametrize("certificate", [False, True], ids=["password", "certificate CN"])
def test_an_agent_cannot_publish_into_another_agents_topics(
    relay: Relay, certificate: bool
) -> None:
    with Client(relay, CONSUMER) as consumer, Client(relay, B, certificate) as b:
        assert consumer.subscribe("distillsync/acme/+/out/#") < 0x80
        assert b.publish(f"{base(A)}/out/stock/FORGED/MAD") == NOT_AUTHORIZED
        assert b.publish(f"{base(A)}/status", b'{"state":"offline"}') == NOT_AUTHORIZED
        assert b.publish(f"{base(A)}/in/order") == NOT_AUTHORIZED
        assert b.publish(f"{base(B)}/out/stock/OWN/MAD") < 0x80
        assert b.publish(f"{base(B)}/status", b'{"state":"online"}') < 0x80
        wait_until(
            lambda: f"{base(B)}/out/stock/OWN/MAD" in consumer.topics(),
            10,
            "B's own event at the consumer",
        )
        assert consumer.topics() == [f"{base(B)}/out/stock/OWN/MAD"]


def test_an_agent_cannot_read_another_agents_inbound_topic(relay: Relay) -> None:
    with Client(relay, CONSUMER) as consumer, Client(relay, A) as a, Client(relay, B) as b:
        a.subscribe(f"{base(A)}/in/#")
        # Mosquitto grants the subscription and then delivers nothing the ACL denies.
        b.subscribe(f"{base(A)}/in/#")
        b.subscribe(f"{base(B)}/in/#")
        assert consumer.publish(f"{base(A)}/in/order", b"A's order") < 0x80
        assert consumer.publish(f"{base(B)}/in/order", b"B's order") < 0x80
        wait_until(lambda: bool(a.topics() and b.topics()), 10, "each agent's own order")
        assert a.received == [(f"{base(A)}/in/order", b"A's order")]
        assert b.received == [(f"{base(B)}/in/order", b"B's order")]


def test_a_consumer_reads_only_its_tenants_and_writes_only_inbound(relay: Relay) -> None:
    with (
        Client(relay, CONSUMER) as consumer,
        Client(relay, GLOBEX) as globex,
        Client(relay, A) as a,
    ):
        consumer.subscribe("distillsync/+/+/out/#")
        assert globex.publish(f"{base(GLOBEX)}/out/stock/G-1/MAD") < 0x80
        assert a.publish(f"{base(A)}/out/stock/A-1/MAD") < 0x80
        wait_until(lambda: bool(consumer.topics()), 10, "acme's event")
        assert consumer.topics() == [f"{base(A)}/out/stock/A-1/MAD"]
        assert consumer.publish(f"{base(A)}/out/stock/A-1/MAD") == NOT_AUTHORIZED
        assert consumer.publish(f"{base(GLOBEX)}/in/order") == NOT_AUTHORIZED
        assert consumer.publish("distillsync/_relay/acme-shops/status") < 0x80
        assert consumer.publish("distillsync/_relay/other/status") == NOT_AUTHORIZED


def test_the_intake_writes_every_agents_inbound_topic_and_nothing_else(relay: Relay) -> None:
    with (
        Client(relay, INTAKE) as intake,
        Client(relay, A) as a,
        Client(relay, GLOBEX) as globex,
    ):
        a.subscribe(f"{base(A)}/in/#")
        globex.subscribe(f"{base(GLOBEX)}/in/#")
        assert intake.publish(f"{base(A)}/in/order", b"A's order") < 0x80
        assert intake.publish(f"{base(GLOBEX)}/in/return", b"globex's return") < 0x80
        wait_until(lambda: bool(a.topics() and globex.topics()), 10, "each agent's inbound")
        assert a.received == [(f"{base(A)}/in/order", b"A's order")]
        assert globex.received == [(f"{base(GLOBEX)}/in/return", b"globex's return")]
        assert intake.publish("distillsync/_intake/main/status") < 0x80
        assert intake.publish("distillsync/_intake/other/status") == NOT_AUTHORIZED
        assert intake.publish(f"{base(A)}/out/stock/FORGED/MAD") == NOT_AUTHORIZED
        assert intake.publish(f"{base(A)}/status") == NOT_AUTHORIZED
        assert a.publish(f"{base(A)}/in/order") == NOT_AUTHORIZED  # agents only read in/


def test_a_real_agent_takes_the_intakes_order_into_its_inbox(relay: Relay, tmp_path: Path) -> None:
    """Agent B (its certificate) reads its in/# under the acl: the intake's order is in its
    inbox, once however many times it was published. (Not agent A: the relay would keep
    A's watermark for the next test's agent A.)"""
    config = agent_config(tmp_path, relay, "erp-barcelona-1", "B-SKU", "certificate")
    event = order("7001", V1, 1)
    client = ApiClient(tmp_path / "state" / "agent.sock")

    def in_inbox() -> bool:
        # Published again until it arrives: the agent subscribes as it connects, and what
        # is published before that reaches no session. The inbox keeps one row for the id.
        assert intake.publish(f"{base(B)}/in/order", event) < 0x80
        code, body = asyncio.run(client.get("/v1/inbox"))
        return code == 200 and bool(body["items"])

    with Client(relay, INTAKE) as intake, AgentProcess(config, tmp_path / "a.log") as agent:
        wait_until(partial(serving, tmp_path), 30, "the agent's status API")
        wait_until(in_inbox, 30, "the intake's order in B's inbox", every=0.5)
        [item] = asyncio.run(client.get("/v1/inbox"))[1]["items"]
        assert (item["state"], item["subject"]) == ("pending", "shopify-main/7001")
        assert agent.terminate() == 0


def agent_config(tmp: Path, relay: Relay, agent_id: str, sku: str, login: str) -> Path:
    """A real agent on ``relay``: ``login`` is ``certificate`` (CN = acme.{agent_id}) or a
    username to log in as with its password."""
    if login == "certificate":
        user = f"acme.{agent_id}"
        port = relay.certificate_port
        auth = f'cert_file = "{relay.folder}/{user}.pem"\nkey_file = "{relay.folder}/{user}.key"'
    else:
        port = relay.password_port
        password = write_secret(tmp / "relay-password", password_of(login))
        auth = f'username = "{login}"\npassword_file = "{password}"'
    config = tmp / "agent.toml"
    config.write_text(
        agent_toml(
            tmp / "state",
            f"mqtts://localhost:{port}",
            product_source(tmp / "erp.db", sku),
            agent_id=agent_id,
            extra=f'ca_file = "{relay.ca()}"\nclient_id = "test-{agent_id}-{login}"\n{auth}',
        )
    )
    return config


def dead_letters(tmp: Path) -> list[str]:
    """The reasons of the agent's dead letters, from its status API; an agent that does
    not answer is an error, never "no dead letters"."""
    code, body = asyncio.run(ApiClient(tmp / "state" / "agent.sock").get("/v1/outbox?state=dead"))
    assert code == 200, (code, body)
    return [item["reason"] for item in body["items"]]


def sequence_check(tmp: Path) -> dict[str, Any]:
    """The agent's check of its sequence against the relay's watermark (``/v1/status``)."""
    code, body = asyncio.run(ApiClient(tmp / "state" / "agent.sock").get("/v1/status"))
    assert code == 200, (code, body)
    return dict(body["sequence"])


def serving(tmp: Path) -> bool:
    """The agent's status API answers (its socket is there before it first polls)."""
    try:
        code, _ = asyncio.run(ApiClient(tmp / "state" / "agent.sock").get("/v1/health"))
    except OSError:
        return False
    return code in (200, 503)


def test_a_real_agent_logged_in_as_another_gets_dead_letters_not_delivery(
    relay: Relay, tmp_path: Path
) -> None:
    """Agent A logs in with its certificate and is delivered. An agent configured as A but
    holding B's password (a copied config, or a compromised host B) gets every event
    refused with 0x87: dead letters in its outbox, nothing at the consumer."""
    (tmp_path / "a").mkdir()
    (tmp_path / "impostor").mkdir()
    a_config = agent_config(tmp_path / "a", relay, "erp-madrid-1", "A-SKU", "certificate")
    impostor = agent_config(tmp_path / "impostor", relay, "erp-madrid-1", "FORGED-SKU", B)
    with Client(relay, CONSUMER) as consumer:
        # Subscribed (SUBACK, QoS 1 granted) before either agent publishes anything.
        assert consumer.subscribe("distillsync/acme/+/out/#") == 1
        with (
            AgentProcess(a_config, tmp_path / "a.log") as agent_a,
            AgentProcess(impostor, tmp_path / "impostor.log") as agent_b,
        ):
            for folder in (tmp_path / "a", tmp_path / "impostor"):
                wait_until(partial(serving, folder), 30, f"{folder.name}'s status API")
            wait_until(lambda: bool(dead_letters(tmp_path / "impostor")), 30, "the refused event")
            wait_until(lambda: bool(consumer.topics()), 30, "agent A's event")
            assert dead_letters(tmp_path / "impostor") == ["broker refused: Not authorized (0x87)"]
            assert dead_letters(tmp_path / "a") == []
            # A's own watermark is readable and writable under the acl; the impostor's
            # (A's topic, B's login) is neither, which it says rather than trusting a void.
            wait_until(
                lambda: sequence_check(tmp_path / "a")["watermark_published"] > 0,
                30,
                "agent A's sequence watermark acknowledged",
            )
            assert sequence_check(tmp_path / "a")["check"] == "ok"
            assert sequence_check(tmp_path / "impostor")["check"] == "unread"
            assert agent_a.terminate() == 0 and agent_b.terminate() == 0
    assert consumer.topics() == [f"{base(A)}/out/product/A-SKU"]
