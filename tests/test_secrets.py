"""Secrets: from ``*_file``, ``*_env`` and systemd ``*_credential`` keys; a secret file that
other users can read is refused; and no secret value ever shows anywhere an operator (or
an attacker reading over their shoulder) can look.

The leak test runs the real thing: an agent process at debug level holding a relay
password (a systemd credential; Mosquitto checks it against its password file), a
PostgreSQL password (a file; the local server trusts loopback, so it logs in), a MariaDB
password (an environment variable; wrong, so that source fails with the server's error)
and an API token (the TCP listener's), then greps for each value in its log, the status
API, ``distillsync status --json``, ``distillsync check``, a refused relay login, and the
dashboard's screen. A consumer with a webhook secret gets the same treatment.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client
import paho.mqtt.publish
import pytest

from agent.apiclient import ApiClient
from agent.check import check_api
from agent.config import check_private, parse_config, read_secret
from agent.errors import ConfigError
from agent.publisher import tls_context
from agent.runners import source_password
from agent.service import link_settings
from demo.localbroker import free_port
from relay import settings as kit
from relay.config import ConfigProblems
from relay.config import load as load_consumer
from relay.service import build_sinks, session_settings
from tests.erp import MARIADB, STOCK_QUERY, ErpDb
from tests.relay_support import ConsumerProcess, stock_event
from tests.sims.webhook import WebhookReceiver
from tests.support import (
    REPO,
    AgentProcess,
    product_source,
    run_cli,
    wait_until,
    write_secret,
)
from tests.tls_support import HAVE_OPENSSL, ConfiguredBroker, make_ca, make_cert
from tui.app import AgentDashboard
from tui.sources import ApiSource

# Each value is unusual enough that finding it anywhere is a leak, with characters a URL
# would percent-encode, so an encoded copy is caught too.
SECRETS = {
    "relay password": "relay-pw-7Hq2Lx@/:",
    "wrong relay password": "wrong-pw-3Ty6Wn%+",
    "postgres password": "pg-pw-9Vd3Rm@/:%",
    "mariadb password": "maria-pw-4Nc8Ty@?&",
    "api token": "api-token-6Bw1Zk",
    "consumer relay password": "consumer-pw-2Jf5Qs#",
    "webhook secret": "hook-secret-8Gp4Xe",
}
TESTER = ("tester", "tester-password")  # the test's own MQTT login; not under watch


def leaks(text: str) -> list[str]:
    """The secrets found in ``text``, as they are or percent-encoded."""
    return [
        name for name, value in SECRETS.items() if value in text or quote(value, safe="") in text
    ]


# --- the rule for secret files -----------------------------------------------------------

READERS = {0o644: "its group and other users", 0o640: "its group", 0o604: "other users"}


@pytest.mark.parametrize("mode", list(READERS))
@pytest.mark.parametrize("package", ["agent", "relay kit"])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int, package: str) -> None:
    path = tmp_path / "relay-password"
    path.write_text(SECRETS["relay password"])
    path.chmod(mode)
    with pytest.raises((ConfigError, kit.SecretMissing)) as refused:
        if package == "agent":
            read_secret(path, None, "relay.password")
        else:
            kit.read_secret(path, None, "relay.password")
    message = str(refused.value)
    assert message == (
        f"relay.password_file: {path} holds a secret but {READERS[mode]} can read it "
        f"(mode {mode:04o}); make it private with `chmod 600 {path}` (owned by the user the "
        f"{'agent' if package == 'agent' else 'consumer'} runs as), or hand it over with "
        "systemd's LoadCredential="
    )
    assert not leaks(message)
    path.chmod(0o600)
    assert read_secret(path, None, "relay.password") == SECRETS["relay password"]
    path.chmod(0o400)
    assert kit.read_secret(path, None, "relay.password") == SECRETS["relay password"]


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``$CREDENTIALS_DIRECTORY`` as systemd makes it (here without its ownership)."""
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o500)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    return folder


