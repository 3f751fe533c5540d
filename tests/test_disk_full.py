"""Disk full, a dying disk, and the outbox file taken away, under a real agent process.

The agent's state directory is a real, small filesystem mounted for the test (we run as
root): a tmpfs that a filler file fills up, or an ext4 on a loop device shut down as a
failing disk would be. The ERP (SQLite) and the broker live elsewhere. While the outbox
cannot be written the agent must stay up, say so (``distillsync status``, health,
metrics, one log line), keep delivering what was already pending, and leave its cursor
where the last committed page put it; once there is room again, every change made
meanwhile must arrive. The source reads pages of 5 rows with no lookback, so a poller
that skipped the failed page, or a cursor committed without its events, loses changes
for good and the test sees it. Where mounting is not allowed those tests skip saying
so; the moved-file test and the in-process ones (injected failures) still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import sqlite3
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.apiclient import ApiClient
from agent.config import load_config
from agent.model import CapturedPage, Outcome, PageResult, PublishResult
from agent.outbox import Outbox, OutboxUnwritable
from agent.poller import FeedPoller
from agent.sources.cursor import decode_cursor
from agent.sources.sql import SqlReader
from tests.delivery_support import Subscriber
from tests.erp import ErpDb
from tests.support import (
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
    wait_until,
)
from tests.test_api import metric
from tests.test_backend_incrementing import insert, numbers, source_for
from tests.test_backends import INVOICE_DDL
from tests.test_outbox import FEED, change

KEYS = [f"SKU-{n:02d}" for n in range(30)]
TIMEOUT = 30.0
FS_SIZE = "32m"  # the 8 MiB outbox reserve, twice over to resume, and the outbox itself
DAY = {"seeded": "2026-01-01", "pending": "2026-01-02", "outage": "2026-01-03"}


def source(erp: Path) -> str:
    """The support's stock source, in pages of 5 rows and with no lookback."""
    return (
        stock_levels_source(erp).replace(
            'poll_interval = "200ms"\n', 'poll_interval = "200ms"\npage_size = 5\n'
        )
        + '  lookback = "0s"\n'
    )


def stock_erp(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        db.executemany(
            "INSERT INTO stock_levels VALUES (?, 'WH', 0, ?)",
            [(sku, stamp("seeded", n)) for n, sku in enumerate(KEYS)],
        )
    return path


def stamp(day: str, n: int) -> str:
    return f"{DAY[day]} 00:00:{n:02d}"


def set_all(erp: Path, day: str, base: int) -> dict[str, float]:
    """Every key to ``base + n``, stamped on ``day``; returns what subscribers must end with."""
    with contextlib.closing(sqlite3.connect(erp)) as db, db:
        db.executemany(
            "UPDATE stock_levels SET on_hand = ?, tms = ? WHERE sku = ?",
            [(base + n, stamp(day, n), sku) for n, sku in enumerate(KEYS)],
        )
    return {f"{sku}/WH": float(base + n) for n, sku in enumerate(KEYS)}


def status(config: Path) -> tuple[int, dict[str, Any]]:
    """``distillsync status --json``: its exit code (1 when unhealthy) and what it printed."""
    shown = run_cli(config, "status", "--json")
    assert shown.returncode in (0, 1), shown.stderr
    return shown.returncode, orjson.loads(shown.stdout)


def api(config: Path) -> ApiClient:
    return ApiClient(load_config(config).api.socket)


def outbox_status(config: Path) -> dict[str, Any]:
    """``/v1/status``'s outbox part, straight from the API (waits poll it often)."""
    code, body = asyncio.run(api(config).get("/v1/status"))
    assert code == 200, body
    outbox: dict[str, Any] = body["outbox"]
    return outbox


def write_failing(config: Path) -> bool:
    return outbox_status(config)["write_error"] is not None


def healthy(config: Path) -> bool:
    return asyncio.run(api(config).get("/v1/health"))[0] == 200


def metrics(config: Path) -> str:
    code, text = asyncio.run(api(config).get_text("/v1/metrics"))
    assert code == 200
    return text


def stored_cursor(outbox: Path) -> Any:
    with contextlib.closing(sqlite3.connect(outbox, timeout=30)) as db:
        row = db.execute("SELECT cursor FROM feeds WHERE feed = 'stock'").fetchone()
    return decode_cursor(row[0])


def enqueued_values(outbox: Path) -> list[float]:
    with contextlib.closing(sqlite3.connect(outbox, timeout=30)) as db:
        return [orjson.loads(data)["on_hand"] for (data,) in db.execute("SELECT data FROM events")]


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem says ENOSPC."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``FS_SIZE`` at ``tmp_path/state``, unmounted afterwards."""
    mount_point = tmp_path / "state"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here: the disk-full test needs a small real filesystem")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs ({mounted.stderr.strip()}): the disk-full test "
            "needs root (CAP_SYS_ADMIN) to make a small real filesystem"
        )
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def persistent_broker(make_broker: Callable[..., Mosquitto], tmp_path: Path) -> Mosquitto:
    """A broker that keeps sessions across a restart, so the subscriber misses nothing."""
    store = tmp_path / "broker-store"
    store.mkdir()
    return make_broker(f"user root\npersistence true\npersistence_location {store}/\n")


