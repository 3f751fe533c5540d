"""``distillsync consume``'s TOML: where the relay is, what to subscribe to, where the
version store lives, and the sinks (``[[sinks]]``, each validated by its own module).

Unknown keys are errors; a bad file reports every problem at once by its key path
(``sinks[1].warehouse: required``), as the agent's config does.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from relay.errors import ConfigProblems as ConfigProblems  # importable from here too
from relay.settings import (
    CredentialName,
    Duration,
    FilePath,
    SocketPath,
    Strict,
    one_way_to_the_secret,
)

Slug = Annotated[str, Field(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)]
Entity = Literal["product", "price", "stock", "promotion", "order_status", "invoice", "customer"]
ALL_ENTITIES: list[Entity] = [
    "product",
    "price",
    "stock",
    "promotion",
    "order_status",
    "invoice",
    "customer",
]

# type -> (module, class): imported only when configured, so one broken sink module
# cannot stop a consumer that does not use it.
SINK_TYPES = {
    "webhook": ("relay.sinks.webhook", "WebhookSink"),
    "woocommerce": ("relay.sinks.woocommerce", "WooCommerceSink"),
    "shopify": ("relay.sinks.shopify", "ShopifySink"),
    "prestashop": ("relay.sinks.prestashop", "PrestaShopSink"),
    "magento": ("relay.sinks.magento", "MagentoSink"),
}


class ConsumerSection(Strict):
    name: Slug
    """Names this consumer: its MQTT client id, status topic, metrics."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class RelaySection(Strict):
    url: str
    username: str | None = None
    password_file: FilePath | None = None
    password_env: str | None = None
    password_credential: CredentialName | None = None
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    allow_insecure: bool = False
    topic_prefix: str = Field(default="distillsync", pattern=r"^[^/+#$][^/+#]*$")
    client_id: str | None = None
    session_expiry: Duration = 86400.0
    keepalive: Duration = 30.0
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    """Unacknowledged messages the broker may have in flight to us: the reorder window."""
    reconnect_max: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        if parts.password:  # the URL shows in logs and status; a password there would too
            raise ValueError(
                "holds a password; put it in password_file, password_env or "
                "password_credential instead"
            )
        return url

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> RelaySection:
        one_way_to_the_secret(self, "password")
        host = urlsplit(self.url).hostname or ""
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        if urlsplit(self.url).scheme == "mqtt" and not loopback and not self.allow_insecure:
            raise ValueError(
                f"url: mqtt:// sends data unencrypted to {host}; use mqtts:// "
                "or set allow_insecure = true"
            )
        return self


class SubscribeSection(Strict):
    tenants: list[Slug | Literal["+"]] = Field(default=["+"], min_length=1)
    entities: list[Entity] = Field(default=ALL_ENTITIES, min_length=1)
    shared_group: Slug | None = None
    """Subscribe as ``$share/{group}/...`` so several consumers split the load."""


class StoreSection(Strict):
    url: str = "sqlite:////var/lib/distillsync/relay.db"
    """``sqlite:///PATH`` for one consumer, ``postgresql://...`` when several share it."""
    id_retention: Duration = 7 * 86400.0


class ApiSection(Strict):
    socket: SocketPath = Path("/run/distillsync/relay.sock")


class PipelineSection(Strict):
    batch_size: int = Field(default=100, ge=1, le=1000)
    linger: Duration = 0.02
    """How long a batch waits to fill once its first event is there."""
    concurrency: int = Field(default=4, ge=1, le=64)
    """Batches in flight at once (never two with the same key)."""
    retry_max: Duration = 60.0
    """Cap of the backoff when a shop is unavailable."""


class ConsumerConfig(Strict):
    consumer: ConsumerSection
    relay: RelaySection
    subscribe: SubscribeSection = SubscribeSection()
    store: StoreSection = StoreSection()
    api: ApiSection = ApiSection()
    pipeline: PipelineSection = PipelineSection()
    sinks: list[dict[str, Any]] = Field(min_length=1)

    @property
    def client_id(self) -> str:
        return self.relay.client_id or f"distillsync-consumer-{self.consumer.name}"


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def key_problems(error: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[str]:
    problems = []
    for item in error.errors():
        loc = prefix + tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "required"
        elif item["type"] == "extra_forbidden":
            message = "unknown key"
        key, sep, rest = message.partition(": ")
        if sep and item["type"] == "value_error" and key.isidentifier():
            loc, message = (*loc, key), rest
        problems.append(f"{_path(loc)}: {message}")
    return problems


def sink_settings(config: ConsumerConfig) -> list[tuple[type[Any], BaseModel]]:
    """Each ``[[sinks]]`` table validated by its own module: ``(sink class, settings)``."""
    built, problems = [], []
    for index, raw in enumerate(config.sinks):
        kind = raw.get("type")
        if kind not in SINK_TYPES:
            problems.append(f"sinks[{index}].type: one of {', '.join(SINK_TYPES)}")
            continue
        module_name, class_name = SINK_TYPES[kind]
        module = importlib.import_module(module_name)
        try:
            built.append((getattr(module, class_name), module.Settings.model_validate(raw)))
        except ValidationError as error:
            problems.extend(key_problems(error, ("sinks", index)))
    names = [str(raw.get("name")) for raw in config.sinks]
    problems.extend(
        f"sinks: name {n!r} is used twice" for n in sorted(set(names)) if names.count(n) > 1
    )
    if problems:
        raise ConfigProblems(problems)
    return built


def load(path: Path) -> ConsumerConfig:
    """Read and validate; :class:`ConfigProblems` lists every problem by key path."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigProblems([f"{path}: cannot read ({error.strerror})"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigProblems([f"{path}: not valid TOML: {error}"]) from None
    try:
        config = ConsumerConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigProblems(key_problems(error)) from None
    sink_settings(config)  # every problem now, not at the first event
    return config
