"""Acting on the agent from a screen: one POST, its outcome told in a notification."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import App

from tui.sources import AgentSource


async def perform(
    app: App[Any], source: AgentSource, path: str, done: str | Callable[[Any], str]
) -> bool:
    """``POST path``; notify ``done`` (or ``done(body)``) on success, or the agent's reason
    on failure (a 404's or 409's ``error``)."""
    try:
        status, body = await source.act(path)
    except OSError as error:
        app.notify(str(error), title="Not done", severity="error", markup=False)
        return False
    if status != 200:
        reason = body.get("error") if isinstance(body, dict) else None
        app.notify(
            f"{reason or body} (HTTP {status})", title="Not done", severity="error", markup=False
        )
        return False
    app.notify(done if isinstance(done, str) else done(body), markup=False)
    return True
