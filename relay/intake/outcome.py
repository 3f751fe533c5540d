"""What reading one shop order can come to, besides a canonical order or return.

Every shop's mapping returns a :data:`Mapped`: an :class:`~relay.intake.order.Order` or
:class:`~relay.intake.order.Return` to publish, or one of the outcomes here, each of which
the intake records and shows but does not publish. None of them is an exception: a body
that verified is never refused, since the shop would retry it for hours and then disable
the hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from relay.intake.order import Order, Return

__all__ = ["Draft", "Gone", "Mapped", "Trashed", "Unmappable"]


@dataclass(frozen=True, slots=True)
class Draft:
    """A checkout not (yet) placed (WooCommerce's ``checkout-draft``): nothing to import."""

    order_ref: str
    version: datetime | None


@dataclass(frozen=True, slots=True)
class Trashed:
    """The order went to the trash (it can be restored: ``order.restored``)."""

    order_ref: str


@dataclass(frozen=True, slots=True)
class Gone:
    """A REST error body saying the order no longer exists (deleted for good).

    The body names no order: whoever received it knows which one it asked for or which
    hook delivered it.
    """

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Unmappable:
    """A body that verified but cannot become an order: a dead letter with this reason."""

    reason: str
    order_ref: str | None = None


Mapped = Order | Return | Draft | Trashed | Gone | Unmappable
