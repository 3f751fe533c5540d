"""The agent's TOML configuration: typed, frozen and strict.

Unknown keys are errors, and a bad file reports every problem at once, each by its
TOML key path (``sources[0].entities[1].cursor: required in timestamp mode``).
Secrets never live in the file: ``*_file`` keys name a file that holds them, ``*_env``
keys an environment variable, and ``*_credential`` keys a systemd credential (a file in
``$CREDENTIALS_DIRECTORY``); :func:`read_secret` resolves all three and refuses a secret
file that other users could read (:func:`check_private`).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.errors import ConfigError

ENTITIES = ("product", "price", "stock", "promotion", "order_status", "invoice", "customer")
Entity = Literal["product", "price", "stock", "promotion", "order_status", "invoice", "customer"]
INBOUND = ("order", "return", "customer")
"""Entities that arrive from the shops on ``in/{entity}`` (the agent's inbox)."""
InboundEntity = Literal["order", "return", "customer"]
Master = Literal["erp", "shop"]
PAYMENT_STATUSES = ("pending", "authorized", "paid", "partially_refunded", "refunded", "voided")
PaymentStatus = Literal["pending", "authorized", "paid", "partially_refunded", "refunded", "voided"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SLUG = r"^[a-z0-9-]+$"
# SQLAlchemy dialects whose driver is asyncio-native; anything else would block the loop.
ASYNC_DRIVERS = {
    "postgresql+asyncpg",
    "mysql+aiomysql",
    "mysql+asyncmy",
    "mariadb+aiomysql",
    "mariadb+asyncmy",
    "sqlite+aiosqlite",
    "mssql+aioodbc",
}


def parse_duration(value: Any) -> float:
    """``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"1d"`` -> seconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError('a duration is a string such as "250ms", "5s", "2m", "1h" or "1d"')
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f'{value!r} is not a duration such as "250ms", "5s", "2m", "1h" or "1d"')
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]

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


# The relay kit stands alone, so relay.settings keeps its own copy of this rule.
SocketPath = Annotated[Path, Field(strict=False), AfterValidator(_fits_sun_path)]
Slug = Annotated[str, Field(pattern=_SLUG, min_length=1, max_length=64)]
# Paths come from TOML as strings, so they are the one place strict mode must convert.
FilePath = Annotated[Path, Field(strict=False)]
# The same spellings as relay.subscriber's (tests/test_protocol311.py checks): the relay
# kit stands alone, so the agent keeps its own copy rather than importing the kit.
MqttProtocol = Literal["5", "3.1.1"]
MQTT5: MqttProtocol = "5"
MQTT311: MqttProtocol = "3.1.1"


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# A systemd credential's name is a file name in $CREDENTIALS_DIRECTORY (LoadCredential=ID:...).
CredentialName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$", max_length=255)]


def _one_way_to_the_secret(section: BaseModel, stem: str) -> None:
    """At most one of ``{stem}_file``, ``{stem}_env`` and ``{stem}_credential``: with two,
    which one wins would be a guess."""
    keys = [f"{stem}_{how}" for how in ("file", "env", "credential")]
    given = [key for key in keys if getattr(section, key) is not None]
    if len(given) > 1:
        raise ValueError(f"{given[1]}: set only one of {', '.join(keys)}")


def _no_password_in(url: str) -> None:
    """Status, logs and errors show URLs; a password inside one would leak through them."""
    if urlsplit(url).password:
        raise ValueError(
            "holds a password; put it in password_file, password_env or password_credential instead"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgentSection(_Strict):
    id: Slug
    """Unique per tenant; part of every topic and of the MQTT client id."""
    tenant: Slug
    state_dir: FilePath = Path("/var/lib/distillsync")
    """Where ``outbox.db`` lives."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: PositiveDuration = 10.0
    """How long a graceful stop waits for in-flight PUBACKs."""


class OutboxSection(_Strict):
    synchronous: Literal["full", "normal"] = "full"
    """``full`` survives power loss; ``normal`` only survives a process crash."""
    delivered_retention: Duration = 3600.0
    """How long delivered events stay for inspection before they are pruned."""


class MasterSection(_Strict):
    """Which system is master of each entity (the seed's "amo del dato"): the agent refuses
    writes against it. An inbound event for an ERP-mastered entity is a dead inbox item; an
    outbound feed of a shop-mastered entity is a config error."""

    product: Master = "erp"
    price: Master = "erp"
    stock: Master = "erp"
    promotion: Master = "erp"
    order_status: Master = "erp"
    invoice: Master = "erp"
    customer: Master = "shop"
    order: Master = "shop"
    return_: Master = Field(default="shop", alias="return")

    def of(self, entity: str) -> Master:
        """The master of ``entity``; ``return`` is spelled ``return_`` only in Python."""
        value: Master = getattr(self, "return_" if entity == "return" else entity)
        return value


def _paid_or_authorized() -> list[PaymentStatus]:
    return ["paid", "authorized"]


class InboxSection(_Strict):
    import_when: list[PaymentStatus] = Field(default_factory=_paid_or_authorized)
    """An order is ``pending`` (to be written) when its ``payment_status`` is one of these,
    else ``held`` until a newer version of it is; empty holds every order."""

    @field_validator("import_when")
    @classmethod
    def _no_repeats(cls, statuses: list[PaymentStatus]) -> list[PaymentStatus]:
        twice = sorted({s for s in statuses if statuses.count(s) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} appears twice")
        return statuses


class RelaySection(_Strict):
    url: str
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``."""
    username: str | None = None
    password_file: FilePath | None = None
    password_env: str | None = None
    password_credential: CredentialName | None = None
    """Name of a systemd credential (``LoadCredential=relay-password:...``) holding it."""
    topic_prefix: str = Field(default="distillsync", pattern=r"^[^/+#$][^/+#]*$")
    client_id: str | None = None
    """Fixed MQTT client id; defaults to ``distillsync-{tenant}-{agent}``."""
    session_expiry: Duration = 86400.0
    keepalive: PositiveDuration = 30.0
    max_inflight: int = Field(default=100, ge=1, le=4096)
    """Sliding window of unacknowledged publishes, capped by the broker's Receive Maximum."""
    reconnect_max: PositiveDuration = 10.0
    """Cap of the jittered exponential backoff between reconnect attempts."""
    ack_timeout: PositiveDuration = 60.0
    """A publish with no PUBACK for this long makes the link reconnect and re-send it."""
    protocol: MqttProtocol = "5"
    """``"5"``, or ``"3.1.1"`` for a broker that speaks nothing newer (no negative acks, no
    User Properties; see ``agent/publisher.py``)."""
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    allow_insecure: bool = False
    """Allow ``mqtt://`` (no TLS) to a host other than loopback."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        _no_password_in(url)
        return url

    @model_validator(mode="after")
    def _one_password(self) -> RelaySection:
        _one_way_to_the_secret(self, "password")
        return self

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> RelaySection:
        host = urlsplit(self.url).hostname or ""
        loopback = _is_loopback(host)
        if urlsplit(self.url).scheme == "mqtt" and not loopback and not self.allow_insecure:
            raise ValueError(
                f"url: mqtt:// sends data unencrypted to {host}; use mqtts:// "
                "or set relay.allow_insecure = true"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: goes together with key_file for a client certificate")
        return self


class ApiSection(_Strict):
    socket: SocketPath = Path("/run/distillsync/agent.sock")
    """Always served, mode 0660: the agent's group may read status and act."""
    listen: str | None = None
    """Also serve on TCP, ``"127.0.0.1:8765"``; loopback only, and only with a token."""
    token_file: FilePath | None = None
    token_env: str | None = None
    token_credential: CredentialName | None = None
    """The bearer token TCP clients must send (``Authorization: Bearer ...``)."""

    @field_validator("listen")
    @classmethod
    def _loopback_address(cls, listen: str | None) -> str | None:
        if listen is None:
            return None
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        if not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise ValueError(f'{listen!r} is not an address such as "127.0.0.1:8765"')
        if not _is_loopback(host):
            raise ValueError(
                f"{host} is not loopback; the status API must not face a network "
                "(put a TLS proxy in front if it must)"
            )
        return listen

    @model_validator(mode="after")
    def _token_with_tcp(self) -> ApiSection:
        _one_way_to_the_secret(self, "token")
        tokenless = (self.token_file, self.token_env, self.token_credential) == (None,) * 3
        if self.listen is not None and tokenless:
            raise ValueError(
                "token_file: required when listen is set (or token_env, token_credential)"
            )
        return self

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class EntityConfig(_Strict):
    entity: Entity
    name: str | None = Field(default=None, pattern=r"^[a-z0-9_-]+$")
    """Distinguishes two feeds of the same entity in one source; defaults to ``entity``."""
    query: str = Field(min_length=1)
    key: list[str] = Field(min_length=1)
    mode: Literal["timestamp", "incrementing", "snapshot"] = "timestamp"
    cursor: str | None = Field(default=None, validate_default=True)
    lookback: Duration = 30.0
    conflate: bool = False
    """Keep only the newest pending event per key."""

    @field_validator("query")
    @classmethod
    def _is_select(cls, query: str) -> str:
        head = query.lstrip().split(None, 1)[0].lower() if query.strip() else ""
        if head not in ("select", "with"):
            raise ValueError("must be a SELECT (or WITH ... SELECT) statement")
        if query.rstrip().endswith(";"):
            raise ValueError("must not end with ';': the agent wraps it as a subquery")
        return query

    @field_validator("cursor")
    @classmethod
    def _cursor_fits_mode(cls, cursor: str | None, info: ValidationInfo) -> str | None:
        mode = info.data.get("mode")
        if mode in ("timestamp", "incrementing") and not cursor:
            raise ValueError(f"required in {mode} mode")
        if mode == "snapshot" and cursor:
            raise ValueError("not used in snapshot mode; remove it")
        if cursor and cursor in info.data.get("key", []):
            raise ValueError("the cursor column cannot also be a key column")
        return cursor

    @property
    def feed(self) -> str:
        return self.name or self.entity


class SourceConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    type: Literal["sql"] = "sql"
    url: str
    """Any SQLAlchemy async URL; keep the password out of it (``password_file``)."""
    password_file: FilePath | None = None
    password_env: str | None = None
    password_credential: CredentialName | None = None
    poll_interval: PositiveDuration = 5.0
    page_size: int = Field(default=1000, ge=1, le=100_000)
    timezone: str = "UTC"
    """Zone of naive datetimes the ERP stores; events always carry UTC."""
    entities: list[EntityConfig] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in ASYNC_DRIVERS:
            known = ", ".join(sorted(ASYNC_DRIVERS))
            raise ValueError(
                f"{scheme or url!r} is not an async SQLAlchemy driver; use one of {known}"
            )
        _no_password_in(url)
        return url

    @model_validator(mode="after")
    def _password_has_a_use(self) -> SourceConfig:
        _one_way_to_the_secret(self, "password")
        given = [
            f"password_{how}"
            for how in ("file", "env", "credential")
            if getattr(self, f"password_{how}") is not None
        ]
        if given and self.url.startswith("sqlite"):
            raise ValueError(f"{given[0]}: SQLite files have no password; remove it")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone

    @field_validator("entities")
    @classmethod
    def _unique_feeds(cls, entities: list[EntityConfig]) -> list[EntityConfig]:
        feeds = [e.feed for e in entities]
        dupes = sorted({f for f in feeds if feeds.count(f) > 1})
        if dupes:
            raise ValueError(f"{', '.join(dupes)} appears twice; give each a distinct name")
        return entities


class Config(_Strict):
    agent: AgentSection
    relay: RelaySection
    api: ApiSection = ApiSection()
    outbox: OutboxSection = OutboxSection()
    master: MasterSection = MasterSection()
    inbox: InboxSection = InboxSection()
    sources: list[SourceConfig] = Field(min_length=1)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source name {', '.join(dupes)} is used twice")
        return sources

    @model_validator(mode="after")
    def _feeds_follow_the_master(self) -> Config:
        """An outbound feed would write to the shop what the shop is master of."""
        against = [
            (f"sources[{i}].entities[{j}].entity", entity.entity)
            for i, source in enumerate(self.sources)
            for j, entity in enumerate(source.entities)
            if self.master.of(entity.entity) == "shop"
        ]
        if against:
            path, entity = against[0]
            more = f" (so do {', '.join(p for p, _ in against[1:])})" if against[1:] else ""
            raise ValueError(
                f'{path}: {entity} is mastered by the shop (master.{entity} = "shop"), so '
                f"the agent may not publish it; remove the feed or set master.{entity} = "
                f'"erp"{more}'
            )
        return self

    @property
    def client_id(self) -> str:
        return self.relay.client_id or f"distillsync-{self.agent.tenant}-{self.agent.id}"


def key_path(loc: tuple[int | str, ...]) -> str:
    """``('sources', 0, 'entities', 1, 'cursor')`` -> ``sources[0].entities[1].cursor``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "string_pattern_mismatch":
        return f"{error['input']!r} does not match {error['ctx']['pattern']}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


_KEY_PREFIX = re.compile(r"^([a-z_][a-z0-9_.\[\]]*): (.*)$", re.DOTALL)


def problems_of(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        # pydantic appends the validator's own name to union/function locations; drop it.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        message = _describe(item)
        # Cross-field checks run on the whole table; they name their key as "key: ...".
        named = _KEY_PREFIX.match(message)
        if named and item["type"] == "value_error":
            loc, message = (*loc, named.group(1)), named.group(2)
        problems.append(f"{key_path(loc)}: {message}")
    return problems


def parse_config(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(problems_of(error)) from None


def load_config(path: Path) -> Config:
    """Read and validate a TOML file; :class:`ConfigError` lists every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read ({error.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    return parse_config(raw)


def credentials_directory() -> Path | None:
    """Where systemd put this service's credentials (``LoadCredential=``), if it did."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(folder) if folder else None


def check_private(path: Path, key: str) -> None:
    """Refuse a secret file that users other than its owner may read.

    The rule: no read permission for others, and none for the group either, except under
    ``$CREDENTIALS_DIRECTORY``: systemd makes a credential 0400 or 0440, owned by the
    service, in a directory only the service can enter. Only the mode is judged, never
    the content, so the message can name the file without a word of what it holds.
    """
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as error:
        raise ConfigError([f"{key}: cannot read {path} ({error.strerror})"]) from None
    credentials = credentials_directory()
    systemd_made = credentials is not None and path.resolve().is_relative_to(credentials.resolve())
    readers = [
        who
        for who, bit in (("its group", 0o040), ("other users", 0o004))
        if mode & bit and not (systemd_made and who == "its group")
    ]
    if readers:
        raise ConfigError(
            [
                f"{key}: {path} holds a secret but {' and '.join(readers)} can read it "
                f"(mode {mode:04o}); make it private with `chmod 600 {path}` (owned by the "
                "user the agent runs as), or hand it over with systemd's LoadCredential="
            ]
        )


def _read_private(path: Path, key: str) -> str:
    check_private(path, key)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError([f"{key}: cannot read {path} ({error.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{key}: {path} is not UTF-8 text"]) from None


def _credential_path(name: str, key: str) -> Path:
    folder = credentials_directory()
    if folder is None:
        raise ConfigError(
            [
                f"{key}: CREDENTIALS_DIRECTORY is not set; systemd sets it for a unit with "
                f"LoadCredential={name}:/path/to/the/secret (outside systemd, use the _file or "
                "_env key instead)"
            ]
        )
    path = folder / name
    if not path.is_file():
        raise ConfigError(
            [
                f"{key}: no credential {name!r} in {folder}; add "
                f"LoadCredential={name}:/path/to/the/secret to the unit"
            ]
        )
    return path


def read_secret(
    file: Path | None, env: str | None, what: str, credential: str | None = None
) -> str | None:
    """Resolve a secret from its ``*_file``, ``*_credential`` or ``*_env`` key (``what``
    is the key path without the suffix, for errors); the value never appears in one."""
    if file is not None:
        return _read_private(file, f"{what}_file")
    if credential is not None:
        key = f"{what}_credential"
        return _read_private(_credential_path(credential, key), key)
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([f"{what}_env: environment variable {env} is not set"])
        return value
    return None
