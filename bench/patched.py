"""Run the agent with a proposed change applied in memory, to measure it before anyone
edits ``agent/``: ``python -m bench.patched PATCH[,PATCH...] run -c FILE``.

``python -m bench --agent-patch PATCH`` starts its agents this way. Patches:

* ``packed-properties``: delivery builds each event's MQTT 5 properties (content type and
  four user properties) as bytes with :func:`bench.rawpub.packed_properties`, byte for
  byte what paho's ``Properties.pack()`` gives, instead of building a paho ``Properties``
  that is then packed twice (once by ``RelayLink.packet_size``, once by paho).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

PATCHES: dict[str, Callable[[], None]] = {}


def _packed_properties() -> None:
    import agent.delivery
    from bench.rawpub import packed_properties

    # delivery looks the name up in its own module at every publish
    setattr(agent.delivery, "message_properties", packed_properties)  # noqa: B010


PATCHES["packed-properties"] = _packed_properties


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    for name in filter(None, sys.argv[1].split(",")):
        if name not in PATCHES:
            print(f"unknown patch {name!r}; known: {', '.join(PATCHES)}", file=sys.stderr)
            return 64
        PATCHES[name]()
    from agent.cli import main as agent_main

    return agent_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
