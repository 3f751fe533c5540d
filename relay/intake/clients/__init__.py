"""The shops' order APIs as the intake reads them: one :class:`~relay.intake.source.ShopClient`
per shop type (``woocommerce``, ``shopify``), each module with its ``Settings`` and
``Client(settings)``, and the errors they raise when a shop cannot be read.

- :class:`ShopUnreadable` (retryable): the shop answered, but not with what its API
  documents (not JSON, the wrong shape, an error status), or kept failing past the HTTP
  retries; the poller keeps its cursor and tries again at the next interval.
- :class:`ShopRefused` (not retryable): the shop refused our credentials or our access;
  an operator has to change something.

Both name the shop (``woocommerce shop-main: ...``) and what was wrong, never a URL or a
header, which may carry credentials.
"""

from __future__ import annotations

from relay.errors import RelayKitError

__all__ = ["ShopRefused", "ShopUnreadable"]


class ShopUnreadable(RelayKitError):
    """The shop's order API cannot be read now; ``retry_after`` is its hint, if it gave one."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShopRefused(ShopUnreadable):
    """The shop refused the credentials or the access they carry (401, 403)."""

    retryable = False
