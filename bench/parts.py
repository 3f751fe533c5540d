"""The real parts a bench run needs: a broker it can stop, a subscriber, an ERP, the agent.

Everything runs on loopback, in a temporary directory, and is stopped by whoever
started it. Times are ``time.monotonic()`` in the bench process: commit times, receipt
times and the start and end of each phase are all taken here, on one clock.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from demo.localbroker import LocalBroker
from tests.erp import ErpDb

REPO = Path(__file__).resolve().parent.parent

TENANT = "acme"
PREFIX = "distillsync"
# Dolibarr's stock query (tests/erp.py) plus one bench column that rides along in ``data``:
# the id of the ERP transaction that wrote the row, whose commit time the bench keeps.
STOCK_QUERY = (
    "SELECT p.ref AS sku, e.ref AS warehouse, s.reel AS on_hand, s.bench_batch AS batch, "
    "s.tms FROM llx_product_stock s JOIN llx_product p ON p.rowid = s.fk_product "
    "JOIN llx_entrepot e ON e.rowid = s.fk_entrepot"
)
QUIET_EPOCH = 1_577_836_800  # 2020-01-01: setup rows are stamped in the past, a minute apart


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.02
) -> float:
    """Poll ``predicate``; return the monotonic time it first held. Raises on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic()


@dataclass
class MachineLoad:
    """CPU the rest of the machine used while the bench ran: everything busy on the
    machine minus this process and its (waited-for) children: broker, agents, publishers."""

    started: float = field(default_factory=time.monotonic)
    busy0: float = field(default_factory=lambda: MachineLoad.busy())
    ours0: float = field(default_factory=lambda: MachineLoad.ours())

    @staticmethod
    def busy() -> float:
        t = psutil.cpu_times()
        return float(
            sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        )

    @staticmethod
    def ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others(self) -> float:
        """Average cores used by other processes since ``started``."""
        wall = time.monotonic() - self.started
        other = (self.busy() - self.busy0) - (self.ours() - self.ours0)
        return max(0.0, other / wall) if wall > 0 else 0.0


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class Broker(LocalBroker):
    """The demo's private Mosquitto, configured for measuring.

    ``max_inflight_messages`` is also the Receive Maximum Mosquitto 2 announces to
    MQTT 5 clients, so it caps the publisher's window; ``max_queued_messages 0`` lets a
    slow subscriber queue instead of losing QoS 1 messages, and persistence keeps the
    subscriber's session (and its queue) across the outage scenario's restart.
    """

    def __init__(self, workdir: Path, max_inflight: int, extra: list[str] | None = None) -> None:
        super().__init__(workdir)
        self.max_inflight = max_inflight
        self.lines = extra or []

    def config_text(self) -> str:
        # Run as whoever runs the bench: started as root, Mosquitto would otherwise switch
        # to the "mosquitto" user, which cannot write its persistence file in our temp dir.
        return (
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"max_inflight_messages {self.max_inflight}\nmax_queued_messages 0\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            + "".join(f"{line}\n" for line in self.lines)
        )

    def cpu(self) -> float:
        if self.proc is None:
            return 0.0
        try:
            return cpu_seconds(psutil.Process(self.proc.pid))
        except psutil.NoSuchProcess:
            return 0.0


class Received:
    """What both subscribers share: the kept messages and how to wait for them."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.only = f"{PREFIX}/{TENANT}/"
        self.connected_at = 0.0
        self.subscribed = threading.Event()

    def expect(self, agent_id: str) -> None:
        """Forget what arrived so far; from now on keep only ``agent_id``'s events."""
        self.only = f"{PREFIX}/{TENANT}/{agent_id}/out/"
        self.received = []

    def count(self) -> int:
        return len(self.received)

    def wait_for(self, count: int, timeout: float, what: str) -> None:
        """Wait until ``count`` distinct events arrived (duplicates are possible)."""
        deadline = time.monotonic() + timeout
        wait_until(lambda: self.count() >= count, timeout, what, every=0.01)
        while len(self.distinct()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.2)

    def distinct(self) -> dict[str, tuple[float, dict[str, Any]]]:
        """First receipt of each event id: ``{id: (time, event)}``."""
        first: dict[str, tuple[float, dict[str, Any]]] = {}
        for at, payload in list(self.received):
            event = orjson.loads(payload)
            first.setdefault(event["id"], (at, event))
        return first

    def payload_size(self) -> float:
        sample = self.received[:1000]
        return sum(len(p) for _, p in sample) / max(1, len(sample))

    def __enter__(self) -> Received:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        raise NotImplementedError


