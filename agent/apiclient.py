"""A small client of the status API; what ``distillsync status``, ``outbox`` and the TUI use.

It reaches the agent over its unix socket (the default) or over TCP on loopback with a
bearer token (``[api] listen`` and ``token_file``). Every failure to reach the agent is an
:class:`OSError` naming where it looked, so callers have one thing to catch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

DEFAULT_SOCKET = Path("/run/distillsync/agent.sock")
STREAM_PATH = "/v1/stream"


class ApiClient:
    def __init__(
        self,
        socket: Path | None = DEFAULT_SOCKET,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """``url`` (``http://127.0.0.1:PORT``) wins over ``socket`` when given."""
        self.socket = socket
        self.base = url.rstrip("/") if url else "http://agent"
        self.where = url if url else str(socket)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    def _session(self, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        connector = (
            aiohttp.UnixConnector(path=str(self.socket))
            if self.base == "http://agent"
            else aiohttp.TCPConnector()
        )
        return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers)

    def _unreachable(self, error: Exception) -> OSError:
        cause = getattr(error, "os_error", None) or error
        return OSError(f"agent unreachable at {self.where}: {cause}")

    async def _raw(self, method: str, path: str) -> tuple[int, bytes]:
        try:
            async with (
                self._session(aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.request(method, f"{self.base}{path}") as response,
            ):
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._unreachable(error) from None

    async def request(self, method: str, path: str) -> tuple[int, Any]:
        """``(HTTP status, decoded JSON body)``; raises :class:`OSError` if unreachable."""
        status, body = await self._raw(method, path)
        return status, orjson.loads(body)

    async def get_text(self, path: str) -> tuple[int, str]:
        """For the one endpoint that is not JSON: ``/v1/metrics``."""
        status, body = await self._raw("GET", path)
        return status, body.decode()

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def post(self, path: str) -> tuple[int, Any]:
        return await self.request("POST", path)

    async def stream(self, path: str = STREAM_PATH) -> AsyncIterator[dict[str, Any]]:
        """Each update of ``/v1/stream`` (one JSON object per line), until the agent goes
        away, which raises :class:`OSError`. An update arrives at least every few seconds,
        so a silent socket beyond ``timeout`` counts as a lost agent."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_read=max(self.timeout, 5.0)
        )
        try:
            async with (
                self._session(timeout) as session,
                session.get(f"{self.base}{path}") as response,
            ):
                if response.status != 200:
                    body = orjson.loads(await response.read())
                    raise OSError(
                        f"agent at {self.where} refused the stream: "
                        f"{response.status} {body.get('error', '')}"
                    )
                async for line in response.content:
                    if line.strip():
                        yield orjson.loads(line)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._unreachable(error) from None
        raise OSError(f"agent at {self.where} closed the stream")
