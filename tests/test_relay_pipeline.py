"""The consumer's ordering rules: acks in arrival order, urgent entities first, one
batch in flight per key."""

from __future__ import annotations

import asyncio

from relay.model import Event
from relay.pipeline import AckWindow, Queued, Scheduler, Ticket


def event(entity: str, subject: str, sequence: int) -> Event:
    return Event(
        id=f"{entity}-{subject}-{sequence}",
        source="urn:distillsync:acme:erp-1",
        entity=entity,
        op="upsert",
        subject=subject,
        sequence=f"{sequence:020d}",
        time="2026-11-23T12:00:00.000000Z",
        data={},
        raw=b"{}",
    )


async def run_ready() -> None:
    """Let every task that can go on, go on, until each waits again: a few turns of the
    loop, no clock involved (the scheduler does no I/O)."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_acks_leave_in_arrival_order_whatever_order_they_finish_in() -> None:
    acked: list[int] = []
    window: AckWindow[int] = AckWindow(acked.append)
    tickets = [window.add(n) for n in range(5)]
    for n in (3, 1, 4):
        window.finish(tickets[n])
    assert acked == [] and len(window) == 5
    window.finish(tickets[0])
    assert acked == [0, 1]
    window.finish(tickets[2])
    assert acked == [0, 1, 2, 3, 4] and len(window) == 0


def test_a_forgotten_window_acks_nothing_more() -> None:
    acked: list[int] = []
    window: AckWindow[int] = AckWindow(acked.append)
    first = window.add(1)
    window.forget()
    window.finish(first)
    assert acked == []


async def test_orders_then_stock_then_prices_then_the_catalogue() -> None:
    scheduler: Scheduler[int] = Scheduler(batch_size=10, linger=0)
    for n, entity in enumerate(["product", "price", "stock", "order_status", "stock"]):
        scheduler.put(event(entity, f"K{n}", n + 1), Ticket(n))
    order = []
    for _ in range(4):
        batch = await scheduler.next_batch()
        order.append(sorted({q.event.entity for q in batch}))
        scheduler.release(batch)
    assert order == [["order_status"], ["stock"], ["price"], ["product"]]
    assert len(scheduler) == 0


async def test_a_key_in_flight_waits_and_keeps_its_order() -> None:
    scheduler: Scheduler[int] = Scheduler(batch_size=3, linger=0)
    for sequence, subject in enumerate(["A", "B", "A", "C", "A"], start=1):
        scheduler.put(event("stock", subject, sequence), Ticket(sequence))

    def shown(batch: list[Queued[int]]) -> list[str]:
        return [f"{q.event.subject}{int(q.event.sequence)}" for q in batch]

    first = await scheduler.next_batch()
    assert shown(first) == ["A1", "B2", "C4"]  # one event per key in a batch
    waiting = asyncio.ensure_future(scheduler.next_batch())
    await run_ready()
    assert not waiting.done(), "a batch with A while A is in flight"
    scheduler.release(first)
    second = await waiting
    assert shown(second) == ["A3"]
    waiting = asyncio.ensure_future(scheduler.next_batch())
    await run_ready()
    assert not waiting.done(), "A5 overtook A3"
    scheduler.release(second)
    assert shown(await waiting) == ["A5"]


async def test_linger_lets_a_burst_fill_one_batch() -> None:
    # A linger far longer than any test: this batch goes out because it is full.
    scheduler: Scheduler[int] = Scheduler(batch_size=30, linger=3600)
    scheduler.put(event("stock", "K0", 1), Ticket(0))
    filling = asyncio.ensure_future(scheduler.next_batch())
    await run_ready()
    assert not filling.done(), "one event went out alone"
    for n in range(1, 30):  # the rest of the burst, one by one, while the batch fills
        scheduler.put(event("stock", f"K{n}", n + 1), Ticket(n))
        await run_ready()
        assert filling.done() == (n == 29)
    assert [q.ticket.item for q in filling.result()] == list(range(30))


async def test_a_batch_that_does_not_fill_goes_out_when_the_linger_ends() -> None:
    scheduler: Scheduler[int] = Scheduler(batch_size=50, linger=0.05)
    scheduler.put(event("stock", "K0", 1), Ticket(0))
    batch = await asyncio.wait_for(scheduler.next_batch(), 30)
    assert [q.ticket.item for q in batch] == [0]


async def test_waiting_counts_batches_until_they_are_released() -> None:
    """A batch a shop keeps refusing is out of the queue but not applied: still waiting."""
    scheduler: Scheduler[int] = Scheduler(batch_size=2, linger=0)
    for n in range(3):
        scheduler.put(event("stock", f"K{n}", n + 1), Ticket(n))
    batch = await scheduler.next_batch()
    assert (len(scheduler), scheduler.waiting) == (1, 3)
    scheduler.forget()  # the connection went; the batch in flight is still held
    assert scheduler.waiting == 2
    scheduler.release(batch)
    assert scheduler.waiting == 0
