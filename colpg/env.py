"""Settings read from the environment, with errors that name the variable and what it holds."""

from __future__ import annotations

import os

from colpg.errors import ConfigurationError

__all__ = ["byte_count", "switch"]

#: How a setting that is on or off may be written (any case).
SWITCH_VALUES = {"on": True, "1": True, "true": True, "yes": True, "off": False, "0": False, "false": False, "no": False}


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


def switch(name: str, default: bool) -> bool:
    """``$name`` as on or off (on/off, 1/0, true/false, yes/no); ``default`` when unset or blank.

    >>> os.environ["COLPG_DOCTEST_SWITCH"] = " Off "; switch("COLPG_DOCTEST_SWITCH", True)
    False
    >>> os.environ["COLPG_DOCTEST_SWITCH"] = "of"; switch("COLPG_DOCTEST_SWITCH", True)
    Traceback (most recent call last):
    ...
    colpg.errors.ConfigurationError: COLPG_DOCTEST_SWITCH must be one of on, 1, true, yes, off, 0, false, no, got 'of'
    >>> del os.environ["COLPG_DOCTEST_SWITCH"]
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value.lower() not in SWITCH_VALUES:
        raise ConfigurationError(f"{name} must be one of {', '.join(SWITCH_VALUES)}, got {value!r}")
    return SWITCH_VALUES[value.lower()]
