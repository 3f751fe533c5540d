"""paho's socket callbacks under aiomqtt, the agent's link and the relay kit's alike.

Duck-typed on purpose: this package imports no outside dependency (``tests/test_layering.py``
gives aiomqtt and paho one owner on each side), so the clients are ``Any`` here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_write_when_open"]


def register_write_when_open(client: Any) -> Callable[[Any, Any, Any], None]:
    """A replacement for aiomqtt 2.5's ``_on_socket_register_write`` of ``client``, to set as
    its paho client's ``on_socket_register_write``: the same writer, added only if the socket
    is still paho's and open when the loop gets to it.

    paho asks from its connect thread or from inside a read, so the registration runs later,
    on the loop; by then paho may have closed the socket (a TLS relay that hangs up on a
    missing client certificate). aiomqtt's own registration then fails with "Bad file
    descriptor" in the loop's exception handler, or watches a number the system has
    already given to another file."""
    loop = client._loop

    def register(paho_client: Any, _userdata: Any, sock: Any) -> None:
        def write() -> None:
            try:
                paho_client.loop_write()
            except Exception as error:  # a broken pipe: the link is lost, as aiomqtt says
                if not client._disconnected.done():
                    client._disconnected.set_exception(error)

        def add_writer() -> None:
            current = paho_client.socket()
            if current is sock and current is not None and current.fileno() >= 0:
                loop.add_writer(current.fileno(), write)

        loop.call_soon_threadsafe(add_writer)

    return register
