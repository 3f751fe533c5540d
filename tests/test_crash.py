"""kill -9 at any moment loses nothing: the real daemon, a real SQLite ERP, a real broker.

10,000 absolute stock changes on 300 keys flow into the ERP while the agent is killed
with SIGKILL five times at different moments. After a last restart the subscriber,
gating on ``sequence`` as the contract says, holds the ERP's final value for every key;
every event the outbox ever held arrived; a re-sent event is byte for byte the one sent
before (same ``id``); and each crash re-sends at most ``relay.max_inflight`` events.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.delivery_support import (
    Seen,
    Subscriber,
    dead_letter_count,
    outbox_last_sequence,
    outbox_rows,
    seed_stock,
    wait_converged,
)
from tests.erp import ErpDb, source_toml, stock_entity
from tests.support import AgentProcess, Mosquitto, agent_toml, wait_until

AGENT = "crash"
PRODUCTS, WAREHOUSES = 150, 2  # 300 keys
MAX_INFLIGHT = 50
TIMEOUT = 60.0


class StockWriter:
    """The ERP's users: absolute stock updates, each to a value never used before."""

    def __init__(self, erp: ErpDb, keys: list[tuple[int, int]]) -> None:
        self.erp = erp
        self.keys = keys
        self.random = random.Random(20261123)
        self.changes = 0

    def batch(self, size: int) -> None:
        rows = []
        for _ in range(size):
            self.changes += 1
            product, warehouse = self.random.choice(self.keys)
            rows.append((product, warehouse, float(self.changes)))
        self.erp.set_stock_many(rows)

    def burst(self, total: int, batch: int = 100) -> None:
        for _ in range(total // batch):
            self.batch(batch)


class Crashes:
    """Starts and SIGKILLs the daemon, marking where each process's events begin.

    A process's life ends, as far as the subscriber can tell, when the broker publishes
    its Last Will: by then the broker has read and forwarded everything the process
    wrote before it died, so the events after that mark come from the next process.
    """

    def __init__(self, agent: AgentProcess, sub: Subscriber, state: Path) -> None:
        self.agent = agent
        self.sub = sub
        self.outbox = state / "outbox.db"
        self.marks: list[int] = []

    def start(self) -> None:
        statuses = self.sub.status_count()
        self.agent.start()
        wait_until(
            lambda: any(s["state"] == "online" for s in self.sub.status_since(statuses)),
            TIMEOUT,
            "the agent online",
        )

    def kill(self) -> None:
        statuses = self.sub.status_count()
        self.agent.kill()
        wait_until(
            lambda: any(s["state"] == "offline" for s in self.sub.status_since(statuses)),
            TIMEOUT,
            "the Last Will after SIGKILL",
        )
        self.marks.append(len(self.sub.seen()))

    def events_since_start(self) -> int:
        return len(self.sub.seen()) - (self.marks[-1] if self.marks else 0)


def resends_per_life(seen: list[Seen], marks: list[int]) -> list[int]:
    """For each process after the first: events it sent that an earlier one had sent."""
    bounds = [*marks, len(seen)]
    first_seen: set[tuple[str, int]] = set()
    counts = []
    for life, end in enumerate(bounds):
        start = bounds[life - 1] if life else 0
        again = 0
        for s in seen[start:end]:
            key = (s.subject, s.sequence)
            again += key in first_seen
            first_seen.add(key)
        counts.append(again)
    return counts[1:]


@pytest.mark.slow
def test_sigkill_at_five_moments_loses_nothing_and_resends_at_most_the_window(
    broker: Mosquitto, make_erp: Callable[[str], ErpDb], tmp_path: Path
) -> None:
    erp = make_erp("sqlite")
    writer = StockWriter(erp, seed_stock(erp, PRODUCTS, WAREHOUSES))
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            state,
            broker.url,
            source_toml(erp, stock_entity(), page_size=50),
            agent_id=AGENT,
            extra=f"max_inflight = {MAX_INFLIGHT}\n",
        )
    )
    agent = AgentProcess(config, tmp_path / "agent.log")  # started by Crashes, not here
    with (
        Subscriber(broker.port, f"distillsync/acme/{AGENT}/#") as sub,
        contextlib.ExitStack() as cleanup,
    ):
        cleanup.callback(agent.__exit__)
        crashes = Crashes(agent, sub, state)
        writer.burst(1000)

        # 1. During the first poll (300 keys in pages of 50) and its first publishes.
        crashes.start()
        wait_until(lambda: outbox_last_sequence(crashes.outbox) > 0, TIMEOUT, "a first page")
        crashes.kill()

        # 2. Mid-publishing, while the ERP keeps changing.
        crashes.start()
        for _ in range(30):
            writer.batch(100)
        wait_until(lambda: crashes.events_since_start() >= 200, TIMEOUT, "200 events out")
        crashes.kill()

        # 3. Right after a burst of commits, before or while a poll reads it.
        crashes.start()
        writer.burst(2000, batch=1000)
        crashes.kill()

        # 4. Mid-publishing again, on a backlog left by the last crash.
        crashes.start()
        writer.burst(2000)
        wait_until(lambda: crashes.events_since_start() >= 50, TIMEOUT, "50 events out")
        crashes.kill()

        # 5. As soon as it is back online, while it re-sends what the last one left.
        writer.burst(2000)
        crashes.start()
        crashes.kill()

        assert writer.changes == 10_000
        crashes.start()
        wait_converged(sub, erp, TIMEOUT)
        last = outbox_last_sequence(crashes.outbox)
        wait_until(
            lambda: sub.sequences() >= set(range(1, last + 1)),
            TIMEOUT,
            "every enqueued event at the subscriber",
        )
        assert agent.terminate() == 0
        seen = sub.seen()

    rows = outbox_rows(crashes.outbox)
    # Every event the outbox ever held is delivered, and arrived: nothing lost between.
    assert [r.sequence for r in rows] == list(range(1, last + 1))
    assert {r.state for r in rows} == {1}
    assert dead_letter_count(crashes.outbox) == 0
    assert {s.sequence for s in seen} == set(range(1, last + 1))

    # One id per event, whatever was re-sent: same sequence, same bytes, same id.
    ids = {r.sequence: r.event_id for r in rows}
    payloads: dict[str, set[bytes]] = {}
    for s in seen:
        assert s.event_id == ids[s.sequence] == s.user_id
        payloads.setdefault(s.event_id, set()).add(s.payload)
    assert all(len(p) == 1 for p in payloads.values())

    # The same state is never enqueued twice for a key, crash or not (each change wrote
    # a new value, so two consecutive events of a key always differ).
    per_key: dict[str, list[float | None]] = {}
    for _, subject, on_hand in sorted({(s.sequence, s.subject, s.on_hand) for s in seen}):
        per_key.setdefault(subject, []).append(on_hand)
    repeated = {k: v for k, v in per_key.items() if any(a == b for a, b in itertools.pairwise(v))}
    assert repeated == {}

    # Each crash re-sends at most the window: events sent but not yet settled on disk.
    resends = resends_per_life(seen, crashes.marks)
    assert len(resends) == 5
    assert all(n <= MAX_INFLIGHT for n in resends), resends
    duplicates = Counter((s.subject, s.sequence) for s in seen)
    assert sum(n - 1 for n in duplicates.values()) == sum(resends)
