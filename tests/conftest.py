"""Shared fixtures: one real Mosquitto per session, real ERP databases per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.erp import ErpDb
from tests.support import Mosquitto

BACKENDS = ["sqlite", "postgres", "mariadb"]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """The session's broker. Tests that stop a broker use ``make_broker`` instead."""
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    started: list[Mosquitto] = []

    def make(extra: str = "") -> Mosquitto:
        mosquitto = Mosquitto(tmp_path / f"mosquitto-{len(started)}", extra)
        mosquitto.start()
        started.append(mosquitto)
        return mosquitto

    yield make
    for mosquitto in started:
        mosquitto.stop()


@pytest.fixture
def make_erp(tmp_path: Path) -> Iterator[Callable[[str], ErpDb]]:
    made: list[ErpDb] = []

    def make(backend: str) -> ErpDb:
        erp = ErpDb(backend, tmp_path)
        made.append(erp)
        return erp

    yield make
    for erp in made:
        erp.close()


@pytest.fixture(params=BACKENDS)
def erp(request: pytest.FixtureRequest, make_erp: Callable[[str], ErpDb]) -> ErpDb:
    """The Dolibarr-shaped ERP on each real backend in turn."""
    return make_erp(request.param)
