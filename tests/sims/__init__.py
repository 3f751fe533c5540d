"""Simulators of the third-party APIs the relay sinks talk to, served on loopback, and what
the sink tests share.

- :class:`Served`: a simulator's aiohttp app on a free 127.0.0.1 port (tests never send
  traffic anywhere else): ``async with sim:``, or ``await sim.start()`` / ``sim.close()``;
  :class:`Fault`: an answer a test injects in place of the real one.
- :func:`event` makes the events sinks are fed: a real CloudEvents envelope in ``raw``;
  :func:`stock` and :func:`price` make the two the shop sinks write.
- :func:`sink_maker`: the ``make_sink(**overrides)`` of a sink test, closing every sink made.
- :class:`Catcher`: a receiver of a shop simulator's webhook deliveries, keeping each
  request as it arrived and answering what a test tells it to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel

from relay.model import Event, Op, SinkResult, Status

APPLIED = SinkResult(Status.APPLIED)

_SEQUENCE = itertools.count(1)


@dataclass(frozen=True)
class Fault:
    """An answer a simulator gives instead of the real one (a test's injected failure)."""

    status: int
    """The answer; 0 hangs until the client gives up."""
    retry_after: str | None = None
    body: str = ""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after} if self.retry_after else {}


class Served:
    """A simulator on loopback: subclasses build their routes in :meth:`app`."""

    path: ClassVar[str] = ""
    """Appended to the server's address to make :attr:`url`."""
    url = ""
    """Where the sink is pointed (no trailing slash); set by :meth:`start`."""
    tls: ssl.SSLContext | None = None
    """A server context to serve https instead of http (set before :meth:`start`)."""
    _server: TestServer | None = None
    _closed: asyncio.Event | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> str:
        self._closed = asyncio.Event()
        self._server = TestServer(self.app(), host="127.0.0.1", port=0)
        await self._server.start_server(ssl=self.tls)
        self.url = str(self._server.make_url(self.path)).rstrip("/")
        return self.url

    async def close(self) -> None:
        if self._closed is not None:
            self._closed.set()  # release hung handlers so the server can stop at once
        if self._server is not None:
            await self._server.close()

    async def hang(self) -> None:
        """Answer nothing until the server closes (the client times out first)."""
        assert self._closed is not None
        await self._closed.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


@dataclass(frozen=True)
class Caught:
    """One request a :class:`Catcher` received, as it arrived."""

    headers: dict[str, str]
    body: bytes
    status: int
    """What the catcher answered (0: it never answered)."""


class Catcher(Served):
    """Takes every POST to :attr:`url`, keeps it in :attr:`caught` and answers
    :attr:`status` (200), or the next of :meth:`answer_next` (0: hang until closed, or
    until :meth:`release` when a test wants a slow answer to end)."""

    path = "/hooks"

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.caught: list[Caught] = []
        self._answers: list[int] = []
        self._released = asyncio.Event()

    def answer_next(self, *statuses: int) -> None:
        self._answers.extend(statuses)

    def release(self) -> None:
        """Let every hanging request answer (with 200)."""
        self._released.set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.path, self._catch)
        return app

    async def _catch(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self._answers.pop(0) if self._answers else self.status
        self.caught.append(Caught(dict(request.headers), body, status))
        if status == 0:
            assert self._closed is not None
            closed = asyncio.ensure_future(self._closed.wait())
            released = asyncio.ensure_future(self._released.wait())
            await asyncio.wait([closed, released], return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            released.cancel()
            status = 200
        return web.Response(status=status, text="")


# --- events --------------------------------------------------------------------------------


def event(
    entity: str, data: dict[str, Any], *, subject: str | None = None, op: Op = "upsert"
) -> Event:
    """An event of agent ``erp-1`` of tenant ``acme``, numbered in creation order."""
    subject = subject or "/".join(str(data[key]) for key in ("sku", "warehouse") if key in data)
    event_id, source, sequence = str(uuid.uuid4()), "urn:distillsync:acme:erp-1", next(_SEQUENCE)
    stamp = "2026-11-23T12:00:00.000000Z"
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": f"distillsync.{entity}.{op}",
        "subject": subject,
        "time": stamp,
        "sequence": f"{sequence:020d}",
        "datacontenttype": "application/json",
        "data": data,
    }
    return Event(
        id=event_id,
        source=source,
        entity=entity,
        op=op,
        subject=subject,
        sequence=f"{sequence:020d}",
        time=stamp,
        data=data,
        raw=orjson.dumps(envelope),
    )


def stock(sku: str, on_hand: Any, warehouse: str = "MAD", *, op: Op = "upsert") -> Event:
    """A stock event: ``on_hand`` of ``sku`` in ``warehouse``."""
    return event("stock", {"sku": sku, "warehouse": warehouse, "on_hand": on_hand}, op=op)


def price(sku: str, amount: str, **extra: Any) -> Event:
    """A price event; ``extra`` adds fields such as ``price_list`` or ``currency``."""
    return event("price", {"sku": sku, "price": amount, **extra})


def statuses(results: Sequence[SinkResult]) -> list[Status]:
    return [result.status for result in results]


# --- sinks ---------------------------------------------------------------------------------


class _Closes(Protocol):
    async def close(self) -> None: ...


SinkT = TypeVar("SinkT", bound=_Closes)
SettingsT = TypeVar("SettingsT", bound=BaseModel)


@contextlib.asynccontextmanager
async def sink_maker(
    sink: Callable[[SettingsT], SinkT], settings: type[SettingsT], **defaults: Any
) -> AsyncIterator[Callable[..., SinkT]]:
    """``make(**overrides)``: a ``sink`` with the ``settings`` ``defaults | overrides``;
    every sink made is closed on the way out."""
    made: list[SinkT] = []

    def make(**overrides: Any) -> SinkT:
        made.append(sink(settings.model_validate(defaults | overrides)))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            await each.close()
