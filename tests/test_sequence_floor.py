"""The sequence never goes back when the outbox does (a restored backup, a lost ``outbox.db``).

End to end: the SQLite ERP -> the agent (a real process, SIGKILLed) -> Mosquitto -> the
consumer and its sequence gate -> the PrestaShop simulator. The agent's outbox is then
replaced by an older backup, or lost, and the ERP changes again: those changes must reach
the shop. With the outbox's own numbering they would carry sequences the store has seen
for the same keys already, and the gate would drop them as stale: the shop would freeze.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.apiclient import ApiClient
from tests.delivery_support import outbox_last_sequence
from tests.relay_support import consumer_running, consumer_toml, eventually, subscribed
from tests.sims.prestashop import PrestaShopSim
from tests.support import (
    AgentProcess,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
    write_secret,
)

SKUS = [f"SKU-{n}" for n in range(5)]
ROUNDS_BEFORE_THE_LOSS = 8
"""Enough events after the backup that the restored outbox's next numbers are below the
last sequence the store applied for every key."""


class Erp:
    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.execute(
                "CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, "
                "tms TEXT, PRIMARY KEY (sku, warehouse))"
            )
        self.set_all(1)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def set_all(self, on_hand: int) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        with self._db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO stock_levels VALUES (?, 'MAD', ?, ?)",
                [(sku, on_hand + n, now) for n, sku in enumerate(SKUS)],
            )

    def stock(self) -> dict[str, int]:
        with self._db() as db:
            return {sku: int(q) for sku, q in db.execute("SELECT sku, on_hand FROM stock_levels")}


async def status(state: Path) -> dict[str, Any]:
    code, body = await ApiClient(state / "agent.sock").get("/v1/status")
    assert code == 200, (code, body)
    return dict(body)


async def serving(state: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError):
        return await status(state)
    return None


async def watermark_covers_the_outbox(state: Path, seconds: float = 30) -> None:
    """Until the relay acknowledged a watermark at the outbox's last sequence: what a
    SIGKILL then cannot take back (the watermark may lag the sends by up to a second)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        now = await serving(state)
        last = outbox_last_sequence(state / "outbox.db")
        if now is not None and now["sequence"]["watermark_published"] >= last > 0:
            return
        assert loop.time() < deadline, f"no watermark at sequence {last} after {seconds}s"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def shop_behind_a_consumer(
    tmp_path: Path, broker: Mosquitto, erp: Erp
) -> AsyncIterator[Callable[[], bool]]:
    """The PrestaShop simulator fed by a consumer subscribed to ``broker`` (its SUBACKs
    seen); yields whether the shop shows the ERP's stock."""
    async with PrestaShopSim() as sim:
        ids = {sku: sim.add_product(sku, "1.00", quantity=0) for sku in SKUS}
        write_secret(tmp_path / "key", sim.key)
        relay = tmp_path / "relay.toml"
        relay.write_text(
            consumer_toml(
                tmp_path,
                broker.url,
                f'[[sinks]]\ntype = "prestashop"\nname = "presta"\nurl = "{sim.url}"\n'
                f'api_key_file = "{tmp_path / "key"}"\nwarehouse = "MAD"\n'
                f"requests_per_second = 100\n",
            )
        )

        def in_sync() -> bool:
            return {sku: sim.stock(ids[sku]) for sku in SKUS} == erp.stock()

        async with consumer_running(relay):
            await subscribed(tmp_path / "shops-1.sock")
            yield in_sync


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("loss", ["an older backup restored", "the outbox lost"])
async def test_changes_after_the_outbox_went_back_still_reach_the_shop(
    broker: Mosquitto, tmp_path: Path, loss: str, protocol: str
) -> None:
    erp = Erp(tmp_path / "erp.db")
    config = tmp_path / "agent.toml"
    state = tmp_path / "state"
    # Its own agent id: the watermark is retained on the broker the tests share.
    agent_id = f"floor-{secrets.token_hex(4)}"

    def agent() -> AgentProcess:
        config.write_text(
            agent_toml(
                state,
                broker.url,
                stock_levels_source(erp.path),
                agent_id=agent_id,
                extra=f'protocol = "{protocol}"\n',
            )
        )
        return AgentProcess(config, tmp_path / "agent.log")

    async with shop_behind_a_consumer(tmp_path, broker, erp) as in_sync:
        with agent() as running:
            await eventually(in_sync, 60, "the shop to show the first stock")
            backup = await asyncio.to_thread(
                run_cli, config, "outbox", "backup", str(tmp_path / "outbox.bak")
            )
            assert backup.returncode == 0, backup.stderr
            for round_ in range(ROUNDS_BEFORE_THE_LOSS):
                erp.set_all(100 * (round_ + 2))
                await eventually(in_sync, 60, f"the shop to follow round {round_}")
            await watermark_covers_the_outbox(state)
            running.kill()
        seen = outbox_last_sequence(state / "outbox.db")

        shutil.rmtree(state)
        state.mkdir()
        restored = loss == "an older backup restored"
        if restored:
            shutil.copy(tmp_path / "outbox.bak", state / "outbox.db")
        assert outbox_last_sequence(state / "outbox.db") < seen

        with agent() as running:
            await eventually(lambda: (state / "agent.sock").exists(), 30, "the agent")
            erp.set_all(5000)
            await eventually(in_sync, 60, "the shop to show the changes after the loss")
            check = (await status(state))["sequence"]
            report = await asyncio.to_thread(run_cli, config, "status")
            assert running.terminate() == 0

    assert check["check"] == "ok" and check["relay_watermark"] >= seen
    assert check["moved"]["above"] == check["relay_watermark"]
    # Where the outbox stood when it was moved: the backup's last sequence and what capture
    # enqueued before the relay answered (from nothing, for a lost outbox).
    floor = outbox_last_sequence(tmp_path / "outbox.bak") if restored else 0
    assert floor <= check["moved"]["from"] < seen
    assert outbox_last_sequence(state / "outbox.db") > seen
    assert "sequence MOVED at " in report.stdout, report.stdout
    log = running.output()
    assert log.count("sequences now go on above") == 1, log
    assert "Traceback" not in log


