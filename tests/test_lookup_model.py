"""relay.sinks.lookup against a model: a cache is a shortcut, and a shortcut must not lie.

Random sequences of what a sink does with its cache (ask what is known, record a found id or
a miss, report an id stale), what time does (the injected clock moves), and what an operator
does (restart the consumer: a new cache on the same SQLite version store). The model is the
plain truth: the last id found for a SKU and not reported stale since, and each miss with the
time it was recorded, forgotten on restart. The cache must answer exactly what the model says:
never an id the model has forgotten, never a miss past its TTL, and after a restart the ids
(persisted), not the misses (memory only).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.sinks.lookup import Miss, SkuIds
from relay.store import VersionStore

TTL = 100
SKUS = st.sampled_from(["A", "B", "C"])
IDS = st.integers(1, 4)


@dataclass(frozen=True, slots=True)
class Ref:
    id: int
    parent_id: int = 0


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("known"), st.lists(SKUS, min_size=1, max_size=3)),
        st.tuples(st.just("found"), st.dictionaries(SKUS, IDS, min_size=1)),
        st.tuples(st.just("missing"), SKUS),
        st.tuples(st.just("stale"), SKUS, IDS),
        st.tuples(st.just("tick"), st.sampled_from([1, TTL // 2, TTL - 1, TTL, TTL + 1])),
        st.tuples(st.just("restart")),
    ),
    max_size=40,
)


class Model:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.misses: dict[str, float] = {}
        """SKU -> when its miss was recorded."""

    def expected(self, skus: list[str], now: float) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for sku in skus:
            if sku in self.ids:
                answer[sku] = Ref(self.ids[sku])
            elif sku in self.misses and now < self.misses[sku] + TTL:
                answer[sku] = Miss(f"no {sku}", self.misses[sku] + TTL)
        return answer


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
@example([("missing", "A"), ("tick", TTL - 1), ("known", ["A"]), ("tick", 1), ("known", ["A"])])
@example(
    [
        ("found", {"A": 1}),
        ("missing", "B"),
        ("restart",),
        ("known", ["A", "B"]),
        ("stale", "A", 2),
        ("known", ["A"]),
        ("stale", "A", 1),
        ("restart",),
        ("known", ["A"]),
    ]
)
async def test_the_cache_answers_what_the_model_says(operations: list[tuple[Any, ...]]) -> None:
    clock, model = Clock(), Model()
    with tempfile.TemporaryDirectory() as folder:
        async with await VersionStore.open(f"sqlite:///{folder}/relay.db") as store:

            def started() -> SkuIds[Ref]:
                cache = SkuIds("shop", Ref, TTL, store)
                cache.clock = clock
                return cache

            cache = started()
            other_sink = SkuIds("other", Ref, TTL, store)  # shares the table, never the rows
            await other_sink.found({"A": Ref(99), "B": Ref(98)})
            for operation, *args in operations:
                if operation == "known":
                    [skus] = args
                    got = await cache.known(skus)
                    for sku, answer in got.items():
                        if isinstance(answer, Miss):
                            assert clock.now < answer.until, "a miss served past its TTL"
                        else:
                            assert model.ids.get(sku) == answer.id, "an id the model forgot"
                    assert got == model.expected(skus, clock.now)
                elif operation == "found":
                    [found] = args
                    await cache.found({sku: Ref(number) for sku, number in found.items()})
                    model.ids.update(found)
                    for sku in found:
                        model.misses.pop(sku, None)
                elif operation == "missing":
                    [sku] = args
                    cache.missing(sku, f"no {sku}")
                    model.misses[sku] = clock.now
                elif operation == "stale":
                    sku, number = args
                    await cache.stale(sku, Ref(number))
                    if model.ids.get(sku) == number:
                        del model.ids[sku]
                elif operation == "tick":
                    clock.now += args[0]
                else:
                    cache = started()
                    model.misses.clear()
            assert await other_sink.known(["A", "B"]) == {"A": Ref(99), "B": Ref(98)}
