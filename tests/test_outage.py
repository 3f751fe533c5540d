"""A relay outage under load: the backlog grows on disk, not in memory, and drains whole.

The broker is stopped while the ERP keeps changing, until 50,000 events wait in the
outbox, then restarted on the same port. The broker persists sessions, so the
subscriber's persistent session (and what is queued for it) survives the restart, as
it would at a relay operator's: whatever the agent sends is seen. Memory is read from
the real daemon process (psutil RSS), with a small backlog and with one 10x larger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.delivery_support import (
    Subscriber,
    dead_letter_count,
    outbox_last_sequence,
    outbox_rows,
    seed_stock,
    wait_converged,
)
from tests.erp import STOCK_QUERY, ErpDb, source_toml, stock_entity
from tests.support import AgentProcess, Mosquitto, agent_toml, wait_until

AGENT = "outage"
PRODUCTS, WAREHOUSES = 2500, 2
KEYS = PRODUCTS * WAREHOUSES  # one round of changes = 5,000 events
ROUNDS = 10  # while the broker is down: a backlog of 5,000, then 50,000
LABEL = "L" * 800  # rides along in every event: ~1.1 KB of JSON each
TIMEOUT = 90.0
MB = 1024 * 1024
# Allowed RSS growth between a 5,000- and a 50,000-event backlog, and during the drain.
# Holding the extra 45,000 events in memory would cost well over 45 MB (each one's JSON
# is ~1.1 KB before any Python object around it), while a flat agent still moves by a
# few MB: the allocator's arenas, SQLite's page caches (2 MB per connection by default)
# filling as the outbox file grows, the buffers of one poll page and one fetch batch.
MAX_GROWTH = 30 * MB


class RssSampler:
    """Samples the agent's resident set size every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append(self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return  # the agent has exited (its terminate() runs inside running())

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def peak(self, start: int = 0, end: int | None = None) -> int:
        return max(self.samples[start:end])


def settle_rss(sampler: RssSampler, seconds: float = 1.0) -> int:
    """The peak over a second of the agent's steady work (it keeps polling)."""
    start = len(sampler.samples)
    wait_until(lambda: len(sampler.samples) - start >= int(seconds / 0.05), 10, "samples")
    return sampler.peak(start)


@pytest.mark.slow
def test_a_broker_outage_under_load_loses_nothing_and_memory_stays_flat(
    make_broker: Callable[..., Mosquitto], make_erp: Callable[[str], ErpDb], tmp_path: Path
) -> None:
    store = tmp_path / "broker-store"
    store.mkdir()
    # As root, Mosquitto would switch to user mosquitto, which cannot write tmp_path.
    broker = make_broker(
        f"user root\npersistence true\npersistence_location {store}/\nmax_queued_messages 0\n"
    )
    erp = make_erp("sqlite")
    keys = seed_stock(erp, PRODUCTS, WAREHOUSES, label=LABEL)
    entity = stock_entity(lookback="2s").replace(
        STOCK_QUERY,
        STOCK_QUERY.replace("s.reel AS on_hand,", "s.reel AS on_hand, p.label AS label,"),
    )
    state = tmp_path / "state"
    outbox = state / "outbox.db"
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(state, broker.url, source_toml(erp, entity), agent_id=AGENT))

    with (
        Subscriber(
            broker.port, f"distillsync/acme/{AGENT}/out/#", session=True, keep_payloads=False
        ) as sub,
        AgentProcess(config, tmp_path / "agent.log") as agent,
        RssSampler(agent.pid).running() as rss,
    ):
        wait_converged(sub, erp, TIMEOUT)  # the first 5,000 events, delivered
        broker.stop()

        for round_ in range(1, ROUNDS + 1):
            erp.set_stock_many([(p, w, float(round_ * 100_000 + p * 10 + w)) for p, w in keys])

            def in_outbox(events: int = KEYS * (round_ + 1)) -> bool:
                return outbox_last_sequence(outbox) >= events

            wait_until(in_outbox, TIMEOUT, f"round {round_} in the outbox")
            if round_ == 1:
                small = settle_rss(rss)
        large = settle_rss(rss)
        last = outbox_last_sequence(outbox)
        assert last == KEYS * (ROUNDS + 1)  # the backlog: 50,000 events on disk

        drain_start = len(rss.samples)
        broker.start()  # same port
        wait_converged(sub, erp, TIMEOUT)
        wait_until(
            lambda: sub.sequences() >= set(range(1, last + 1)),
            TIMEOUT,
            "every enqueued event at the subscriber",
        )
        drain_peak = rss.peak(drain_start)
        assert agent.terminate() == 0

    rows = outbox_rows(outbox)
    assert len(rows) == last and {r.state for r in rows} == {1}  # the backlog drained
    assert dead_letter_count(outbox) == 0
    assert sub.sequences() == set(range(1, last + 1))
    ids = {r.sequence: r.event_id for r in rows}
    assert all(s.event_id == ids[s.sequence] for s in sub.seen())

    growth = {"50,000 vs 5,000 pending": large - small, "while draining": drain_peak - small}
    report = {k: f"{v / MB:+.1f} MB" for k, v in growth.items()} | {"small": small // MB}
    assert all(v < MAX_GROWTH for v in growth.values()), report

    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log and "never retrieved" not in log
