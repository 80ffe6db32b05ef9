"""amo1c-sync: amoCRM <-> 1C:Enterprise integration for a clinic."""

__version__ = "0.1.0"
