"""The HTTP policy every HTTP sink shares: settings, one request, and retries.

- :class:`HttpSettings`: what every HTTP sink's settings have (``name``, ``timeout``,
  ``max_retries``, ``backoff``, ``ca_file``, credentials from ``*_file``, ``*_env`` or
  ``*_credential``); :func:`check_url` checks their URLs (:data:`ShopUrl` a shop's base URL).
- :class:`LazySession`: the sink's aiohttp session, made on first use, verifying https
  against ``ca_file`` when one is set (:meth:`HttpSettings.tls`).
- :func:`send`: one request, paced by the sink's :class:`~relay.sinks.base.RateBudget`.
  408, 429, 5xx, a timeout or a lost connection raise :class:`Transient` (a 429's
  ``Retry-After`` also pauses the budget); any other answer is a :class:`Reply` for the sink
  to read (2xx applied, 4xx that event's dead letter or, for a refused key, the whole
  sink's :class:`~relay.errors.SinkUnavailable`). A certificate that fails verification
  raises :class:`Refused` (not retried), saying what is wrong with it (:func:`connect_failure`).
- :func:`with_retries`: a call again while it raises :class:`Transient`, with jittered
  exponential backoff that waits at least what ``Retry-After`` says (seconds or an HTTP
  date); after ``max_retries``, or when the shop asks for a pause longer than
  :data:`MAX_WAIT`, :class:`~relay.errors.SinkUnavailable` for the consumer to wait out.

Errors name a host at most, never a URL or a header: those may carry credentials.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import AfterValidator, Field, field_validator, model_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from relay.errors import Refused, SecretMissing, SinkUnavailable, Transient
from relay.settings import Duration, FilePath, Strict, one_way_to_the_secret, read_secret
from relay.sinks.base import RateBudget

log = logging.getLogger("distillsync.relay.sinks.http")

MAX_WAIT = 60.0
"""The longest pause slept inside a sink; a longer ``Retry-After`` goes to the consumer."""
EXCERPT = 200

T = TypeVar("T")


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


# --- settings ------------------------------------------------------------------------------


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
    ca_file: FilePath | None = None
    """PEM bundle of the CAs that https endpoints are verified against, in place of the
    system's trust store (a shop on a private CA); the hostname is always verified too."""

    secrets: ClassVar[tuple[str, ...]] = ()
    """The sink's credentials: each is read from ``{key}_file``, ``{key}_env`` or
    ``{key}_credential`` (a systemd credential's name), and exactly one of them is set."""

    @field_validator("ca_file")
    @classmethod
    def _loadable(cls, path: Path | None) -> Path | None:
        if path is not None:
            trust(path)  # a bad file is a config error naming the key, not a failing shop
        return path

    def tls(self) -> ssl.SSLContext | None:
        """The context that verifies against ``ca_file``; None for the system's trust store."""
        return trust(self.ca_file) if self.ca_file is not None else None

    @model_validator(mode="after")
    def _one_source_per_secret(self) -> Self:
        for key in self.secrets:
            one_way_to_the_secret(self, key, required=True)
        return self

    def secret(self, key: str, what: str) -> str:
        """The credential behind ``{key}_file``, ``{key}_env`` or ``{key}_credential``
        (``what`` it is, for the error); :class:`SecretMissing` when it cannot be read or
        is empty."""
        value = read_secret(
            getattr(self, f"{key}_file"),
            getattr(self, f"{key}_env"),
            key,
            getattr(self, f"{key}_credential"),
        )
        if not value:
            raise SecretMissing(f"{key}: {what} is empty")
        return value


def trust(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts only the CAs in ``ca_file``; ValueError, in OpenSSL's
    words, when it cannot be read or holds no certificate."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load {ca_file}: {ssl_words(error)}") from None