def test_a_full_disk_stops_capture_not_delivery_and_loses_nothing(
    tiny_fs: Path, persistent_broker: Mosquitto, tmp_path: Path
) -> None:
    broker, state = persistent_broker, tiny_fs
    erp, outbox = stock_erp(tmp_path / "erp.db"), state / "outbox.db"
    config = tmp_path / "agent.toml"
    # A small window: without room to record deliveries, only 5 of 30 pending would go out.
    config.write_text(
        agent_toml(state, broker.url, source(erp), agent_id="disk", extra="max_inflight = 5\n")
    )
    log = tmp_path / "agent.log"
    with (
        Subscriber(broker.port, "distillsync/acme/disk/out/#", session=True) as sub,
        AgentProcess(config, log) as agent,
    ):
        wait_until(lambda: len(sub.latest()) == len(KEYS), TIMEOUT, "the first load")
        assert (state / "outbox.db.reserve").stat().st_size == 8 << 20

        broker.stop()  # what is captured now stays pending in the outbox
        pending = set_all(erp, "pending", 1000)
        wait_until(
            lambda: sorted(enqueued_values(outbox))[-1] == 1029,
            TIMEOUT,
            "the changes enqueued while the relay is away",
        )
        filler = fill(state)

        during = set_all(erp, "outage", 2000)
        wait_until(lambda: write_failing(config), TIMEOUT, "the write error in status")
        code, shown = status(config)
        assert code == 1 and not shown["health"]["healthy"]  # unhealthy: nothing is captured
        error = shown["status"]["outbox"]["write_error"]
        assert "database or disk is full (SQLITE_FULL)" in error["message"], error
        assert str(outbox) in error["message"] and error["since"] > 0
        assert "database or disk is full" in shown["health"]["outbox_write_error"]
        feed = shown["status"]["sources"][0]["feeds"][0]
        assert "SQLITE_FULL" in feed["last_error"]
        assert agent.proc is not None and agent.proc.poll() is None  # still up
        # The failed pages left the cursor where the last committed one put it.
        assert stored_cursor(outbox) == stamp("pending", len(KEYS) - 1)
        assert max(enqueued_values(outbox)) < 2000

        # The relay returns while the disk is still full: what was pending goes out, and is
        # recorded as delivered (in the room the reserve left), beyond the 5-event window.
        broker.start()
        wait_until(
            lambda: {s: e.on_hand for s, e in sub.latest().items()} == pending,
            TIMEOUT,
            "the pending events at the subscriber",
        )
        wait_until(
            lambda: outbox_status(config)["pending"] == 0, TIMEOUT, "the deliveries recorded"
        )
        assert not (state / "outbox.db.reserve").exists()  # given up to make that room
        assert write_failing(config) and stored_cursor(outbox) < stamp("outage", 0)
        assert metric(metrics(config), "distillsync_outbox_write_failing") == 1

        filler.unlink()  # room again: capture resumes by itself, from the stored cursor
        wait_until(
            lambda: {s: e.on_hand for s, e in sub.latest().items()} == during,
            TIMEOUT,
            "every change made during the outage",
        )
        wait_until(lambda: healthy(config), TIMEOUT, "healthy again")
        assert not write_failing(config)
        assert (state / "outbox.db.reserve").stat().st_size == 8 << 20  # set aside again
        assert agent.terminate() == 0

    text = log.read_text()
    assert text.count("outbox writes fail") == 1, text  # once, not once per poll
    assert text.count("outbox writable again") == 1, text
    assert "Traceback" not in text


