"""``distillsync consume -c FILE``; the agent's command line dispatches here.

Exit codes: 0 after SIGTERM/SIGINT; 78 (EX_CONFIG) for a bad config, or any error that
retrying cannot fix; 69 (EX_UNAVAILABLE) for a retryable one (the store unreachable or
busy, the status socket taken), which systemd may restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from relay.config import ConfigProblems, load
from relay.errors import RelayKitError

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
    logging.basicConfig(
        level=config.consumer.log_level.upper(), format=fmt, stream=sys.stderr, force=True
    )
    for noisy in ("aiomqtt", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from relay.service import run

    try:
        asyncio.run(run(config))
    except RelayKitError as error:
        if error.retryable:  # unreachable or busy: systemd may retry later
            print(f"distillsync consume: {error}", file=sys.stderr)
            return EX_UNAVAILABLE
        print(f"configuration problems in {path}:\n  {error}", file=sys.stderr)
        return EX_CONFIG
    return EX_OK
