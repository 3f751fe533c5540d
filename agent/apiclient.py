"""A small client of the status API; what ``distillsync status`` and the TUI use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

DEFAULT_SOCKET = Path("/run/distillsync/agent.sock")


class ApiClient:
    def __init__(self, socket: Path = DEFAULT_SOCKET, timeout: float = 5.0) -> None:
        self.socket = socket
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def request(self, method: str, path: str) -> tuple[int, Any]:
        """``(HTTP status, decoded JSON body)``; raises :class:`OSError` if unreachable."""
        connector = aiohttp.UnixConnector(path=str(self.socket))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as s, \
                    s.request(method, f"http://agent{path}") as response:
                return response.status, orjson.loads(await response.read())
        except aiohttp.ClientConnectorError as error:
            raise OSError(f"agent unreachable at {self.socket}: {error.os_error}") from None

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def post(self, path: str) -> tuple[int, Any]:
        return await self.request("POST", path)