def test_an_outbox_file_moved_away_stops_capture_until_it_is_back(
    broker: Mosquitto, tmp_path: Path
) -> None:
    erp, state = stock_erp(tmp_path / "erp.db"), tmp_path / "state"
    outbox, moved = state / "outbox.db", state / "outbox.db.moved"
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(state, broker.url, source(erp), agent_id="moved"))
    with (
        Collector(broker.port, "distillsync/acme/moved/out/#") as sub,
        AgentProcess(config, tmp_path / "agent.log") as agent,
    ):
        sub.wait_for(lambda ev: len(ev) == len(KEYS), TIMEOUT, "the first load")
        outbox.rename(moved)  # SQLite would write on into the file at its new name, unseen

        during = set_all(erp, "outage", 2000)
        wait_until(lambda: write_failing(config), TIMEOUT, "the write error")
        code, shown = status(config)
        assert code == 1
        assert "was removed or replaced" in shown["status"]["outbox"]["write_error"]["message"]
        # Every commit checks the file first, so nothing of the new state was captured.
        assert not [e for e in sub.events() if e.event["data"]["on_hand"] >= 2000]
        text = metrics(config)
        assert metric(text, "distillsync_outbox_write_failing") == 1
        assert metric(text, "distillsync_outbox_write_errors_total") >= 1

        moved.rename(outbox)
        sub.wait_for(
            lambda ev: (
                {
                    e.event["subject"]: e.event["data"]["on_hand"]
                    for e in ev
                    if e.event["data"]["on_hand"] >= 2000
                }
                == during
            ),
            TIMEOUT,
            "the changes made while it was away",
        )
        wait_until(lambda: healthy(config), TIMEOUT, "healthy again")
        assert metric(metrics(config), "distillsync_outbox_write_failing") == 0
        assert agent.terminate() == 0


