"""``distillsync intake -c FILE`` and ``distillsync intake hooks -c FILE [--register]``.

Exit codes as ``consume``'s: 0 after SIGTERM/SIGINT; 78 (EX_CONFIG) for a bad config or an
error retrying cannot fix; 69 (EX_UNAVAILABLE) for a retryable one (the store or a shop
unreachable, the status socket taken). ``hooks`` exits 1 when a subscription is missing or
disabled after it ran (so a cron job or a deploy step notices).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from relay.config import ConfigProblems
from relay.errors import RelayKitError
from relay.intake.config import WEBHOOK_SHOPS, IntakeConfig, Shop, load
from relay.intake.source import HookState

EX_OK, EX_PROBLEM, EX_UNAVAILABLE, EX_CONFIG = 0, 1, 69, 78


def _load(path: Path) -> tuple[IntakeConfig, list[Shop]] | None:
    try:
        return load(path)
    except ConfigProblems as error:
        print(f"configuration problems in {path}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _logging(level: str) -> None:
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    for noisy in ("aiomqtt", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _failed(path: Path, error: RelayKitError, command: str) -> int:
    if error.retryable:
        print(f"distillsync {command}: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(f"configuration problems in {path}:\n  {error}", file=sys.stderr)
    return EX_CONFIG


def intake(path: Path) -> int:
    loaded = _load(path)
    if loaded is None:
        return EX_CONFIG
    config, shops = loaded
    _logging(config.intake.log_level)
    from relay.intake.service import run

    try:
        asyncio.run(run(config, shops))
    except RelayKitError as error:
        return _failed(path, error, "intake")
    return EX_OK


def hooks(path: Path, register: bool) -> int:
    loaded = _load(path)
    if loaded is None:
        return EX_CONFIG
    config, shops = loaded
    _logging("warning")
    try:
        listed = asyncio.run(_hooks(config, shops, register))
    except RelayKitError as error:
        return _failed(path, error, "intake hooks")
    print(f"{'SHOP':<20} {'TOPIC':<18} {'STATUS':<9} {'ID':<8} URL")
    for shop, states in listed:
        if not states:
            print(f"{shop:<20} {'-':<18} {'polls':<9} {'-':<8} (no order webhooks: polled only)")
        for hook in states:
            print(f"{shop:<20} {hook.topic:<18} {hook.status:<9} {hook.ref or '-':<8} {hook.url}")
    broken = [h for _, states in listed for h in states if h.status in ("disabled", "missing")]
    return EX_PROBLEM if broken else EX_OK


async def _hooks(
    config: IntakeConfig, shops: list[Shop], register: bool
) -> list[tuple[str, list[HookState]]]:
    listed: list[tuple[str, list[HookState]]] = []
    for shop in shops:
        if shop.section.type not in WEBHOOK_SHOPS:
            listed.append((shop.name, []))
            continue
        client = shop.client()
        url = config.webhook_url(shop.name)
        try:
            if register:
                secret = shop.section.webhook_secret() or ""
                states = list(await client.register_hooks(url, secret))
            else:
                states = await client.hooks(url)
        finally:
            await client.close()
        listed.append((shop.name, states))
    return listed
