"""A first end-to-end pass: ERP rows reach a subscriber through the real daemon."""

from __future__ import annotations

from pathlib import Path

from tests.erp import ErpDb, source_toml, stock_entity
from tests.support import AgentProcess, Collector, Mosquitto, agent_toml


def test_stock_rows_reach_the_subscriber(erp: ErpDb, broker: Mosquitto, tmp_path: Path) -> None:
    erp.add_warehouses("WH1", "WH2")
    erp.add_products(20)
    for product in range(1, 21):
        erp.set_stock(product, 1, product)
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state",
            broker.url,
            source_toml(erp, stock_entity()),
            agent_id=f"smoke-{erp.backend}",
        )
    )
    with (
        Collector(broker.port, f"distillsync/acme/smoke-{erp.backend}/#") as sub,
        AgentProcess(config, tmp_path / "agent.log") as agent,
    ):
        sub.wait_for(lambda events: len(events) >= 20, 30, "20 stock events")
        erp.set_stock(3, 1, 99)
        sub.wait_for(
            lambda _: sub.latest_by_subject("stock")["SKU-3/WH1"]["data"]["on_hand"] == 99,
            30,
            "SKU-3 at 99",
        )
        assert agent.terminate() == 0
    latest = sub.latest_by_subject("stock")
    assert {s: e["data"]["on_hand"] for s, e in latest.items()} == {
        f"SKU-{p}/WH1": (99 if p == 3 else p) for p in range(1, 21)
    }
