"""Where the dashboards get their data: the agent's status API, or the relay's retained
statuses. The apps see only these protocols, so tests hand them frozen data instead."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from agent.apiclient import ApiClient
from relay.subscriber import watch
from tui.model import DeadLetter, InboxItem, InboxList, parse_dead_letter, parse_inbox_item

PAGE = 200
MAX_DEAD_LETTERS = 1000  # what a screen can usefully list; the CLI pages through the rest
INBOX_PAGE = 1000  # the API's largest page: the inbox is read through to its newest items
MAX_INBOX = 1000  # the newest items kept for the screen


class AgentSource(Protocol):
    @property
    def where(self) -> str:
        """Where the agent is reached, for messages."""
        ...

    def updates(self) -> AsyncIterator[dict[str, Any]]:
        """Live updates (``/v1/stream`` lines); raises :class:`OSError` when the agent goes."""
        ...

    async def dead_letters(self) -> list[DeadLetter]:
        """The dead letters, oldest first; raises :class:`OSError` if they cannot be had."""
        ...

    async def inbox(self, state: str | None) -> InboxList:
        """The newest inbox items in ``state`` (all states if None), newest first; raises
        :class:`OSError` if they cannot be had."""
        ...

    async def act(self, path: str) -> tuple[int, Any]:
        """``POST path``: ``(HTTP status, JSON body)``; raises :class:`OSError` if unreachable."""
        ...


class FleetSource(Protocol):
    @property
    def where(self) -> str: ...

    @property
    def topic(self) -> str: ...

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Retained statuses, then every change, as ``(topic, payload)``; raises when the
        relay connection is lost."""
        ...


class ApiSource:
    """An :class:`AgentSource` over the status API client."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    @property
    def where(self) -> str:
        return self.client.where

    def updates(self) -> AsyncIterator[dict[str, Any]]:
        return self.client.stream()

    async def dead_letters(self) -> list[DeadLetter]:
        items: list[DeadLetter] = []
        while len(items) < MAX_DEAD_LETTERS:
            after = items[-1].id if items else 0
            page = await self._page(f"/v1/outbox?state=dead&after={after}&limit={PAGE}")
            items.extend(parse_dead_letter(item) for item in page)
            if len(page) < PAGE:
                break
        return items

    async def inbox(self, state: str | None) -> InboxList:
        """``GET /v1/inbox`` pages by id from the oldest and has no newest-first order, so
        every page is read and the newest :data:`MAX_INBOX` are kept."""
        query = f"state={state}&" if state else ""
        newest: deque[InboxItem] = deque(maxlen=MAX_INBOX)
        total, after = 0, 0
        while True:
            page = await self._page(f"/v1/inbox?{query}after={after}&limit={INBOX_PAGE}")
            newest.extend(parse_inbox_item(item) for item in page)
            total += len(page)
            if len(page) < INBOX_PAGE or not newest:
                break
            after = newest[-1].id
        return InboxList(tuple(reversed(newest)), total)

    async def _page(self, path: str) -> list[Any]:
        status, body = await self.client.get(path)
        if status != 200:
            raise OSError(f"agent answered {status} to {path}: {body.get('error', '')}")
        items = body.get("items")
        return items if isinstance(items, list) else []

    async def act(self, path: str) -> tuple[int, Any]:
        return await self.client.post(path)


def fleet_topic(prefix: str, tenant: str | None) -> str:
    """The retained status topics of one tenant's agents, or of every tenant's."""
    return f"{prefix}/{tenant or '+'}/+/status"


def consumers_topic(prefix: str) -> str:
    """The relay kit's consumers announce themselves here; they serve every tenant."""
    return f"{prefix}/_relay/+/status"


class RelaySource:
    """A :class:`FleetSource` subscribed to the relay broker."""

    def __init__(self, url: str, tenant: str | None = None, prefix: str = "distillsync") -> None:
        self.url = url
        self.topic = fleet_topic(prefix, tenant)
        self.consumers = consumers_topic(prefix)
        # Unique: two operators watching the same fleet must not kick each other off.
        self.client_id = f"distillsync-tui-{secrets.token_hex(4)}"

    @property
    def where(self) -> str:
        return self.url

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        return watch(self.url, [self.topic, self.consumers], self.client_id)
