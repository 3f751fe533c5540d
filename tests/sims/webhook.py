"""A webhook receiver on loopback, as the ``webhook`` sink's docs tell receivers to behave.

It takes CloudEvents in HTTP structured mode (``application/cloudevents+json``), checks
``X-DistillSync-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` over the raw body
with a constant-time compare (401 on a mismatch or a missing header), and keeps what it
accepted. It can be told to fail the next requests: 500, 429 with ``Retry-After``, 400,
or hang until the client gives up. Every request, failed or not, is in :attr:`hits` with
the loop's clock, so tests check pauses as facts (``gap >= Retry-After``), not speeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.sims import Fault, Served

CONTENT_TYPE = "application/cloudevents+json"
REFUSALS = {401: "bad signature", 415: f"not {CONTENT_TYPE}"}


@dataclass(frozen=True)
class Hit:
    """One request as the receiver saw it."""

    at: float
    """``time.monotonic()`` on arrival."""
    status: int


class WebhookReceiver(Served):
    path = "/hook"

    def __init__(self, secret: bytes, *, delay: float = 0.0) -> None:
        self.secret = secret
        self.delay = delay
        """Seconds each accepted request takes (to watch concurrency)."""
        self.received: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._faults: deque[Fault] = deque()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.path, self._hook)
        return app

    def fail_next(
        self, count: int, status: int, *, retry_after: str | None = None, body: str = ""
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (0: hang)."""
        self._faults.extend([Fault(status, retry_after, body)] * count)

    async def _hook(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        fault = self._faults.popleft() if self._faults else None
        status = fault.status if fault is not None else self._check(request, body)
        self.hits.append(Hit(arrived, status))
        if fault is not None:
            return await self._fault(fault)
        if status != 204:
            return web.json_response({"error": REFUSALS[status]}, status=status)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self.bodies.append(body)
        self.received.append(orjson.loads(body))
        return web.Response(status=204)

    def _check(self, request: web.Request, body: bytes) -> int:
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        given = request.headers.get("X-DistillSync-Signature", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return 401
        return 204 if request.content_type == CONTENT_TYPE else 415

    async def _fault(self, fault: Fault) -> web.Response:
        if fault.status == 0:
            await self.hang()
            return web.Response(status=503)
        return web.Response(status=fault.status, text=fault.body, headers=fault.headers())
