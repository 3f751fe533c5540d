"""Real parts for tests: a Mosquitto we can stop, a subscriber, the agent as a process.

Nothing here mocks the broker or the databases; every helper cleans up what it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import RelayError
from demo.localbroker import LocalBroker, free_port

REPO = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Mosquitto(LocalBroker):
    """The same private broker the demo uses; failures surface as test errors.

    ``free_port()`` only finds a port that is free now: another process (a parallel
    pytest-xdist worker, someone else's tests) may bind it before Mosquitto does. So it
    counts as started only once this Mosquitto itself listens there, and a first start
    that lost its port tries again on a new one (a restart keeps its port, as clients
    reconnect to it).
    """

    _started_once = False

    def start(self, timeout: float = 10.0) -> None:
        for _ in range(4):
            try:
                super().start(timeout)
            except RelayError:
                lost_port = "Address already in use" in self.log_file.read_text(errors="replace")
                if self._started_once or not lost_port:
                    raise
                self.log_file.unlink()
                self.port = free_port()
                continue
            self._started_once = True
            return
        raise RelayError(f"mosquitto found no free port; see {self.log_file}")

    def _listening(self) -> bool:
        if not super()._listening():
            return False
        assert self.proc is not None
        try:
            listens = psutil.Process(self.proc.pid).net_connections("tcp")
        except psutil.NoSuchProcess:
            return False  # it exited: the next look says so
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in listens)


@dataclass
class Received:
    topic: str
    event: dict[str, Any]
    user_properties: dict[str, str]
    content_type: str | None


@dataclass
class Collector:
    """A QoS 1 subscriber on its own thread: the relay side of end-to-end tests."""

    port: int
    topic: str = "distillsync/#"
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            protocol=paho.MQTTv5,
            client_id=f"collector-{os.getpid()}-{id(self)}",
        )
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = dict(getattr(props, "UserProperty", []) or [])
        content_type = getattr(props, "ContentType", None)
        try:
            event = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            event = {"raw": msg.payload.decode(errors="replace")}
        with self.lock:
            self.messages.append(Received(msg.topic, event, user, content_type))

    def __enter__(self) -> Collector:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("collector could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def events(self) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if "/out/" in m.topic]

    def latest_by_subject(self, entity: str) -> dict[str, dict[str, Any]]:
        """What a sequence-gated subscriber would hold: the newest event per key."""
        latest: dict[str, dict[str, Any]] = {}
        for m in self.events():
            e = m.event
            if e["type"].split(".")[1] != entity:
                continue
            old = latest.get(e["subject"])
            if old is None or e["sequence"] > old["sequence"]:
                latest[e["subject"]] = e
        return latest

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float, what: str
    ) -> None:
        wait_until(lambda: predicate(self.events()), timeout, what)


STOCK_LEVELS_SOURCE = """[[sources]]
name = "{name}"
url = "sqlite+aiosqlite:///{db}"
poll_interval = "200ms"
  [[sources.entities]]
  entity = "stock"
  query = "SELECT sku, warehouse, on_hand, tms FROM stock_levels"
  key = ["sku", "warehouse"]
  cursor = "{cursor}"
"""


PRICES_ENTITY = """  [[sources.entities]]
  entity = "price"
  query = "SELECT sku, price, tms FROM prices"
  key = ["sku"]
  cursor = "tms"
"""
"""A second entity for :func:`stock_levels_source`: ``prices(sku, price, tms)``."""


def stock_levels_source(db: Path, cursor: str = "tms", name: str = "erp") -> str:
    """A source on a plain SQLite ``stock_levels(sku, warehouse, on_hand, tms)`` table."""
    return STOCK_LEVELS_SOURCE.format(db=db, cursor=cursor, name=name)


def product_source(db: Path, *skus: str) -> str:
    """A source on a new SQLite ``products(sku)`` table holding ``skus``, read in snapshot
    mode: one product event per SKU, for tests about the link rather than the capture."""
    with contextlib.closing(sqlite3.connect(db)) as erp, erp:
        erp.execute("CREATE TABLE products (sku TEXT)")
        erp.executemany("INSERT INTO products VALUES (?)", [(sku,) for sku in skus])
    return (
        f'[[sources]]\nname = "erp"\nurl = "sqlite+aiosqlite:///{db}"\n'
        '  [[sources.entities]]\n  entity = "product"\n  query = "SELECT sku FROM products"\n'
        '  key = ["sku"]\n  mode = "snapshot"\n'
    )


def write_secret(path: Path, secret: str | bytes) -> Path:
    """A secret file as the agent and the consumer require one: mode 0600 (they refuse a
    secret file its group or other users can read)."""
    path.write_bytes(secret.encode() if isinstance(secret, str) else secret)
    path.chmod(0o600)
    return path


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``distillsync ARGS -c CONFIG`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def agent_toml(
    state_dir: Path,
    relay_url: str,
    sources: str,
    *,
    agent_id: str = "erp-1",
    extra: str = "",
    api_extra: str = "",
) -> str:
    return (
        f'[agent]\nid = "{agent_id}"\ntenant = "acme"\nstate_dir = "{state_dir}"\n'
        f'shutdown_timeout = "5s"\n\n'
        f'[relay]\nurl = "{relay_url}"\nkeepalive = "5s"\nack_timeout = "10s"\n{extra}\n'
        f'[api]\nsocket = "{state_dir}/agent.sock"\n{api_extra}\n{sources}'
    )


class AgentProcess:
    """``distillsync run`` as a real child process, so tests can SIGKILL it."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (sys.executable, "-m", "cli"),
    ) -> None:
        """``prefix`` runs ``distillsync``: this checkout's by default, or an installed one,
        or this one inside a sandbox."""
        self.config = config
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.command = [*prefix, "run", "-c", str(config)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.kill()


@contextlib.contextmanager
def running_agent(config: Path, log: Path) -> Iterator[AgentProcess]:
    with AgentProcess(config, log) as agent:
        yield agent
