"""TLS for paho's connections to the relay, the agent's and the relay kit's alike."""

from __future__ import annotations

import ssl

__all__ = ["ClosedOnFailedHandshake"]


class ClosedOnFailedHandshake(ssl.SSLSocket):
    """Set as a context's ``sslsocket_class``. paho leaves the socket of a failed TLS
    handshake open (a refused certificate), one more with every reconnect attempt until
    the garbage collector finds them."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise
