"""The id of an inbound event: the same shop state gives the same id, anywhere, any time.

Shops stamp their last-modified time to the whole second and one second can hold several
states of one order (DESIGN.md, "Identity"), so the version alone cannot name a state. The
id is therefore, exactly as DESIGN.md says::

    digest = SHA-256 hex of orjson.dumps(data without "version", OPT_SORT_KEYS)
    id     = UUIDv5(NAMESPACE, orjson.dumps([shop, ref, version, digest]))

- ``NAMESPACE`` is ``3c3f05bb-d3d6-51c6-b13d-16ae6f020b75``, itself
  ``uuid5(NAMESPACE_URL, "urn:distillsync:inbound-event")``: fixed for good, since changing
  it would make every stored event look new.
- The four parts are joined as a compact JSON array of strings (orjson: UTF-8, no
  spaces), so no part's content can shift a boundary (``("a-b", "c")`` and ``("a", "b-c")``
  differ); ``version`` is the RFC 3339 text of ``data["version"]``.
- ``data`` is the JSON-ready dict (:meth:`relay.intake.order.Order.to_data`): its money is
  already canonical decimal text, so how a shop spelled an amount, and the key order of
  what it sent, change nothing. ``version`` is left out of the digest because a shop can
  move it with no change of content (a meta write-back): the id still differs, through its
  own part, but the digest says "same content" to whoever compares them.

A port in another language reproduces an id from the event alone.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from relay.intake.order import Order

__all__ = ["NAMESPACE", "digest", "event_id", "order_event_id"]

NAMESPACE = uuid.UUID("3c3f05bb-d3d6-51c6-b13d-16ae6f020b75")


def digest(data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical ``data`` less its ``version``, keys sorted."""
    content = {key: value for key, value in data.items() if key != "version"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def event_id(shop: str, ref: str, version: str, content_digest: str) -> uuid.UUID:
    """UUIDv5 of the four parts, joined as a JSON array (unambiguous whatever they hold)."""
    name = orjson.dumps([shop, ref, version, content_digest]).decode()
    return uuid.uuid5(NAMESPACE, name)


def order_event_id(order: Order) -> uuid.UUID:
    data = order.to_data()
    return event_id(order.shop, order.order_ref, data["version"], digest(data))