async def test_a_restored_backups_pending_events_are_renumbered_and_applied(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The backup holds events it had not delivered (here: captured while the relay was
    unreachable), and its row hashes count them as sent. After the restore the ERP holds
    those very values again, so capture sends nothing new: only the pending events,
    renumbered above the watermark, can bring the shop back to them."""
    erp = Erp(tmp_path / "erp.db")
    config, state = tmp_path / "agent.toml", tmp_path / "state"
    agent_id = f"floor-{secrets.token_hex(4)}"

    def agent(relay: str = broker.url) -> AgentProcess:
        config.write_text(
            agent_toml(state, relay, stock_levels_source(erp.path), agent_id=agent_id)
        )
        return AgentProcess(config, tmp_path / "agent.log")

    async with shop_behind_a_consumer(tmp_path, broker, erp) as in_sync:
        with agent() as running:
            await eventually(in_sync, 60, "the shop to show the first stock")
            assert running.terminate() == 0

        erp.set_all(700)  # captured while the relay cannot be reached: pending
        with agent("mqtt://127.0.0.1:9") as running:
            await eventually(lambda: pending(state) == len(SKUS), 30, "the pending events")
            backup = await asyncio.to_thread(
                run_cli, config, "outbox", "backup", str(tmp_path / "outbox.bak")
            )
            assert backup.returncode == 0, backup.stderr
            assert running.terminate() == 0
        assert f"{len(SKUS)} events pending" in backup.stdout, backup.stdout

        with agent() as running:
            for round_ in range(ROUNDS_BEFORE_THE_LOSS):
                erp.set_all(100 * (round_ + 2))
                await eventually(in_sync, 60, f"the shop to follow round {round_}")
            await watermark_covers_the_outbox(state)
            running.kill()

        shutil.rmtree(state)
        state.mkdir()
        shutil.copy(tmp_path / "outbox.bak", state / "outbox.db")
        erp.set_all(700)  # back to what the backup's pending events hold
        with agent() as running:
            await eventually(in_sync, 60, "the shop to show the backup's pending values")
            moved = (await status(state))["sequence"]["moved"]
            assert running.terminate() == 0
    assert moved["renumbered"] == len(SKUS)


def pending(state: Path) -> int:
    with contextlib.closing(sqlite3.connect(state / "outbox.db", timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM events WHERE state = 0").fetchone()[0])
