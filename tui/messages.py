"""Messages the follow loops post to the apps: workers fetch, widgets draw."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from textual.message import Message
from textual.message_pump import MessagePump

from tui.follow import Backoff, Follower
from tui.formats import Clock
from tui.model import FleetAgent, Update

T = TypeVar("T")


@dataclass
class AgentUpdated(Message):
    update: Update


@dataclass
class Lost(Message):
    """The agent (or the relay) cannot be reached; retrying. ``since`` is epoch seconds."""

    since: float
    error: str


@dataclass
class FleetStatus(Message):
    key: tuple[str, str]
    agent: FleetAgent | None  # None: the retained status was cleared


async def follow(
    target: MessagePump,
    open_feed: Callable[[], AsyncIterator[T]],
    message: Callable[[T], Message],
    *,
    errors: tuple[type[Exception], ...],
    now: Clock,
    backoff: Backoff,
) -> None:
    """Follow a feed for good, posting ``message(item)`` to ``target`` for each item and
    :class:`Lost` for each failure. Run it in a worker."""
    await Follower(
        open_feed,
        lambda item: target.post_message(message(item)),
        lambda since, why: target.post_message(Lost(since, why)),
        errors=errors,
        now=now,
        backoff=backoff,
    ).run()
