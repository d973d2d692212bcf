"""The environment variables that steer plugin loading and backend selection."""

from __future__ import annotations

import os
from typing import NamedTuple

from mixprec._errors import PrecisionError

__all__ = ["Settings", "env_flag", "env_list"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_flag(name: str) -> bool:
    """Read a boolean variable strictly: 1/true/yes/on or 0/false/no/off (any case); else an error.

    Unset, empty and blank all mean false, so ``MIXPREC_STRICT=`` switches strict mode off.
    """
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise PrecisionError(
        f"Environment variable {name}={raw!r} is not a boolean: use one of 1, true, yes, on, 0, false, no, off."
    )


def env_list(name: str) -> frozenset[str] | None:
    """Read a comma-separated list of plugin names; None when the variable is unset (set but empty: no names)."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


class Settings(NamedTuple):
    """How plugins are loaded, read from the environment when discovery runs."""

    strict: bool
    autoload: bool
    allow: frozenset[str] | None
    block: frozenset[str]

    @classmethod
    def from_environ(cls) -> Settings:
        return cls(
            strict=env_flag("MIXPREC_STRICT"),
            autoload=not env_flag("MIXPREC_DISABLE_PLUGIN_AUTOLOAD"),
            allow=env_list("MIXPREC_PLUGINS"),
            block=env_list("MIXPREC_BLOCK") or frozenset(),
        )
