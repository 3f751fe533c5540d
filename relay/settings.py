"""Config building blocks shared by the consumer and its sinks (pydantic, strict).

The relay kit stands apart from the agent (it is ported from the contract alone), so it
keeps its own small copies of what the agent's config also does: durations such as
``"5s"`` and secrets from ``*_file`` / ``*_env`` / ``*_credential`` keys, never from the TOML
itself, with the agent's rule for secret files (:func:`check_private`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from relay.errors import SecretMissing as SecretMissing  # importable from here too

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
SUN_PATH_MAX = 107
"""Bytes of a Unix socket's path: Linux's ``sun_path`` holds 108 with the final NUL."""


def _fits_sun_path(path: Path) -> Path:
    size = len(os.fsencode(path))
    if size > SUN_PATH_MAX:
        raise ValueError(
            f"{path} is {size} bytes long; a Unix socket's path can hold at most "
            f"{SUN_PATH_MAX}: choose a shorter one"
        )
    return path


SocketPath = Annotated[Path, Field(strict=False), AfterValidator(_fits_sun_path)]
# A systemd credential's name: a file name in $CREDENTIALS_DIRECTORY (LoadCredential=ID:...).
CredentialName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$", max_length=255)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def one_way_to_the_secret(section: BaseModel, stem: str, required: bool = False) -> None:
    """At most one of ``{stem}_file``, ``{stem}_env`` and ``{stem}_credential`` (exactly
    one when ``required``)."""
    keys = [f"{stem}_{how}" for how in ("file", "env", "credential")]
    given = [key for key in keys if getattr(section, key) is not None]
    if len(given) > 1 or (required and not given):
        raise ValueError(
            f"set exactly one of {stem}_file or {stem}_env (or {stem}_credential)"
            if required
            else f"{given[1]}: set only one of {', '.join(keys)}"
        )


def credentials_directory() -> Path | None:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(folder) if folder else None


def check_private(path: Path, key: str) -> None:
    """Refuse a secret file its group or other users may read; under
    ``$CREDENTIALS_DIRECTORY`` (systemd makes credentials 0400 or 0440, owned by the
    service, in a directory only the service enters) the group may. Only the mode is
    judged, so the message never holds a word of the secret."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as error:
        raise SecretMissing(f"{key}: cannot read {path} ({error.strerror})") from None
    credentials = credentials_directory()
    systemd_made = credentials is not None and path.resolve().is_relative_to(credentials.resolve())
    readers = [
        who
        for who, bit in (("its group", 0o040), ("other users", 0o004))
        if mode & bit and not (systemd_made and who == "its group")
    ]
    if readers:
        raise SecretMissing(
            f"{key}: {path} holds a secret but {' and '.join(readers)} can read it "
            f"(mode {mode:04o}); make it private with `chmod 600 {path}` (owned by the user "
            "the consumer runs as), or hand it over with systemd's LoadCredential="
        )


def _read_private(path: Path, key: str) -> str:
    check_private(path, key)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise SecretMissing(f"{key}: cannot read {path} ({error.strerror})") from None
    except UnicodeDecodeError:
        raise SecretMissing(f"{key}: {path} is not UTF-8 text") from None


def _credential_path(name: str, key: str) -> Path:
    folder = credentials_directory()
    if folder is None:
        raise SecretMissing(
            f"{key}: CREDENTIALS_DIRECTORY is not set; systemd sets it for a unit with "
            f"LoadCredential={name}:/path/to/the/secret (outside systemd, use the _file or "
            "_env key instead)"
        )
    path = folder / name
    if not path.is_file():
        raise SecretMissing(
            f"{key}: no credential {name!r} in {folder}; add "
            f"LoadCredential={name}:/path/to/the/secret to the unit"
        )
    return path


def read_secret(
    file: Path | None, env: str | None, key: str, credential: str | None = None
) -> str | None:
    """The secret behind ``{key}_file``, ``{key}_credential`` or ``{key}_env``; the value
    never appears in an error."""
    if file is not None:
        return _read_private(file, f"{key}_file")
    if credential is not None:
        return _read_private(_credential_path(credential, f"{key}_credential"), f"{key}_credential")
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise SecretMissing(f"{key}_env: environment variable {env} is not set")
        return value
    return None
