"""Config: strict, every problem at once by key path, exit 78; example configs load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import Config, load_config, parse_duration, read_secret
from agent.errors import ConfigError
from tests.support import REPO, write_secret

GOOD = """
[agent]
id = "erp-madrid-1"
tenant = "acme"
state_dir = "/tmp/distillsync-test"

[relay]
url = "mqtts://relay.example.com:8883"
username = "erp-madrid-1"
password_file = "/run/credentials/distillsync.service/relay-password"
topic_prefix = "distillsync"

[api]
socket = "/run/distillsync/agent.sock"

[[sources]]
name = "erp"
type = "sql"
url = "postgresql+asyncpg://sync@127.0.0.1/erp"
poll_interval = "5s"

  [[sources.entities]]
  entity = "stock"
  query = "SELECT sku, warehouse, on_hand, updated_at FROM stock_levels"
  key = ["sku", "warehouse"]
  mode = "timestamp"
  cursor = "updated_at"
  lookback = "30s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_the_design_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    entity = config.sources[0].entities[0]
    assert (entity.mode, entity.cursor, entity.lookback) == ("timestamp", "updated_at", 30.0)
    assert config.sources[0].poll_interval == 5.0
    assert config.client_id == "distillsync-acme-erp-madrid-1"


# Each bad file: (what to change in GOOD, the exact problem line expected).
BAD = [
    ('tenant = "acme"', 'tenant = "Acme"', "agent.tenant: 'Acme' does not match ^[a-z0-9-]+$"),
    (
        'id = "erp-madrid-1"',
        'id = "erp madrid"',
        "agent.id: 'erp madrid' does not match ^[a-z0-9-]+$",
    ),
    ("[agent]\n", '[agent]\ncolour = "blue"\n', "agent.colour: unknown key"),
    ('id = "erp-madrid-1"\n', "", "agent.id: required"),
    (
        'url = "mqtts://relay.example.com:8883"',
        'url = "mqtt://relay.example.com"',
        "relay.url: mqtt:// sends data unencrypted to relay.example.com; use mqtts:// "
        "or set relay.allow_insecure = true",
    ),
    (
        'url = "mqtts://relay.example.com:8883"',
        'url = "http://relay"',
        "relay.url: must look like mqtt://host:1883 or mqtts://host:8883",
    ),
    (
        'topic_prefix = "distillsync"',
        'topic_prefix = "distillsync"\nprotocol = "3"',
        "relay.protocol: Input should be '5' or '3.1.1'",
    ),
    (
        'poll_interval = "5s"',
        'poll_interval = "5 parsecs"',
        'sources[0].poll_interval: \'5 parsecs\' is not a duration such as "250ms", "5s", '
        '"2m", "1h" or "1d"',
    ),
    (
        'poll_interval = "5s"',
        "poll_interval = 5",
        'sources[0].poll_interval: a duration is a string such as "250ms", "5s", "2m", '
        '"1h" or "1d"',
    ),
    (
        'poll_interval = "5s"',
        'poll_interval = "0s"',
        "sources[0].poll_interval: must be longer than zero",
    ),
    (
        'url = "postgresql+asyncpg://sync@127.0.0.1/erp"',
        'url = "postgresql://sync@h/erp"',
        "sources[0].url: 'postgresql' is not an async SQLAlchemy driver; use one of "
        "mariadb+aiomysql, mariadb+asyncmy, mssql+aioodbc, mysql+aiomysql, mysql+asyncmy, "
        "postgresql+asyncpg, sqlite+aiosqlite",
    ),
    ('  cursor = "updated_at"\n', "", "sources[0].entities[0].cursor: required in timestamp mode"),
    (
        '  mode = "timestamp"',
        '  mode = "snapshot"',
        "sources[0].entities[0].cursor: not used in snapshot mode; remove it",
    ),
    (
        'entity = "stock"',
        'entity = "stok"',
        "sources[0].entities[0].entity: Input should be 'product', 'price', 'stock', "
        "'promotion', 'order_status', 'invoice' or 'customer'",
    ),
    (
        'query = "SELECT',
        'query = "DELETE FROM x; SELECT',
        "sources[0].entities[0].query: must be a SELECT (or WITH ... SELECT) statement",
    ),
    (
        'key = ["sku", "warehouse"]',
        "key = []",
        "sources[0].entities[0].key: List should have at least 1 item after validation, not 0",
    ),
    (
        'key = ["sku", "warehouse"]',
        'key = ["sku", "updated_at"]',
        "sources[0].entities[0].cursor: the cursor column cannot also be a key column",
    ),
    (
        '  lookback = "30s"',
        '  lookback = "30s"\n  lookahead = "1s"',
        "sources[0].entities[0].lookahead: unknown key",
    ),
    (
        'url = "postgresql+asyncpg://sync@127.0.0.1/erp"',
        'url = "sqlite+aiosqlite:////srv/erp.db"\npassword_env = "X"',
        "sources[0].password_env: SQLite files have no password; remove it",
    ),
    (
        'poll_interval = "5s"',
        'poll_interval = "5s"\ntimezone = "Mars/Olympus"',
        "sources[0].timezone: unknown time zone 'Mars/Olympus'",
    ),
    (
        'socket = "/run/distillsync/agent.sock"',
        'socket = "/run/distillsync/agent.sock"\nlisten = "0.0.0.0:8765"\ntoken_env = "T"',
        "api.listen: 0.0.0.0 is not loopback; the status API must not face a network "
        "(put a TLS proxy in front if it must)",
    ),
    (
        'socket = "/run/distillsync/agent.sock"',
        'socket = "/run/distillsync/agent.sock"\nlisten = "127.0.0.1:http"\ntoken_env = "T"',
        "api.listen: '127.0.0.1:http' is not an address such as \"127.0.0.1:8765\"",
    ),
    (
        'socket = "/run/distillsync/agent.sock"',
        'socket = "/run/distillsync/agent.sock"\nlisten = "[::1]:8765"',
        "api.token_file: required when listen is set (or token_env, token_credential)",
    ),
    (
        'socket = "/run/distillsync/agent.sock"',
        f'socket = "/run/{"x" * 100}/agent.sock"',
        f"api.socket: /run/{'x' * 100}/agent.sock is 116 bytes long; a Unix socket's path "
        "can hold at most 107: choose a shorter one",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD, ids=[b[2][:40] for b in BAD])
def test_each_bad_config_names_its_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD.replace(old, new, 1)))
    assert caught.value.problems == [expected]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        GOOD.replace('tenant = "acme"', 'tenant = "ACME"')
        .replace('poll_interval = "5s"', 'poll_interval = "soon"')
        .replace('  cursor = "updated_at"\n', "")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    paths = [p.split(":")[0] for p in caught.value.problems]
    assert paths == ["agent.tenant", "sources[0].poll_interval", "sources[0].entities[0].cursor"]


