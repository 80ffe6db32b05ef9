"""Folders that ship inside the wheel (migrations/, widget/) as data-only packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def installed_dir(package: str) -> Path | None:
    """The folder of a package that has no __init__.py (a namespace package), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None
