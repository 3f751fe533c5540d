"""Config building blocks shared by the consumer and its sinks (pydantic, strict).

The relay kit stands apart from the agent (it is ported from the contract alone), so it
keeps its own small copies of what the agent's config also does: durations such as
``"5s"`` and secrets from ``*_file`` / ``*_env`` keys, never from the TOML itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: Any) -> float:
    """``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"1d"`` -> seconds."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{value!r} is not a duration such as "250ms", "5s" or "2m"')
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Duration = Annotated[float, BeforeValidator(seconds)]
FilePath = Annotated[Path, Field(strict=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SecretMissing(Exception):
    """A ``*_file`` that cannot be read or a ``*_env`` that is not set; names the key."""


def read_secret(file: Path | None, env: str | None, key: str) -> str | None:
    """The secret behind ``{key}_file`` or ``{key}_env``; the value is never logged."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise SecretMissing(f"{key}_file: cannot read {file} ({error.strerror})") from None
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise SecretMissing(f"{key}_env: environment variable {env} is not set")
        return value
    return None
