"""``distillsync intake``'s config: the shipped example (each commented shop too), every
problem by its key path, and exit 78."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import ConfigProblems
from relay.intake.config import load
from tests.support import REPO

EXAMPLE = REPO / "config" / "intake.toml"

BASE = """
[intake]
name = "main"
public_url = "https://intake.example.com/"
[relay]
url = "mqtt://127.0.0.1:1883"
[store]
url = "sqlite:///{tmp}/intake.db"
"""

WOO = """
[[shops]]
name = "shop-es"
type = "woocommerce"
tenant = "acme"
agent = "erp1"
webhook_secret_env = "WC_HOOK"
url = "https://shop.example.com"
consumer_key_env = "WC_KEY"
consumer_secret_env = "WC_SECRET"
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "intake.toml"
    path.write_text(BASE.format(tmp=tmp_path) + text)
    with pytest.raises(ConfigProblems) as caught:
        load(path)
    return caught.value.problems


def uncommented_shops(text: str) -> list[str]:
    """Each commented ``# [[shops]]`` block of the example, as TOML."""
    blocks = re.findall(r"^# \[\[shops\]\].*?(?=^\s*$|\Z)", text, re.MULTILINE | re.DOTALL)
    return [re.sub(r"^# ?", "", block, flags=re.MULTILINE) for block in blocks]


def test_the_example_loads_with_every_commented_shop_in_it(tmp_path: Path) -> None:
    config, shops = load(EXAMPLE)
    assert [shop.name for shop in shops] == ["shop-es"]
    assert config.webhook_url("shop-es") == "https://intake.example.com/v1/webhooks/shop-es"
    text = EXAMPLE.read_text()
    extra = uncommented_shops(text)
    assert len(extra) == 3
    whole = tmp_path / "all.toml"
    whole.write_text(text + "\n" + "\n".join(extra))
    _, shops = load(whole)
    assert [(s.name, s.section.type) for s in shops] == [
        ("shop-es", "woocommerce"),
        ("shop-intl", "shopify"),
        ("shop-fr", "prestashop"),
        ("shop-b2b", "magento"),
    ]
    assert shops[2].section.overlap == 70 * 60


def test_a_minimal_config_takes_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "intake.toml"
    path.write_text(BASE.format(tmp=tmp_path) + WOO)
    config, (shop,) = load(path)
    assert config.intake.public_url == "https://intake.example.com"
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8470)
    assert (shop.section.poll_interval, shop.section.overlap) == (300.0, 600.0)
    assert config.client_id == "distillsync-intake-main"


def test_each_problem_is_named_by_its_key_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        WOO.replace('webhook_secret_env = "WC_HOOK"\n', "")
        + WOO.replace("shop-es", "shop-x").replace('type = "woocommerce"', 'type = "etsy"')
        + WOO.replace(
            'url = "https://shop.example.com"', 'url = "https://s.example.com"\ncolour = 1'
        )
        + '[[shops]]\nname = "Bad Name"\ntype = "magento"\ntenant = "acme"\nagent = "erp1"\n'
        'url = "https://m.example.com"\ntoken_env = "T"\npoll_interval = "soon"\n',
    )
    assert (
        "shops[0]: set exactly one of webhook_secret_file or webhook_secret_env "
        "(or webhook_secret_credential)"
    ) in found, found
    assert any(p.startswith("shops[1].type:") for p in found), found
    assert "shops[2].colour: unknown key" in found, found
    assert any(p.startswith("shops[3].name:") for p in found), found
    assert any(p.startswith("shops[3].poll_interval:") for p in found), found
    assert "shops: name 'shop-es' is used twice" in found, found


def test_prestashop_and_magento_need_no_webhook_secret(tmp_path: Path) -> None:
    path = tmp_path / "intake.toml"
    path.write_text(
        BASE.format(tmp=tmp_path)
        + '[[shops]]\nname = "m"\ntype = "magento"\ntenant = "acme"\nagent = "erp1"\n'
        'url = "https://m.example.com"\ntoken_env = "T"\n'
    )
    _, (shop,) = load(path)
    assert shop.section.webhook_secret() is None


def test_the_command_exits_78_listing_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "intake.toml"
    path.write_text(BASE.format(tmp=tmp_path) + WOO.replace('agent = "erp1"\n', ""))
    for args in (["intake", "-c", str(path)], ["intake", "hooks", "-c", str(path)]):
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert done.returncode == 78, done.stderr
        assert f"configuration problems in {path}:" in done.stderr
        assert "shops[0].agent: required" in done.stderr


def test_a_missing_secret_is_a_config_error_naming_its_key(tmp_path: Path) -> None:
    path = tmp_path / "intake.toml"
    path.write_text(
        BASE.format(tmp=tmp_path).replace(
            "[store]", f'[api]\nsocket = "{tmp_path}/i.sock"\n[store]'
        )
        + WOO
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli", "intake", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "WC_KEY": "k", "WC_SECRET": "s"},
    )
    assert done.returncode == 78, done.stderr
    assert "shops[0].webhook_secret" in done.stderr, done.stderr