def credential(folder: Path, name: str, value: str, mode: int = 0o400) -> Path:
    folder.chmod(0o700)
    path = folder / name
    path.write_text(value)
    path.chmod(mode)
    folder.chmod(0o500)
    return path


def test_credentials_may_be_group_readable_but_not_world_readable(credentials: Path) -> None:
    """systemd makes credentials 0400, or 0440 for the service's group."""
    path = credential(credentials, "relay-password", SECRETS["relay password"], 0o440)
    assert read_secret(None, None, "relay.password", "relay-password") == SECRETS["relay password"]
    assert (
        kit.read_secret(None, None, "relay.password", "relay-password") == SECRETS["relay password"]
    )
    path.chmod(0o444)
    with pytest.raises(ConfigError, match=r"relay.password_credential: .* other users can"):
        read_secret(None, None, "relay.password", "relay-password")
    with pytest.raises(kit.SecretMissing, match=r"relay.password_credential: .* other users"):
        kit.read_secret(None, None, "relay.password", "relay-password")


def test_a_credential_names_its_key_when_it_cannot_be_had(
    credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for reader in (read_secret, kit.read_secret):
        with pytest.raises((ConfigError, kit.SecretMissing)) as missing:
            reader(None, None, "sources[0].password", "erp-password")
        assert str(missing.value) == (
            f"sources[0].password_credential: no credential 'erp-password' in {credentials}; "
            "add LoadCredential=erp-password:/path/to/the/secret to the unit"
        )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    for reader in (read_secret, kit.read_secret):
        with pytest.raises((ConfigError, kit.SecretMissing)) as unset:
            reader(None, None, "api.token", "api-token")
        assert str(unset.value).startswith(
            "api.token_credential: CREDENTIALS_DIRECTORY is not set; systemd sets it for a "
            "unit with LoadCredential=api-token:/path/to/the/secret"
        )


AGENT: dict[str, Any] = {
    "agent": {"id": "erp-1", "tenant": "acme"},
    "relay": {"url": "mqtt://127.0.0.1:1883", "username": "acme.erp-1"},
    "api": {"socket": "/tmp/agent.sock"},
    "sources": [
        {
            "name": "erp",
            "url": "postgresql+asyncpg://sync@127.0.0.1/erp",
            "entities": [
                {
                    "entity": "product",
                    "query": "SELECT 1 AS sku",
                    "key": ["sku"],
                    "mode": "snapshot",
                }
            ],
        }
    ],
}


def agent_with(**changes: dict[str, Any]) -> dict[str, Any]:
    return {
        **AGENT,
        **{
            section: (
                {**AGENT[section], **change}
                if section != "sources"
                else [{**AGENT["sources"][0], **change}]
            )
            for section, change in changes.items()
        },
    }


def test_every_agent_secret_reads_a_systemd_credential(credentials: Path) -> None:
    """relay.password, sources[].password and api.token: the same one function, each with
    its own key path when the credential is missing."""
    config = parse_config(
        agent_with(
            relay={"password_credential": "relay-password"},
            sources={"password_credential": "erp-password"},
            api={"listen": "127.0.0.1:8765", "token_credential": "api-token"},
        )
    )
    readers: dict[str, Callable[[], object]] = {
        "relay.password": lambda: link_settings(config).password,
        "sources[0].password": lambda: source_password(config.sources[0], 0),
    }
    for key, read in readers.items():
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}_credential: no credential"):
            read()
    assert check_api(config, print) == [
        f"api.token_credential: no credential 'api-token' in {credentials}; "
        "add LoadCredential=api-token:/path/to/the/secret to the unit"
    ]
    for name, key in (
        ("relay-password", "relay password"),
        ("erp-password", "postgres password"),
        ("api-token", "api token"),
    ):
        credential(credentials, name, SECRETS[key])
    assert link_settings(config).password == SECRETS["relay password"]
    assert source_password(config.sources[0], 0) == SECRETS["postgres password"]
    assert check_api(config, print) == []


