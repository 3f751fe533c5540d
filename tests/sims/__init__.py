"""Simulators of the third-party APIs the relay sinks talk to, served on loopback.

:func:`event` makes the events sinks are fed: a real CloudEvents envelope in ``raw``;
:func:`stock` and :func:`price` make the two the shop sinks write.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import orjson

from relay.model import Event, Op

_SEQUENCE = itertools.count(1)


def event(entity: str, data: dict[str, Any], *, subject: str | None = None,
          op: Op = "upsert") -> Event:
    """An event of agent ``erp-1`` of tenant ``acme``, numbered in creation order."""
    subject = subject or "/".join(str(data[key]) for key in ("sku", "warehouse") if key in data)
    event_id, source, sequence = str(uuid.uuid4()), "urn:distillsync:acme:erp-1", next(_SEQUENCE)
    stamp = "2026-11-23T12:00:00.000000Z"
    envelope = {"specversion": "1.0", "id": event_id, "source": source,
                "type": f"distillsync.{entity}.{op}", "subject": subject, "time": stamp,
                "sequence": f"{sequence:020d}", "datacontenttype": "application/json",
                "data": data}
    return Event(id=event_id, source=source, entity=entity, op=op, subject=subject,
                 sequence=f"{sequence:020d}", time=stamp, data=data, raw=orjson.dumps(envelope))


def stock(sku: str, on_hand: Any, warehouse: str = "MAD", *, op: Op = "upsert") -> Event:
    """A stock event: ``on_hand`` of ``sku`` in ``warehouse``."""
    return event("stock", {"sku": sku, "warehouse": warehouse, "on_hand": on_hand}, op=op)


def price(sku: str, amount: str, **extra: Any) -> Event:
    """A price event; ``extra`` adds fields such as ``price_list`` or ``currency``."""
    return event("price", {"sku": sku, "price": amount, **extra})
