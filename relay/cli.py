"""``distillsync consume -c FILE``; the agent's command line dispatches here."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from relay.config import ConfigProblems, load
from relay.settings import SecretMissing

EX_OK, EX_UNAVAILABLE, EX_CONFIG = 0, 69, 78


def consume(path: Path) -> int:
    try:
        config = load(path)
    except ConfigProblems as error:
        print(f"configuration problems in {path}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=config.consumer.log_level.upper(), format=fmt, stream=sys.stderr,
                        force=True)
    for noisy in ("aiomqtt", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from common.unix_socket import SocketBusy
    from relay.service import run
    from relay.store import SchemaTooNew, StoreError

    try:
        asyncio.run(run(config))
    except (SecretMissing, SchemaTooNew) as error:
        print(f"configuration problems in {path}:\n  {error}", file=sys.stderr)
        return EX_CONFIG
    except (StoreError, SocketBusy) as error:  # unreachable or busy: systemd may retry later
        print(f"distillsync consume: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    return EX_OK
