"""Guarantee 5: a page the outbox committed survives power loss, unless the operator opts
out with ``[outbox] synchronous = "normal"``.

A SIGKILL cannot tell ``full`` from ``normal`` (the kernel keeps what a killed process
wrote), so these tests look where the difference is:

* the config's default is ``full``, and a running agent's own outbox connections (the
  writer and the reader, as ``distillsync run`` opens them from that config) report
  ``PRAGMA synchronous`` = 2 (FULL); ``tests/test_outbox.py`` checks ``Outbox.open``'s own
  default the same way;
* a power cut: the agent's state directory is an ext4 on a loop device, and once the
  agent reports its events captured and delivered, the filesystem is shut down without
  flushing anything (``EXT4_IOC_SHUTDOWN`` with ``NOLOGFLUSH``, what fstests use to
  simulate a crash), then mounted again. What was only in the page cache is gone, as
  after a power loss; what SQLite synced is there. Every event and delivery the agent had
  reported must be there.

What the power cut proves and what not: it proves that each commit the agent reported
was synced to the (loop) device before it was reported. It cannot prove that the
``normal`` setting would lose something every time (the kernel may have written the WAL
back by itself; with a few seconds between the writes and the cut it has not, in
practice), nor anything about a real disk's write cache, which the loop device has not.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import sqlite3
import struct
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.apiclient import ApiClient
from agent.config import parse_config
from agent.service import Agent
from tests.support import AgentProcess, Mosquitto, agent_toml, product_source, wait_until

SKUS = [f"SKU-{n:02d}" for n in range(40)]
TIMEOUT = 30.0
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2  # no flush of the journal or the page cache: a power cut


def config_text(state: Path, broker: Mosquitto, erp: Path, socket: Path) -> str:
    """An agent with no ``[outbox]`` table: the defaults are what is under test."""
    text = agent_toml(state, broker.url, product_source(erp, *SKUS), agent_id="durable")
    return text.replace(f'socket = "{state}/agent.sock"', f'socket = "{socket}"')


def test_the_config_default_is_full(tmp_path: Path, broker: Mosquitto) -> None:
    text = config_text(tmp_path / "state", broker, tmp_path / "erp.db", tmp_path / "a.sock")
    assert "[outbox]" not in text
    assert parse_config(tomllib.loads(text)).outbox.synchronous == "full"


# agent/runners.py passes tenacity 9 its deprecated `initial=`: a warning, not this test's
@pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning")
async def test_a_running_agents_outbox_connections_are_synchronous_full(
    tmp_path: Path, broker: Mosquitto
) -> None:
    text = config_text(tmp_path / "state", broker, tmp_path / "erp.db", tmp_path / "a.sock")
    agent = Agent(parse_config(tomllib.loads(text)))
    running = asyncio.create_task(agent.run(), name="agent")
    try:
        while getattr(agent, "outbox", None) is None:
            assert not running.done(), running.exception()
            await asyncio.sleep(0.05)
        for connection in (agent.outbox._writer, agent.outbox._reader):
            async with connection.execute("PRAGMA synchronous") as cursor:
                assert (await cursor.fetchone()) == (2,)  # FULL
    finally:
        agent.stop.set()
        await running


class LoopDisk:
    """An ext4 on a loop device at ``mount_point``, that can lose power and come back."""

    def __init__(self, folder: Path) -> None:
        self.image, self.mount_point = folder / "disk.img", folder / "state"
        self.mounted = False

    def make(self) -> None:
        self.mount_point.mkdir()
        with self.image.open("wb") as out:
            out.truncate(32 << 20)
        made = subprocess.run(["mkfs.ext4", "-q", str(self.image)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"no mkfs.ext4 here ({made.stderr.strip()}): the power-cut test needs it")
        mounted = self._mount()
        if mounted.returncode != 0:
            pytest.skip(
                f"cannot mount a loop device ({mounted.stderr.strip()}): the "
                "power-cut test needs root and loop devices"
            )

    def _mount(self) -> subprocess.CompletedProcess[str]:
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(self.image), str(self.mount_point)],
            capture_output=True,
            text=True,
        )
        self.mounted = mounted.returncode == 0
        return mounted

    def cut_power(self) -> None:
        fd = os.open(self.mount_point, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def unmount(self) -> None:
        if self.mounted:
            if (
                subprocess.run(["umount", str(self.mount_point)], capture_output=True).returncode
                != 0
            ):
                subprocess.run(["umount", "-l", str(self.mount_point)], check=True)
            self.mounted = False

    def power_on(self) -> None:
        self.unmount()
        mounted = self._mount()
        assert mounted.returncode == 0, mounted.stderr  # the journal is replayed here


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[LoopDisk]:
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here: the power-cut test needs a real filesystem")
    disk = LoopDisk(tmp_path)
    disk.make()
    try:
        yield disk
    finally:
        disk.unmount()


def outbox_status(socket: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError):
        code, status = asyncio.run(ApiClient(socket).get("/v1/status"))
        if code == 200:
            return dict(status["outbox"])
    return {}


def test_a_power_cut_keeps_every_event_and_delivery_the_agent_reported(
    disk: LoopDisk, broker: Mosquitto, tmp_path: Path
) -> None:
    socket, config = tmp_path / "agent.sock", tmp_path / "agent.toml"
    config.write_text(config_text(disk.mount_point, broker, tmp_path / "erp.db", socket))
    with AgentProcess(config, tmp_path / "agent.log") as agent:
        wait_until(
            lambda: (
                outbox_status(socket).get("last_sequence") == len(SKUS)
                and outbox_status(socket).get("pending") == 0
            ),
            TIMEOUT,
            "every product captured and its delivery recorded",
        )
        disk.cut_power()
        agent.kill()
    disk.power_on()
    copy = tmp_path / "after"
    copy.mkdir()
    for name in ("outbox.db", "outbox.db-wal"):  # the -shm index is rebuilt from the WAL
        if (disk.mount_point / name).exists():
            shutil.copy(disk.mount_point / name, copy / name)
    with contextlib.closing(sqlite3.connect(copy / "outbox.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        captured = db.execute("SELECT count(*), sum(state = 1) FROM events").fetchone()
    assert captured == (len(SKUS), len(SKUS)), "a reported commit was lost in the power cut"