async def test_incrementing_mode_never_settles_past_a_page_that_failed_to_commit(
    make_erp: Callable[[str], ErpDb], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Incrementing mode notes the ids it read before their page commits, to settle the
    cursor one lookback later. Ids noted from a page whose commit failed must not count:
    here a later poll would otherwise commit cursor 15 with the page of ids 6-10, and ids
    11-15 (whose page failed again) would never be read."""
    erp = make_erp("sqlite")
    erp.execute(INVOICE_DDL["sqlite"])
    insert(erp, *range(1, 6))
    source = source_for(erp, "200ms", page_size=5)
    reader = SqlReader(source, None)
    try:
        async with Outbox.open(tmp_path / "outbox.db", reserve=0) as outbox:
            poller = FeedPoller(source, source.entities[0], reader, outbox)
            await poller.poll()  # the first load settles at once: cursor 5
            insert(erp, *range(6, 21))  # three pages: 6-10, 11-15, 16-20
            commit = outbox.commit_page
            calls = 0

            async def second_page_fails(page: CapturedPage) -> PageResult:
                nonlocal calls
                calls += 1
                if calls % 2 == 0:
                    raise OutboxUnwritable("database or disk is full (injected)")
                return await commit(page)

            monkeypatch.setattr(outbox, "commit_page", second_page_fails)
            for _ in range(2):  # each poll: page 6-10 commits, page 11-15 fails
                await poller.poll()
                assert "injected" in (poller.stats.last_error or "")
                await asyncio.sleep(0.3)  # past the lookback: what was noted may settle
            monkeypatch.undo()
            for _ in range(3):
                await poller.poll()
                await asyncio.sleep(0.3)
            got = await numbers(outbox)
    finally:
        await reader.close()
    assert sorted(set(got)) == [f"FA-{i:03d}" for i in range(1, 21)]


EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32): every later I/O fails with EIO
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


@pytest.fixture
def dying_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """An ext4 filesystem on a loop device at ``tmp_path/state``, and a function that
    shuts it down as a failing disk would (the ioctl fstests use for that)."""
    image, mount_point = tmp_path / "disk.img", tmp_path / "state"
    mount_point.mkdir()
    with image.open("wb") as out:
        out.truncate(32 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no mkfs.ext4 here ({made.stderr.strip()}): the bad-disk test needs it")
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a loop device ({mounted.stderr.strip()}): the bad-disk "
            "test needs root and loop devices"
        )

    def shut_down() -> None:
        fd = os.open(mount_point, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    try:
        yield mount_point, shut_down
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_dead_disk_keeps_the_agent_up_and_saying_so(
    dying_disk: tuple[Path, Callable[[], None]], broker: Mosquitto, tmp_path: Path
) -> None:
    state, shut_down = dying_disk
    erp, config = stock_erp(tmp_path / "erp.db"), tmp_path / "agent.toml"
    # The API socket lives off the dying disk: a path lookup there fails too.
    config.write_text(
        agent_toml(state, broker.url, source(erp), agent_id="dead").replace(
            f'socket = "{state}/agent.sock"', f'socket = "{tmp_path}/a.sock"'
        )
    )
    log = tmp_path / "agent.log"
    with (
        Collector(broker.port, "distillsync/acme/dead/out/#") as sub,
        AgentProcess(config, log) as agent,
    ):
        sub.wait_for(lambda ev: len(ev) == len(KEYS), TIMEOUT, "the first load")
        wait_until(
            lambda: outbox_status(config)["pending"] == 0, TIMEOUT, "the deliveries recorded"
        )
        shut_down()
        set_all(erp, "outage", 2000)
        wait_until(lambda: write_failing(config), TIMEOUT, "the write error")
        code, shown = status(config)
        assert code == 1
        # SQLite says "disk I/O error" first, then "malformed" for pages it cannot read.
        message = shown["status"]["outbox"]["write_error"]["message"]
        assert "(SQLITE_IOERR" in message or "(SQLITE_CORRUPT)" in message, message
        assert shown["status"]["outbox"]["pending"] == 0  # the last counts it could take
        assert shown["status"]["sources"][0]["feeds"][0]["errors"] >= 1
        assert agent.proc is not None and agent.proc.poll() is None
        assert agent.terminate() == 0
    text = log.read_text()
    assert text.count("outbox writes fail") == 1, text
    assert "Traceback" not in text


async def test_outcomes_that_cannot_be_recorded_wait_and_give_up_only_at_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivery holds a window slot until its outcome is recorded: ``record_results``
    returns once it is, retrying meanwhile, or when the agent stops (the event stays
    pending and is sent again after the restart)."""
    async with Outbox.open(tmp_path / "o.db", reserve=0) as outbox:
        await outbox.commit_page(CapturedPage(FEED, [change("A", 1), change("B", 1)]))
        record, failures = outbox._record, [2]

        async def failing_twice(*args: Any) -> None:
            if failures[0]:
                failures[0] -= 1
                raise outbox._failed("disk full (injected)")
            await record(*args)

        monkeypatch.setattr(outbox, "_record", failing_twice)
        await outbox.record_results([PublishResult(1, Outcome.ACKED)])
        assert failures == [0] and [e.sequence for e in await outbox.fetch_pending(0, 9)] == [2]
        assert outbox.write_health.failures == 2

        failures[0] = 1_000_000
        recording = asyncio.create_task(outbox.record_results([PublishResult(2, Outcome.ACKED)]))
        while outbox.write_health.failures < 5:  # a few retries, counted, not slept
            assert not recording.done()
            await asyncio.sleep(0.01)
        assert not recording.done()
        outbox.stopping.set()
        await recording
        assert [e.sequence for e in await outbox.fetch_pending(0, 9)] == [2]
