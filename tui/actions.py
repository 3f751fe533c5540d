"""Acting on the agent from a screen: one POST, its outcome told in a notification."""

from __future__ import annotations

from typing import Any

from textual.app import App

from tui.sources import AgentSource


async def perform(app: App[Any], source: AgentSource, path: str, done: str) -> bool:
    """``POST path``; notify ``done`` on success or the agent's reason on failure."""
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
    app.notify(done, markup=False)
    return True
