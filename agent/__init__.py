"""DistillSync agent: ERP change capture into a durable outbox, published over MQTT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("distillsync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