def ssl_words(error: Exception) -> str:
    """OpenSSL's reason without its library tag and source line: ``[SSL:
    CERTIFICATE_VERIFY_FAILED] certificate verify failed: ... (_ssl.c:1006)`` ->
    ``certificate verify failed: ...``."""
    if isinstance(error, OSError) and not isinstance(error, ssl.SSLError) and error.strerror:
        return error.strerror
    return re.sub(r"^\[[^]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(error)).strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool, why: str = "sends events in clear") -> str:
    """An http(s) URL; plain http only to loopback unless ``allow_http`` (``why`` says what
    plain http elsewhere would do, for the error).

    The URL itself is never repeated in the error: it may carry a token.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        raise ValueError(f"plain http to {parts.hostname} {why}: use https")
    return url


def _shop_url(url: str) -> str:
    return check_url(url, allow_http=False).rstrip("/")


ShopUrl = Annotated[str, AfterValidator(_shop_url)]
"""A shop's base URL, without a trailing slash: https, or http to loopback (a simulator),
since the credentials travel with every request."""


class LazySession:
    """A sink's :class:`aiohttp.ClientSession`, made on first use (a sink may be built before
    the event loop runs) with ``options``, and closed by the sink's ``close``. ``tls``
    (:meth:`HttpSettings.tls`) verifies https against the sink's ``ca_file``."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, **options: Any) -> None:
        self._tls = tls
        self._options = options
        self._session: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None:
            # The connector needs the running loop, hence made here and not in __init__.
            connector = aiohttp.TCPConnector(ssl=self._tls) if self._tls is not None else None
            self._session = aiohttp.ClientSession(connector=connector, **self._options)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- one request ---------------------------------------------------------------------------


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


async def send(
    session: aiohttp.ClientSession,
    budget: RateBudget,
    method: str,
    url: str,
    *,
    time_limit: float,
    **options: Any,
) -> Reply:
    """One request, paced by ``budget``; :class:`Transient` when it is worth trying again."""
    await budget.take()
    try:
        async with session.request(
            method,
            url,
            timeout=aiohttp.ClientTimeout(total=time_limit),
            allow_redirects=False,
            **options,
        ) as response:
            body = await response.read()
    except TimeoutError:
        raise Transient(f"no answer within {time_limit:g}s") from None
    except aiohttp.ClientConnectorCertificateError as error:
        raise Refused(connect_failure(error)) from None
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


# What a failed verification means, in an operator's words: (OpenSSL's words, the meaning).
# The first match wins; OpenSSL's own words follow in brackets.
_CERTIFICATE_FAILURES = (
    (
        "certificate has expired",
        "the shop's certificate has expired (or this machine's clock is wrong)",
    ),
    (
        "certificate is not yet valid",
        "the shop's certificate is not valid yet (or this machine's clock is wrong)",
    ),
    (
        "mismatch",
        "the shop's certificate is not issued for {host}: use a URL with a name the "
        "certificate lists",
    ),
)


def connect_failure(error: aiohttp.ClientConnectorCertificateError) -> str:
    """``cannot connect to HOST:PORT: `` and why the certificate was refused."""
    words = ssl_words(error.certificate_error)
    meaning = next(
        (
            meaning.format(host=error.host)
            for needle, meaning in _CERTIFICATE_FAILURES
            if needle in words
        ),
        None,
    )
    why = (
        f"{meaning} ({words})"
        if meaning
        else f"the shop's certificate is not trusted ({words}): set ca_file to the CA that "
        "signed it"
    )
    return f"cannot connect to {error.host}:{error.port}: {why}"


# --- retries -------------------------------------------------------------------------------


def _hint(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome is not None else None
    return (error.retry_after or 0.0) if isinstance(error, Transient) else 0.0


async def with_retries(call: Callable[[], Awaitable[T]], *, sink: str, settings: HttpSettings) -> T:
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
        log.warning(
            "%s: %s; retry %d of %d in %.2fs", sink, error, state.attempt_number, retries, pause
        )

    def stop(state: RetryCallState) -> bool:
        return state.attempt_number > retries or _hint(state) > MAX_WAIT

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(Transient),
        stop=stop,
        wait=wait,
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await call()
    except Refused as error:
        raise SinkUnavailable(f"{sink}: {error}") from None
    except Transient as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        raise SinkUnavailable(
            f"{sink}: {error} (gave up after {attempts} attempts)", error.retry_after
        ) from None
    raise AssertionError("unreachable: tenacity returns or raises")


__all__ = [
    "MAX_WAIT",
    "HttpSettings",
    "LazySession",
    "Refused",
    "Reply",
    "ShopUrl",
    "Transient",
    "check_url",
    "connect_failure",
    "is_loopback",
    "is_transient",
    "retry_after",
    "send",
    "ssl_words",
    "trust",
    "with_retries",
]
