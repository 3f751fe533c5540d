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

:func:`send` and :func:`with_retries` are the HTTP policy every HTTP sink shares.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, field_validator, model_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from relay.envelope import ENTITIES
from relay.model import Event, SinkResult, Status
from relay.settings import Duration, FilePath, SecretMissing, Strict, read_secret
from relay.sinks.base import RateBudget, SinkUnavailable

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SIGNATURE_HEADER = "X-DistillSync-Signature"
MAX_WAIT = 60.0
"""The longest pause slept inside a sink; a longer ``Retry-After`` goes to the consumer."""
EXCERPT = 200

T = TypeVar("T")


# --- the HTTP policy shared by the HTTP sinks ------------------------------------------


class Transient(Exception):
    """A failure of the whole endpoint that may pass: 408, 429, 5xx, timeout, no connection."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def excerpt(self) -> str:
        """The start of the body on one line, for a dead letter's reason."""
        text = " ".join(self.body.decode("utf-8", "replace").split())
        return text if len(text) <= EXCERPT else text[:EXCERPT] + "..."


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool) -> str:
    """An http(s) URL; plain http only to loopback unless ``allow_http``.

    The URL itself is never repeated in the error: it may carry a token.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        raise ValueError(f"plain http to {parts.hostname} sends events in clear: use https")
    return url


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back on our own backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_transient(status: int) -> bool:
    return status in (408, 429) or status >= 500


async def send(session: aiohttp.ClientSession, budget: RateBudget, method: str, url: str,
               *, time_limit: float, **options: Any) -> Reply:
    """One request, paced by ``budget``; :class:`Transient` when it is worth trying again."""
    await budget.take()
    try:
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=time_limit),
                                   allow_redirects=False, **options) as response:
            body = await response.read()
    except TimeoutError:
        raise Transient(f"no answer within {time_limit:g}s") from None
    except aiohttp.ClientConnectorError as error:
        raise Transient(f"cannot connect to {error.host}:{error.port}") from None
    except aiohttp.ClientError as error:
        # Not str(error): some aiohttp errors quote the URL, which may carry credentials.
        raise Transient(f"connection failed ({type(error).__name__})") from None
    if is_transient(response.status):
        hint = retry_after(response.headers.get("Retry-After"))
        if response.status == 429 and hint:
            budget.pause(hint)  # the shop's clock, not ours, says when the next request may go
        raise Transient(f"HTTP {response.status}", hint)
    return Reply(response.status, body, response.headers)


class HttpSettings(Strict):
    """What the settings of every HTTP sink share: a name and how patient to be."""

    name: str
    """Labels metrics and dead letters."""
    timeout: Duration = 10.0
    """Per request, from connect to the last byte of the answer."""
    max_retries: int = Field(5, ge=0)
    """Retries of a request the endpoint failed as a whole, before SinkUnavailable."""
    backoff: Duration = 0.5
    """First pause between retries; it doubles (with jitter) up to 60 s."""


def _hint(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome is not None else None
    return (error.retry_after or 0.0) if isinstance(error, Transient) else 0.0


async def with_retries(call: Callable[[], Awaitable[T]], *, sink: str,
                       settings: HttpSettings) -> T:
    """``call()`` again while it raises :class:`Transient`, waiting at least its
    ``Retry-After``; :class:`SinkUnavailable` once ``max_retries`` are spent or the shop
    asks for a pause longer than :data:`MAX_WAIT` (the consumer waits that out, not us)."""
    retries, backoff = settings.max_retries, settings.backoff
    backoff_wait = wait_exponential_jitter(multiplier=backoff, max=MAX_WAIT, jitter=backoff)

    def wait(state: RetryCallState) -> float:
        return max(backoff_wait(state), _hint(state))

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        pause = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s: %s; retry %d of %d in %.2fs",
                    sink, error, state.attempt_number, retries, pause)

    def stop(state: RetryCallState) -> bool:
        return state.attempt_number > retries or _hint(state) > MAX_WAIT

    retrying = AsyncRetrying(retry=retry_if_exception_type(Transient), stop=stop, wait=wait,
                             before_sleep=log_retry, reraise=True)
    try:
        async for attempt in retrying:
            with attempt:
                return await call()
    except Transient as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        raise SinkUnavailable(f"{sink}: {error} (gave up after {attempts} attempts)",
                              error.retry_after) from None
    raise AssertionError("unreachable: tenacity returns or raises")


# --- the webhook sink --------------------------------------------------------------------


class Settings(HttpSettings):
    """``[[sinks]] type = "webhook"``."""

    type: Literal["webhook"]
    url: str
    """Where every event is POSTed; https, or http to loopback (see ``allow_insecure``)."""
    secret_file: FilePath | None = None
    """File holding the HMAC-SHA256 key shared with the receiver (set this or ``secret_env``)."""
    secret_env: str | None = None
    """Environment variable holding the HMAC key."""
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
    def _secret_and_scheme(self) -> Self:
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("set exactly one of secret_file or secret_env (the HMAC key)")
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
        secret = read_secret(settings.secret_file, settings.secret_env, "secret")
        if not secret:
            raise SecretMissing("secret: the HMAC key is empty")
        self._secret = secret.encode()
        self._budget = RateBudget(settings.requests_per_second)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def apply(self, events: Sequence[Event]) -> list[SinkResult]:
        """POST each event, up to ``concurrency`` at once; one result per event, in order."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._deliver(event), name=f"webhook {event.id}")
                         for event in events]
        except* SinkUnavailable as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, event: Event) -> SinkResult:
        if event.entity not in self.entities:
            return SinkResult(Status.SKIPPED, f"{event.entity} is not forwarded by this sink")
        async with self._slots:
            reply = await with_retries(lambda: self._post(event), sink=f"webhook {self.name}",
                                       settings=self.settings)
        if reply.ok:
            return SinkResult(Status.APPLIED)
        if reply.status in (401, 403):
            raise SinkUnavailable(
                f"webhook {self.name}: the receiver refused the request (HTTP {reply.status}); "
                "check that secret_file/secret_env holds the receiver's secret")
        return SinkResult(Status.DEAD, f"{event.entity} {event.subject}: the receiver answered "
                                       f"HTTP {reply.status}: {reply.excerpt()}")

    async def _post(self, event: Event) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Content-Type": CONTENT_TYPE,
                   SIGNATURE_HEADER: sign(self._secret, event.raw)}
        return await send(self._session, self._budget, "POST", self.settings.url,
                          time_limit=self.settings.timeout, data=event.raw, headers=headers)
