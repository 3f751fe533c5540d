"""A private Mosquitto on a free loopback port, for ``distillsync demo`` and the tests.

Never a production relay: it listens on 127.0.0.1 only and allows anonymous clients.
``stop()`` then ``start()`` keeps the same port, so clients can reconnect to it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from agent.errors import RelayError

INSTALL_HINT = "install it with: apt-get install mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RelayError(f"the mosquitto broker is not installed; {INSTALL_HINT}")


class LocalBroker:
    def __init__(self, workdir: Path, extra: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        # A Receive Maximum of 100 lets the agent keep a useful window in flight.
        return (f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                f"max_inflight_messages 100\n{self.extra}\n")

    def start(self, timeout: float = 10.0) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._listening():
            if time.monotonic() > deadline:
                self.stop()
                raise RelayError(f"mosquitto did not start; see {self.log_file}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RelayError(f"mosquitto exited at start; see {self.log_file}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
