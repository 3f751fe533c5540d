"""paho's write registration under aiomqtt, on every client the project makes: the
agent's link, the relay kit's consumer session and its watcher (the TUI's fleet view).

paho asks for a writer from its connect thread or inside a read; if the relay hangs up
before the loop gets to it, the socket is gone (seen in CI: "Bad file descriptor" in the
agent's log, once a TLS relay refused a missing client certificate)."""

from __future__ import annotations

import asyncio
import socket
import tomllib
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from agent.config import parse_config
from agent.publisher import RelayLink
from agent.service import link_settings
from relay.subscriber import Session, SessionSettings, _client
from tests.support import agent_toml


def agent_link(tmp_path: Path) -> paho.Client:
    source = (
        '[[sources]]\nname = "erp"\nurl = "sqlite+aiosqlite:///unused.db"\n'
        '[[sources.entities]]\nentity = "stock"\nquery = "SELECT 1"\nkey = ["sku"]\n'
        'cursor = "tms"\n'
    )
    config = parse_config(tomllib.loads(agent_toml(tmp_path, "mqtt://127.0.0.1:1", source)))
    return RelayLink(link_settings(config))._paho


def consumer_session(_tmp_path: Path) -> paho.Client:
    return Session(SessionSettings("mqtt://127.0.0.1:1", "c-1", ["t"])).client._client


def watcher(_tmp_path: Path) -> paho.Client:
    return _client("mqtt://127.0.0.1:1", "w-1", "5")._client


CLIENTS = {"agent link": agent_link, "consumer session": consumer_session, "watcher": watcher}


@pytest.mark.parametrize("made", sorted(CLIENTS))
async def test_a_write_registered_for_a_socket_closed_meanwhile_is_not_made(
    made: str, tmp_path: Path
) -> None:
    inner, loop = CLIENTS[made](tmp_path), asyncio.get_running_loop()
    register = inner.on_socket_register_write
    assert register is not None  # ours: register_write_when_open
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    mine, theirs = socket.socketpair()
    try:
        inner._sock = mine
        register(inner, None, mine)
        mine.close()  # paho read end-of-file and closed it before the loop ran
        await asyncio.sleep(0)  # one turn of the loop: the registration has run
        assert errors == []

        reused, other = socket.socketpair()  # the number may already be another file's
        try:
            register(inner, None, mine)
            await asyncio.sleep(0)
            assert not loop.remove_writer(reused.fileno())
            inner._sock = reused
            register(inner, None, reused)
            await asyncio.sleep(0)
            assert loop.remove_writer(reused.fileno())  # the live one is watched
        finally:
            reused.close()
            other.close()
    finally:
        inner._sock = None
        theirs.close()
        loop.set_exception_handler(None)
