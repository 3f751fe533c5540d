"""``webhook``: POST every event, exactly as received, to one HTTP endpoint, signed.

CloudEvents HTTP binding, *structured* mode: the body is the envelope the agent published,
byte for byte (:attr:`Event.raw`), with ``Content-Type: application/cloudevents+json;
charset=utf-8``. Nothing is re-serialised, so the signature covers the very bytes the
receiver reads, and no ``ce-*`` headers are sent (structured mode carries every attribute
in the body).

**Signature.** ``X-DistillSync-Signature: sha256=<hex>``: the lower-case hex HMAC-SHA256
of the raw body under the shared secret. A receiver recomputes it over the body *before*
parsing it and compares the two strings in constant time (``hmac.compare_digest`` in
Python, ``crypto.timingSafeEqual`` in Node, ``hash_equals`` in PHP), answering 401 on a
mismatch. A replayed request is harmless: the signed body carries the event ``id``, and a
receiver drops ids it has seen, as it must anyway (delivery is at-least-once).

**Answers.** 2xx: applied. 408, 429, 5xx, a timeout or a refused connection: retried with
jittered exponential backoff that waits at least what ``Retry-After`` says (seconds or an
HTTP date); after ``max_retries`` the batch raises :class:`SinkUnavailable`. 401 and 403
mean the secret (or the receiver's setup) is wrong, so every event would fail alike: the
sink raises :class:`SinkUnavailable` at once rather than dead-letter the whole stream. Any
other answer (another 4xx, a redirect) is that event's ``DEAD`` result, with the status
and the start of the body.

The retries, the pacing and the settings every HTTP sink shares are in :mod:`relay.sinks.http`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from relay.envelope import ENTITIES
from relay.errors import SinkUnavailable
from relay.model import Event, SinkResult, Status
from relay.settings import CredentialName, FilePath
from relay.sinks.base import RateBudget
from relay.sinks.http import HttpSettings, LazySession, Reply, check_url, send, with_retries

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SIGNATURE_HEADER = "X-DistillSync-Signature"


class Settings(HttpSettings):
    """``[[sinks]] type = "webhook"``."""

    type: Literal["webhook"]
    url: str
    """Where every event is POSTed; https, or http to loopback (see ``allow_insecure``)."""
    secret_file: FilePath | None = None
    """File holding the HMAC-SHA256 key shared with the receiver (set this or ``secret_env``)."""
    secret_env: str | None = None
    """Environment variable holding the HMAC key."""
    secret_credential: CredentialName | None = None
    """Or the name of a systemd credential holding it."""
    secrets = ("secret",)
    entities: list[str] = Field(default_factory=lambda: list(ENTITIES))
    """Entities to forward; all seven by default."""
    allow_insecure: bool = False
    """Allow plain http to a host that is not loopback (the body then travels in clear)."""
    requests_per_second: float = Field(20.0, gt=0)
    """Pace of POSTs, so a drained backlog does not flood the receiver."""
    concurrency: int = Field(4, ge=1, le=64)
    """POSTs in flight at once (for distinct keys; order across keys does not matter)."""

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_url(url, allow_http=True)  # the insecure check needs allow_insecure

    @field_validator("entities")
    @classmethod
    def _entities(cls, entities: list[str]) -> list[str]:
        unknown = sorted(set(entities) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}; known: {', '.join(ENTITIES)}")
        if not entities:
            raise ValueError("is empty: name at least one entity")
        return entities

    @model_validator(mode="after")
    def _scheme(self) -> Self:
        check_url(self.url, allow_http=self.allow_insecure)
        return self


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-DistillSync-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.name
        self.entities = frozenset(settings.entities)
        self.max_batch = settings.concurrency
        self._secret = settings.secret("secret", "the HMAC key").encode()
        self._budget = RateBudget(settings.requests_per_second)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._session = LazySession(tls=settings.tls())

    async def apply(self, events: Sequence[Event]) -> list[SinkResult]:
        """POST each event, up to ``concurrency`` at once; one result per event, in order."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._deliver(event), name=f"webhook {event.id}")
                    for event in events
                ]
        except* SinkUnavailable as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def close(self) -> None:
        await self._session.close()

    async def _deliver(self, event: Event) -> SinkResult:
        if event.entity not in self.entities:
            return SinkResult(Status.SKIPPED, f"{event.entity} is not forwarded by this sink")
        async with self._slots:
            reply = await with_retries(
                lambda: self._post(event), sink=f"webhook {self.name}", settings=self.settings
            )
        if reply.ok:
            return SinkResult(Status.APPLIED)
        if reply.status in (401, 403):
            raise SinkUnavailable(
                f"webhook {self.name}: the receiver refused the request (HTTP {reply.status}); "
                "check that secret_file/secret_env holds the receiver's secret"
            )
        return SinkResult(
            Status.DEAD,
            f"{event.entity} {event.subject}: the receiver answered "
            f"HTTP {reply.status}: {reply.excerpt()}",
        )

    async def _post(self, event: Event) -> Reply:
        headers = {"Content-Type": CONTENT_TYPE, SIGNATURE_HEADER: sign(self._secret, event.raw)}
        return await send(
            self._session(),
            self._budget,
            "POST",
            self.settings.url,
            time_limit=self.settings.timeout,
            data=event.raw,
            headers=headers,
        )
