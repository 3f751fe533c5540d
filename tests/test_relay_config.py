"""``distillsync consume``'s config: the example loads, and a bad file names its keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import ConfigProblems, load, sink_settings
from tests.relay_support import consumer_toml, webhook_sink
from tests.support import REPO, write_secret

EXAMPLE = REPO / "config" / "relay.toml"


def test_the_example_loads_with_every_sink_type() -> None:
    config = load(EXAMPLE)
    kinds = [settings.model_dump()["type"] for _, settings in sink_settings(config)]
    assert kinds == ["woocommerce", "shopify", "prestashop", "magento", "webhook"]
    assert config.client_id == "distillsync-consumer-shops-1"
    assert config.pipeline.linger == 0.02 and config.store.id_retention == 7 * 86400


BAD = [
    ('name = "shops-1"', 'name = "Shops 1"', "consumer.name: String should match pattern"),
    (
        'url = "mqtts://relay.example.com:8883"',
        'url = "mqtt://relay.example.com"',
        "relay.url: mqtt:// sends data unencrypted to relay.example.com",
    ),
    ('tenants = ["acme"]', 'tenants = ["ACME"]', "subscribe.tenants[0]"),
    (
        'entities = ["order_status", "stock", "price", "product"]',
        'entities = ["stok"]',
        "subscribe.entities[0]: Input should be",
    ),
    ("batch_size = 100", "batch_size = 0", "pipeline.batch_size: Input should be greater"),
    (
        'type = "woocommerce"',
        'type = "bigcommerce"',
        "sinks[0].type: one of webhook, woocommerce, shopify, prestashop, magento",
    ),
    (
        'warehouse = "MAD"                # the',
        'colour = "blue"  # the',
        "sinks[0].warehouse: required",
    ),
    ('name = "shop-fr"', 'name = "shop-es"', "sinks: name 'shop-es' is used twice"),
    (
        "requests_per_second = 5\n",
        'requests_per_second = 5\nca_file = "/nonexistent/ca.pem"\n',
        "sinks[0].ca_file: cannot load /nonexistent/ca.pem: No such file or directory",
    ),
    ("[pipeline]", "[pipeline]\nturbo = true", "pipeline.turbo: unknown key"),
    (
        'socket = "/run/distillsync/relay.sock"',
        f'socket = "/run/{"x" * 100}/relay.sock"',
        f"api.socket: /run/{'x' * 100}/relay.sock is 116 bytes long; a Unix socket's path",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD, ids=[b[2][:40] for b in BAD])
def test_each_bad_config_names_its_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "relay.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigProblems) as caught:
        load(path)
    assert any(problem.startswith(expected) for problem in caught.value.problems), (
        caught.value.problems
    )


def test_the_command_exits_78_listing_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(EXAMPLE.read_text().replace("batch_size = 100", 'batch_size = "many"'))
    done = consume(path)
    assert done.returncode == 78
    assert "pipeline.batch_size: Input should be a valid integer" in done.stderr


def test_a_store_it_cannot_open_exits_69_saying_which(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    write_secret(secret, "s")
    path = tmp_path / "relay.toml"
    path.write_text(
        consumer_toml(
            tmp_path,
            "mqtt://127.0.0.1:1",
            webhook_sink("http://127.0.0.1:9/hook", secret),
            store="postgresql://nobody@127.0.0.1:1/nothing",
        )
    )
    done = consume(path)
    assert done.returncode == 69, done.stderr
    assert "version store postgresql" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mongodb://127.0.0.1/x", "store.url: mongodb:// is not supported"),
        ("sqlite:///:memory:", "store.url: SQLite needs a file path"),
    ],
)
def test_a_store_url_no_restart_can_mend_exits_78(tmp_path: Path, url: str, words: str) -> None:
    """Unlike a store that is down (69: systemd tries again), a URL naming no usable store
    is the operator's to fix: 78 keeps systemd from restarting into the same refusal."""
    secret = tmp_path / "secret"
    write_secret(secret, "s")
    path = tmp_path / "relay.toml"
    path.write_text(
        consumer_toml(
            tmp_path,
            "mqtt://127.0.0.1:1",
            webhook_sink("http://127.0.0.1:9/hook", secret),
            store=url,
        )
    )
    done = consume(path)
    assert done.returncode == 78, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr


def test_a_missing_sink_secret_is_named_by_its_key(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        consumer_toml(
            tmp_path,
            "mqtt://127.0.0.1:1",
            webhook_sink("http://127.0.0.1:9/hook", tmp_path / "nope"),
        )
    )
    done = consume(path)
    assert done.returncode == 78
    assert f"sinks[0].secret_file: cannot read {tmp_path / 'nope'}" in done.stderr


def consume(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "consume", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
