"""Where ganforge keeps downloaded and decoded datasets."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$GANFORGE_CACHE, else $XDG_CACHE_HOME/ganforge, else ~/.cache/ganforge (read on every call, so
    tests and users can redirect it at any time)."""
    env = os.environ.get("GANFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ganforge"


def datasets_dir() -> Path:
    """Downloads live in datasets/<name>/, decoded caches in datasets/<slug>-<size>-<key>/."""
    return cache_root() / "datasets"
