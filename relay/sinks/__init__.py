"""Sinks apply events to one shop or endpoint each; see :mod:`relay.sinks.base`."""