def test_every_consumer_secret_reads_a_systemd_credential(
    credentials: Path, tmp_path: Path
) -> None:
    """config/relay.toml as shipped names each secret as a ``*_credential`` that
    systemd/distillsync-consume.service loads (commented out for the sinks, which one keeps
    as needed): the consumer and every sink read theirs, and a missing one is named by its
    full key path."""
    text = (REPO / "config" / "relay.toml").read_text()
    names = re.findall(r'^(\w+)_credential = "([\w-]+)"', text, re.MULTILINE)
    assert len(names) == 7, "the relay password and six sink secrets"
    unit = (REPO / "systemd" / "distillsync-consume.service").read_text()
    loaded = re.findall(
        r"^#?LoadCredential=([\w-]+):/etc/distillsync/credentials/\1$", unit, re.MULTILINE
    )
    assert sorted(loaded) == sorted(name for _, name in names)
    config_path = tmp_path / "relay.toml"
    config_path.write_text(text)
    config = load_consumer(config_path)
    for _, name in names:
        credential(credentials, name, f"value-of-{name}")
    assert session_settings(config).password == "value-of-relay-password"
    sinks = build_sinks(config)
    assert len(sinks) == 5
    for index, sink_name in enumerate(
        ["wc-key", "shopify-token", "prestashop-key", "magento-token", "webhook-secret"]
    ):
        (credentials / sink_name).chmod(0o444)  # now one every user can read
        with pytest.raises(kit.SecretMissing, match=rf"^sinks\[{index}\]\.\w+_credential: "):
            build_sinks(config)
        (credentials / sink_name).chmod(0o400)