class PahoSubscriber(Received):
    """A QoS 1 subscriber on paho's own thread, as a relay-kit consumer would be. On two
    cores it costs about as much CPU per message as the publisher, so it is the
    ``--subscriber paho`` option rather than the default."""

    name = "paho"

    def __init__(self, port: int, topic: str = f"{PREFIX}/#") -> None:
        super().__init__()
        self.port = port
        self.topic = topic
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=f"bench-sub-{os.getpid()}"
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.reconnect_delay_set(1, 1)

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        self.connected_at = time.monotonic()
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.startswith(self.only):
            self.received.append((time.monotonic(), bytes(msg.payload)))

    def __enter__(self) -> PahoSubscriber:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the bench subscriber could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _mqtt_packet(first: int, body: bytes) -> bytes:
    length, size = bytearray(), len(body)
    while True:
        size, digit = size >> 7, size & 0x7F
        length.append(digit | (0x80 if size else 0))
        if not size:
            return bytes([first]) + bytes(length) + body


class LeanSubscriber(Received):
    """A QoS 1 MQTT 5 subscriber that speaks just enough of the protocol (CONNECT with a
    persistent session, SUBSCRIBE, PUBLISH in, PUBACK out) on a plain socket, on a thread.

    It answers every PUBLISH with its PUBACK as it parses it (one ``sendall`` per
    received chunk) and costs a fraction of paho's CPU per message, so on a two-core
    machine the bench measures the publisher rather than its own subscriber.
    """

    name = "lean"

    def __init__(self, port: int, topic: str = f"{PREFIX}/#") -> None:
        super().__init__()
        self.port = port
        self.topic = topic
        self.client_id = f"bench-lean-{os.getpid()}"
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="lean-sub")

    def __enter__(self) -> LeanSubscriber:
        self._thread.start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the bench subscriber could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendall(b"\xe0\x00")  # DISCONNECT
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self._session()
            if not self._stop.is_set():
                time.sleep(0.2)  # the broker is down (the outage scenario): try again

    def _session(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            # CONNECT: MQTT 5, clean start off, keepalive 0, Session Expiry 3600 s.
            props = b"\x11" + (3600).to_bytes(4, "big")
            variable = _mqtt_string("MQTT") + b"\x05\x00\x00\x00" + bytes([len(props)]) + props
            sock.sendall(_mqtt_packet(0x10, variable + _mqtt_string(self.client_id)))
            # SUBSCRIBE packet id 1, no properties, QoS 1.
            sock.sendall(_mqtt_packet(0x82, b"\x00\x01\x00" + _mqtt_string(self.topic) + b"\x01"))
            self._read(sock)

    def _read(self, sock: socket.socket) -> None:
        buffer = bytearray()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            now = time.monotonic()
            buffer += chunk
            acks: list[bytes] = []
            pos = 0
            while True:
                start = pos
                if len(buffer) - pos < 2:
                    break
                first, size, shift, pos = buffer[pos], 0, 0, pos + 1
                while pos < len(buffer):
                    digit = buffer[pos]
                    pos += 1
                    size |= (digit & 0x7F) << shift
                    shift += 7
                    if not digit & 0x80:
                        break
                else:
                    pos = start
                    break
                if len(buffer) - pos < size:
                    pos = start
                    break
                body = bytes(buffer[pos : pos + size])
                pos += size
                kind = first >> 4
                if kind == 3:
                    self._publish(first, body, now, acks)
                elif kind == 2:  # CONNACK
                    if len(body) < 2 or body[1] != 0:
                        raise OSError(f"CONNACK refused: {body!r}")
                    self.connected_at = now
                elif kind == 9:  # SUBACK
                    self.subscribed.set()
                elif kind == 14:  # DISCONNECT from the broker
                    return
            del buffer[:pos]
            if acks:
                sock.sendall(b"".join(acks))

    def _publish(self, first: int, body: bytes, now: float, acks: list[bytes]) -> None:
        topic_end = 2 + int.from_bytes(body[:2], "big")
        pos = topic_end
        if first & 0x06:  # QoS 1
            acks.append(b"\x40\x02" + body[pos : pos + 2])
            pos += 2
        size, shift = 0, 0
        while True:  # the properties' length, a variable byte integer
            digit = body[pos]
            pos += 1
            size |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        if body[2:topic_end].decode().startswith(self.only):
            self.received.append((now, body[pos + size :]))


SUBSCRIBERS: dict[str, Callable[[int], Received]] = {"lean": LeanSubscriber, "paho": PahoSubscriber}


# --- the ERP ----------------------------------------------------------------------------


def make_erp(workdir: Path, products: int, warehouses: int = 2) -> ErpDb:
    """A Dolibarr-shaped SQLite ERP (tests/erp.py) with products and warehouses, no stock."""
    erp = ErpDb("sqlite", workdir)
    erp.execute("ALTER TABLE llx_product_stock ADD COLUMN bench_batch INTEGER")
    erp.add_warehouses(*[f"WH{w}" for w in range(1, warehouses + 1)])
    erp.add_products(products)
    return erp


def quiet_stamp(i: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(QUIET_EPOCH + 60 * i))


def insert_stock(
    erp: ErpDb, products: range, warehouses: int, batch: int, quiet: bool = False
) -> None:
    """One transaction with a stock row per product and warehouse. ``quiet`` stamps them a
    minute apart in 2020, so a later lookback window holds none of them; otherwise they
    carry ``datetime('now')`` as Dolibarr writes them."""
    rows = [(p, w, float(p % 97), batch) for p in products for w in range(1, warehouses + 1)]
    if quiet:
        erp.executemany(
            "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel, bench_batch, tms) "
            "VALUES (?, ?, ?, ?, ?)",
            [(*row, quiet_stamp(i)) for i, row in enumerate(rows)],
        )
    else:
        erp.executemany(
            "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel, bench_batch) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )


def stock_entity_toml(lookback: str) -> str:
    return (
        f'[[sources.entities]]\nentity = "stock"\nquery = "{STOCK_QUERY}"\n'
        f'key = ["sku", "warehouse"]\nmode = "timestamp"\ncursor = "tms"\n'
        f'lookback = "{lookback}"\n'
    )


@dataclass(frozen=True)
class AgentOptions:
    poll_interval: str
    page_size: int
    lookback: str
    window: int
    synchronous: str


def agent_toml(
    state_dir: Path, relay_url: str, source: str, agent_id: str, opts: AgentOptions
) -> str:
    """The agent's config, in the shape of tests/support.py's, with the bench's knobs."""
    return (
        f'[agent]\nid = "{agent_id}"\ntenant = "{TENANT}"\nstate_dir = "{state_dir}"\n'
        f'shutdown_timeout = "5s"\n\n'
        f'[relay]\nurl = "{relay_url}"\nkeepalive = "5s"\nack_timeout = "10s"\n'
        f"max_inflight = {opts.window}\n\n"
        f'[api]\nsocket = "{state_dir}/agent.sock"\n\n'
        f'[outbox]\nsynchronous = "{opts.synchronous}"\n\n'
        f'[[sources]]\nname = "dolibarr"\nurl = "{source}"\n'
        f'poll_interval = "{opts.poll_interval}"\npage_size = {opts.page_size}\n'
        f"{stock_entity_toml(opts.lookback)}"
    )


def write_agent_config(
    workdir: Path, agent_id: str, broker: Broker, erp: ErpDb, opts: AgentOptions
) -> Path:
    config = workdir / "agent.toml"
    config.write_text(agent_toml(workdir / "state", broker.url, erp.url, agent_id, opts))
    return config


# --- the agent --------------------------------------------------------------------------


@dataclass
class RssSampler:
    """Samples a process's RSS on a thread; ``peak`` is the highest seen since ``reset``."""

    proc: psutil.Process
    every: float = 0.05
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, int(self.proc.memory_info().rss))
            self._stop.wait(self.every)

    def reset(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.peak = int(self.proc.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Agent:
    """``python -m cli run -c FILE`` as a child process (optionally under cProfile), in
    ``tree``, this checkout or another."""

    def __init__(
        self, workdir: Path, config: Path, profile: Path | None = None, tree: Path = REPO
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.tree = tree
        self.log = workdir / "agent.log"
        self.outbox = workdir / "state" / "outbox.db"
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.rss: RssSampler | None = None

    def start(self) -> None:
        runner = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        # A tree from before the command line left agent/ (issue 10) runs it as agent.cli.
        main = "cli" if (self.tree / "cli").is_dir() else "agent.cli"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *runner, "-m", main, "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tree,
            )
        self.ps = psutil.Process(self.proc.pid)
        self.rss = RssSampler(self.ps).start()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"the agent exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
            )

    def wait_log(self, needle: str, timeout: float = 60, times: int = 1) -> None:
        def seen() -> bool:
            self._alive()
            return self.output().count(needle) >= times

        wait_until(seen, timeout, f"{needle!r} in the agent log", every=0.05)

    def window(self) -> int | None:
        found = re.findall(r"relay connected \(window (\d+)", self.output())
        return int(found[-1]) if found else None

    def cpu(self) -> float:
        assert self.ps is not None
        return cpu_seconds(self.ps)

    def rss_now(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def peak_rss(self) -> int:
        """The kernel's high-water mark (VmHWM) for the whole life of the process."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else 0

    def outbox_query(self, sql: str) -> int:
        """One read of the agent's outbox from outside (WAL: readers do not block it)."""
        with contextlib.closing(
            sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=10)
        ) as db:
            row = db.execute(sql).fetchone()
        return int(row[0] or 0) if row else 0

    def pending(self) -> int:
        return self.outbox_query("SELECT count(*) FROM events WHERE state = 0")

    def oldest_pending(self) -> int:
        """The lowest pending sequence, 0 when nothing is pending (an index lookup)."""
        return self.outbox_query("SELECT min(id) FROM events WHERE state = 0")

    def captured(self) -> int:
        return self.outbox_query("SELECT seq FROM sqlite_sequence WHERE name = 'events'")

    def stop(self) -> None:
        if self.rss is not None:
            self.rss.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running_agent(
    workdir: Path, config: Path, profile: Path | None = None, tree: Path = REPO
) -> Iterator[Agent]:
    """``tree`` is the directory whose ``agent/`` package runs (``-m`` looks in the
    working directory first), e.g. an older revision exported with ``git archive``."""
    agent = Agent(workdir, config, profile, tree)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