def test_a_url_sqlalchemy_cannot_parse_is_a_config_error(tmp_path: Path) -> None:
    text = GOOD.replace(
        "postgresql+asyncpg://sync@127.0.0.1/erp",
        "postgresql+asyncpg://sync@127.0.0.1:notaport/erp",
    )
    path = write(tmp_path, text.replace("/tmp/distillsync-test", str(tmp_path / "state")))
    result = subprocess.run(
        [sys.executable, "-m", "cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 78
    assert "sources[0].url: " in result.stderr and "Traceback" not in result.stderr


def test_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[agent\nid = 1"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_cli_exits_78_listing_problems(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('tenant = "acme"', 'tenant = "A"'))
    result = subprocess.run(
        [sys.executable, "-m", "cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 78
    assert "agent.tenant: 'A' does not match" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5), ("2m", 120), ("1h", 3600), ("1d", 86400), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_secrets_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    write_secret(secret, "s3cret\n")
    assert read_secret(secret, None, "relay.password") == "s3cret"
    monkeypatch.setenv("RELAY_PW", "from-env")
    assert read_secret(None, "RELAY_PW", "relay.password") == "from-env"
    with pytest.raises(ConfigError, match=r"relay.password_env: environment variable NOPE"):
        read_secret(None, "NOPE", "relay.password")
    with pytest.raises(ConfigError) as caught:
        read_secret(tmp_path / "absent", None, "relay.password")
    assert "s3cret" not in str(caught.value)


EXAMPLES = sorted((REPO / "config").glob("agent.*.toml"))  # relay.toml: test_relay_config


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_loads(example: Path) -> None:
    load_config(example)


def test_there_are_example_configs() -> None:
    assert len(EXAMPLES) >= 3


def secret_keys(config: Config) -> dict[str, tuple[str, str]]:
    """Every secret the config gives: key path -> (``file``/``env``/``credential``, value)."""
    holders: list[tuple[str, object]] = [("relay.password", config.relay)]
    holders += [(f"sources[{i}].password", s) for i, s in enumerate(config.sources)]
    holders.append(("api.token", config.api))
    found = {}
    for path, holder in holders:
        stem = path.rsplit(".", 1)[1]
        for how in ("file", "env", "credential"):
            value = getattr(holder, f"{stem}_{how}")
            if value is not None:
                found[path] = (how, str(value))
    return found


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_secret_of_an_example_is_a_systemd_credential(example: Path) -> None:
    """The examples run under systemd/distillsync-agent.service, which hands secrets over
    as credentials: test_systemd checks that it loads exactly the ones named here."""
    config = load_config(example)
    secrets = secret_keys(config)
    assert {how for how, _ in secrets.values()} == {"credential"}, secrets
    needed = [
        "relay.password",
        *(
            f"sources[{i}].password"
            for i, s in enumerate(config.sources)
            if not s.url.startswith("sqlite")
        ),
    ]
    assert sorted(secrets) == sorted(needed)
