"""Settings read from the environment, with errors that name the variable and what it holds."""

from __future__ import annotations

import os

from colpg.errors import ConfigurationError

__all__ = ["byte_count"]


def byte_count(name: str, default: int, least: int) -> int:
    """``$name`` as a number of bytes of at least ``least``; ``default`` when unset or blank."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        size = int(value)
    except ValueError:
        size = least - 1
    if size < least:
        raise ConfigurationError(f"{name} must be a byte count of {least} or more, got {value!r}")
    return size