def test_a_readable_private_key_is_refused(tmp_path: Path) -> None:
    if not HAVE_OPENSSL:
        pytest.skip("needs the openssl command")
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "ca", "client", "acme.erp-1", ip=None)
    key = tmp_path / "client.key"
    key.chmod(0o644)
    with pytest.raises(
        ConfigError,
        match=r"^relay.key_file: .* holds a secret but its group "
        r"and other users can read it \(mode 0644\)",
    ):
        tls_context(tmp_path / "ca.pem", tmp_path / "client.pem", key)
    key.chmod(0o600)
    tls_context(tmp_path / "ca.pem", tmp_path / "client.pem", key)
    key.chmod(0o640)
    with pytest.raises(ConfigError, match=r"^relay.key_file: .* its group can read it"):
        check_private(key, "relay.key_file")
    with pytest.raises(kit.SecretMissing, match=r"^relay.key_file: .* its group can read it"):
        kit.check_private(key, "relay.key_file")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            dict(relay={"password_file": "/run/pw", "password_env": "PW"}),
            "relay.password_env: set only one of password_file, password_env, password_credential",
        ),
        (
            dict(sources={"password_env": "PW", "password_credential": "erp"}),
            "sources[0].password_credential: set only one of password_file, password_env, "
            "password_credential",
        ),
        (
            dict(relay={"password_credential": "../etc/shadow"}),
            "relay.password_credential: '../etc/shadow' does not match "
            "^[A-Za-z0-9_][A-Za-z0-9_.@-]*$",
        ),
        (
            dict(
                relay={"url": f"mqtt://acme:{quote(SECRETS['relay password'], safe='')}@127.0.0.1"}
            ),
            "relay.url: holds a password; put it in password_file, password_env or "
            "password_credential instead",
        ),
        (
            dict(
                sources={
                    "url": "postgresql+asyncpg://sync:"
                    + quote(SECRETS["postgres password"], safe="")
                    + "@127.0.0.1/erp"
                }
            ),
            "sources[0].url: holds a password; put it in password_file, password_env or "
            "password_credential instead",
        ),
    ],
)
def test_one_way_to_each_secret_and_never_inside_a_url(
    changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(agent_with(**changes))
    assert refused.value.problems == [problem]
    assert not leaks(str(refused.value))


def test_the_agent_refuses_to_start_with_a_secret_others_can_read(tmp_path: Path) -> None:
    secret = tmp_path / "relay-password"
    secret.write_text(SECRETS["relay password"])
    secret.chmod(0o644)
    config = tmp_path / "agent.toml"
    source = product_source(tmp_path / "erp.db", "A")
    config.write_text(
        agent_toml(
            tmp_path,
            "mqtt://127.0.0.1:1",
            source,
            f'username = "acme.erp-1"\npassword_file = "{secret}"',
        )
    )
    done = run_cli(config, "run")
    assert done.returncode == 78, done.stderr
    assert (
        f"relay.password_file: {secret} holds a secret but its group and other users can "
        f"read it (mode 0644); make it private with `chmod 600 {secret}`"
    ) in done.stderr
    assert not leaks(done.stdout + done.stderr)


def test_the_consumer_refuses_to_start_with_a_secret_others_can_read(tmp_path: Path) -> None:
    secret = tmp_path / "webhook-secret"
    secret.write_text(SECRETS["webhook secret"])
    secret.chmod(0o640)
    config = tmp_path / "relay.toml"
    config.write_text(
        consumer_toml(
            tmp_path,
            "mqtt://127.0.0.1:1",
            "",
            f'secret_file = "{secret}"',
            "https://hooks.example.com/x",
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli", "consume", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert f"sinks[0].secret_file: {secret} holds a secret but its group can read it" in done.stderr
    assert not leaks(done.stdout + done.stderr)


def test_the_consumers_relay_url_keeps_no_password(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        consumer_toml(
            tmp_path,
            "mqtts://c:hunter2@relay.example.com",
            "",
            'secret_env = "HOOK"',
            "https://hooks.example.com/x",
        )
    )
    with pytest.raises(ConfigProblems) as refused:
        load_consumer(config)
    assert refused.value.problems == [
        "relay.url: holds a password; put it in password_file, "
        "password_env or password_credential instead"
    ]


# --- no secret anywhere: the real processes ------------------------------------------------


def agent_toml(
    tmp: Path, relay_url: str, sources: str, relay_extra: str, api_extra: str = ""
) -> str:
    return (
        f'[agent]\nid = "erp-1"\ntenant = "acme"\nstate_dir = "{tmp}/state"\n'
        f'log_level = "debug"\nshutdown_timeout = "5s"\n\n'
        f'[relay]\nurl = "{relay_url}"\nkeepalive = "5s"\n{relay_extra}\n\n'
        f'[api]\nsocket = "{tmp}/agent.sock"\n{api_extra}\n\n{sources}'
    )


def consumer_toml(
    tmp: Path, relay_url: str, relay_extra: str, sink_secret: str, hook_url: str
) -> str:
    return (
        f'[consumer]\nname = "shops-1"\nlog_level = "debug"\n\n'
        f'[relay]\nurl = "{relay_url}"\nkeepalive = "5s"\n{relay_extra}\n\n'
        f'[subscribe]\ntenants = ["acme"]\nentities = ["stock"]\n\n'
        f'[store]\nurl = "sqlite:///{tmp}/relay.db"\n\n[api]\nsocket = "{tmp}/relay.sock"\n\n'
        f'[[sinks]]\ntype = "webhook"\nname = "hook"\nurl = "{hook_url}"\n{sink_secret}\n'
    )


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredBroker]:
    """A Mosquitto that wants a username and password from everyone."""
    folder = tmp_path_factory.mktemp("relay")
    passwd = folder / "passwd"
    passwd.touch()
    for user, password in (
        ("acme.erp-1", SECRETS["relay password"]),
        ("consumer.shops-1", SECRETS["consumer relay password"]),
        TESTER,
    ):
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwd), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
    port = free_port()
    broker = ConfiguredBroker(
        folder, port, f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mariadb_login() -> Iterator[tuple[str, str]]:
    """A MariaDB user whose password is not the one the agent holds: ``(user, db)``."""
    import pymysql

    user = f"ds_{os.getpid()}"
    admin = pymysql.connect(**MARIADB, autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE OR REPLACE USER '{user}'@'%' IDENTIFIED BY 'the-real-one'")
    try:
        yield user, "mysql"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


def sources_toml(pg: ErpDb, maria_user: str, tmp: Path) -> str:
    pg_password = write_secret(tmp / "pg-password", SECRETS["postgres password"])
    return (
        f'[[sources]]\nname = "erp"\nurl = "{pg.url}"\npassword_file = "{pg_password}"\n'
        f'poll_interval = "200ms"\n'
        f'  [[sources.entities]]\n  entity = "stock"\n  query = "{STOCK_QUERY}"\n'
        f'  key = ["sku", "warehouse"]\n  cursor = "tms"\n\n'
        f'[[sources]]\nname = "shop-db"\n'
        f'url = "mysql+aiomysql://{maria_user}@127.0.0.1:3306/mysql"\n'
        f'password_env = "MARIA_PASSWORD"\n'
        f'  [[sources.entities]]\n  entity = "product"\n  query = "SELECT 1 AS sku"\n'
        f'  key = ["sku"]\n  mode = "snapshot"\n'
    )


def screen_text(app: AgentDashboard) -> str:
    """What the terminal shows, as plain text (from the SVG screenshot)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def dashboard_text(url: str, token: str, wanted: Callable[[str], bool]) -> str:
    app = AgentDashboard(ApiSource(ApiClient(None, url=url, token=token)))
    async with app.run_test(size=(200, 50)) as pilot:
        for _ in range(500):
            if wanted(screen_text(app)):
                break
            await pilot.pause(0.02)
        main = screen_text(app)
        await pilot.press("d")
        await pilot.pause(0.3)
        return main + screen_text(app)


def api_texts(url: str, token: str) -> dict[str, str]:
    client = ApiClient(None, url=url, token=token)

    async def fetch() -> dict[str, str]:
        paths = [
            "/v1/health",
            "/v1/status",
            "/v1/metrics",
            "/v1/outbox?state=dead",
            "/v1/outbox?state=pending",
        ]
        return {path: (await client.get_text(path))[1] for path in paths}

    return asyncio.run(fetch())


def status_of(url: str, token: str) -> dict[str, Any]:
    code, body = asyncio.run(ApiClient(None, url=url, token=token).get("/v1/status"))
    assert isinstance(body, dict), (code, body)
    return body


async def test_no_secret_in_the_agents_log_status_check_or_dashboard(
    relay: ConfiguredBroker,
    tmp_path: Path,
    credentials: Path,
    mariadb_login: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg = ErpDb("postgres", tmp_path)
    try:
        pg.add_warehouses("MAD")
        pg.add_products(1)
        pg.set_stock(1, 1, 7)
        await run_the_agent_and_look_everywhere(
            relay, tmp_path, credentials, pg, mariadb_login[0], monkeypatch
        )
    finally:
        pg.close()


async def run_the_agent_and_look_everywhere(
    relay: ConfiguredBroker,
    tmp: Path,
    credentials: Path,
    pg: ErpDb,
    maria_user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credential(credentials, "relay-password", SECRETS["relay password"])
    write_secret(tmp / "api-token", SECRETS["api token"])
    monkeypatch.setenv("MARIA_PASSWORD", SECRETS["mariadb password"])
    port = free_port()
    url, token = f"http://127.0.0.1:{port}", SECRETS["api token"]
    config = tmp / "agent.toml"
    config.write_text(
        agent_toml(
            tmp,
            relay.url,
            sources_toml(pg, maria_user, tmp),
            'username = "acme.erp-1"\npassword_credential = "relay-password"',
            f'listen = "127.0.0.1:{port}"\ntoken_file = "{tmp / "api-token"}"',
        )
    )
    seen: dict[str, str] = {}
    with AgentProcess(config, tmp / "agent.log") as agent:

        def settled() -> bool:
            try:
                status = status_of(url, token)
            except OSError:
                return False
            return status["relay"]["published"] >= 1 and "Access denied" in str(status)

        await asyncio.to_thread(wait_until, settled, 60, "an event out, and MariaDB refusing")
        seen |= await asyncio.to_thread(api_texts, url, token)
        seen["dashboard"] = await dashboard_text(url, token, lambda s: "Access denied" in s)
        seen["status --json"] = await asyncio.to_thread(
            lambda: run_cli(config, "status", "--json").stdout
        )
        check = await asyncio.to_thread(run_cli_with_env, config, "check")
        seen["check"] = check.stdout + check.stderr
        credential(credentials, "relay-password", SECRETS["wrong relay password"])
        refused = await asyncio.to_thread(run_cli_with_env, config, "check")
        seen["check with a wrong relay password"] = refused.stdout + refused.stderr
        assert agent.terminate() == 0
    seen["agent log"] = agent.output()

    # Each surface was really looked at: the figures, the errors and the screen are there.
    assert "relay connected" in seen["agent log"] and "DEBUG" in seen["agent log"]
    assert "Access denied for user" in seen["/v1/status"] + seen["dashboard"] + seen["check"]
    assert "erp-1" in seen["dashboard"] and "shop-db" in seen["dashboard"]
    assert "distillsync_relay_connected 1" in seen["/v1/metrics"]
    assert '"published"' in seen["status --json"]
    assert "ok   relay mqtt://" in seen["check"] and check.returncode == 78
    assert "the relay refused the login" in seen["check with a wrong relay password"]
    assert {where: leaks(text) for where, text in seen.items() if leaks(text)} == {}


def run_cli_with_env(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``run_cli`` with this process' environment (the credentials, MARIA_PASSWORD)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env=dict(os.environ),
    )


async def test_no_secret_in_the_consumers_log_or_status(
    relay: ConfiguredBroker, tmp_path: Path
) -> None:
    hook_secret = SECRETS["webhook secret"].encode()
    receiver = WebhookReceiver(hook_secret)
    hook_url = await receiver.start()
    relay_password = write_secret(tmp_path / "relay-password", SECRETS["consumer relay password"])
    secret = write_secret(tmp_path / "webhook-secret", hook_secret)
    config = tmp_path / "relay.toml"
    config.write_text(
        consumer_toml(
            tmp_path,
            relay.url,
            f'username = "consumer.shops-1"\npassword_file = "{relay_password}"'
            f'\nclient_id = "shops-{os.getpid()}"',
            f'secret_file = "{secret}"',
            hook_url,
        )
    )
    socket = ApiClient(tmp_path / "relay.sock")
    try:
        with ConsumerProcess(config, tmp_path / "consumer.log") as consumer:
            await wait_for(lambda: (tmp_path / "relay.sock").exists(), "the status API")
            await wait_for(lambda: "connected" in consumer_log(tmp_path), "the relay")
            await asyncio.to_thread(
                paho.mqtt.publish.single,
                *stock_event(1, "SKU-1", "MAD", 3),
                qos=1,
                hostname="127.0.0.1",
                port=relay.port,
                auth={"username": TESTER[0], "password": TESTER[1]},
                protocol=paho.mqtt.client.MQTTv5,
            )
            await wait_for(lambda: len(receiver.received) == 1, "the signed event at the hook")
            seen = {
                path: (await socket.get_text(path))[1]
                for path in ("/v1/health", "/v1/status", "/v1/metrics")
            }
            assert consumer.terminate() == 0
    finally:
        await receiver.close()
    seen["consumer log"] = consumer_log(tmp_path)
    assert "DEBUG" in seen["consumer log"]
    assert '"state":"connected"' in seen["/v1/status"] and '"hook":{' in seen["/v1/status"]
    assert {where: leaks(text) for where, text in seen.items() if leaks(text)} == {}


def consumer_log(tmp: Path) -> str:
    return (tmp / "consumer.log").read_text(errors="replace")


async def wait_for(predicate: Callable[[], bool], what: str, seconds: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
