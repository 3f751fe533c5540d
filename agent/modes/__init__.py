"""The capture modes, one class each, driven by :class:`agent.poller.FeedPoller`.

* :mod:`agent.modes.timestamp`: :class:`TimestampCursor`, a changing column (``updated_at``)
  re-read from ``cursor - lookback`` in periodic sweeps;
* :mod:`agent.modes.incrementing`: :class:`IncrementingCursor`, a strictly growing column
  (an id, ``rowversion``) held back by the lookback;
* :mod:`agent.modes.snapshot`: :class:`Snapshot`, every row compared, unseen keys deleted.

Each owns what it remembers between polls and reads through the :class:`Poller` it is
given (:mod:`agent.modes.base`); none knows what kind of source it reads.
"""
