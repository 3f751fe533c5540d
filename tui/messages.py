"""Messages the follow loops post to the apps: workers fetch, widgets draw."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tui.model import FleetAgent, Update


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
