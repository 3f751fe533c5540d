"""``distillsync intake``'s TOML: where shops deliver webhooks, the relay it publishes to,
its durable store, and the shops (``[[shops]]``).

A ``[[shops]]`` table holds two kinds of keys. The intake's own (:class:`ShopSection`):
``name``, ``type``, where its orders go (``tenant``, ``agent``), how it is polled
(``poll_interval``, ``overlap``, ``backfill``) and the webhook secret. Everything else is
the shop API client's (``relay/intake/clients/{type}.py``'s ``Settings``: ``url`` and its
credentials), validated by that module, so a key either side does not know is an error
naming its path (``shops[1].consumer_key_file: unknown key``), as in ``consume``'s config.

Unknown keys are errors; every problem is reported at once; ``distillsync intake`` exits 78
on any of them.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from relay.config import ConfigProblems, RelaySection, Slug, key_problems
from relay.settings import CredentialName, Duration, FilePath, SocketPath, Strict, read_secret
from relay.settings import one_way_to_the_secret as one_way

ShopType = Literal["shopify", "woocommerce", "prestashop", "magento"]

CLIENT_MODULES: dict[str, str] = {
    "shopify": "relay.intake.clients.shopify",
    "woocommerce": "relay.intake.clients.woocommerce",
    "prestashop": "relay.intake.clients.prestashop",
    "magento": "relay.intake.clients.magento",
}
"""Imported only when configured: one broken client cannot stop an intake not using it."""

WEBHOOK_SHOPS = ("shopify", "woocommerce")
"""The shop types that deliver order webhooks; the others arrive by poll alone."""


class IntakeSection(Strict):
    name: Slug
    """Names this intake: its MQTT client id, its retained status, metrics."""
    public_url: str
    """Where the shops reach this intake (through the reverse proxy that terminates TLS):
    each shop's webhooks go to ``{public_url}/v1/webhooks/{shop}``."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like https://intake.example.com")
        return url.rstrip("/")


class ListenSection(Strict):
    host: str = "127.0.0.1"
    """The webhook listener's address: loopback behind a reverse proxy (the default)."""
    port: int = Field(default=8470, ge=0, le=65535)
    max_body: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Bytes; a larger webhook body is refused with 413 before it is read."""


class StoreSection(Strict):
    url: str = "sqlite:////var/lib/distillsync/intake.db"
    """``sqlite:///PATH`` for one intake process, ``postgresql://...`` for several behind a
    load balancer."""


class ApiSection(Strict):
    socket: SocketPath = Path("/run/distillsync/intake.sock")


class PublishSection(Strict):
    max_inflight: int = Field(default=100, ge=1, le=65535)
    """Events published and not yet acknowledged by the broker."""


class ShopSection(Strict):
    """The intake's own keys of a ``[[shops]]`` table (the rest are the client's)."""

    name: Slug
    type: ShopType
    tenant: Slug
    agent: Slug
    poll_interval: Duration = Field(default=300.0, gt=0)
    """Catch-up polls: how a lost webhook is repaired, and how PrestaShop and Magento
    orders arrive at all."""
    overlap: Duration = Field(default=600.0, ge=1)
    """Each poll re-reads this far before the newest update it saw: offset paging can skip
    an order modified meanwhile, and the shop's clock is not ours (dedupe makes it free)."""
    backfill: Duration = Field(default=86400.0, ge=0)
    """How far back the very first poll of a shop reaches."""
    webhook_secret_file: FilePath | None = None
    webhook_secret_env: str | None = None
    webhook_secret_credential: CredentialName | None = None
    """Shopify: the app's client secret; WooCommerce: the hooks' secret. Required for the
    shops that send webhooks."""

    @model_validator(mode="after")
    def _secret(self) -> ShopSection:
        one_way(self, "webhook_secret", required=self.type in WEBHOOK_SHOPS)
        return self

    def webhook_secret(self) -> str | None:
        return read_secret(
            self.webhook_secret_file,
            self.webhook_secret_env,
            "webhook_secret",
            self.webhook_secret_credential,
        )


class IntakeConfig(Strict):
    intake: IntakeSection
    relay: RelaySection
    listen: ListenSection = ListenSection()
    store: StoreSection = StoreSection()
    api: ApiSection = ApiSection()
    publish: PublishSection = PublishSection()
    shops: list[dict[str, Any]] = Field(min_length=1)

    @property
    def client_id(self) -> str:
        return self.relay.client_id or f"distillsync-intake-{self.intake.name}"

    def webhook_url(self, shop: str) -> str:
        return f"{self.intake.public_url}/v1/webhooks/{shop}"


@dataclass(frozen=True, slots=True)
class Shop:
    """One configured shop: the intake's keys and its API client's validated settings."""

    section: ShopSection
    client_settings: BaseModel

    @property
    def name(self) -> str:
        return self.section.name

    def client(self) -> Any:
        """A new :class:`~relay.intake.source.ShopClient` for this shop."""
        module = importlib.import_module(CLIENT_MODULES[self.section.type])
        return module.Client(self.client_settings)


_OWN_KEYS = frozenset(ShopSection.model_fields) - {"name", "type"}


def _client_settings(module_name: str, raw: dict[str, Any]) -> BaseModel:
    settings: type[BaseModel] = importlib.import_module(module_name).Settings
    given = {k: v for k, v in raw.items() if k not in _OWN_KEYS}
    for shared in ("name", "type"):  # both sides read these two when they declare them
        if shared not in settings.model_fields:
            given.pop(shared, None)
    return settings.model_validate(given)


def shops(config: IntakeConfig) -> list[Shop]:
    """Each ``[[shops]]`` table validated by both sides; :class:`ConfigProblems` lists every
    problem by key path."""
    built, problems = [], []
    for index, raw in enumerate(config.shops):
        own = {k: v for k, v in raw.items() if k in _OWN_KEYS | {"name", "type"}}
        try:
            section = ShopSection.model_validate(own)
        except ValidationError as error:
            problems.extend(key_problems(error, ("shops", index)))
            continue
        try:
            client = _client_settings(CLIENT_MODULES[section.type], raw)
        except ValidationError as error:
            problems.extend(key_problems(error, ("shops", index)))
            continue
        built.append(Shop(section, client))
    names = [str(raw.get("name")) for raw in config.shops]
    problems.extend(
        f"shops: name {n!r} is used twice" for n in sorted(set(names)) if names.count(n) > 1
    )
    if problems:
        raise ConfigProblems(problems)
    return built


def load(path: Path) -> tuple[IntakeConfig, list[Shop]]:
    """Read and validate; :class:`ConfigProblems` lists every problem by key path."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigProblems([f"{path}: cannot read ({error.strerror})"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigProblems([f"{path}: not valid TOML: {error}"]) from None
    try:
        config = IntakeConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigProblems(key_problems(error)) from None
    return config, shops(config)
